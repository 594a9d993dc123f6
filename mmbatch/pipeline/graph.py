"""The video sentiment graph as a list of stage specs: which stages, in which order, on which pools.

    input rows (VideoRef) → split (long videos into chunks of clips, header reads only)
      → decode (a CPU actor pool, one video or chunk a call, clips streamed out)
      → vision → speech recognition (or sidecar transcripts) → audio → text (actor pools,
        or one colocated pool whose actors hold every model)
      → fusion (actors) → write (a Ray Data Datasink: staged Parquet files of about
        output.target_file_mb, many videos each, plus their completion records)

The Ray Data adapter (`mmbatch/pipeline/adapter.py`) and the benchmark's in-process loop consume the
same list. No Ray here, and no stage is built: what each stage reads, writes and needs is
declared on its class and its spec, and `stage_specs` checks that the columns line up.
"""

from __future__ import annotations

from mmbatch.config import PipelineConfig, PoolConfig
from mmbatch.output.writer import WriterArgs
from mmbatch.schema import REF_COLUMNS, EmbeddingDims
from mmbatch.stage import StageSpec, check_columns, colocated_spec

# Bytes of a clip row besides its embeddings (ids, scores, transcript), for row groups.
ROW_OVERHEAD_BYTES = 400
# The split stage's CPU share (header reads, a few ms a video). On the 2-core presets 0.1 would let
# a split task run beside a write task; measured at 16x it did not pay (sustained 18.6 clips/s vs
# 20.0 at 0.25, 16x wall 74.2 vs 73.1 s: docs/performance.md).
SPLIT_CPUS = 0.25


def row_group_rows(config: PipelineConfig, dims: EmbeddingDims) -> int:
    row_bytes = 4 * (sum(dims.sizes.values()) + dims.fused) + ROW_OVERHEAD_BYTES
    return max(1, int(config.output.row_group_mb * 2**20 / row_bytes))


def stage_specs(config: PipelineConfig, dims: EmbeddingDims, writer: WriterArgs | None = None,
                trust=None) -> list[StageSpec]:
    """The graph as a list. `writer`: the write stage's run arguments; without it the list ends
    at fusion (for in-process loops that keep the rows). `trust`: the run's AllowedRoots, which
    decode checks playlist segments against."""
    from mmbatch.decode.stage import DecodeStage

    specs = []
    if config.decode.split_clips:  # long videos → several decode calls; header reads on decode's nodes
        from mmbatch.decode.split import SplitStage

        specs.append(StageSpec(SplitStage, (config,), compute="task",
                               pool=PoolConfig(num_cpus=SPLIT_CPUS, concurrency=(1, config.decode.pool.concurrency[1]),
                                               batch_size=1, resources=config.decode.pool.resources)))
    # An actor pool: each actor keeps its watchdog child and warm decoders for the whole night
    # (task workers idle under backpressure were killed, and the next re-imported the decoders).
    specs.append(StageSpec(DecodeStage, (config, trust), pool=config.decode.pool))
    specs.extend(model_specs(config, dims))
    if writer is not None:
        from mmbatch.output.writer import ClipWriterStage

        out = config.output
        specs.append(StageSpec(ClipWriterStage, (writer,), compute="sink",
                               pool=PoolConfig(num_cpus=out.write_cpus, concurrency=(1, out.write_concurrency),
                                               resources=out.write_resources)))
    check_columns(specs, REF_COLUMNS)
    return specs


def model_specs(config: PipelineConfig, dims: EmbeddingDims) -> list[StageSpec]:
    """The encoders and fusion: a pool each (per_modality), or one pool whose actors run them all
    in turn (colocated; each model then runs on that pool's resources)."""
    from mmbatch.fusion.stage import FusionStage
    from mmbatch.modalities import REGISTRY, encoder_class, load_class

    colocated = config.encoders.placement == "colocated"
    shared = config.encoders.pool

    def pool_of(section):  # colocated models follow the shared pool (its GPU share picks the device)
        return section.model_copy(update={"pool": shared}) if colocated else section

    models, so = config.models, config.storage_options
    specs = []
    for modality in REGISTRY:  # in graph order
        section = getattr(models, modality.name)
        # a scored modality's encoder makes embeddings of its size; one that feeds another reads files
        kwargs = {"dim": getattr(dims, modality.name), "storage_options": so} if modality.scored else \
            {"storage_options": so, "limits": config.inputs}
        if section is not None:
            specs.append(StageSpec(encoder_class(section.task), (pool_of(section),), kwargs, pool_of(section).pool))
        elif modality.stand_in and getattr(models, modality.feeds) is not None:  # e.g. sidecar transcripts
            specs.append(StageSpec(load_class(modality.stand_in), (), kwargs, PoolConfig(num_cpus=0.1, batch_size=64),
                                   compute="task"))
    specs.append(StageSpec(FusionStage, (pool_of(config.fusion), dims), {"storage_options": so},
                           pool_of(config.fusion).pool))
    return [colocated_spec(specs, shared)] if colocated else specs
