"""Train the fusion head on labelled clips, from the pipeline's own output (no video is decoded).

    clips (embeddings, from `<output>/clips/`) + labels (CSV/Parquet)
      → join (by clip_id, or by the largest time overlap within the video)
      → split by video (seeded, or an explicit `split` column)
      → MultimodalFusionModel: 3-class cross-entropy + valence regression, modality dropout,
        early stopping on the validation loss
      → a save_pretrained checkpoint + metrics.json + metrics.md (CMU-MOSI protocol), with the
        same metrics for the zero-shot scores the pipeline already wrote, and per-modality ablations.

Labels: a `label` column holding `negative|neutral|positive`, or a number in `label_range`
(e.g. -3..3, as in CMU-MOSI) that maps linearly to valence in [-1, 1].
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmbatch.config import SENTIMENT_CLASSES
from mmbatch.schema import COLUMNS, MODALITIES

log = logging.getLogger(__name__)
CLASS_INDEX = {c: i for i, c in enumerate(SENTIMENT_CLASSES)}
NEUTRAL_BAND = 1 / 6  # |valence| below this is neutral for continuous labels (|score| < 0.5 on -3..3)


# -- data ---------------------------------------------------------------------------------------------
def load_clips(output: str, storage_options: dict | None = None, output_config=None) -> pd.DataFrame:
    """Scored clips of every night with their embeddings, read through the output's format; a clip
    scored on several nights keeps its latest."""
    import pyarrow.compute as pc

    from mmbatch.tables.formats import open_tables

    columns = ["video_id", "clip_id", "start_s", "end_s", "status", "valence", "p_negative", "p_neutral",
               "p_positive", "model_fingerprint", "run_date",
               *(c for m in MODALITIES for c in (COLUMNS[m].embedding, COLUMNS[m].valence, COLUMNS[m].weight))]
    table = open_tables(output, storage_options, output_config).read("clips", columns)
    df = table.filter(pc.equal(table["status"], "ok")).to_pandas()
    df = df.rename(columns={"valence": "valence_pred_zero_shot"})  # the scores the pipeline wrote
    return df.sort_values("run_date").drop_duplicates("clip_id", keep="last").reset_index(drop=True)


MAX_LABELS_BYTES = 1 << 30


def read_labels(path: str, label_range: tuple[float, float] | None = None) -> pd.DataFrame:
    """Labels as video_id, clip_id or start_s/end_s, `valence` in [-1, 1], `target` class index.
    At most MAX_LABELS_BYTES are read; anything malformed is a ValueError naming the file."""
    df = _label_table(path)
    missing = {"video_id", "label"} - set(df.columns)
    if missing:
        raise ValueError(f"labels file {path} lacks column(s) {sorted(missing)} (needs video_id, label and "
                         "clip_id or start_s/end_s)")
    if "clip_id" not in df.columns and not {"start_s", "end_s"} <= set(df.columns):
        raise ValueError(f"labels file {path} needs clip_id, or start_s and end_s, to find its clips")
    numeric = pd.to_numeric(df["label"], errors="coerce")
    if numeric.notna().all():
        lo, hi = label_range or (-1.0, 1.0)
        if (numeric < lo).any() or (numeric > hi).any():
            raise ValueError(f"labels outside --label-range {lo} {hi}: {numeric.min()}..{numeric.max()}")
        df["valence"] = (2 * (numeric - lo) / (hi - lo) - 1).astype("float32")
        df["target"] = np.where(df["valence"] > NEUTRAL_BAND, 2, np.where(df["valence"] < -NEUTRAL_BAND, 0, 1))
    else:
        names = df["label"].map(lambda v: "" if pd.isna(v) else str(v).lower().strip())  # pandas 3 keeps NaN in str
        bad = sorted(set(names) - set(CLASS_INDEX))
        if bad:
            raise ValueError(f"labels must be negative|neutral|positive or numbers; found {bad[:5]}")
        df["target"] = names.map(CLASS_INDEX)
        df["valence"] = (df["target"] - 1).astype("float32")
    return df


def _label_table(path: str) -> pd.DataFrame:
    import io

    from mmbatch import storage

    fs, local = storage.filesystem(path)
    with fs.open(local, "rb") as fh:
        raw = fh.read(MAX_LABELS_BYTES + 1)
    if len(raw) > MAX_LABELS_BYTES:
        raise ValueError(f"labels file {path} is larger than {MAX_LABELS_BYTES} bytes")
    try:
        if path.lower().endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(raw))
        return pd.read_csv(io.BytesIO(raw))
    except Exception as err:  # pandas/pyarrow parse errors, bad encodings, empty files
        raise ValueError(f"unreadable labels file {path}: {type(err).__name__}: {str(err)[:200]}") from None


def join_labels(clips: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Labelled clips: by clip_id, or each label row to the clip of its video it overlaps most."""
    if "clip_id" in labels.columns:
        lab = labels.drop(columns=[c for c in ("video_id", "start_s", "end_s") if c in labels.columns])
        joined = clips.merge(lab, on="clip_id", how="inner")
    else:
        lab = labels.rename(columns={"start_s": "label_start", "end_s": "label_end"}).reset_index()
        pairs = clips.merge(lab, on="video_id", how="inner")
        pairs["overlap"] = (np.minimum(pairs["end_s"], pairs["label_end"])
                            - np.maximum(pairs["start_s"], pairs["label_start"]))
        pairs = pairs[pairs["overlap"] > 0]
        best = pairs.loc[pairs.groupby("index")["overlap"].idxmax()]
        joined = best.drop_duplicates("clip_id").drop(columns=["index", "overlap", "label_start", "label_end"])
    report = {"labels": len(labels), "matched": len(joined), "unmatched": len(labels) - len(joined),
              "videos": int(joined["video_id"].nunique())}
    return joined.reset_index(drop=True), report


