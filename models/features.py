"""Lexical features of a model input: actor and event dictionary hits.

The network sees these next to the encoder's pooled states. They come from
the keyword baseline's CAMEO-style dictionaries (`models.baseline`) and tell
the head, per signal type, whether an event word occurs at all and whether it
occurs in a sentence that names a Taiwan actor. Serving computes them per
window with the same function as training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.baseline import ACTORS, EVENTS
from models.labels import SIGNALS

__all__ = ["N_LEXICAL", "lexical_features"]

#: Taiwan in the headline, Taiwan sentence share, China named; then 2 per signal type.
N_LEXICAL = 3 + 2 * len(SIGNALS)


def lexical_features(title: str, sentences: Sequence[str]) -> np.ndarray:
    """Features ``[N_LEXICAL]`` of a headline and the body sentences of one input."""
    units = ([title] if title else []) + list(sentences)
    taiwan = [ACTORS["TWN"].search(u) is not None for u in units]
    out = np.zeros(N_LEXICAL, dtype=np.float32)
    out[0] = float(bool(title) and taiwan[0])
    out[1] = min(sum(taiwan), 3) / 3.0
    out[2] = float(any(ACTORS["CHN"].search(u) for u in units))
    for i, name in enumerate(SIGNALS):
        hits = [EVENTS[name].search(u) is not None for u in units]
        out[3 + 2 * i] = float(any(hits))
        out[4 + 2 * i] = float(any(h and t for h, t in zip(hits, taiwan, strict=True)))
    return out
