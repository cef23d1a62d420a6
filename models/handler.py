"""`EscalationModelHandler`: the classifier as a Beam RunInference model handler.

Usage in a pipeline::

    from apache_beam.ml.inference.base import RunInference
    from models.handler import EscalationModelHandler

    results = articles | "ClassifyArticles" >> RunInference(
        EscalationModelHandler(settings.model)
    )
    # each element: PredictionResult(example=Article, inference=Classification, model_id=version)

The model loads once per worker process (`Shared`), batches follow
``ModelSettings.batch_size`` and ``max_batch_wait``, and metrics go to the
``newswatch`` namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from models.classifier import EscalationClassifier, resolve_artifact
from newswatch import metrics
from newswatch.config import ModelSettings
from newswatch.schemas import Article, Classification

__all__ = ["EscalationModelHandler"]


class EscalationModelHandler(ModelHandler[Article, Classification, EscalationClassifier]):
    """Loads an `EscalationClassifier` and runs it over batches of `Article`s."""

    def __init__(self, settings: ModelSettings) -> None:
        if settings.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {settings.batch_size}")
        if settings.max_batch_wait < 0:
            raise ValueError(f"max_batch_wait must not be negative, not {settings.max_batch_wait}")
        # Fail at construction, before a job starts, when there is no model to load.
        resolve_artifact(settings.artifacts_dir, settings.version)
        super().__init__(
            min_batch_size=1,
            max_batch_size=settings.batch_size,
            max_batch_duration_secs=settings.max_batch_wait or None,
        )
        self._settings = settings

    def load_model(self) -> EscalationClassifier:
        """Load the configured artefact version (once per worker process)."""
        return EscalationClassifier.load(self._settings)

    def run_inference(
        self,
        batch: Sequence[Article],
        model: EscalationClassifier,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        """Classify the batch; each result pairs the article with its `Classification`."""
        with metrics.CLASSIFY_BATCH_SECONDS.time():
            results = model.classify(batch)
        return [
            PredictionResult(example=article, inference=result, model_id=model.version)
            for article, result in zip(batch, results, strict=True)
        ]

    def get_num_bytes(self, batch: Sequence[Article]) -> int:
        """Approximate size of the batch: the UTF-8 length of its titles and texts."""
        return sum(len(a.title.encode()) + len(a.text.encode()) for a in batch)

    def get_metrics_namespace(self) -> str:
        return metrics.NAMESPACE

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        kwargs: dict[str, Any] = {"min_batch_size": 1, "max_batch_size": self._settings.batch_size}
        if self._settings.max_batch_wait > 0:
            # Stateful batching across bundles (state + timers); batches flushed at the
            # end of the input are timestamped at the window's end.
            kwargs["max_batch_duration_secs"] = self._settings.max_batch_wait
        return kwargs

    def share_model_across_processes(self) -> bool:
        return False