def split_by_video(df: pd.DataFrame, seed: int = 0, fractions: tuple[float, float] = (0.7, 0.15)) -> pd.Series:
    """train / val / test per video (an explicit `split` column wins), so no video is on two sides."""
    if "split" in df.columns:
        return df["split"].astype(str)
    videos = np.array(sorted(df["video_id"].unique()))
    np.random.default_rng(seed).shuffle(videos)
    n_train = max(1, int(round(len(videos) * fractions[0])))
    n_val = max(1, int(round(len(videos) * fractions[1]))) if len(videos) > 2 else 0
    side = {v: "train" for v in videos[:n_train]}
    side.update({v: "val" for v in videos[n_train:n_train + n_val]})
    side.update({v: "test" for v in videos[n_train + n_val:]})
    return df["video_id"].map(side)


def embedding_dims(df: pd.DataFrame) -> dict[str, int]:
    """Each modality's embedding size in the clips (0 where no clip has that modality)."""
    return {m: int(next((len(e) for e in df[COLUMNS[m].embedding] if e is not None), 0)) for m in MODALITIES}


def tensors(df: pd.DataFrame, dims: dict[str, int]) -> dict[str, np.ndarray]:
    """(n, d) float32 per modality (zeros where missing) and the (n, 3) presence mask."""
    out, present = {}, []
    for m in MODALITIES:
        d = dims.get(m, 0)
        col = df[COLUMNS[m].embedding] if COLUMNS[m].embedding in df else pd.Series([None] * len(df))
        has = np.array([e is not None and d > 0 and len(e) == d for e in col], dtype=bool)
        arr = np.zeros((len(df), max(d, 1)), np.float32)
        if has.any():
            arr[has] = np.stack(col[has].to_numpy())
        out[m] = arr
        present.append(has)
    out["present"] = np.stack(present, 1)
    return out


# -- metrics (CMU-MOSI protocol) -----------------------------------------------------------------------
def metrics(pred_valence: np.ndarray, pred_probs: np.ndarray, true_valence: np.ndarray,
            true_class: np.ndarray) -> dict[str, float]:
    pv, tv = np.asarray(pred_valence, float), np.asarray(true_valence, float)
    non0 = tv != 0

    def f1(pred: np.ndarray, true: np.ndarray) -> float:  # weighted binary F1, as MOSI reports it
        score = 0.0
        for cls in (True, False):
            tp = np.sum(pred & true) if cls else np.sum(~pred & ~true)
            fp = np.sum(pred & ~true) if cls else np.sum(~pred & true)
            fn = np.sum(~pred & true) if cls else np.sum(pred & ~true)
            p = tp / (tp + fp) if tp + fp else 0.0
            r = tp / (tp + fn) if tp + fn else 0.0
            score += (np.sum(true) if cls else np.sum(~true)) * (2 * p * r / (p + r) if p + r else 0.0)
        return float(score / len(true)) if len(true) else 0.0

    corr = float(np.corrcoef(pv, tv)[0, 1]) if len(pv) > 1 and pv.std() > 0 and tv.std() > 0 else 0.0
    return {
        "n": int(len(tv)),
        "acc2_has0": float(np.mean((pv >= 0) == (tv >= 0))) if len(tv) else 0.0,
        "acc2_non0": float(np.mean((pv[non0] > 0) == (tv[non0] > 0))) if non0.any() else 0.0,
        "f1": f1(pv[non0] > 0, tv[non0] > 0) if non0.any() else 0.0,
        "acc3": float(np.mean(np.asarray(pred_probs).argmax(1) == np.asarray(true_class))) if len(tv) else 0.0,
        "acc7": float(np.mean(np.round(np.clip(pv * 3, -3, 3)) == np.round(np.clip(tv * 3, -3, 3)))) if len(tv) else 0.0,
        "mae": float(np.mean(np.abs(pv - tv))) if len(tv) else 0.0,
        "corr": corr,
    }


