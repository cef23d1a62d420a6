"""Frozen-encoder features of labelled rows, cached on disk by content hash.

Training and the rolling-origin evaluation fit many small heads on the same
rows; the encoder pass is the slow part, so each model input is encoded once
and its pooled states are kept under ``<artifacts>/.cache/``, keyed by the
sha256 of the encoder's identity and the input text. A changed row (or a new
one) is a new key; nothing is ever stale. Training-time only (imports torch).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.classifier import MAX_TOKENS, document_inputs, load_tokenizer
from models.encoder import POOL_LAYERS, EscalationNet, encoder_dir
from models.evaluate import row_article
from models.labels import ENCODER_NAME

__all__ = ["FeatureCache", "RowInputs", "encoder_key", "row_inputs"]

logger = logging.getLogger(__name__)


def encoder_key(max_tokens: int = MAX_TOKENS) -> str:
    """What determines an input's pooled features besides its text."""
    layers = ",".join(map(str, POOL_LAYERS))
    return f"{ENCODER_NAME}|mean-pooled layers {layers}|l2|max_tokens={max_tokens}"


class RowInputs:
    """Model inputs of labelled rows exactly as serving builds them (first window)."""

    def __init__(self, texts: list[str], titles: list[str], lexical: np.ndarray) -> None:
        self.texts = texts
        self.titles = titles
        self.lexical = lexical


def row_inputs(rows: Sequence[dict[str, Any]], lexical: str = "v2") -> RowInputs:
    """The input text, headline and lexical features of each row.

    Labelled rows are short; should one be long, its first window stands for it.
    """
    texts, titles, features = [], [], []
    for row in rows:
        article = row_article(row)
        inputs = document_inputs(article.title, article.text, lexical=lexical)
        texts.append(inputs.texts[0])
        titles.append(inputs.headlines[0])
        features.append(inputs.lexical[0])
    return RowInputs(texts, titles, np.stack(features) if features else np.zeros((0, 0)))


class FeatureCache:
    """Pooled encoder states of texts, computed once per (encoder, text) and kept on disk."""

    def __init__(
        self,
        directory: Path,
        *,
        max_tokens: int = MAX_TOKENS,
        threads: int = 2,
        seed: int = 13,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.key = encoder_key(max_tokens)
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:12]
        self.path = Path(directory) / f"features-{digest}.npz"
        self.max_tokens = max_tokens
        self.threads = threads
        self.seed = seed
        self.progress = progress
        self._net: EscalationNet | None = None
        self._store: dict[str, np.ndarray] = {}
        self._dirty = False
        if self.path.is_file():
            with np.load(self.path) as saved:
                self._store = dict(zip(saved["keys"].tolist(), saved["values"], strict=True))

    def _hash(self, text: str) -> str:
        return hashlib.sha256(f"{self.key}\0{text}".encode()).hexdigest()

    @property
    def net(self) -> EscalationNet:
        """The frozen network (loaded on first use)."""
        if self._net is None:
            torch.set_num_threads(self.threads)
            torch.use_deterministic_algorithms(True)
            torch.manual_seed(self.seed)
            self._net = EscalationNet.from_pretrained()
        return self._net

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled states ``[len(texts), dim]``; encodes only texts not cached yet."""
        hashes = [self._hash(t) for t in texts]
        todo = list(dict.fromkeys(h for h in hashes if h not in self._store))
        if todo:
            wanted = {h: t for h, t in zip(hashes, texts, strict=True) if h in set(todo)}
            self._encode([wanted[h] for h in todo], todo, self.progress)
        return np.stack([self._store[h] for h in hashes]) if hashes else np.zeros((0, 0))

    def _encode(
        self, texts: list[str], hashes: list[str], progress: Callable[[str], None] | None
    ) -> None:
        net = self.net
        tokenizer = load_tokenizer(encoder_dir() / "tokenizer.json", self.max_tokens)
        ids = [e.ids for e in tokenizer.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        started = time.monotonic()
        with torch.inference_mode():
            for begin in range(0, len(order), 64):
                chunk = order[begin : begin + 64]
                width = max(len(ids[i]) for i in chunk)
                input_ids = torch.zeros((len(chunk), width), dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                pooled = net.pooled(input_ids, mask).numpy()
                for row, i in enumerate(chunk):
                    self._store[hashes[i]] = pooled[row]
                if progress and begin // 64 % 10 == 0:
                    progress(
                        f"encoded {min(begin + 64, len(order))}/{len(order)} new texts, "
                        f"elapsed {time.monotonic() - started:.1f}s"
                    )
        self._dirty = True
        if progress:
            progress(f"encoded {len(order)} new texts in {time.monotonic() - started:.1f}s")
        self.save()

    def save(self) -> None:
        """Write the cache atomically (when something was added)."""
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.stem}.tmp.npz")
        keys = np.array(list(self._store), dtype="U64")
        values = np.stack(list(self._store.values())).astype(np.float32)
        np.savez(staging, keys=keys, values=values)
        staging.replace(self.path)
        self._dirty = False
