"""Text encoders for the clip transcript.

- TextClassificationEncoder: a sentiment / emotion classifier; labels mapped to 3 classes.
- TextZeroShotEncoder: a sentence-embedding model; the transcript's embedding is compared
  with prototype sentences per class, softmax(similarity / temperature).
Both pool the last hidden state (mean over tokens, or as the model's pooling config says)
into the clip's text embedding. A batch runs through the model in groups of similar length
(`length_groups`): padding one short transcript to the batch's longest costs as much as a long one.
Where the recogniser kept several transcripts of a clip (models.speech.hypotheses), each is
scored and the clip's scores are their mean weighted by the recogniser's likelihoods.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmbatch.encoders.base import EncoderStage, is_ok, l2_normalise, mean_pool, text_column
from mmbatch.encoders.labels import to_sentiment
from mmbatch.encoders.text_prototypes import DEFAULT_TEXT_PROTOTYPES
from mmbatch.schema import HYPOTHESIS_COLUMNS

# Padded tokens a forward pass may hold (rows x longest row), by device. On 2 CPU threads mpnet
# ran Rotten Tomatoes snippets at 20 sentences/s with 256-2048, 16 at 4096 and 7.5 at 16384; a GPU
# wants big groups (its figure is not measured yet).
TOKENS_PER_FORWARD = {"cpu": 1024, "cuda": 16384}


def length_groups(lengths, max_tokens: int) -> list[np.ndarray]:
    """Indices of texts grouped by token length, shortest first, each group's padded size
    (rows x its longest) within `max_tokens`; a text longer than that goes alone."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    groups, start = [], 0
    for end in range(1, len(order) + 1):
        # Sorted ascending: the group's longest is its last text.
        if end == len(order) or (end + 1 - start) * lengths[order[end]] > max_tokens:
            groups.append(order[start:end])
            start = end
    return groups


def weighted_by_clip(values: np.ndarray, owners: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Per clip (0..n-1), the weighted sum of the rows of `values` that `owners` gives it."""
    out = np.zeros((n, *values.shape[1:]), dtype=np.float64)
    np.add.at(out, owners, values * weights.reshape(-1, *([1] * (values.ndim - 1))))
    return out.astype(values.dtype)


def texts_to_score(batch, rows) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The texts to score for `rows`: each row's transcript, or its recogniser's hypotheses; and for
    each text, the position in `rows` it belongs to and its weight."""
    heard, likelihood = (batch.get(c) for c in HYPOTHESIS_COLUMNS)
    texts, owners, weights = [], [], []
    for k, i in enumerate(rows):
        alternatives = [] if heard is None else list(heard[i])
        if alternatives:
            texts += [str(t) for t in alternatives]
            weights += [float(w) for w in likelihood[i]]
        else:
            texts.append(str(batch["transcript"][i]).strip())
            weights.append(1.0)
        owners += [k] * (len(alternatives) or 1)
    return texts, np.asarray(owners, dtype=np.int64), np.asarray(weights, dtype=np.float32)


class _TextEncoder(EncoderStage):
    modality = "text"
    input_columns = ("transcript",)
    optional_columns = HYPOTHESIS_COLUMNS

    def active_rows(self, batch):
        transcripts = text_column(batch, "transcript")
        return is_ok(batch) & (np.char.str_len(np.char.strip(transcripts)) > 0)

    def max_length(self) -> int:
        # What both the tokenizer and the position table allow (RoBERTa-style models reserve
        # padding_idx + 1 positions).
        cfg = self.model.config
        positions = int(getattr(cfg, "max_position_embeddings", 512) or 512)
        if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
            positions -= int(getattr(cfg, "pad_token_id", 1) or 1) + 1
        return min(int(getattr(self.tokenizer, "model_max_length", 512) or 512), 512, positions)

    def tokenize(self, texts: list[str]):
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length(),
                              return_tensors="pt").to(self.device)

    def by_length(self, texts: list[str], forward) -> tuple[np.ndarray, ...]:
        """forward(texts) -> numpy arrays (one row a text), run on groups of similar length and
        put back in the order of `texts`."""
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length())["input_ids"]]
        outs = None
        for group in length_groups(lengths, TOKENS_PER_FORWARD.get(self.device.type, 1024)):
            parts = forward([texts[i] for i in group])
            if outs is None:
                outs = tuple(np.empty((len(texts), *p.shape[1:]), p.dtype) for p in parts)
            for out, part in zip(outs, parts):
                out[group] = part
        return outs

    def score(self, batch, rows, forward, *, unit: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(probs, embeddings) of `rows`: forward(texts) over their texts, weighted back to one a row
        (`unit`: the embeddings are unit vectors, and a weighted mean of them is made one again)."""
        texts, owners, weights = texts_to_score(batch, rows)
        probs, emb = self.by_length(texts, forward)
        if len(texts) == len(rows):  # one text a row: nothing to weigh
            return probs, emb
        probs, emb = weighted_by_clip(probs, owners, weights, len(rows)), weighted_by_clip(emb, owners, weights, len(rows))
        return probs, emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12) if unit else emb


class TextClassificationEncoder(_TextEncoder):
    def load(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from mmbatch.models.loading import load_pretrained

        folder = self.load_classifier(AutoModelForSequenceClassification)
        self.tokenizer = load_pretrained(AutoTokenizer, folder, self.config.revision, **self.load_policy)

    def encode(self, batch, rows):
        def forward(texts):
            tok = self.tokenize(texts)
            out = self.model(**tok, output_hidden_states=True)
            emb = mean_pool(out.hidden_states[-1].float(), tok["attention_mask"])
            return self.to_numpy(out.logits.float().softmax(-1)), self.to_numpy(emb)

        probs, emb = self.score(batch, rows, forward)
        self.store(batch, rows, to_sentiment(probs, self.matrix), emb)


def pooling_mode(folder: str) -> str:
    """'mean' or 'cls', from a sentence-transformers 1_Pooling/config.json when present."""
    cfg = Path(folder) / "1_Pooling" / "config.json"
    if cfg.exists():
        data = json.loads(cfg.read_text())
        if data.get("pooling_mode_cls_token"):
            return "cls"
        if data.get("pooling_mode_max_tokens"):
            return "max"
    return "mean"


class TextZeroShotEncoder(_TextEncoder):
    def load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        from mmbatch.models.loading import load_pretrained, resolve_source

        cfg = self.config
        folder = resolve_source(cfg.source, self.storage_options)
        self.model = load_pretrained(AutoModel, folder, cfg.revision, **self.load_policy).to(self.device).eval()
        self.tokenizer = load_pretrained(AutoTokenizer, folder, cfg.revision, **self.load_policy)
        self.pooling = pooling_mode(folder)
        prototypes = cfg.prompts or DEFAULT_TEXT_PROTOTYPES
        with self.torch.inference_mode():
            self.class_embeddings = self.torch.stack(
                [l2_normalise(self.embed(prototypes[c]).mean(0)) for c in ("negative", "neutral", "positive")]
            )

    def embed(self, texts: list[str]):
        tok = self.tokenize(texts)
        hidden = self.model(**tok).last_hidden_state.float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(tok["attention_mask"][..., None] == 0, -1e9).max(1).values
        else:
            pooled = mean_pool(hidden, tok["attention_mask"])
        return l2_normalise(pooled)

    def encode(self, batch, rows):
        def forward(texts):
            emb = self.embed(texts)
            probs = (emb @ self.class_embeddings.T / self.config.temperature).softmax(-1)
            return self.to_numpy(probs), self.to_numpy(emb)

        self.store(batch, rows, *self.score(batch, rows, forward, unit=True))
