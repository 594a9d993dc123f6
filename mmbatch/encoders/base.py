"""What every modality encoder shares: device/dtype, null handling, per-row error isolation.

An encoder adds, for its modality m: `{m}_probs` (n, 3) float32 (NaN where missing),
`{m}_embedding` (n, dim) float32 (zeros where missing) and `has_{m}` (the modality was
scored). Rows that are not `status == "ok"` or lack the modality's input are skipped, never
failed. If a batch fails, rows are retried one by one, so one bad row only loses that row's
modality.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import numpy as np

from mmbatch.config import EncoderConfig
from mmbatch.errors import short_reason
from mmbatch.modalities import BY_NAME
from mmbatch.schema import COLUMNS, NOTHING, ModalityColumns
from mmbatch.stage import Batch

log = logging.getLogger(__name__)


class EncoderStage:
    modality: str = ""  # vision | audio | text
    input_columns: tuple[str, ...] = ()
    optional_columns: tuple[str, ...] = ()  # read when an earlier stage wrote them
    # Declared per modality by __init_subclass__: the stage's name is its modality.
    name: str = ""
    reads: tuple[str, ...] = ()
    may_read: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    cols: ModalityColumns
    own_columns: tuple[tuple[str, str], ...] = ()  # the modality's own output columns (mmbatch.modalities)
    requires: tuple[tuple[str, str], ...] = ()  # (module, the pip extra that installs it), checked at start-up

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.modality:
            cls.cols = COLUMNS[cls.modality]
            cls.name = cls.modality
            cls.reads = ("video_id", "clip_index", "status", *cls.input_columns)
            # an earlier stage may have said why it is missing (transcripts)
            cls.may_read = (cls.cols.error, *cls.optional_columns)
            cls.own_columns = BY_NAME[cls.modality].columns if cls.modality in BY_NAME else ()
            cls.writes = (*cls.cols.encoder_writes, *(name for name, _ in cls.own_columns))

    def __init__(self, config: EncoderConfig, *, dim: int, storage_options: dict | None = None):
        self.config = config
        self.dim = dim
        self.storage_options = storage_options or {}
        self.load_policy = {"trust_remote_code": config.trust_remote_code, "allow_pickle": config.allow_pickle}
        self.label = f"{self.modality}_encoder"  # in logs and in the {modality}_error column
        self._ready = False

    # -- contract ---------------------------------------------------------------------------
    def setup(self) -> None:
        import torch

        from mmbatch.models.loading import pick_device, pick_dtype

        self.torch = torch
        self.device = pick_device(self.config.pool.num_gpus > 0)
        self.dtype = pick_dtype(self.config.dtype, self.device)
        self.load()
        self._ready = True

    def __call__(self, batch: Batch) -> Batch:
        if not self._ready:
            self.setup()
        n = len(batch["video_id"])
        active = np.flatnonzero(self.active_rows(batch))
        self.init_outputs(batch, n)
        if len(active):
            with self.torch.inference_mode(), self.autocast():
                run_isolated(self.label, batch, active, lambda rows: self.encode(batch, rows),
                             lambda i, err: self.mark_failed(batch, i, err))
        return batch

    # -- for subclasses ---------------------------------------------------------------------
    @classmethod
    def embedding_size(cls, model_config) -> int:
        """The length of this encoder's embeddings, from its model's config (read at start-up)."""
        return int(model_config.hidden_size)

    def load(self) -> None:
        raise NotImplementedError

    def load_classifier(self, auto_model_cls) -> str:
        """What every *_classification task loads: the model's label table mapped onto
        negative/neutral/positive (`self.matrix`), then its weights on the device (`self.model`).
        Returns the model's local folder, for its tokenizer or preprocessing."""
        from transformers import AutoConfig

        from mmbatch.encoders.labels import label_matrix
        from mmbatch.models.loading import load_pretrained, resolve_source

        cfg = self.config
        folder = resolve_source(cfg.source, self.storage_options)
        model_config = load_pretrained(AutoConfig, folder, cfg.revision, **self.load_policy)
        self.matrix = label_matrix(model_config.id2label, cfg.label_map, cfg.source)
        self.model = load_pretrained(auto_model_cls, folder, cfg.revision, **self.load_policy).to(self.device).eval()
        return folder

    def active_rows(self, batch: Batch) -> np.ndarray:
        raise NotImplementedError

    def encode(self, batch: Batch, rows: np.ndarray) -> None:
        raise NotImplementedError

    def init_outputs(self, batch: Batch, n: int) -> None:
        c = self.cols
        batch[c.probs] = np.full((n, 3), np.nan, dtype=np.float32)
        batch[c.embedding] = np.zeros((n, self.dim), dtype=np.float32)
        batch[c.has] = np.zeros(n, dtype=bool)  # set by store() for each row scored
        for name, kind in self.own_columns:  # nothing to say yet: null in the output
            batch[name] = np.full(n, NOTHING[kind], dtype=object if kind == "string" else kind)
        # Why the modality is missing or degraded on a row; an earlier stage may have said
        # already (the transcript stage for text).
        if c.error not in batch:
            batch[c.error] = np.full(n, "", dtype=object)
        else:
            batch[c.error] = np.asarray(batch[c.error]).astype(object)

    def mark_failed(self, batch: Batch, i: int, err: BaseException) -> None:
        c = self.cols
        batch[c.probs][i] = np.nan
        batch[c.embedding][i] = 0.0
        batch[c.has][i] = False
        batch[c.error][i] = f"{self.label} failed: {short_reason(err)}"

    def store(self, batch: Batch, rows: np.ndarray, probs: np.ndarray, embeddings: np.ndarray) -> None:
        c = self.cols
        batch[c.probs][rows] = probs
        batch[c.embedding][rows] = embeddings
        batch[c.has][rows] = True

    def autocast(self):
        if self.device.type == "cuda" and self.dtype != self.torch.float32:
            return self.torch.autocast("cuda", dtype=self.dtype)
        return nullcontext()

    def to_numpy(self, tensor) -> np.ndarray:
        return tensor.detach().float().cpu().numpy()


