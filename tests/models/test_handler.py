"""EscalationModelHandler inside a real Beam pipeline (RunInference)."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models.evaluate import row_article
from models.handler import EscalationModelHandler
from newswatch.config import ModelSettings
from newswatch.errors import ModelNotFound
from newswatch.schemas import Classification


def _rows(labelled_rows: list[dict]) -> list[dict]:
    wanted = ("rn-3fd1818f", "rn-131be731")
    plain = [r for r in labelled_rows if r["id"] in wanted]
    alerts = [r for r in labelled_rows if r["escalation"] and r["published"] >= "2023"][:2]
    return plain + alerts


def test_handler_batches_from_settings():
    handler = EscalationModelHandler(ModelSettings(batch_size=7, max_batch_wait=0.25))
    assert handler.batch_elements_kwargs() == {
        "min_batch_size": 1,
        "max_batch_size": 7,
        "max_batch_duration_secs": 0.25,
    }
    assert handler.get_metrics_namespace() == "newswatch"
    assert not handler.share_model_across_processes()


def test_handler_refuses_to_start_without_a_model(tmp_path):
    with pytest.raises(ModelNotFound, match="newswatch model train"):
        EscalationModelHandler(ModelSettings(artifacts_dir=tmp_path))


def test_run_inference_pairs_each_article_with_its_classification(classifier, labelled_rows):
    handler = EscalationModelHandler(ModelSettings())
    articles = [row_article(r) for r in _rows(labelled_rows)]
    results = list(handler.run_inference(articles, classifier))
    assert [r.example for r in results] == articles
    assert all(isinstance(r.inference, Classification) for r in results)
    assert all(r.model_id == classifier.version for r in results)


def test_handler_classifies_inside_a_beam_pipeline(classifier, labelled_rows):
    rows = _rows(labelled_rows)
    expected = [
        (r.example.id, r.inference.escalation)
        for r in EscalationModelHandler(ModelSettings()).run_inference(
            [row_article(x) for x in rows], classifier
        )
    ]
    assert [e for _, e in expected] == [False, False, True, True]
    with TestPipeline(runner="DirectRunner") as pipeline:
        results = (
            pipeline
            | "CreateArticles" >> beam.Create([row_article(r) for r in rows])
            | "ClassifyArticles" >> RunInference(EscalationModelHandler(ModelSettings()))
        )
        pairs = results | "ToPairs" >> beam.Map(_pair)
        assert_that(pairs, equal_to(expected))


def _pair(result: PredictionResult) -> tuple[str, bool]:
    return result.example.id, result.inference.escalation
