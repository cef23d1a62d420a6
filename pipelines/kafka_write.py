"""Writing outcomes to Kafka inside Beam: `WriteToKafkaFn` and the records it writes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from kafka import errors as kafka_errors

from newswatch import metrics
from newswatch.retry import retry_kafka
from newswatch.topics import make_producer
from pipelines.offsets import OutcomeAck

__all__ = [
    "OutboundMessage",
    "OutboundRecord",
    "WriteToKafkaFn",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One Kafka message to write."""

    topic: str
    key: bytes
    value: bytes
    timestamp_ms: int | None = None
    """The record's timestamp; None: the time of sending."""


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """The outcome of one input record: messages to write, and the offsets they settle."""

    messages: tuple[OutboundMessage, ...]
    ack: OutcomeAck
    final: bool = True
    """False for a hand-off to a later step (which writes the article's outcome)."""


class WriteToKafkaFn(beam.DoFn):
    """Writes `OutboundRecord`s (acks=all, idempotent) and emits their acks.

    Acks are emitted in ``finish_bundle`` after ``flush()`` returned, i.e. only
    once the broker acknowledged every record of the bundle. A broker that
    cannot be reached is waited for: sends that time out (no metadata, or
    records expired undelivered) are sent again, with a warning, until it is
    back (the producer replaces itself, see `newswatch.topics.Producer`). A
    record the broker refuses fails the bundle.
    """

    def __init__(self, bootstrap_servers: str, **producer_config: object) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._producer_config = producer_config
        """Overrides of `make_producer`'s settings (timeouts, in tests)."""
        self._written = Metrics.counter(metrics.NAMESPACE, "records_written")

    def setup(self) -> None:
        self._producer = retry_kafka(
            "producer", lambda: make_producer(self._bootstrap_servers, **self._producer_config)
        )

    def start_bundle(self) -> None:
        self._pending: list[_Pending] = []

    def process(
        self,
        record: OutboundRecord,
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
    ) -> Iterable[None]:
        futures = [self._send(m) for m in record.messages]
        self._pending.append(_Pending(record, futures, timestamp, window))
        return ()

    def _send(self, message: OutboundMessage):
        """``send``, waiting out a broker that gives no metadata for the topic."""
        began = time.monotonic()
        while True:
            try:
                return self._producer.send(
                    message.topic,
                    key=message.key,
                    value=message.value,
                    timestamp_ms=message.timestamp_ms,
                )
            except kafka_errors.KafkaTimeoutError as exc:
                logger.warning(
                    "writing to %s: %s; broker unreachable for %.0f s, still trying",
                    message.topic,
                    exc,
                    time.monotonic() - began,
                )

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        while True:
            self._producer.flush()
            # Timeouts and other failures that sending again can cure, not refusals.
            undelivered = [
                (entry, i)
                for entry in pending
                for i, future in enumerate(entry.futures)
                if future.retriable()
            ]
            if not undelivered:
                break
            logger.warning("%d records not delivered; sending them again", len(undelivered))
            for entry, i in undelivered:
                entry.futures[i] = self._send(entry.record.messages[i])
        for entry in pending:
            for future in entry.futures:
                # Raises if the broker refused: the bundle fails (and the
                # producer replaces itself, see `newswatch.topics.Producer`).
                future.get(timeout=60)
            self._written.inc(len(entry.futures))
            if entry.record.final:
                metrics.observe_ack_to_outcome(entry.record.ack.timestamp_ms)
            ack = entry.record.ack
            yield WindowedValue(
                (f"{ack.topic}/{ack.partition}", ack), entry.timestamp, [entry.window]
            )

    def teardown(self) -> None:
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.close(timeout=10)


@dataclass(slots=True)
class _Pending:
    """An outbound record of the current bundle and the futures of its sends."""

    record: OutboundRecord
    futures: list
    timestamp: Timestamp
    window: object
