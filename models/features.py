"""Lexical features of a model input: actor, measure and framing dictionary hits.

The network sees these next to the encoder's pooled states; serving computes
them per window with the same function as training. Two sets exist, named in
each artefact's ``meta.json`` (``lexical``):

- ``v2``: the CAMEO-style dictionaries the keyword baseline codes with
  (`models.lexicon`): per signal type, whether an event word occurs at all and
  whether it occurs in a sentence that names a Taiwan actor.
- ``v3``: ``v2`` plus families of coercive *measures* named without their
  target (travel advisories, suspended exchanges or flights, sanctions and
  entity lists, trade curbs, summoned or recalled envoys, official threats),
  each as: anywhere, in the headline, beside a Chinese state actor, beside a
  Taiwan actor, in an input naming Taiwan; and cues of pieces that report no
  new event (a question or analysis headline, conditional wording, polls and
  campaigns). The measure
  families carry over to a new target (a third country pressed over Taiwan),
  which the v2 words, learned from Taiwan's own episodes, do not; so does a
  measure reported in an input that names Taiwan elsewhere (the headline, another
  sentence), which tells it from the same measure in a dispute without Taiwan.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from models.labels import SIGNALS
from models.lexicon import ACTORS, EVENTS, words

__all__ = [
    "LEXICAL_SETS",
    "MEASURES",
    "MEASURE_SIGNAL",
    "N_LEXICAL",
    "lexical_features",
    "measure_in_taiwan_columns",
    "n_lexical",
]

#: Taiwan in the headline, Taiwan sentence share, China named; then 2 per signal type.
N_LEXICAL = 3 + 2 * len(SIGNALS)


#: A Chinese state actor: the state, its organs and its officials' titles.
_CHINESE_STATE = words(
    r"china\b",
    r"chinese (?:government|foreign|defen[cs]e|commerce|embassy|consul|ambassador|envoy|"
    r"military|navy|coast guard|officials?|authorities|state media|ministry|spokes)",
    r"beijing",
    r"\bprc\b",
    r"pla\b",
    r"people's liberation",
    r"xi jinping",
    r"wang yi",
    r"communist party",
    r"ccp\b",
    r"taiwan affairs office",
    r"foreign ministry spokes",
)

#: Coercive measures, named whoever applies them and whoever they target.
MEASURES: dict[str, re.Pattern[str]] = {
    "travel": words(
        r"travel (?:advisor(?:y|ies)|warnings?|alerts?|notices?)",
        r"(?:advis|urg|remind|warn|tell)\w* (?:its |their )?(?:citizens|nationals|students|"
        r"tourists|travell?ers|people)",
        r"avoid (?:travel|travell?ing|visiting|trips?)",
        r"(?:safety|security) (?:warnings?|reminders?|alerts?)",
    ),
    "suspend": words(
        r"(?:suspend|halt|cancel|postpon|call(?:s|ed)? off|scrap|freez|cut)\w* (?:\w+ ){0,3}"
        r"(?:flights?|exchanges?|trips?|tours?|visits?|concerts?|events?|imports?|exports?|"
        r"talks|dialogues?|cooperation|screenings?|performances?|shows?|bookings?|"
        r"agreements?|deals?|projects?|orders?)",
        r"cancell?ations?",
        r"boycotts?",
    ),
    "sanction": words(
        r"sanction\w*",
        r"unreliable entit",
        r"(?:export[- ]control|entity|black)[- ]?list",
        r"blacklist\w*",
        r"entry bans?",
        r"barred from entering",
        r"asset freez",
        r"punish\w*",
        r"penalt(?:y|ies)",
    ),
    "trade": words(
        r"(?:import|export|trade) (?:bans?|curbs?|restrictions?|controls?|barriers?|probes?)",
        r"ban\w* (?:\w+ ){0,2}(?:imports?|exports?|sales?|products?|goods)",
        r"tariffs?",
        r"anti-?dumping",
        r"economic (?:coercion|pressure|retaliation)",
        r"(?:seafood|fruit|fish|beef|food) (?:ban|import)",
        r"rare earths?",
    ),
    "envoy": words(
        r"summon\w*",
        r"recall\w* (?:\w+ ){0,2}(?:ambassador|envoy|diplomats?)",
        r"expel\w* (?:\w+ ){0,2}(?:ambassador|envoy|diplomats?)",
        r"persona non grata",
        r"(?:stern|solemn|strong|formal) (?:protests?|representations|démarche|demarche)",
        r"lodg\w* (?:a |an )?(?:\w+ )?(?:protest|complaint|representations)",
        r"downgrad\w* (?:\w+ ){0,2}(?:ties|relations)",
        r"(?:sever|cut|break|switch)\w* (?:\w+ ){0,2}(?:ties|relations|recognition)",
        r"rebuk\w*",
        r"retract",
    ),
    "threat": words(
        r"warn(?:s|ed|ing)?\b",
        r"threat(?:en|ens|ened)?\b",
        r"consequences",
        r"counter-?measures",
        r"playing with fire",
        r"red lines?",
        r"resolute(?:ly)?",
        r"will not (?:sit idly|tolerate|allow)",
        r"pay (?:a |the )?(?:heavy )?price",
        r"crush\w*",
        r"smash\w*",
        r"retaliat\w*",
        r"ultimatum",
        r"by force",
        r"provocat\w*",
    ),
}

#: A piece that discusses or forecasts rather than reports an event.
_NO_EVENT_HEADLINE = words(
    r"analysis",
    r"opinion",
    r"explainer",
    r"explained",
    r"podcast",
    r"newsletter",
    r"briefing",
    r"what to know",
    r"what (?:is|are|would|will|does|if)",
    r"how\b",
    r"why\b",
    r"could\b",
    r"would\b",
    r"might\b",
    r"if\b",
    r"risks?\b",
    r"fears?\b",
    r"war ?games?",
    r"scenario",
    r"lessons",
    r"view\b",
    r"the case for",
    r"interview",
)
_CONDITIONAL = words(r"could", r"would", r"might", r"may\b", r"if\b", r"should", r"whether")
_ROUTINE = words(
    r"polls?\b",
    r"surveys?\b",
    r"elections?\b",
    r"vot(?:e|es|ers|ing)\b",
    r"campaign\w*",
    r"candidates?",
    r"ballots?",
    r"earthquake",
    r"typhoon",
    r"semiconductor",
    r"chips?\b",
    r"earnings",
)

#: Lexical feature sets by name (see the module docstring).
LEXICAL_SETS = ("v2", "v3")
_N = {"v2": N_LEXICAL, "v3": N_LEXICAL + 1 + 5 * len(MEASURES) + 4}


def n_lexical(kind: str = "v2") -> int:
    """Number of lexical features of a set."""
    try:
        return _N[kind]
    except KeyError:
        known = ", ".join(LEXICAL_SETS)
        raise ValueError(f"unknown lexical feature set {kind!r} ({known})") from None


#: The signal type each measure family codes when it is reported in a Taiwan story
#: (the guide: advisories, cancelled exchanges, sanctions and trade curbs are economic;
#: summoned or recalled envoys diplomatic; official threats rhetoric).
MEASURE_SIGNAL = {
    "travel": "economic",
    "suspend": "economic",
    "sanction": "economic",
    "trade": "economic",
    "envoy": "diplomatic",
    "threat": "rhetoric",
}


def measure_in_taiwan_columns(kind: str) -> dict[str, int]:
    """Column of 'measure family in an input naming Taiwan', per family (empty for v2)."""
    if kind == "v2":
        return {}
    n_lexical(kind)
    return {name: N_LEXICAL + 1 + 5 * i + 4 for i, name in enumerate(MEASURES)}


def lexical_features(title: str, sentences: Sequence[str], kind: str = "v2") -> np.ndarray:
    """Features ``[n_lexical(kind)]`` of a headline and the body sentences of one input."""
    units = ([title] if title else []) + list(sentences)
    taiwan = [ACTORS["TWN"].search(u) is not None for u in units]
    out = np.zeros(n_lexical(kind), dtype=np.float32)
    out[0] = float(bool(title) and taiwan[0])
    out[1] = min(sum(taiwan), 3) / 3.0
    out[2] = float(any(ACTORS["CHN"].search(u) for u in units))
    for i, name in enumerate(SIGNALS):
        hits = [EVENTS[name].search(u) is not None for u in units]
        out[3 + 2 * i] = float(any(hits))
        out[4 + 2 * i] = float(any(h and t for h, t in zip(hits, taiwan, strict=True)))
    if kind == "v2":
        return out
    china = [_CHINESE_STATE.search(u) is not None for u in units]
    column = N_LEXICAL
    out[column] = float(bool(title) and china[0])
    column += 1
    about_taiwan = any(taiwan)
    for pattern in MEASURES.values():
        hits = [pattern.search(u) is not None for u in units]
        out[column] = float(any(hits))
        out[column + 1] = float(bool(title) and hits[0])
        out[column + 2] = float(any(h and c for h, c in zip(hits, china, strict=True)))
        out[column + 3] = float(any(h and t for h, t in zip(hits, taiwan, strict=True)))
        # The measure in an input that names Taiwan anywhere (its headline, another
        # sentence): pressure on a third country reported as part of a Taiwan story.
        out[column + 4] = float(any(hits) and about_taiwan)
        column += 5
    out[column] = float(bool(title) and title.rstrip().endswith("?"))
    out[column + 1] = float(bool(title) and _NO_EVENT_HEADLINE.search(title) is not None)
    out[column + 2] = min(sum(_CONDITIONAL.search(u) is not None for u in units), 3) / 3.0
    out[column + 3] = float(any(_ROUTINE.search(u) for u in units))
    return out
