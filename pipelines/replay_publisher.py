"""Publishing a replay's items to its articles and dead-letter topics, at its pace.

`ReplayPublisher` writes each article with the Kafka record timestamp set to its
event time and waits for the broker's acknowledgement in batches; a record the
broker does not acknowledge fails the replay (`BrokerError`), since a replay with
a hole in its input would report wrong figures. `publish_items` sends everything,
paced by arrival time when a speed is given.

`connectors.publish.Publisher` is not used here: it leaves record timestamps to
the producer (ingest time, not event time), turns failures into logged errors
and dead letters for a later retry, and counts into the live process's metrics.
Both write through `newswatch.topics.make_producer`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka import errors as kafka_errors

from newswatch.config import Settings
from newswatch.errors import BrokerError
from newswatch.schemas import DeadLetter
from newswatch.topics import make_producer
from pipelines.archive import ReplayItem
from pipelines.replay_progress import Progress

__all__ = ["ReplayPublisher", "SentArticle", "publish_items"]


@dataclass
class SentArticle:
    """What the report needs to know about a replayed article."""

    event_ms: int
    arrival_ms: int
    sent_at: float
    """Wall-clock time (s since the epoch) at which it was handed to Kafka."""
    url: str
    fallback: bool


class ReplayPublisher:
    """Writes replay items with record timestamp = event time, acknowledged in batches."""

    def __init__(self, settings: Settings, *, batch: int = 2000) -> None:
        self._articles_topic = settings.kafka.articles_topic
        self._dead_letter_topic = settings.kafka.dead_letter_topic
        self._producer = make_producer(
            settings.bootstrap_servers, client_id="newswatch-replay", linger_ms=20
        )
        self._batch = batch
        self._pending: list[tuple[str, Any]] = []
        self.sent: dict[str, SentArticle] = {}
        self.dead_letters = 0

    def send(self, thing: ReplayItem | DeadLetter) -> None:
        """Hand one article or dead letter to the producer; settle every ``batch`` records."""
        if isinstance(thing, DeadLetter):
            future = self._producer.send(
                self._dead_letter_topic, key=thing.origin.encode(), value=thing.to_bytes()
            )
            self._pending.append((thing.origin, future))
            self.dead_letters += 1
        else:
            article = thing.article
            future = self._producer.send(
                self._articles_topic,
                key=article.id.encode(),
                value=article.to_bytes(),
                timestamp_ms=thing.event_ms,
            )
            self._pending.append((article.id, future))
            self.sent[article.id] = SentArticle(
                thing.event_ms, thing.arrival_ms, time.time(), article.url, thing.fallback
            )
        if len(self._pending) >= self._batch:
            self.settle()

    def settle(self) -> None:
        """Wait until the broker acknowledged everything sent so far."""
        if not self._pending:
            return
        self._producer.flush()
        for key, future in self._pending:
            try:
                future.get(timeout=60)
            except kafka_errors.KafkaError as exc:
                raise BrokerError(f"replay record {key} was not acknowledged: {exc}") from exc
        self._pending = []

    def close(self) -> None:
        """Settle what is pending, then close the producer."""
        try:
            self.settle()
        finally:
            self._producer.close(timeout=30)


def publish_items(
    things: Iterable[ReplayItem | DeadLetter],
    publisher: ReplayPublisher,
    *,
    speed: float | None,
    progress: Progress | None,
    stop: threading.Event,
) -> None:
    """Send everything, pacing by arrival time when ``speed`` is given."""
    first_arrival: int | None = None
    wall_start = time.monotonic()
    count = 0
    for thing in things:
        if stop.is_set():
            break
        if speed is not None and isinstance(thing, ReplayItem):
            if first_arrival is None:
                first_arrival = thing.arrival_ms
            due = wall_start + (thing.arrival_ms - first_arrival) / 1000 / speed
            while not stop.is_set() and time.monotonic() < due:
                # Hand over what is buffered before idling, so the pipeline sees it now.
                publisher.settle()
                stop.wait(min(1.0, due - time.monotonic()))
        publisher.send(thing)
        count += 1
        if progress is not None:
            progress.update(count)
    publisher.settle()
    if progress is not None:
        progress.update(count, force=True)
