"""Articles and dead letters -> Kafka, acknowledged before anyone moves on.

`Publisher.publish` sends a batch keyed by article id, flushes, and returns
the ids the broker acknowledged (``acks=all``, idempotent producer). Callers
advance their checkpoints for exactly those ids, so nothing is marked done
that Kafka does not hold. An article the broker refuses for what it is (too
large for the topic, a timestamp out of range) can never be sent: it becomes a
dead letter instead, and counts as done once that is acknowledged (the
producer replaces itself after a refusal, see `newswatch.topics.Producer`).
Record timestamps are left to the producer (ingest time);
the source's publication time travels in the payload.

Example::

    with Publisher(settings) as publisher:
        acked = publisher.publish(parsed.good)
        publisher.publish_dead_letters(parsed.bad)
        state.succeeded(..., published=acked)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

from kafka import errors as kafka_errors

from newswatch import metrics
from newswatch.config import Settings
from newswatch.errors import BrokerError
from newswatch.schemas import Article, DeadLetter
from newswatch.topics import REFUSALS, make_producer

__all__ = ["Publisher"]

logger = logging.getLogger(__name__)


class Publisher:
    """A keyed, idempotent producer for the articles and dead-letter topics.

    Args:
        settings: Broker address and topic names.
        timeout: Seconds to wait for acknowledgements of one batch.
        producer: A ready producer to use instead of `make_producer`'s.

    Raises:
        BrokerError: The broker cannot be reached.
    """

    def __init__(self, settings: Settings, *, timeout: float = 150.0, producer: Any = None) -> None:
        self.articles_topic = settings.kafka.articles_topic
        self.dead_letter_topic = settings.kafka.dead_letter_topic
        self.timeout = timeout
        if producer is None:
            try:
                producer = make_producer(
                    settings.bootstrap_servers, client_id="newswatch-connectors"
                )
            except kafka_errors.KafkaError as exc:
                raise BrokerError(
                    f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
                ) from exc
        self._producer = producer
        self._closed = False

    def publish(self, articles: Iterable[Article]) -> list[str]:
        """Send articles keyed by id and wait for the broker.

        Returns:
            Ids of the articles the broker acknowledged, in the order given,
            followed by those it refused and that are now acknowledged dead
            letters; the others failed (logged) and must be sent again later.
        """
        articles = list(articles)
        sends = [
            (index, self._send(self.articles_topic, article.id, article.to_bytes()))
            for index, article in enumerate(articles)
        ]
        settled, refusals = self._settle(self.articles_topic, sends)
        metrics.ARTICLES_PUBLISHED.inc(len(settled))
        acked = [articles[i].id for i in settled]
        refused = [
            dataclasses.replace(
                DeadLetter.of(
                    "publish",
                    error,
                    origin=articles[i].feed or articles[i].url or self.articles_topic,
                    payload=articles[i].to_bytes(),
                    key=articles[i].id,
                ),
                message=f"topic {self.articles_topic} refused the article: {error}",
            )
            for i, error in refusals
        ]
        if refused:
            acked.extend(letter.key for letter in self.publish_dead_letters(refused))
        return acked

    def publish_dead_letters(self, letters: Iterable[DeadLetter]) -> list[DeadLetter]:
        """Send dead letters keyed by their origin and wait for the broker.

        Returns:
            The dead letters the broker acknowledged.
        """
        letters = list(letters)
        sends = [
            (index, self._send(self.dead_letter_topic, letter.origin, letter.to_bytes()))
            for index, letter in enumerate(letters)
        ]
        acked, _ = self._settle(self.dead_letter_topic, sends)
        metrics.count_dead_letters(letters[i] for i in acked)
        return [letters[i] for i in acked]

    def close(self, timeout: float | None = None) -> None:
        """Flush whatever is still buffered, then close the producer."""
        if self._closed:
            return
        self._closed = True
        try:
            self._producer.flush(timeout=timeout or self.timeout)
        except kafka_errors.KafkaError as exc:
            logger.error("could not flush the producer before closing: %s", exc)
        finally:
            self._producer.close(timeout=timeout or self.timeout)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, topic: str, key: str, value: bytes) -> Any:
        try:
            return self._producer.send(topic, key=key.encode("utf-8"), value=value)
        except kafka_errors.KafkaError as exc:
            # Refused before it was buffered: too large, or no metadata for the topic.
            return exc

    def _settle(
        self, topic: str, sends: list[tuple[Any, Any]]
    ) -> tuple[list[Any], list[tuple[Any, BaseException]]]:
        """Flush; the keys the broker acknowledged, and those refused for the record itself."""
        if not sends:
            return [], []
        try:
            self._producer.flush(timeout=self.timeout)
        except kafka_errors.KafkaTimeoutError:
            logger.error("topic %s: no acknowledgement within %.0f s", topic, self.timeout)
        acked: list[Any] = []
        refused: list[tuple[Any, BaseException]] = []
        errors: list[str] = []
        for key, future in sends:
            if isinstance(future, Exception):
                error = future
            elif future.succeeded():
                acked.append(key)
                continue
            elif future.is_done:
                error = future.exception
            else:
                errors.append("not acknowledged in time")
                continue
            errors.append(f"{type(error).__name__}: {error}")
            if isinstance(error, REFUSALS):
                refused.append((key, error))
        if errors:
            logger.error(
                "topic %s: %d of %d records not acknowledged (first: %s)",
                topic,
                len(errors),
                len(sends),
                errors[0],
            )
        return acked, refused
