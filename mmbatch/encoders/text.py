"""Text encoders for the clip transcript.

- TextClassificationEncoder: a sentiment / emotion classifier; labels mapped to 3 classes.
- TextZeroShotEncoder: a sentence-embedding model; the transcript's embedding is compared
  with prototype sentences per class, softmax(similarity / temperature).
Both pool the last hidden state (mean over tokens, or as the model's pooling config says)
into the clip's text embedding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmbatch.encoders.base import EncoderStage, is_ok, l2_normalise, mean_pool
from mmbatch.encoders.labels import to_sentiment
from mmbatch.encoders.text_prototypes import DEFAULT_TEXT_PROTOTYPES


class _TextEncoder(EncoderStage):
    modality = "text"
    input_columns = ("transcript",)

    def active_rows(self, batch):
        transcripts = np.asarray(batch.get("transcript", np.array([""] * len(batch["video_id"])))).astype(str)
        return is_ok(batch) & (np.char.str_len(np.char.strip(transcripts)) > 0)

    def tokenize(self, texts: list[str]):
        # Truncate to what both the tokenizer and the position table allow (RoBERTa-style
        # models reserve padding_idx + 1 positions).
        cfg = self.model.config
        positions = int(getattr(cfg, "max_position_embeddings", 512) or 512)
        if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
            positions -= int(getattr(cfg, "pad_token_id", 1) or 1) + 1
        max_len = min(int(getattr(self.tokenizer, "model_max_length", 512) or 512), 512, positions)
        return self.tokenizer(texts, padding=True, truncation=True, max_length=max_len,
                              return_tensors="pt").to(self.device)

    def texts(self, batch, rows) -> list[str]:
        return [str(batch["transcript"][i]).strip() for i in rows]


class TextClassificationEncoder(_TextEncoder):
    def load(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from mmbatch.models.loading import load_pretrained

        folder = self.load_classifier(AutoModelForSequenceClassification)
        self.tokenizer = load_pretrained(AutoTokenizer, folder, self.config.revision, **self.load_policy)

    def encode(self, batch, rows):
        tok = self.tokenize(self.texts(batch, rows))
        out = self.model(**tok, output_hidden_states=True)
        probs = to_sentiment(self.to_numpy(out.logits.float().softmax(-1)), self.matrix)
        emb = mean_pool(out.hidden_states[-1].float(), tok["attention_mask"])
        self.store(batch, rows, probs, self.to_numpy(emb))


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
        emb = self.embed(self.texts(batch, rows))
        sims = emb @ self.class_embeddings.T
        probs = (sims / self.config.temperature).softmax(-1)
        self.store(batch, rows, self.to_numpy(probs), self.to_numpy(emb))
