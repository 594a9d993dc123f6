"""Output Arrow schemas (DESIGN §5): the one source of truth for what lands in Parquet.

A column is never renamed or retyped without bumping SCHEMA_VERSION.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = 1
METADATA_SCHEMA_VERSION = b"mmbatch.schema_version"
METADATA_CONFIG = b"mmbatch.config"
MODALITIES = ("vision", "audio", "text")


@dataclass(frozen=True)
class EmbeddingDims:
    """Length of each embedding column; 0 for a modality that is not configured."""

    vision: int
    audio: int
    text: int
    joint: int = 0  # a trained fusion model's joint_dim; 0 for zero-shot fusion

    @property
    def fused(self) -> int:
        # Zero-shot fusion's joint embedding is the concatenation of the L2-normalised
        # modality embeddings (zeros where a modality is missing).
        return self.joint or (self.vision + self.audio + self.text)

    def as_dict(self) -> dict[str, int]:
        return {"vision": self.vision, "audio": self.audio, "text": self.text, "fused": self.fused}


def _embedding(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), max(dim, 1))


def clips_schema(dims: EmbeddingDims) -> pa.Schema:
    f32 = pa.float32()
    return pa.schema(
        [
            ("video_id", pa.string()),
            ("clip_id", pa.string()),
            ("clip_index", pa.int32()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("status", pa.string()),
            ("error_stage", pa.string()),
            ("error", pa.string()),
            ("has_video", pa.bool_()),
            ("has_audio", pa.bool_()),
            ("has_text", pa.bool_()),
            ("transcript", pa.string()),
            ("p_negative", f32),
            ("p_neutral", f32),
            ("p_positive", f32),
            ("sentiment", pa.string()),
            ("valence", f32),
            ("vision_valence", f32),
            ("audio_valence", f32),
            ("text_valence", f32),
            ("fusion_weight_vision", f32),
            ("fusion_weight_audio", f32),
            ("fusion_weight_text", f32),
            ("vision_embedding", _embedding(dims.vision)),
            ("audio_embedding", _embedding(dims.audio)),
            ("text_embedding", _embedding(dims.text)),
            ("fused_embedding", _embedding(dims.fused)),
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


def with_metadata(schema: pa.Schema, config_json: str) -> pa.Schema:
    return schema.with_metadata(
        {METADATA_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(), METADATA_CONFIG: config_json.encode()}
    )
