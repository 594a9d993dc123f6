"""Fusion: per-modality sentiment and embeddings → one score per clip.

With `fusion.mode: trained`, a MultimodalFusionModel checkpoint (mmbatch/fusion/model.py)
computes probabilities, valence, the joint embedding and per-modality attention weights.

Zero-shot fusion (no trained checkpoint): each present modality is weighted by its
confidence, 1 − H(p)/log(3) (normalised entropy), times its `fusion.reliability` (default 1;
learned from labels by `mmbatch train`, mmbatch/fusion/reliability.py), weights renormalised
over the present modalities to sum to 1 (equal weights over the trusted ones if every present
modality is uniform). The fused
probabilities are the weighted mean; valence = p_positive − p_negative. The fused
embedding is the concatenation of the L2-normalised modality embeddings, zeros where a
modality is missing. A clip with no modality at all is status="error", error_stage="fusion".
"""

from __future__ import annotations

import numpy as np

from mmbatch.config import SENTIMENT_CLASSES, FusionConfig
from mmbatch.schema import COLUMNS, FUSED_COLUMNS, MODALITIES, EmbeddingDims
from mmbatch.stage import Batch

_LOG3 = np.log(3.0)


def confidence(probs: np.ndarray) -> np.ndarray:
    """1 − normalised entropy of (n, 3) probabilities: 0 for uniform, 1 for one-hot."""
    p = np.clip(probs, 1e-12, 1.0)
    return (1.0 - (-(p * np.log(p)).sum(-1)) / _LOG3).clip(0.0, 1.0)


