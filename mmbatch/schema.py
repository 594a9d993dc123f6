"""Output Arrow schemas: the one source of truth for what lands in Parquet.

A column is never renamed or retyped without bumping SCHEMA_VERSION.

v2 (this version): embedding columns are variable-length `list<float32>` (v1 used
`fixed_size_list<float32, dim>`), so nights scored with models of other embedding sizes read
together in pandas, pyarrow and DuckDB. The embedding sizes of a file are in its key-value
metadata (`mmbatch.embedding_dims`). docs/output.md says how to read v1 files beside v2 ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from mmbatch.modalities import REGISTRY, SCORED

SCHEMA_VERSION = 2
METADATA_SCHEMA_VERSION = b"mmbatch.schema_version"
METADATA_CONFIG = b"mmbatch.config"
METADATA_DIMS = b"mmbatch.embedding_dims"
MODALITIES = SCORED  # the scored modalities (mmbatch.modalities), in column order


class EmbeddingDims:
    """Length of each scored modality's embedding column (0: not configured), by position in
    MODALITIES or by name (`EmbeddingDims(512, 768, 768)`, `EmbeddingDims(vision=512)`), and a
    trained fusion model's `joint` size (0 for zero-shot fusion). Read-only."""

    __slots__ = ("sizes", "joint")

    def __init__(self, *sizes: int, joint: int = 0, **named: int):
        unknown = set(named) - set(MODALITIES)
        if len(sizes) > len(MODALITIES) or unknown:
            raise TypeError(f"EmbeddingDims takes the sizes of {', '.join(MODALITIES)} (got {sorted(unknown) or sizes})")
        given = {**dict(zip(MODALITIES, sizes)), **named}
        object.__setattr__(self, "sizes", {m: int(given.get(m, 0)) for m in MODALITIES})
        object.__setattr__(self, "joint", int(joint))

    def __getattr__(self, name: str) -> int:
        try:
            return object.__getattribute__(self, "sizes")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("EmbeddingDims is read-only")

    def __eq__(self, other) -> bool:
        return isinstance(other, EmbeddingDims) and (self.sizes, self.joint) == (other.sizes, other.joint)

    def __hash__(self) -> int:
        return hash((tuple(self.sizes.items()), self.joint))

    def __reduce__(self):  # pickled to the workers: rebuilt by name
        return _embedding_dims, (dict(self.sizes), self.joint)

    def __repr__(self) -> str:
        return f"EmbeddingDims({', '.join(f'{m}={d}' for m, d in self.sizes.items())}, joint={self.joint})"

    @property
    def fused(self) -> int:
        # Zero-shot fusion's joint embedding is the concatenation of the L2-normalised
        # modality embeddings (zeros where a modality is missing).
        return self.joint or sum(self.sizes.values())

    def as_dict(self) -> dict[str, int]:
        return {**self.sizes, "fused": self.fused}


def _embedding_dims(sizes: dict[str, int], joint: int) -> EmbeddingDims:
    return EmbeddingDims(joint=joint, **sizes)


# -- Columns of the batches between stages (numpy dicts on the workers; not the output) --------
# Each stage declares what it reads and writes from these names (mmbatch.stage), so a column
# name is spelt in one place.

# A video reference as the input rows carry it (mmbatch.inputs.sources.VideoRef.as_row).
REF_COLUMNS = ("video_id", "uri", "kind", "transcript_uri", "segments_uri", "segments")
# Added by the split stage: which clips of the video one decode call plans.
CHUNK_COLUMNS = ("chunk_first", "chunk_last", "plan_duration_s", "chunk_index", "n_chunks")
# Every clip row out of decode; n_rows/chunk_*/duration_s/decode_seconds let the driver know when
# a video is complete.
CLIP_COLUMNS = ("video_id", "transcript_uri", "clip_index", "clip_id", "start_s", "end_s", "n_rows", "chunk_index",
                "n_chunks", "duration_s", "status", "error_stage", "error", "decode_seconds")
BOOKKEEPING_COLUMNS = ("n_rows", "chunk_index", "n_chunks", "duration_s", "decode_seconds")
FRAME_COLUMNS = ("frames", "n_frames", "has_frames")  # only with a vision or face model
# Only with models.face.find_faces_in: decode: each sampled frame's face count and largest face's
# box (x, y, w, h; -1s where none), found by the decode worker.
FACE_BOX_COLUMNS = ("frame_face_counts", "frame_face_boxes")
# Only with an audio or speech model. `audio_error`: why decode lost a clip's audio (the audio
# encoder keeps it as the modality's error; speech recognition says the text is missing for it).
AUDIO_COLUMNS = ("waveform", "audio_len", "has_waveform", "audio_error")
TRANSCRIPT_COLUMNS = ("transcript", "text_error")
# Only with models.speech.hypotheses > 1: each clip's best transcripts and their weights (summing
# to 1; empty where the text came from a sidecar), which the text encoder reads in its place.
HYPOTHESIS_COLUMNS = ("transcript_hypotheses", "transcript_hypothesis_weights")
FUSED_COLUMNS = ("p_negative", "p_neutral", "p_positive", "valence", "sentiment", "fused_embedding")
# What the write stage returns to the driver: one completion record per (video, chunk, file).
RECORD_COLUMNS = ("video_id", "chunk_index", "n_chunks", "expected_rows", "rows", "clip_rows", "ok_rows", "file",
                  "file_rows", "duration_s", "decode_seconds", "error_stage", "error", "attempt")


