"""The trainable fusion model: a `transformers.PreTrainedModel` with its own config class.

    per-modality embeddings ─ pool over frames/time (mean|max, masked) ─ linear projection
    into the joint space + a learned modality embedding → one token per modality
    → a learned query attends over the modality tokens (multi-head attention, key-padding
    mask for missing modalities) → LayerNorm → fused embedding
    → sentiment head (3 logits) and valence head (tanh, in [-1, 1]).

`save_pretrained` / `from_pretrained` work as for any Hugging Face model, so a trained head is
versioned, shared and loaded like the encoders (folder, hub id or s3:// folder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from mmbatch.modalities import SCORED as MODALITIES

# The modality tokens of a checkpoint saved before its config named them (the three of schema v2).
FIRST_MODALITIES = ("vision", "audio", "text")


class MultimodalFusionConfig(PretrainedConfig):
    """`modalities`: the model's modality tokens, in order (saved in config.json, so a head trained
    before a modality was added keeps its shape); `<modality>_dim` for each scored modality
    (mmbatch.modalities; 0: not an input); the joint space's size, heads, pooling and dropout."""

    model_type = "mmbatch_fusion"

    def __init__(self, joint_dim: int = 256, num_heads: int = 4, pooling: str = "mean", dropout: float = 0.1,
                 modalities: list[str] | None = None, **kwargs):
        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling must be 'mean' or 'max', got {pooling!r}")
        if joint_dim % num_heads:
            raise ValueError(f"joint_dim {joint_dim} must be divisible by num_heads {num_heads}")
        self.modalities = list(modalities or FIRST_MODALITIES)
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"fusion checkpoint modalities {sorted(unknown)} are not among {', '.join(MODALITIES)}")
        for m in MODALITIES:
            setattr(self, f"{m}_dim", int(kwargs.pop(f"{m}_dim", 0)))
        self.joint_dim, self.num_heads, self.pooling, self.dropout = joint_dim, num_heads, pooling, dropout
        super().__init__(**kwargs)


@dataclass
class FusionOutput(ModelOutput):
    logits: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    valence: torch.Tensor | None = None
    fused_embedding: torch.Tensor | None = None
    modality_weights: torch.Tensor | None = None  # (n, len(config.modalities)) attention over the modalities


def pool(x: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """(n, t, d) → (n, d) over valid steps; (n, d) passes through."""
    if x.dim() == 2:
        return x
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    m = mask.unsqueeze(-1)
    if how == "max":
        return x.masked_fill(~m, float("-inf")).amax(1).nan_to_num(neginf=0.0)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


class MultimodalFusionModel(PreTrainedModel):
    config_class = MultimodalFusionConfig
    base_model_prefix = "fusion"
    main_input_name = "text"

    def __init__(self, config: MultimodalFusionConfig):
        super().__init__(config)
        d = config.joint_dim
        self.proj = nn.ModuleDict({m: nn.Linear(getattr(config, f"{m}_dim"), d)
                                   for m in config.modalities if getattr(config, f"{m}_dim") > 0})
        self.modality_embedding = nn.Parameter(torch.zeros(len(config.modalities), d))
        self.query = nn.Parameter(torch.zeros(1, 1, d))
        self.attention = nn.MultiheadAttention(d, config.num_heads, dropout=config.dropout, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.sentiment_head = nn.Linear(d, 3)
        self.valence_head = nn.Linear(d, 1)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MultimodalFusionModel):
            nn.init.normal_(module.query, std=0.02)
            nn.init.normal_(module.modality_embedding, std=0.02)

    def forward(self, present: torch.Tensor | None = None, **embeddings) -> FusionOutput:
        """Each modality by name (`vision=`, `text=`, ...): (n, d) or (n, t, d), with an optional
        (n, t) step mask as `<name>_mask`.

        `present` (n, len(config.modalities)) bool marks which modalities a row has; a modality passed
        as None or left out is absent for every row. Masked and omitted modalities give identical outputs.
        """
        names = self.config.modalities
        unknown = set(embeddings) - {*names, *(f"{m}_mask" for m in names)}
        if unknown:
            raise TypeError(f"unknown fusion inputs {sorted(unknown)}; this model's modalities are {', '.join(names)}")
        inputs = {m: (embeddings.get(m), embeddings.get(f"{m}_mask")) for m in names}
        n = next(x.shape[0] for x, _ in inputs.values() if x is not None)
        ref = next(x for x, _ in inputs.values() if x is not None)
        d = self.config.joint_dim
        tokens, have = [], []
        for i, m in enumerate(names):
            x, mask = inputs[m]
            if x is None or m not in self.proj:
                tokens.append(ref.new_zeros(n, d))
                have.append(torch.zeros(n, dtype=torch.bool, device=ref.device))
                continue
            tokens.append(self.proj[m](pool(x, mask, self.config.pooling)) + self.modality_embedding[i])
            have.append(torch.ones(n, dtype=torch.bool, device=ref.device) if present is None else present[:, i].bool())
        keys = torch.stack(tokens, 1)  # (n, len(names), d)
        have = torch.stack(have, 1)
        # A row with nothing present would attend to nothing (NaN): let it see all keys and
        # leave it to the caller to mark it failed.
        padding = ~have & have.any(1, keepdim=True)
        fused, weights = self.attention(self.query.expand(n, -1, -1), keys, keys, key_padding_mask=padding,
                                        need_weights=True, average_attn_weights=True)
        fused = self.norm(fused[:, 0])
        logits = self.sentiment_head(fused)
        return FusionOutput(logits=logits, probs=logits.softmax(-1), valence=torch.tanh(self.valence_head(fused))[:, 0],
                            fused_embedding=fused, modality_weights=weights[:, 0])
