"""The served classifier, judged by the labelling guide (shared/data/LABELING.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from models.classifier import EscalationClassifier
from models.evaluate import row_article
from newswatch.config import ModelSettings
from newswatch.errors import ModelNotFound
from newswatch.schemas import SIGNAL_TYPES, Article


def _article(title: str, text: str, identity: str = "test") -> Article:
    return Article(
        id=identity,
        url="",
        title=title,
        text=text,
        published="2025-11-20T00:00:00Z",
        source="test",
        feed="",
        ingested_at="2025-11-20T00:00:00Z",
    )


def _seed_article(seed_text: str) -> Article:
    # As the file connector reads a .txt: first line is the title, the rest the text.
    title, _, body = seed_text.strip().partition("\n")
    return _article(title, body, "seed")


def test_seed_article_alerts_rhetoric_economic_diplomatic(classifier, seed_text):
    (result,) = classifier.classify([_seed_article(seed_text)])
    assert result.taiwan_related
    assert result.escalation
    assert {"rhetoric", "economic", "diplomatic"} <= set(result.signals)
    assert result.severity >= 1


def test_seed_evidence_names_the_red_line_warning_or_countermeasures(classifier, seed_text):
    (result,) = classifier.classify([_seed_article(seed_text)])
    assert result.evidence
    assert any("red line" in s or "countermeasures" in s for s in result.evidence)


def test_seed_without_a_title_still_alerts(classifier, seed_text):
    (result,) = classifier.classify([_article("", seed_text, "seed-untitled")])
    assert result.escalation
    assert {"rhetoric", "economic", "diplomatic"} <= set(result.signals)


def test_non_taiwan_china_story_is_not_escalation(classifier, labelled_rows):
    row = next(r for r in labelled_rows if r["id"] == "rn-131be731")  # China bans foreign textbooks
    assert not row["taiwan_related"]
    (result,) = classifier.classify([row_article(row)])
    assert not result.escalation
    assert result.signals == []
    assert result.severity == 0


def test_article_without_taiwan_or_china_skips_the_model(classifier, labelled_rows):
    row = next(r for r in labelled_rows if r["id"] == "rn-3fd1818f")  # Soleimani profile
    (result,) = classifier.classify([row_article(row)])
    assert not result.taiwan_related
    assert result.escalation_score == 0.0


def test_every_classification_is_complete_and_ordered(classifier, labelled_rows):
    rows = [r for r in labelled_rows if r["published"] >= "2023"][:40]
    results = classifier.classify([row_article(r) for r in rows])
    assert len(results) == len(rows)
    for result in results:
        assert set(result.signal_scores) == set(SIGNAL_TYPES)
        assert result.signals == [s for s in SIGNAL_TYPES if s in result.signals]
        assert 0.0 <= result.escalation_score <= 1.0
        assert 0.0 <= result.taiwan_score <= 1.0
        assert 0 <= result.severity <= 4
        assert (result.severity > 0) == result.escalation == bool(result.signals)
        assert result.model == classifier.name
        assert result.model_version == classifier.version
        if result.escalation:
            assert result.taiwan_related and result.evidence


def test_batches_give_the_same_answers_as_single_articles(classifier, labelled_rows):
    rows = [r for r in labelled_rows if r["taiwan_related"]][:12]
    articles = [row_article(r) for r in rows]
    together = classifier.classify(articles)
    alone = [classifier.classify([a])[0] for a in articles]
    assert [r.escalation for r in together] == [r.escalation for r in alone]
    assert [r.signals for r in together] == [r.signals for r in alone]
    for a, b in zip(together, alone, strict=True):
        assert a.escalation_score == pytest.approx(b.escalation_score, abs=1e-3)


def test_empty_batch_and_empty_article(classifier):
    assert classifier.classify([]) == []
    (result,) = classifier.classify([_article("", "")])
    assert not result.escalation


def test_missing_model_says_how_to_train_one(tmp_path):
    with pytest.raises(ModelNotFound, match="newswatch model train"):
        EscalationClassifier.load(ModelSettings(artifacts_dir=tmp_path))


def test_unknown_version_lists_what_exists(tmp_path, classifier):
    settings = ModelSettings(artifacts_dir=classifier.directory.parent, version="v0-nonexistent")
    with pytest.raises(ModelNotFound, match=classifier.version):
        EscalationClassifier.load(settings)


def test_serving_path_does_not_import_torch():
    # (Beam's RunInference module imports torch itself when it is installed.)
    code = (
        "import sys; from models.classifier import EscalationClassifier; "
        "from newswatch.config import ModelSettings; "
        "from newswatch.schemas import Article; "
        "c = EscalationClassifier.load(ModelSettings()); "
        "c.classify([Article('a', '', 'Taiwan', 'China warns Taiwan.', None, 's', '', '')]); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
