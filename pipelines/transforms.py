"""The steps of the classification pipeline, between the Kafka read and write.

Every Kafka record gets exactly one outcome: an `OutboundRecord` carrying a
decision (plus an alert when the article is an escalation) or a dead letter.
Each outcome carries the `OutcomeAck` of its input record, so offsets are
committed only after the outcome is written.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference

from newswatch import metrics
from newswatch.config import KafkaSettings
from newswatch.schemas import (
    Alert,
    Article,
    Classification,
    ClassifiedArticle,
    DeadLetter,
    Decision,
    SchemaError,
)
from pipelines.kafka_read import KafkaRecord
from pipelines.kafka_write import OutboundMessage, OutboundRecord
from pipelines.offsets import OutcomeAck

__all__ = [
    "ClassifyArticles",
    "DecodeArticleFn",
    "DecodeArticles",
    "DecodeClassifiedFn",
    "HandOff",
    "RouteOutcomesFn",
    "decode_article",
]

#: Articles longer than this (title + text, in characters) are dead-lettered as too large.
MAX_ARTICLE_CHARS = 1_000_000


_TEXT_FIELDS = ("id", "url", "title", "text", "source", "feed", "ingested_at")
_OPTIONAL_TEXT_FIELDS = ("published", "language")


def decode_article(payload: bytes | None) -> Article:
    """An `Article` from a record value, checked so that every later step can handle it.

    `Article.from_bytes` refuses fields of the wrong JSON type; ``\\ud800``
    escapes give strings that cannot be encoded again and would crash a later
    step (and with it the bundle, again on every retry), so they are refused here.

    Raises:
        SchemaError: Not an article, or one no later step could handle.
    """
    try:
        article = Article.from_bytes(payload)
    except RecursionError as exc:  # json gives up on very deep nesting this way
        raise SchemaError("Article: payload is not JSON (nested too deeply)") from exc
    for name in _TEXT_FIELDS + _OPTIONAL_TEXT_FIELDS:
        value = getattr(article, name)
        try:
            if value is not None:
                value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SchemaError(f"Article: {name} is not valid Unicode ({exc.reason})") from exc
    size = len(article.title) + len(article.text)
    if size > MAX_ARTICLE_CHARS:
        raise SchemaError(f"article too large: {size} characters (limit {MAX_ARTICLE_CHARS})")
    return article


class DecodeArticleFn(beam.DoFn):
    """Kafka record → (ack, Article), or a dead letter for anything unreadable."""

    DEAD = "dead"

    def __init__(self, dead_letter_topic: str) -> None:
        self._dead_letter_topic = dead_letter_topic
        self._decoded = Metrics.counter(metrics.NAMESPACE, "articles_decoded")
        self._dead = Metrics.counter(metrics.NAMESPACE, "dead_letters_decode")

    def process(self, record: KafkaRecord) -> Iterator:
        try:
            article = decode_article(record.value)
        except SchemaError as exc:
            self._dead.inc()
            yield _undecodable(record, exc, self._dead_letter_topic, self.DEAD)
            return
        self._decoded.inc()
        yield record.ack(), article


def _undecodable(
    record: KafkaRecord, error: Exception, topic: str, tag: str
) -> beam.pvalue.TaggedOutput:
    """The decode dead letter of a record no step can read, on output ``tag``."""
    metrics.DEAD_LETTERS.labels(stage="decode").inc()
    key = record.key.decode("utf-8", "replace") if record.key else None
    letter = DeadLetter.of("decode", error, record.origin, record.value, key=key)
    return beam.pvalue.TaggedOutput(tag, _dead_letter_record(topic, letter, record.ack()))


def _dead_letter_record(topic: str, letter: DeadLetter, ack: OutcomeAck) -> OutboundRecord:
    return OutboundRecord(
        messages=(OutboundMessage(topic, letter.origin.encode(), letter.to_bytes()),), ack=ack
    )


class DecodeArticles(beam.PTransform):
    """Returns ``good, bad``: keyed articles and dead-letter records."""

    def __init__(self, dead_letter_topic: str) -> None:
        super().__init__()
        self._dead_letter_topic = dead_letter_topic

    def expand(self, records):
        outputs = records | "Decode" >> beam.ParDo(
            DecodeArticleFn(self._dead_letter_topic)
        ).with_outputs(DecodeArticleFn.DEAD, main="good")
        return outputs.good, outputs[DecodeArticleFn.DEAD]


class ClassifyArticles(beam.PTransform):
    """RunInference with the escalation model; failed batches become dead letters.

    Returns ``good, bad``: (ack, PredictionResult) pairs and dead-letter records.
    """

    def __init__(self, model_handler, dead_letter_topic: str) -> None:
        super().__init__()
        self._model_handler = KeyedModelHandler(model_handler)
        self._dead_letter_topic = dead_letter_topic

    def expand(self, keyed_articles):
        good, failed = (
            keyed_articles
            | "RunInference" >> RunInference(self._model_handler).with_exception_handling()
        )
        bad = failed.failed_inferences | "FailedBatches" >> beam.FlatMap(
            _failed_batch_to_dead_letters, self._dead_letter_topic
        )
        return good, bad


class HandOff(beam.PTransform):
    """Predictions → their story step: Taiwan-related ones travel over the classified topic
    (one partition, so one worker of the group builds every story), the others pass.

    Returns ``passed, handed``: (ack, prediction) pairs for routing here, and the
    `OutboundRecord`s that write the Taiwan-related ones to the classified topic
    (their article offsets are settled once that is written).
    """

    def __init__(self, classified_topic: str) -> None:
        super().__init__()
        self._topic = classified_topic

    def expand(self, predictions):
        taiwan, passed = predictions | "TaiwanRelated" >> beam.Partition(
            lambda element, n: 0 if element[1].inference.taiwan_related else 1, 2
        )
        handed = taiwan | "ToClassifiedTopic" >> beam.Map(_hand_off_record, self._topic)
        return passed, handed


def _hand_off_record(element: tuple, topic: str) -> OutboundRecord:
    ack, prediction = element
    article: Article = prediction.example
    record = ClassifiedArticle(article=article, classification=prediction.inference)
    # With the article record's timestamp: the story step's latency and event time count
    # from the article's arrival, not from the hand-off.
    message = OutboundMessage(topic, article.id.encode(), record.to_bytes(), ack.timestamp_ms)
    return OutboundRecord(messages=(message,), ack=ack, final=False)


class DecodeClassifiedFn(beam.DoFn):
    """Classified-topic record → (ack, prediction) again, or a dead letter."""

    DEAD = "dead"

    def __init__(self, dead_letter_topic: str) -> None:
        self._dead_letter_topic = dead_letter_topic

    def process(self, record: KafkaRecord) -> Iterator:
        try:
            handed = ClassifiedArticle.from_bytes(record.value)
            decode_article(handed.article.to_bytes())
        except (SchemaError, TypeError, ValueError) as exc:
            yield _undecodable(record, exc, self._dead_letter_topic, self.DEAD)
            return
        yield record.ack(), PredictionResult(handed.article, handed.classification)


def _failed_batch_to_dead_letters(failure, topic: str) -> Iterator[OutboundRecord]:
    """One dead letter per article of a batch the model failed on."""
    batch, error = failure
    # Beam reports the failure as (exception type, repr(exception), traceback lines).
    if isinstance(error, tuple) and error and isinstance(error[0], type):
        error = f"{error[0].__name__}: {error[1] if len(error) > 1 else ''}"
    for ack, article in batch:
        letter = DeadLetter.of(
            "classify",
            error if isinstance(error, BaseException) else str(error),
            f"{ack.topic}/{ack.partition}@{ack.end - 1}",
            article.to_bytes() if isinstance(article, Article) else repr(article),
            key=getattr(article, "id", None),
        )
        metrics.DEAD_LETTERS.labels(stage="classify").inc()
        yield _dead_letter_record(topic, letter, ack)


class RouteOutcomesFn(beam.DoFn):
    """(ack, prediction[, story messages]) → one OutboundRecord.

    The record holds the article's decision, an alert if it escalates, and the
    story records and story alerts its story step produced, so they are all
    written before the article's offset is committed.
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        self._alerts_topic = kafka.alerts_topic
        self._decisions_topic = kafka.decisions_topic
        self._alerts = Metrics.counter(metrics.NAMESPACE, "alerts")
        self._no_alerts = Metrics.counter(metrics.NAMESPACE, "no_alert_decisions")

    def process(self, element: tuple) -> Iterator[OutboundRecord]:
        ack, prediction, *more = element
        article: Article = prediction.example
        result: Classification = prediction.inference
        decision = Decision.from_classification(article, result)
        metrics.DECISIONS.inc()
        messages = [
            OutboundMessage(self._decisions_topic, article.id.encode(), decision.to_bytes())
        ]
        if result.escalation:
            alert = Alert.from_classification(article, result)
            messages.insert(
                0, OutboundMessage(self._alerts_topic, alert.alert_id.encode(), alert.to_bytes())
            )
            self._alerts.inc()
            metrics.ALERTS.inc()
        else:
            self._no_alerts.inc()
        for story_messages in more:
            messages.extend(story_messages)
        yield OutboundRecord(messages=tuple(messages), ack=ack)


#: Typed output of the writer, so the commit stage gets a deterministic key coder.
AckKV = typing.Tuple[str, OutcomeAck]  # noqa: UP006 - Beam type hints want typing.Tuple
