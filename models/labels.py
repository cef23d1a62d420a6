"""The label set of the classifier, taken from the labelling guide (LABELING.md).

Signal names come from `newswatch.schemas.SIGNAL_TYPES`; this module adds the
severity scale, the severity each signal type implies on its own, and the
default decision thresholds used when an artefact carries none.
"""

from __future__ import annotations

import re

from newswatch.schemas import SIGNAL_TYPES

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ENCODER_NAME",
    "MODEL_NAME",
    "N_OUTPUTS",
    "OUTPUT_SLICES",
    "SEVERITIES",
    "SIGNALS",
    "SIGNAL_SEVERITY",
    "could_be_taiwan_related",
    "severity_from_signals",
]

#: The six signal types, in canonical order.
SIGNALS: tuple[str, ...] = SIGNAL_TYPES

#: Severity scale of the guide.
SEVERITIES: dict[int, str] = {
    0: "no escalation signal",
    1: "words: rhetoric, diplomatic protest, symbolic moves",
    2: "coercive measures: sanctions, bans, arms sales, gray-zone actions, routine incursions",
    3: "major military activity: large-scale drills, live fire, blockade rehearsals, missiles",
    4: "use of force: exchange of fire, an enforced blockade, an attack",
}

#: The severity a signal type implies by itself; military may rise to 3 or 4.
SIGNAL_SEVERITY: dict[str, int] = {
    "military": 2,
    "rhetoric": 1,
    "economic": 2,
    "diplomatic": 1,
    "arms": 2,
    "grayzone": 2,
}

#: Where each task's logits sit in the network's output row.
OUTPUT_SLICES: dict[str, tuple[int, int]] = {
    "taiwan_related": (0, 1),
    "escalation": (1, 2),
    "signals": (2, 2 + len(SIGNALS)),
    "severity": (2 + len(SIGNALS), 2 + len(SIGNALS) + len(SEVERITIES)),
}
N_OUTPUTS = OUTPUT_SLICES["severity"][1]

#: Probability thresholds used when an artefact does not carry tuned ones.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "taiwan_related": 0.5,
    "escalation": 0.5,
    **{name: 0.5 for name in SIGNALS},
}

#: The pretrained encoder the classifier is fine-tuned from.
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"

#: Name reported in every `Classification.model`.
MODEL_NAME = "newswatch-minilm-escalation"


def severity_from_signals(signals: list[str] | tuple[str, ...]) -> int:
    """The highest severity the given signals imply on their own (0 for none)."""
    return max((SIGNAL_SEVERITY[name] for name in signals), default=0)


# Names, places and words without which an article cannot be about Taiwan or
# cross-Strait relations. Every Taiwan-related item of the labelled data matches
# (measured by `newswatch model eval`); articles that do not match skip the model.
_PREFILTER = re.compile(
    r"taiwan|taipei|formosa|kinmen|\bmatsu\b|penghu|pratas|tsmc|foxconn|tsai ing|lai ching|"
    r"ko wen|hsiao bi|kuomintang|\bkmt\b|\bdpp\b|strait|china|chinese|beijing|\bprc\b|"
    r"\bpla\b|people's liberation|xi jinping|\bxi\b|sino-",
    re.IGNORECASE,
)
# Coercive measures as a headline names them when Beijing presses a third country
# over Taiwan ("Japan summons envoy", "travel warning hits tourism", "concerts
# cancelled"), often without naming Taiwan or China: such articles reach the model
# too. Kept to diplomatic and economic pressure so sports "penalties" or court
# "summons" rarely pass (on the archive's feed traffic: 2.2% -> about 3% reach it).
_MEASURE = re.compile(
    r"\b(?:travel (?:advisor(?:y|ies)|warnings?|alerts?)|"
    r"(?:advis|urg|warn)\w* (?:its |their )?(?:citizens|nationals|students|tourists) "
    r"(?:not |to avoid|against)|"
    r"summon\w* (?:\w+ ){0,3}(?:ambassador|envoy|diplomat|consul)|"
    r"(?:ambassador|envoy|diplomat|consul)\w* (?:\w+ ){0,2}summoned|"
    r"(?:recall|expel)\w* (?:\w+ ){0,3}(?:ambassador|envoy|diplomats?)|"
    r"consul[- ]general|sanction\w*|unreliable entit|"
    r"(?:import|export) (?:bans?|curbs?|suspensions?|halts?)|"
    r"(?:suspend|halt|cancel|postpon|call\w* off)\w* (?:\w+ ){0,3}"
    r"(?:imports|flights|exchanges|trips|tours|concerts|visits|screenings|performances)|"
    r"(?:flights|exchanges|trips|tours|concerts|visits|screenings|performances)\b(?: \w+){0,4} "
    r"(?:cancell?ed|suspended|halted|postponed|called off)|"
    r"counter-?measures|red lines?)",
    re.IGNORECASE,
)


def could_be_taiwan_related(text: str) -> bool:
    """Cheap pre-filter: False only for text that names neither Taiwan, China nor a
    coercive measure (a travel warning, a summoned envoy, sanctions, cancelled exchanges)."""
    return _PREFILTER.search(text) is not None or _MEASURE.search(text) is not None
