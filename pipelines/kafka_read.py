"""Reading Kafka partitions inside Beam: the records the pipeline reads, and the reader.

The pipeline reads the articles topic with `ReadFromKafkaPartitions`, an
unbounded splittable DoFn over one Kafka partition per element (kafka-python
underneath; `pipelines.groupread` reads as a consumer-group member instead).
Outcomes are written by `pipelines.kafka_write` and offsets committed by
`pipelines.offsets` only after every record up to an offset has had its outcome
durably written: at-least-once processing on any Beam runner without relying
on runner checkpoints; outcomes are keyed deterministically, so duplicates after
a crash are removed by key downstream.

Python-native I/O keeps the local runner free of a JVM expansion service.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp
from kafka import TopicPartition
from kafka import errors as kafka_errors

from newswatch import metrics
from newswatch.topics import make_consumer
from pipelines.offsets import OutcomeAck

__all__ = [
    "MAX_CLOCK_SKEW",
    "RECONNECT_DELAY",
    "CheckpointOnlyRestrictions",
    "CheckpointOnlyTracker",
    "KafkaRecord",
    "PartitionSpec",
    "ReadFromKafkaPartitions",
    "event_time",
    "plan_partitions",
    "request_stop",
    "reset_stop",
    "stop_requested",
]

logger = logging.getLogger(__name__)

_UNBOUNDED = 2**63 - 1


# Set to drain: readers finish their restrictions, so the job completes once
# in-flight records are written and committed. Readers run in this process
# under the local runner (LOOPBACK workers).
_STOP = threading.Event()


def request_stop() -> None:
    """Ask every partition reader in this process to stop reading (drain)."""
    _STOP.set()


def reset_stop() -> None:
    """Clear a previous stop request before a new run."""
    _STOP.clear()


def stop_requested() -> bool:
    """True once `request_stop` asked the readers of this process to drain."""
    return _STOP.is_set()


@dataclass(frozen=True, slots=True)
class PartitionSpec:
    """One partition to read, from ``start`` to ``stop`` (None: forever)."""

    bootstrap_servers: str
    topic: str
    partition: int
    start: int
    stop: int | None = None


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """A record as read from Kafka, with the offset range it accounts for.

    ``claimed_from`` is the reader's position before this record: offsets in
    [claimed_from, offset] are settled once this record's outcome is written
    (gaps come from compaction or transaction markers).
    """

    topic: str
    partition: int
    offset: int
    claimed_from: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    @classmethod
    def of(cls, record, claimed_from: int) -> KafkaRecord:
        """From kafka-python's ``ConsumerRecord``, read at position ``claimed_from``."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            claimed_from=claimed_from,
            key=record.key,
            value=record.value,
            timestamp_ms=record.timestamp,
        )

    @property
    def origin(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"

    def ack(self) -> OutcomeAck:
        return OutcomeAck(
            self.topic, self.partition, self.claimed_from, self.offset + 1, self.timestamp_ms
        )


def plan_partitions(
    bootstrap_servers: str, topic: str, group_id: str, until_end: bool = False
) -> list[PartitionSpec]:
    """Partitions of ``topic`` with their resume positions for ``group_id``.

    Resumes from the group's committed offset, else from the earliest offset.
    With ``until_end`` each partition stops at its current end offset, making
    the read bounded (``newswatch run --until-idle`` and replays).
    """
    consumer = make_consumer(bootstrap_servers, group_id=group_id)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist on {bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        beginning = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps) if until_end else {}
        specs = []
        for tp in tps:
            committed = consumer.committed(tp)
            start = max(committed or 0, beginning[tp])
            specs.append(PartitionSpec(bootstrap_servers, topic, tp.partition, start, end.get(tp)))
        return specs
    finally:
        consumer.close()


#: Seconds a partition reader waits before it tries an unreachable broker again.
RECONNECT_DELAY = Duration(seconds=2)


#: Record timestamps further ahead of the wall clock than this are clamped, so one
#: bad clock cannot push the watermark into the future and make later records late.
MAX_CLOCK_SKEW = Duration(seconds=300)


def event_time(timestamp_ms: int | None) -> Timestamp:
    """The element timestamp for a record: its Kafka timestamp, sanitised."""
    now = Timestamp.now()
    if timestamp_ms is None or timestamp_ms < 0:
        return now  # no timestamp (old message format): treat as arriving now
    ts = Timestamp(micros=timestamp_ms * 1000)
    return min(ts, now + MAX_CLOCK_SKEW)


class CheckpointOnlyTracker(OffsetRestrictionTracker):
    """An offset tracker that allows self-checkpoints but no runner splits.

    Two bundles reading the same partition would duplicate work and share a
    consumer; Beam's own Kafka reader forbids such splits for the same reason.
    """

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0:
            return None
        return super().try_split(0)


class CheckpointOnlyRestrictions(RestrictionProvider):
    """Offset restrictions a reader may checkpoint but a runner may not split or keep
    after a drain; subclasses give the initial restriction."""

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return CheckpointOnlyTracker(restriction)

    def restriction_size(self, element, restriction: OffsetRange) -> int:
        # Size only matters for splitting, which is disabled; keep it small and finite.
        return min(restriction.size(), 1_000_000)

    def split(self, element, restriction):
        yield restriction

    def truncate(self, element, restriction):
        return None  # on drain, stop reading


class _PartitionRestrictions(CheckpointOnlyRestrictions):
    def initial_restriction(self, element: PartitionSpec) -> OffsetRange:
        return OffsetRange(element.start, _UNBOUNDED if element.stop is None else element.stop)


class _ReadPartitionFn(beam.DoFn):
    """Reads one partition; defers itself while the partition is idle."""

    def __init__(self, poll_timeout: float = 0.5, max_records: int = 500) -> None:
        self._poll_timeout_ms = int(poll_timeout * 1000)
        self._max_records = max_records
        self._consumers: dict[tuple[str, str, int], object] = {}
        self._records = Metrics.counter(metrics.NAMESPACE, "kafka_records_read")

    def setup(self) -> None:
        self._consumers = {}

    def _consumer(self, spec: PartitionSpec):
        key = (spec.bootstrap_servers, spec.topic, spec.partition)
        consumer = self._consumers.get(key)
        if consumer is None:
            consumer = make_consumer(spec.bootstrap_servers, group_id=None)
            consumer.assign([TopicPartition(spec.topic, spec.partition)])
            self._consumers[key] = consumer
        return consumer

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        spec: PartitionSpec,
        tracker=beam.DoFn.RestrictionParam(_PartitionRestrictions()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator[beam.window.TimestampedValue]:
        tp = TopicPartition(spec.topic, spec.partition)
        restriction = tracker.current_restriction()
        position = restriction.start
        if position >= restriction.stop or _STOP.is_set():
            tracker.try_claim(max(position, restriction.stop))  # claims nothing; marks done
            return
        try:
            consumer = self._consumer(spec)
        except kafka_errors.KafkaError as exc:
            # The broker is away (restarting): read again shortly; failing the bundle
            # would fail the job.
            logger.warning(
                "cannot read %s/%d (%s); retrying in %.0f s",
                spec.topic,
                spec.partition,
                exc,
                RECONNECT_DELAY.micros / 1e6,
            )
            tracker.defer_remainder(RECONNECT_DELAY)
            return
        consumer.seek(tp, position)
        batch = consumer.poll(timeout_ms=self._poll_timeout_ms, max_records=self._max_records)
        records = batch.get(tp, [])
        metrics.reader_polled(spec.topic, spec.partition)
        for record in records:
            if record.offset < position:
                continue
            if not tracker.try_claim(record.offset):
                return
            self._records.inc()
            metrics.ARTICLES_READ.inc()
            ts = event_time(record.timestamp)
            current = watermark.current_watermark()
            if current is None or ts > current:
                watermark.set_watermark(ts)
            yield beam.window.TimestampedValue(KafkaRecord.of(record, position), ts)
            position = record.offset + 1
        if spec.stop is not None and position >= spec.stop:
            tracker.try_claim(spec.stop)  # bounded read finished
            return
        if not records and spec.stop is None:
            # Idle unbounded partition: event time moves on with the wall clock. A bounded
            # read (replay) keeps its watermark at its records, which may be years old.
            now = Timestamp.now() - Duration(seconds=1)
            current = watermark.current_watermark()
            if current is None or now > current:
                watermark.set_watermark(now)
        tracker.defer_remainder(Duration(seconds=0 if records else 0.2))

    def teardown(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers = {}


class ReadFromKafkaPartitions(beam.PTransform):
    """Reads the given partitions as a stream of `KafkaRecord`s.

    Elements are timestamped with the Kafka record timestamp (ingest time).
    """

    def __init__(self, partitions: Sequence[PartitionSpec], poll_timeout: float = 0.5) -> None:
        super().__init__()
        self._partitions = list(partitions)
        self._poll_timeout = poll_timeout

    def expand(self, pbegin):
        return (
            pbegin
            | "ListPartitions" >> beam.Create(self._partitions)
            | "ReadPartitions" >> beam.ParDo(_ReadPartitionFn(self._poll_timeout))
        )