@dataclass(frozen=True)
class ModalityColumns:
    """The batch columns of one modality: written by its encoder (probs, embedding, has, error)
    and by fusion (valence, weight); counted in completion records (scored, failed: ok clips
    where it failed, with a reason and no score)."""

    modality: str
    probs: str
    embedding: str
    has: str
    error: str
    valence: str
    weight: str
    scored: str
    failed: str

    @classmethod
    def of(cls, m: str) -> ModalityColumns:
        return cls(m, f"{m}_probs", f"{m}_embedding", f"has_{m}", f"{m}_error", f"{m}_valence", f"fusion_weight_{m}",
                   f"{m}_scored", f"{m}_failed")

    @property
    def encoder_writes(self) -> tuple[str, ...]:
        return (self.probs, self.embedding, self.has, self.error)

    @property
    def fusion_writes(self) -> tuple[str, ...]:
        return (self.valence, self.weight)


COLUMNS = {m: ModalityColumns.of(m) for m in MODALITIES}


EMBEDDING_TYPE = pa.list_(pa.float32())
ARROW_TYPES = {"string": pa.string(), "int32": pa.int32(), "float32": pa.float32()}
# What a modality's own column holds in a batch where it has nothing to say (null in the output).
NOTHING = {"string": "", "int32": -1, "float32": float("nan")}
# Output columns a modality declares of its own (mmbatch.modalities: the face count, its expression).
MODALITY_COLUMNS = tuple(c for m in REGISTRY for c in m.columns)
# Output flag per modality: "has_video" says the clip's frames were scored by the vision model.
HAS_COLUMN = {m.name: m.has_column for m in REGISTRY if m.scored}


_F32 = pa.float32()
CLIPS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("clip_id", pa.string()),
        ("clip_index", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("status", pa.string()),
        ("error_stage", pa.string()),
        ("error", pa.string()),
        *((f"{m}_error", pa.string()) for m in MODALITIES),
        *((HAS_COLUMN[m], pa.bool_()) for m in MODALITIES),
        *((name, ARROW_TYPES[kind]) for name, kind in MODALITY_COLUMNS),
        ("transcript", pa.string()),
        ("p_negative", _F32),
        ("p_neutral", _F32),
        ("p_positive", _F32),
        ("sentiment", pa.string()),
        ("valence", _F32),
        *((f"{m}_valence", _F32) for m in MODALITIES),
        *((f"fusion_weight_{m}", _F32) for m in MODALITIES),
        *((f"{m}_embedding", EMBEDDING_TYPE) for m in MODALITIES),
        ("fused_embedding", EMBEDDING_TYPE),
        ("model_fingerprint", pa.string()),
        ("run_id", pa.string()),
        ("run_date", pa.date32()),
    ]
)


VIDEOS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("etag", pa.string()),
        ("size_bytes", pa.int64()),
        ("duration_s", pa.float64()),
        ("n_clips", pa.int32()),
        ("status", pa.string()),
        ("error_stage", pa.string()),
        ("error", pa.string()),
        ("decode_seconds", pa.float64()),
        ("model_fingerprint", pa.string()),
        ("run_id", pa.string()),
        ("run_date", pa.date32()),
    ]
)


# `run_date` is the hive partition key (`.../run_date=YYYY-MM-DD/`): like Hive and Spark, it
# lives in the path, not in the files, so dataset readers do not see it twice with two types.
PARTITION_COLUMN = "run_date"
PARTITIONING_SCHEMA = pa.schema([(PARTITION_COLUMN, pa.date32())])


def partitioning():
    """Pass to pyarrow/pandas readers to get `run_date` back as a date:
    `pd.read_parquet(root + "/clips", partitioning=partitioning())`."""
    import pyarrow.dataset as ds

    return ds.partitioning(PARTITIONING_SCHEMA, flavor="hive")


def file_schema(schema: pa.Schema) -> pa.Schema:
    """The schema stored in each Parquet file: the table schema without the partition key."""
    return schema.remove(schema.get_field_index(PARTITION_COLUMN))


# One row per video ever scored ok: the incremental skip check reads this, not the history.
STATE_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("etag", pa.string()),
        ("size_bytes", pa.int64()),
        ("model_fingerprint", pa.string()),
        ("run_id", pa.string()),
        ("run_date", pa.date32()),
    ]
)


def with_metadata(schema: pa.Schema, config_json: str, dims: EmbeddingDims | None = None) -> pa.Schema:
    meta = {METADATA_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(), METADATA_CONFIG: config_json.encode()}
    if dims is not None:
        import json

        meta[METADATA_DIMS] = json.dumps(dims.as_dict()).encode()
    return schema.with_metadata(meta)
