"""A keyword baseline in the spirit of GDELT/CAMEO event coding.

Actor dictionaries (Taiwan, the PRC, the US, Japan, others) and one event
dictionary per signal type: a sentence that names a Taiwan actor (or sits in a
Taiwan-related article) and matches an event pattern codes that signal. It
produces the same `Classification` as the model, so `models.evaluate` can put
the two side by side. It is a yardstick, not a fallback for the model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from models.labels import SIGNALS, severity_from_signals
from models.text import split_sentences
from newswatch.schemas import Article, Classification

__all__ = ["ACTORS", "EVENTS", "KeywordBaseline"]


def _words(*patterns: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(patterns) + r")", re.IGNORECASE)


#: Actor dictionaries (CAMEO-style actor codes).
ACTORS: dict[str, re.Pattern[str]] = {
    "TWN": _words(
        r"taiwan",
        r"taipei",
        r"formosa",
        r"kinmen",
        r"matsu\b",
        r"penghu",
        r"tsai ing-wen",
        r"lai ching-te",
        r"william lai",
        r"cross-strait",
        r"hsiao bi-khim",
    ),
    "CHN": _words(
        r"china\b",
        r"chinese",
        r"beijing",
        r"\bprc\b",
        r"pla\b",
        r"people's liberation",
        r"xi jinping",
        r"wang yi",
        r"communist party",
        r"ccp\b",
    ),
    "USA": _words(
        r"u\.s\.",
        r"us\b",
        r"united states",
        r"washington",
        r"biden",
        r"trump",
        r"pentagon",
        r"congress",
        r"state department",
        r"pelosi",
    ),
    "JPN": _words(r"japan", r"tokyo", r"takaichi", r"kishida"),
}

#: Event dictionaries, one per signal type.
EVENTS: dict[str, re.Pattern[str]] = {
    "military": _words(
        r"drills?\b",
        r"military exercises?",
        r"war ?games",
        r"live[- ]fire",
        r"incursions?",
        r"air defen[cs]e (?:identification )?zone",
        r"adiz\b",
        r"median line",
        r"warplanes",
        r"fighter jets",
        r"military (?:aircraft|planes|jets)",
        r"warships?",
        r"aircraft carrier",
        r"sorties",
        r"transit(?:s|ed)? (?:the |through the )?(?:taiwan )?strait",
        r"sail(?:s|ed)? through the (?:taiwan )?strait",
        r"missiles? (?:launch|fired|test)",
        r"fires? missiles",
        r"blockade",
        r"encircl",
        r"joint sword",
        r"strait thunder",
        r"simulated (?:strikes|attacks)",
    ),
    "rhetoric": _words(
        r"warn(?:s|ed|ing)?\b",
        r"threat(?:en|ens|ened)\b",
        r"playing with fire",
        r"play with fire",
        r"red line",
        r"counter-?measures",
        r"stern",
        r"vow(?:s|ed)?\b",
        r"smash",
        r"crush",
        r"ultimatum",
        r"by force",
        r"prepare for war",
        r"will not tolerate",
        r"resolutely",
        r"burn(?:ed)? themselves",
    ),
    "economic": _words(
        r"sanction(?:s|ed|ing)?\b",
        r"import bans?",
        r"export bans?",
        r"bans? (?:on )?imports",
        r"bans? (?:the )?(?:import|export)",
        r"suspend(?:s|ed)? (?:imports|trade)",
        r"halt(?:s|ed)? imports",
        r"tariff",
        r"trade (?:restrictions|barriers?|curbs|probe)",
        r"boycott",
        r"travel advisor",
        r"economic coercion",
    ),
    "diplomatic": _words(
        r"summon(?:s|ed)?\b",
        r"recall(?:s|ed)? (?:its |the )?(?:ambassador|envoy)",
        r"sever(?:s|ed)? (?:diplomatic )?ties",
        r"switch(?:es|ed)? (?:diplomatic )?(?:ties|recognition)",
        r"diplomatic (?:ties|recognition|protest|relations)",
        r"(?:formal|lodged?) (?:a )?protests?",
        r"stern representations",
        r"protest(?:s|ed)\b",
        r"deplore",
        r"downgrade",
    ),
    "arms": _words(
        r"arms (?:sales?|package|deal)",
        r"weapons? (?:sales?|package|deal|aid)",
        r"military (?:aid|assistance)",
        r"security assistance",
        r"approv(?:es|ed) (?:the )?(?:potential )?sale",
        r"f-16",
        r"javelin",
        r"harpoon",
        r"patriot",
        r"himars",
        r"troops (?:are )?training",
        r"foreign military (?:sales|financing)",
    ),
    "grayzone": _words(
        r"coast guard",
        r"maritime militia",
        r"undersea cables?",
        r"cyber ?attacks?",
        r"hack(?:ers|ed|ing)\b",
        r"spy(?:ing)?\b",
        r"espionage",
        r"balloons?",
        r"drones?",
        r"separatists?",
        r"die-hard",
    ),
}

# Major military activity (severity 3) rather than a routine incursion (2).
_MAJOR_MILITARY = _words(
    r"drills?\b",
    r"exercises?",
    r"war ?games",
    r"live[- ]fire",
    r"blockade",
    r"encircl",
    r"joint sword",
    r"strait thunder",
    r"missiles? (?:launch|fired)",
    r"fires? missiles",
)


class KeywordBaseline:
    """Dictionary event coder with the model's output shape."""

    name = "keyword-baseline"
    version = "cameo-v1"

    def classify(self, articles: Sequence[Article]) -> list[Classification]:
        """One `Classification` per article."""
        return [self.classify_one(article) for article in articles]

    def classify_one(self, article: Article) -> Classification:
        title = article.title.strip()
        sentences = ([title] if title else []) + split_sentences(article.text)
        taiwan_hits = [bool(ACTORS["TWN"].search(s)) for s in sentences]
        in_title = bool(title) and taiwan_hits[0]
        taiwan_related = in_title or sum(taiwan_hits) >= 2
        hits: dict[str, list[str]] = {name: [] for name in SIGNALS}
        if taiwan_related:
            for sentence in sentences:
                for name in SIGNALS:
                    if EVENTS[name].search(sentence):
                        hits[name].append(sentence)
        signals = [name for name in SIGNALS if hits[name]]
        escalation = taiwan_related and bool(signals)
        severity = severity_from_signals(signals) if escalation else 0
        if "military" in signals and any(_MAJOR_MILITARY.search(s) for s in hits["military"]):
            severity = max(severity, 3)
        evidence = list(dict.fromkeys(s for name in signals for s in hits[name]))[:3]
        mentions = sum(taiwan_hits)
        return Classification(
            taiwan_related=taiwan_related,
            taiwan_score=min(1.0, mentions / 2),
            escalation=escalation,
            escalation_score=1.0 if escalation else 0.0,
            signals=signals,
            signal_scores={name: min(1.0, len(hits[name]) / 2) for name in SIGNALS},
            severity=severity,
            evidence=evidence,
            model=self.name,
            model_version=self.version,
        )
