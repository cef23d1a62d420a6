"""Kafka reads, writes and offset commits inside Beam, in Python.

The pipeline reads the articles topic with `ReadFromKafkaPartitions`, an
unbounded splittable DoFn over one Kafka partition per element (kafka-python
underneath), writes outcomes with `WriteToKafkaFn`, and commits consumer-group
offsets with `CommitOffsetsFn` only after every record up to an offset has had
its outcome durably written. That gives at-least-once processing on any Beam
runner without relying on runner checkpoints; outcomes are keyed
deterministically, so duplicates after a crash are removed by key downstream.

Python-native I/O keeps the local runner free of a JVM expansion service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from kafka import OffsetAndMetadata, TopicPartition
from kafka import errors as kafka_errors

from newswatch import metrics
from newswatch.retry import retry_kafka
from newswatch.topics import make_consumer, make_producer

__all__ = [
    "CheckpointOnlyRestrictions",
    "CheckpointOnlyTracker",
    "CommitOffsetsFn",
    "KafkaRecord",
    "OutboundMessage",
    "OutboundRecord",
    "OutcomeAck",
    "PartitionSpec",
    "ReadFromKafkaPartitions",
    "WriteToKafkaFn",
    "committed_offset",
    "event_time",
    "plan_partitions",
    "register_group_committer",
    "request_stop",
    "reset_ledgers",
    "reset_stop",
    "start_ledger",
    "stop_requested",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

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


@dataclass(frozen=True, slots=True)
class OutcomeAck:
    """Offsets [start, end) of one partition whose outcomes are durably written."""

    topic: str
    partition: int
    start: int
    end: int
    timestamp_ms: int | None = field(default=None, compare=False)
    """Kafka timestamp of the input record (for the ack-to-outcome latency metric)."""


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


class _OffsetLedger:
    """Settled offset ranges of one partition; ``next`` is the first unsettled offset."""

    def __init__(self, start: int) -> None:
        self.next = start
        self.committed = start
        """The offset last committed to the group (``next`` may be ahead after a failure)."""
        self.ranges: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def settle(self, start: int, end: int) -> bool:
        """Record [start, end) as settled; True if ``next`` advanced."""
        before = self.next
        self.ranges.append((start, end))
        self.ranges.sort()
        remaining = []
        for lo, hi in self.ranges:
            if lo <= self.next < hi:
                self.next = hi
            elif hi > self.next:
                remaining.append((lo, hi))
        # One pass can leave a range that became contiguous only after a later one.
        self.ranges = [(lo, hi) for lo, hi in remaining if hi > self.next]
        while any(lo <= self.next < hi for lo, hi in self.ranges):
            self.next = max(hi for lo, hi in self.ranges if lo <= self.next < hi)
            self.ranges = [(lo, hi) for lo, hi in self.ranges if hi > self.next]
        return self.next > before


# Ledgers live in the worker process, keyed by (servers, group, topic, partition):
# all bundles of the local runner run in this process, and on a cluster a partition's
# records stay in the worker that read them (no shuffle between read and commit).
# Beam state was not used here: under Prism, reads of a key's state across
# concurrent bundles were seen to come back stale, stalling the committed offset.
_LEDGERS: dict[tuple[str, str, str, int], _OffsetLedger] = {}
_LEDGERS_LOCK = threading.Lock()


def _ledger(key: tuple[str, str, str, int], start: int) -> _OffsetLedger:
    """The partition's ledger, started by its reader (`start_ledger`), else at ``start``."""
    with _LEDGERS_LOCK:
        ledger = _LEDGERS.get(key)
        if ledger is None:
            ledger = _LEDGERS[key] = _OffsetLedger(start)
        return ledger


def reset_ledgers() -> None:
    """Forget settled offsets (a new run resumes from the group's committed offsets)."""
    with _LEDGERS_LOCK:
        _LEDGERS.clear()


def start_ledger(key: tuple[str, str, str, int], start: int) -> None:
    """A partition's reading (re)starts at ``start``, the group's committed offset."""
    with _LEDGERS_LOCK:
        _LEDGERS[key] = _OffsetLedger(start)


def committed_offset(key: tuple[str, str, str, int]) -> int | None:
    """The offset last committed for a partition read in this process, if any."""
    with _LEDGERS_LOCK:
        ledger = _LEDGERS.get(key)
    return None if ledger is None else ledger.committed


# Group members of this process (`pipelines.groupread`), by (servers, group): a
# partition read as a member is committed through its member, which refuses
# partitions it no longer holds and is refused by the broker once fenced.
_GROUP_COMMITTERS: dict[tuple[str, str], Callable[[str, int, int], bool]] = {}


def register_group_committer(
    key: tuple[str, str], commit: Callable[[str, int, int], bool] | None
) -> None:
    """Route commits of group ``key`` through ``commit(topic, partition, offset)``."""
    with _LEDGERS_LOCK:
        if commit is None:
            _GROUP_COMMITTERS.pop(key, None)
        else:
            _GROUP_COMMITTERS[key] = commit


class CommitOffsetsFn(beam.DoFn):
    """Commits the group's offset once every record below it has an outcome.

    Input is keyed by "topic/partition". Acks may arrive out of order; the
    committed offset advances only over a contiguous run of settled offsets,
    starting from the position the read resumed at (`start_ledger`, called by
    the reader). A partition read as a group member is committed through the
    member, which is fenced once the partition has moved.
    """

    def __init__(self, bootstrap_servers: str, group_id: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._group_id = group_id
        self._commits = Metrics.counter(metrics.NAMESPACE, "offset_commits")

    def setup(self) -> None:
        self._consumer = retry_kafka(
            "offset committer",
            lambda: make_consumer(self._bootstrap_servers, group_id=self._group_id),
        )

    def process(self, element: tuple[str, OutcomeAck]) -> Iterator[tuple[str, int]]:
        key, ack = element
        ledger = _ledger(
            (self._bootstrap_servers, self._group_id, ack.topic, ack.partition),
            ack.start,
        )
        with ledger.lock:
            ledger.settle(ack.start, ack.end)
            # Compared with what was committed, not with what settle() returned: a
            # retried bundle whose commit failed must still commit.
            if ledger.next <= ledger.committed:
                return
            advanced = ledger.next
            if not self._commit(TopicPartition(ack.topic, ack.partition), advanced, key):
                return
            ledger.committed = advanced
        self._commits.inc()
        yield key, advanced

    def _commit(self, tp, offset: int, key: str) -> bool:
        """Commits ``offset``; False if a group member was fenced off the partition."""
        with _LEDGERS_LOCK:
            member = _GROUP_COMMITTERS.get((self._bootstrap_servers, self._group_id))
        if member is not None:
            return member(tp.topic, tp.partition, offset)

        # Outside the group (a bounded read): the broker refuses the commit while the
        # group has members, such as a worker that died less than a session ago.
        def attempt() -> bool:
            self._consumer.commit({tp: OffsetAndMetadata(offset, "", -1)})
            return True

        return retry_kafka(f"offset commit of {key}@{offset}", attempt)

    def teardown(self) -> None:
        consumer = getattr(self, "_consumer", None)
        if consumer is not None:
            consumer.close()
