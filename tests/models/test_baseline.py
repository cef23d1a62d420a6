"""The keyword baseline gives the model's output shape."""

from __future__ import annotations

from models.baseline import KeywordBaseline
from newswatch.schemas import SIGNAL_TYPES, Article


def _article(title: str, text: str = "") -> Article:
    return Article("a", "", title, text, None, "test", "", "2023-01-01T00:00:00Z")


def test_baseline_codes_a_taiwan_arms_sale_with_sanctions():
    (result,) = KeywordBaseline().classify(
        [_article("China sanctions Lockheed Martin, Raytheon over Taiwan arms sales")]
    )
    assert result.escalation and result.taiwan_related
    assert result.signals == ["economic", "arms"]
    assert result.severity == 2
    assert set(result.signal_scores) == set(SIGNAL_TYPES)
    assert result.evidence == ["China sanctions Lockheed Martin, Raytheon over Taiwan arms sales"]


def test_baseline_ignores_escalation_without_taiwan():
    (result,) = KeywordBaseline().classify(
        [_article("Russia warns of countermeasures over drills")]
    )
    assert not result.taiwan_related and not result.escalation
    assert result.signals == [] and result.severity == 0