def zero_shot_fuse(probs: dict[str, np.ndarray], present: dict[str, np.ndarray],
                   reliability: dict[str, float] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fused (n, 3) probabilities and per-modality weights (NaN where the modality is missing).
    `reliability` (fusion.reliability, mmbatch/fusion/reliability.py) scales each confidence."""
    n = len(next(iter(present.values())))
    r = {m: (reliability or {}).get(m, 1.0) for m in probs}
    conf = {m: r[m] * np.where(present[m], confidence(np.nan_to_num(probs[m], nan=1 / 3)), 0.0) for m in probs}
    total = sum(conf.values())
    trusted = {m: present[m] & (r[m] > 0) for m in probs}
    untrusted_only = ~np.any([trusted[m] for m in probs], axis=0)  # then the modalities there are, equally
    trusted = {m: trusted[m] | (present[m] & untrusted_only) for m in probs}
    n_present = sum(trusted[m].astype(float) for m in probs)
    weights = {}
    for m in probs:
        equal = np.where(n_present > 0, trusted[m] / np.maximum(n_present, 1), 0.0)
        w = np.where(total > 1e-9, conf[m] / np.maximum(total, 1e-12), equal)
        weights[m] = np.where(present[m], w, np.nan)
    fused = np.zeros((n, 3))
    for m in probs:
        fused += np.nan_to_num(weights[m])[:, None] * np.nan_to_num(probs[m], nan=0.0)
    return fused, weights


class FusionStage:
    name = "fusion"
    reads = ("video_id", "status", "error_stage", "error")
    may_read = tuple(c for m in MODALITIES for c in (COLUMNS[m].probs, COLUMNS[m].embedding, COLUMNS[m].has))
    # A modality with no encoder gets empty probs/embedding/has columns here, for the writer.
    writes = ("status", "error_stage", "error", *FUSED_COLUMNS, *may_read,
              *(c for m in MODALITIES for c in COLUMNS[m].fusion_writes))

    def __init__(self, config: FusionConfig, dims: EmbeddingDims, storage_options: dict | None = None):
        self.config = config
        self.dims = dims
        self.storage_options = storage_options or {}
        self.model = None

    def setup(self) -> None:
        self.model = None
        if self.config.mode == "trained":
            import torch

            from mmbatch.fusion.model import MultimodalFusionModel
            from mmbatch.models.loading import load_pretrained, pick_device, resolve_source

            self.torch = torch
            self.device = pick_device(self.config.pool.num_gpus > 0)
            source = resolve_source(self.config.checkpoint, self.storage_options)
            self.model = load_pretrained(MultimodalFusionModel, source, self.config.revision,
                                         allow_pickle=self.config.allow_pickle).to(self.device).eval()

    def _trained(self, batch: Batch, present: dict[str, np.ndarray]):
        """The trained head over the modalities it knows (a modality added after it was trained has
        no weight in it)."""
        torch, known = self.torch, self.model.config.modalities
        inputs = {}
        for m in known:
            if getattr(self.dims, m):
                inputs[m] = torch.from_numpy(np.asarray(batch[COLUMNS[m].embedding], dtype=np.float32)).to(self.device)
        mask = torch.from_numpy(np.stack([present[m] for m in known], 1)).to(self.device)
        with torch.inference_mode():
            out = self.model(**inputs, present=mask)
        weights = out.modality_weights.float().cpu().numpy()
        n = len(batch["video_id"])
        return (out.probs.float().cpu().numpy().astype(np.float64), out.valence.float().cpu().numpy(),
                out.fused_embedding.float().cpu().numpy(),
                {m: np.where(present[m], weights[:, known.index(m)], np.nan) if m in known else np.full(n, np.nan)
                 for m in MODALITIES})

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["video_id"])
        present, probs = {}, {}
        for m in MODALITIES:
            dim = getattr(self.dims, m)
            if dim == 0:  # modality not configured
                batch[COLUMNS[m].probs] = np.full((n, 3), np.nan, dtype=np.float32)
                batch[COLUMNS[m].embedding] = np.zeros((n, 1), dtype=np.float32)
                batch[COLUMNS[m].has] = np.zeros(n, dtype=bool)
            present[m] = np.asarray(batch[COLUMNS[m].has], dtype=bool) & (np.asarray(batch["status"]) == "ok")
            probs[m] = np.asarray(batch[COLUMNS[m].probs], dtype=np.float64)
        if self.config.mode == "trained" and self.model is None:
            self.setup()
        if self.model is not None:
            fused, valence, joint, weights = self._trained(batch, present)
        else:
            fused, weights = zero_shot_fuse(probs, present, self.config.reliability)
            valence, joint = fused[:, 2] - fused[:, 0], None

        status = np.asarray(batch["status"]).astype(object).copy()
        error_stage = np.asarray(batch["error_stage"]).astype(object).copy()
        error = np.asarray(batch["error"]).astype(object).copy()
        nothing = (status == "ok") & ~np.any([present[m] for m in MODALITIES], axis=0)
        status[nothing], error_stage[nothing] = "error", "fusion"
        error[nothing] = "no modality available (no frames, audio or text decoded for this clip)"
        ok = status == "ok"

        fused = np.where(ok[:, None], fused, np.nan).astype(np.float32)
        batch["p_negative"], batch["p_neutral"], batch["p_positive"] = fused[:, 0], fused[:, 1], fused[:, 2]
        batch["valence"] = np.where(ok, valence, np.nan).astype(np.float32)
        labels = np.array(SENTIMENT_CLASSES, dtype=object)[np.nan_to_num(fused, nan=0).argmax(1)]
        batch["sentiment"] = np.where(ok, labels, "").astype(str)
        for m in MODALITIES:
            p = probs[m]
            batch[COLUMNS[m].valence] = np.where(present[m], p[:, 2] - p[:, 0], np.nan).astype(np.float32)
            batch[COLUMNS[m].weight] = np.where(ok, weights[m], np.nan).astype(np.float32)
        if joint is not None:
            batch["fused_embedding"] = joint.astype(np.float32)
            batch["status"], batch["error_stage"], batch["error"] = status.astype(str), error_stage.astype(str), error.astype(str)
            return batch
        parts = []
        for m in MODALITIES:
            if getattr(self.dims, m):
                e = np.asarray(batch[COLUMNS[m].embedding], dtype=np.float32)
                norm = np.linalg.norm(e, axis=1, keepdims=True)
                parts.append(np.where(present[m][:, None], e / np.maximum(norm, 1e-12), 0.0))
        batch["fused_embedding"] = np.concatenate(parts, axis=1).astype(np.float32)
        batch["status"], batch["error_stage"], batch["error"] = status.astype(str), error_stage.astype(str), error.astype(str)
        return batch