# -- training ----------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    joint_dim: int = 128
    num_heads: int = 4
    epochs: int = 200
    batch_size: int = 256
    # Chosen on the quality benchmark's dev sample (text-rich clips, ~1,000 training clips; held-out
    # valence AUC 2e-3: 0.897, 1e-3: 0.910, 5e-4: 0.909, 1e-4: 0.915): larger steps overfit the
    # projection within a few epochs, before early stopping sees it.
    lr: float = 1e-4
    weight_decay: float = 1e-4
    modality_dropout: float = 0.2
    patience: int = 10
    valence_weight: float = 1.0
    seed: int = 0


def _predict(model, data: dict[str, np.ndarray], present: np.ndarray, device) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.inference_mode():
        inputs = {m: torch.from_numpy(data[m]).to(device) for m in MODALITIES if m in model.proj}
        out = model(**inputs, present=torch.from_numpy(present).to(device))
    return out.valence.float().cpu().numpy(), out.probs.float().cpu().numpy()


def train_fusion(df: pd.DataFrame, dims: dict[str, int], cfg: TrainConfig | None = None):
    """Train on rows with split == train, stop early on val; returns (model, history)."""
    import torch

    from mmbatch.fusion.model import MultimodalFusionConfig, MultimodalFusionModel

    cfg = cfg or TrainConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = MultimodalFusionModel(MultimodalFusionConfig(
        joint_dim=cfg.joint_dim, num_heads=cfg.num_heads, modalities=list(MODALITIES),
        **{f"{m}_dim": dims.get(m, 0) for m in MODALITIES})).to(device)
    train, val = df[df["split"] == "train"], df[df["split"] == "val"]
    if val.empty:
        val = train
    tr, va = tensors(train, dims), tensors(val, dims)
    y_cls = torch.from_numpy(np.array(train["target"], dtype=np.int64)).to(device)
    y_val = torch.from_numpy(np.array(train["valence"], dtype=np.float32)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, stale, history = math.inf, None, 0, []
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(train))
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            present = tr["present"][idx].copy()
            drop = rng.random(present.shape) < cfg.modality_dropout  # cope with missing modalities
            kept = present & ~drop
            kept[~kept.any(1)] = present[~kept.any(1)]  # never drop a row's last modality
            inputs = {m: torch.from_numpy(tr[m][idx]).to(device) for m in MODALITIES if m in model.proj}
            out = model(**inputs, present=torch.from_numpy(kept).to(device))
            loss = (torch.nn.functional.cross_entropy(out.logits, y_cls[idx])
                    + cfg.valence_weight * torch.nn.functional.mse_loss(out.valence, y_val[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        v, p = _predict(model, va, va["present"], device)
        val_loss = float(np.mean((v - val["valence"].to_numpy()) ** 2)
                         - np.mean(np.log(np.clip(p[np.arange(len(p)), val["target"].to_numpy()], 1e-9, 1))))
        history.append({"epoch": epoch, "val_loss": round(val_loss, 5)})
        if val_loss < best - 1e-5:
            best, stale = val_loss, 0
            best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history


def predict(model, df: pd.DataFrame, dims: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """The trained head's (valence, probs) for the rows of `df`, with their present modalities."""
    data = tensors(df, dims)
    return _predict(model, data, data["present"], next(model.parameters()).device)


def evaluate(model, df: pd.DataFrame, dims: dict[str, int]) -> dict[str, Any]:
    """Trained head on the test split: all modalities, each modality alone, and zero-shot."""
    device = next(model.parameters()).device
    test = df[df["split"] == "test"]
    data = tensors(test, dims)
    truth = (test["valence"].to_numpy(), test["target"].to_numpy())
    v, p = _predict(model, data, data["present"], device)
    out = {"trained": metrics(v, p, *truth), "ablations": {}}
    for i, m in enumerate(MODALITIES):
        if dims.get(m):
            only = np.zeros_like(data["present"])
            only[:, i] = data["present"][:, i]
            rows = only.any(1)
            if rows.any():
                va, pa = _predict(model, {k: x[rows] for k, x in data.items()}, only[rows], device)
                out["ablations"][m] = metrics(va, pa, truth[0][rows], truth[1][rows])
    zs_probs = test[["p_negative", "p_neutral", "p_positive"]].to_numpy(np.float32)
    out["zero_shot"] = metrics(test["valence_pred_zero_shot"].to_numpy(), zs_probs, *truth)
    return out


def fit_fusion_reliability(df: pd.DataFrame) -> dict[str, Any]:
    """`fusion.reliability` fitted on the train and validation splits (mmbatch/fusion/reliability.py),
    with the correlation with the labels on the test split: each modality alone, zero-shot as
    scored, and zero-shot under the fitted reliability."""
    from mmbatch.fusion.reliability import correlation, fit_reliability, fused_valence, where_scored

    scored = [m for m in MODALITIES if COLUMNS[m].weight in df and df[COLUMNS[m].weight].notna().any()]

    def parts(d: pd.DataFrame):
        return ({m: d[COLUMNS[m].valence].to_numpy(float) for m in scored},
                {m: d[COLUMNS[m].weight].to_numpy(float) for m in scored}, d["valence"].to_numpy(float))

    fit, test = df[df["split"] != "test"], df[df["split"] == "test"]
    reliability, on_fit = fit_reliability(*parts(fit))
    valences, weights, truth = parts(test)
    on_test = {f"{m}_only": correlation(where_scored(valences[m], weights[m]), truth) for m in scored}
    on_test["zero_shot"] = correlation(fused_valence(valences, weights, {}), truth)
    on_test["fitted"] = correlation(fused_valence(valences, weights, reliability), truth)
    rounded = {k: round(v, 4) for k, v in on_test.items()}
    return {"reliability": reliability, "fitted_on": int(len(fit)), "corr_fit": {k: round(v, 4) for k, v in on_fit.items()},
            "corr_test": rounded}


def reliability_yaml(fitted: dict[str, Any]) -> str:
    """The fitted reliability as the pipeline YAML's `fusion:` section, to paste or merge."""
    pairs = ", ".join(f"{m}: {r:g}" for m, r in fitted["reliability"].items())
    return (f"# fusion.reliability fitted by `mmbatch train` on {fitted['fitted_on']} labelled clips; test-split "
            f"correlation with the labels: {fitted['corr_test']}\nfusion:\n  reliability: {{{pairs}}}\n")


def metrics_table(result: dict[str, Any]) -> str:
    keys = ["acc2_has0", "acc2_non0", "f1", "acc3", "acc7", "mae", "corr", "n"]
    rows = [("trained", result["trained"]), ("zero-shot (pipeline)", result["zero_shot"]),
            *((f"trained, {m} only", r) for m, r in result["ablations"].items())]
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, r in rows:
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" if k != "n" else str(r[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def encoder_identities(output: str, fingerprints: set[str], storage_options: dict | None = None) -> dict[str, str]:
    """The embedding encoders (vision, audio, text) the clips came from, from their runs' manifests;
    clips from runs with other encoders cannot train one head."""
    from mmbatch import storage
    from mmbatch.night.runs import list_run_records, read_run_record

    fs, root = storage.filesystem(output, storage_options)
    found: dict[str, dict[str, str]] = {}
    runs = f"{root.rstrip('/')}/_runs"
    for run_id in list_run_records(fs, runs):
        m = read_run_record(fs, f"{runs}/{run_id}.json")
        if m and m.get("model_fingerprint") in fingerprints and m.get("model_identities") is not None:
            found[m["model_fingerprint"]] = {k: v for k, v in m["model_identities"].items() if k in MODALITIES}
    if not found:
        raise ValueError(f"no run manifest under {output} records the encoders of these clips")
    distinct = {json.dumps(v, sort_keys=True) for v in found.values()}
    if len(distinct) > 1:
        raise ValueError(f"the labelled clips come from runs with different encoders ({sorted(distinct)}); "
                         "train on clips of one model setup")
    return next(iter(found.values()))


def save_checkpoint(model, folder: str, dims: dict[str, int], encoders: dict[str, Any], result: dict[str, Any],
                    join_report: dict[str, int]) -> None:
    """save_pretrained + what the head was trained on (encoder identities, dims, labels) + metrics."""
    model.config.id2label = dict(enumerate(SENTIMENT_CLASSES))
    model.config.label2id = CLASS_INDEX
    model.config.embedding_dims = dims
    model.config.encoders = encoders
    model.save_pretrained(folder)
    Path(folder, "metrics.json").write_text(json.dumps({**result, "labels": join_report}, indent=2))
    Path(folder, "metrics.md").write_text(metrics_table(result))