MIN_AUDIO_SAMPLES = 1600  # 0.1 s at 16 kHz: shorter clips carry no usable audio


def is_ok(batch: Batch) -> np.ndarray:
    return np.asarray(batch["status"]) == "ok"


def text_column(batch: Batch, name: str) -> np.ndarray:
    """An optional string column as str, empty where the batch does not carry it."""
    if name not in batch:
        return np.full(len(batch["video_id"]), "")
    return np.asarray(batch[name]).astype(str)


def usable_audio(batch: Batch) -> np.ndarray:
    if "has_waveform" not in batch:
        return np.zeros(len(batch["video_id"]), dtype=bool)
    return (is_ok(batch) & np.asarray(batch["has_waveform"], dtype=bool)
            & (np.asarray(batch["audio_len"]) >= MIN_AUDIO_SAMPLES))


def stacked(column, rows: np.ndarray) -> np.ndarray:
    """Rows of a tensor column as one contiguous array. Ray Data hands a column whose rows
    differ in shape (error rows carry zero-length tensors) as an object array of arrays."""
    column = np.asarray(column) if not isinstance(column, np.ndarray) else column
    if column.dtype == object:
        return np.ascontiguousarray(np.stack([column[i] for i in rows]))
    return np.ascontiguousarray(column[rows])


def run_isolated(name: str, batch: Batch, rows: np.ndarray, fn, on_row_failure) -> None:
    """fn(rows) for the whole batch; if that raises, fn once per row, so one bad row only
    costs that row (on_row_failure(i, error)), never the batch or the actor."""
    try:
        fn(rows)
    except Exception as err:
        log.warning("%s: batch failed (%s); retrying row by row", name, err)
        for i in rows:
            try:
                fn(np.array([i]))
            except Exception as row_err:
                log.warning("%s: row %s of %s failed: %s", name, batch["clip_index"][i], batch["video_id"][i], row_err)
                on_row_failure(i, row_err)


def mean_pool(hidden, mask):
    """Mean over the time axis of (n, t, d) using a (n, t) 0/1 mask."""
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def l2_normalise(x):
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)
