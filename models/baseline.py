"""A keyword baseline in the spirit of GDELT/CAMEO event coding.

Actor dictionaries (Taiwan, the PRC, the US, Japan) and one event dictionary
per signal type (`models.lexicon`): a sentence that names a Taiwan actor (or
sits in a Taiwan-related article) and matches an event pattern codes that
signal. It produces the same `Classification` as the model, so
`models.evaluate` can put the two side by side. It is a yardstick, not a
fallback for the model.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.labels import SIGNALS, severity_from_signals
from models.lexicon import ACTORS, EVENTS, words
from models.text import split_sentences
from newswatch.schemas import Article, Classification

__all__ = ["KeywordBaseline"]


# Major military activity (severity 3) rather than a routine incursion (2).
_MAJOR_MILITARY = words(
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
