"""Reading a topic as a member of the pipeline's consumer group.

Several workers (``newswatch pipeline`` or ``run`` processes, on one or many
machines) with the same group id share the articles topic through Kafka's
consumer-group protocol: the group coordinator assigns each partition to one
member, moves partitions when a member joins, leaves or stops heartbeating
(``KafkaSettings.session_timeout``), and picks up partitions added to the topic.

`ReadFromConsumerGroup` is an unbounded splittable DoFn over one element, this
worker's `GroupMember`; each call polls the member's current assignment. A
partition newly assigned is paused until its start is known (the group's
committed offset), so every record carries the offsets it settles
(`KafkaRecord.claimed_from`), exactly as with a fixed plan. Offsets are
committed through the member (`pipelines.offsets.CommitOffsetsFn`), which fences
them twice: the member commits only partitions it holds, and the broker refuses
a commit from a member of a past generation (`CommitFailedError`), so a worker
that lost its partitions while it stalled cannot overwrite its successor's
offsets. On revocation the member waits, up to ``handover_timeout``, until
every record it read from the partition is written and committed, so the next
owner resumes where this one finished; what a dead or slow worker left
uncommitted is read again by the next owner (at least once; outcomes are keyed,
so the duplicates are removed by key downstream).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Duration, Timestamp
from kafka import OffsetAndMetadata, TopicPartition
from kafka import errors as kafka_errors
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

from newswatch import metrics
from newswatch.retry import retry_kafka
from newswatch.topics import make_consumer
from pipelines import kafka_read, offsets
from pipelines.kafka_read import KafkaRecord

__all__ = [
    "GroupMember",
    "GroupSpec",
    "ReadFromConsumerGroup",
    "close_members",
    "member",
    "on_handover",
]

logger = logging.getLogger(__name__)

_UNBOUNDED = 2**63 - 1


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """The topics a worker reads as a member of ``group_id``."""

    bootstrap_servers: str
    topics: tuple[str, ...]
    group_id: str
    session_timeout: float = 10.0
    """Seconds without a heartbeat after which the group gives this worker's partitions away."""
    handover_timeout: float = 15.0
    """Seconds a revoked partition's records read may take to be committed before hand-over."""
    poll_interval_limit: float = 60.0
    """Seconds between polls after which a stalled worker is put out of the group (fenced);
    also how long a rebalance waits for a member that does not rejoin."""


class GroupMember:
    """This worker's membership of the group: its consumer, assignment and read positions.

    The consumer is used by the reader (polls) and the offset committer
    (commits); kafka-python runs both on its IO thread, one call at a time.
    """

    def __init__(self, spec: GroupSpec) -> None:
        self.spec = spec
        self._lock = threading.Lock()
        self._next: dict[TopicPartition, int] = {}
        """First offset not yet read, per partition held (from its start on)."""
        self._new: set[TopicPartition] = set()
        """Assigned and paused until their start position is known."""
        self._progress: dict[TopicPartition, Timestamp] = {}
        self.handover_timeout = spec.handover_timeout
        self.consumer = make_consumer(
            spec.bootstrap_servers,
            group_id=spec.group_id,
            session_timeout_ms=int(spec.session_timeout * 1000),
            heartbeat_interval_ms=max(100, int(spec.session_timeout * 1000 / 3)),
            max_poll_interval_ms=int(spec.poll_interval_limit * 1000),
            # Partitions added to a topic reach the group's assignment within this time.
            metadata_max_age_ms=30_000,
            client_id=f"newswatch-worker-{spec.group_id}",
        )
        # Partition metadata first: a group leader that assigns without it gives every
        # member nothing until the next metadata refresh.
        for topic in spec.topics:
            self.consumer.partitions_for_topic(topic)
        self.consumer.subscribe(list(spec.topics), listener=_Listener(self))

    # --- the reader's side ------------------------------------------------------------

    def poll(self, timeout_ms: int, max_records: int) -> list[KafkaRecord]:
        """Records of the partitions held, each with the offset range it settles."""
        self._start_new_partitions()
        batch = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        out: list[KafkaRecord] = []
        with self._lock:
            for tp, records in batch.items():
                position = self._next.get(tp)
                if position is None:  # revoked in this very poll
                    continue
                metrics.reader_polled(tp.topic, tp.partition)
                for record in records:
                    if record.offset < position:
                        continue
                    out.append(KafkaRecord.of(record, position))
                    position = record.offset + 1
                self._next[tp] = position
        return out

    def _start_new_partitions(self) -> None:
        """Resume newly assigned partitions from the group's committed offsets."""
        with self._lock:
            new = sorted(self._new)
        for tp in new:
            try:
                start = self.consumer.position(tp)
            except kafka_errors.KafkaError as exc:
                logger.warning("start of %s/%d unknown yet (%s)", tp.topic, tp.partition, exc)
                continue
            with self._lock:
                if tp not in self._new:  # revoked meanwhile
                    continue
                self._new.discard(tp)
                self._next[tp] = start
            offsets.start_ledger(self._ledger_key(tp), start)
            self.consumer.resume(tp)
            logger.info("reading %s/%d from offset %d", tp.topic, tp.partition, start)

    def watermark(self, read: list[KafkaRecord]) -> Timestamp | None:
        """Event time up to which this worker has read every partition it holds.

        A partition is complete up to its latest record, or up to now once its
        reader has caught up with it; with nothing held, up to now.
        """
        now = Timestamp.now() - Duration(seconds=1)
        for record in read:
            tp = TopicPartition(record.topic, record.partition)
            self._progress[tp] = kafka_read.event_time(record.timestamp_ms)
        with self._lock:
            held = list(self._next) + list(self._new)
        marks = []
        for tp in held:
            highwater = self.consumer.highwater(tp)
            position = self._next.get(tp)
            if position is not None and highwater is not None and position >= highwater:
                self._progress[tp] = now
            mark = self._progress.get(tp)
            if mark is None:
                return None  # nothing known of this partition yet
            marks.append(mark)
        return min(marks) if marks else now

    # --- the committer's side ---------------------------------------------------------

    def holds(self, topic: str, partition: int) -> bool:
        with self._lock:
            return TopicPartition(topic, partition) in self._next

    def commit(self, topic: str, partition: int, offset: int) -> bool:
        """Commits ``offset`` for a partition this member holds; False if fenced.

        Refused here when the partition has moved to another member, and by the
        broker when this member's generation is over.
        """
        if not self.holds(topic, partition):
            metrics.OFFSET_COMMITS_REFUSED.inc()
            logger.info("not committing %s/%d@%d: no longer held", topic, partition, offset)
            return False
        tp = TopicPartition(topic, partition)
        try:
            retry_kafka(
                f"offset commit of {topic}/{partition}@{offset}",
                lambda: self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1)}),
                final=(kafka_errors.CommitFailedError, kafka_errors.RebalanceInProgressError),
            )
        except (kafka_errors.CommitFailedError, kafka_errors.RebalanceInProgressError) as exc:
            metrics.OFFSET_COMMITS_REFUSED.inc()
            logger.warning("commit of %s/%d@%d refused: %s", topic, partition, offset, exc)
            return False
        return True

    # --- rebalances (run on kafka-python's IO thread) ---------------------------------

    def _ledger_key(self, tp: TopicPartition) -> tuple[str, str, str, int]:
        return (self.spec.bootstrap_servers, self.spec.group_id, tp.topic, tp.partition)

    def assigned(self, partitions: set[TopicPartition]) -> None:
        self.consumer.pause(*partitions)
        with self._lock:
            self._new |= set(partitions)
        if partitions:
            logger.info("assigned %s", _names(partitions))
            metrics.PARTITIONS_ASSIGNED.inc(len(partitions))

    def unsettled(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Partitions among ``partitions`` whose records read are not all committed."""
        left = {}
        with self._lock:
            positions = {tp: self._next[tp] for tp in partitions if tp in self._next}
        for tp, position in positions.items():
            committed = offsets.committed_offset(self._ledger_key(tp))
            if committed is not None and committed < position:
                left[tp] = position - committed
        return left

    def forget(self, partitions: set[TopicPartition], lost: bool) -> None:
        with self._lock:
            for tp in partitions:
                self._next.pop(tp, None)
                self._new.discard(tp)
                self._progress.pop(tp, None)
        if partitions:
            logger.info("%s %s", "lost" if lost else "handed over", _names(partitions))
        for topic in {tp.topic for tp in partitions}:
            for callback in _HANDOVER_CALLBACKS.get(topic, ()):
                callback(topic)

    def close(self) -> None:
        self.consumer.close()


class _Listener(AsyncConsumerRebalanceListener):
    """Drains a revoked partition before the group hands it over."""

    def __init__(self, member: GroupMember) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked):
        member = self._member
        began = time.monotonic()
        deadline = began + member.handover_timeout
        # Awaiting keeps kafka-python's IO loop turning, so the committer's
        # commits (and heartbeats) go through while this waits.
        while (left := member.unsettled(set(revoked))) and time.monotonic() < deadline:
            await member.consumer._net.sleep(0.05)
        if left:
            logger.warning(
                "handing over %s with %d records not yet committed; the next owner reads "
                "them again",
                _names(left),
                sum(left.values()),
            )
        member.forget(set(revoked), lost=False)
        metrics.HANDOVER_SECONDS.observe(time.monotonic() - began)

    async def on_partitions_assigned(self, assigned):
        self._member.assigned(set(assigned))

    async def on_partitions_lost(self, lost):
        self._member.forget(set(lost), lost=True)


def _names(partitions) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(partitions)) or "nothing"


# What holds state for a topic's records in this process and must drop it when the
# topic's partitions go to another worker (the story book, for the classified topic).
_HANDOVER_CALLBACKS: dict[str, list[Callable[[str], None]]] = {}


def on_handover(topic: str, callback: Callable[[str], None]) -> None:
    """Call ``callback(topic)`` whenever this worker gives up partitions of ``topic``."""
    with _MEMBERS_LOCK:
        _HANDOVER_CALLBACKS.setdefault(topic, []).append(callback)


# One member per group and topic in this worker process: the reader and the
# committer (both run here under the local runner's LOOPBACK workers) share it.
_MEMBERS: dict[GroupSpec, GroupMember] = {}
_MEMBERS_LOCK = threading.Lock()


def member(spec: GroupSpec) -> GroupMember:
    """This process's member for ``spec``, joining the group on first use."""
    with _MEMBERS_LOCK:
        found = _MEMBERS.get(spec)
        if found is None:
            found = _MEMBERS[spec] = GroupMember(spec)
            offsets.register_group_committer((spec.bootstrap_servers, spec.group_id), found.commit)
        return found


def close_members(*, drained: bool = True) -> None:
    """Leave the group; unless ``drained``, without waiting for what is in flight (an
    abrupt exit: the next owner reads the uncommitted records again)."""
    with _MEMBERS_LOCK:
        members = list(_MEMBERS.values())
        _MEMBERS.clear()
        _HANDOVER_CALLBACKS.clear()
    for found in members:
        offsets.register_group_committer((found.spec.bootstrap_servers, found.spec.group_id), None)
        if not drained:
            found.handover_timeout = 0.0
        try:
            found.close()
        except Exception:  # leaving is best effort: the session timeout covers it
            logger.warning("leaving group %s failed", found.spec.group_id, exc_info=True)


class _PollCounter(kafka_read.CheckpointOnlyRestrictions):
    """Restriction over poll numbers: the read position lives in the member."""

    def initial_restriction(self, element: GroupSpec) -> OffsetRange:
        return OffsetRange(0, _UNBOUNDED)


class _ReadGroupFn(beam.DoFn):
    """Polls this worker's share of the topic; defers itself between polls."""

    def __init__(self, poll_timeout: float = 0.5, max_records: int = 500) -> None:
        self._poll_timeout_ms = int(poll_timeout * 1000)
        self._max_records = max_records
        self._records = Metrics.counter(metrics.NAMESPACE, "kafka_records_read")

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        spec: GroupSpec,
        tracker=beam.DoFn.RestrictionParam(_PollCounter()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator[beam.window.TimestampedValue]:
        restriction = tracker.current_restriction()
        if kafka_read.stop_requested():
            tracker.try_claim(restriction.stop)  # claims nothing; marks the read done
            return
        if not tracker.try_claim(restriction.start):
            return
        try:
            group = member(spec)
            records = group.poll(self._poll_timeout_ms, self._max_records)
            mark = group.watermark(records)
        except kafka_errors.KafkaError as exc:
            logger.warning("cannot read %s (%s); retrying", ", ".join(spec.topics), exc)
            tracker.defer_remainder(kafka_read.RECONNECT_DELAY)
            return
        for record in records:
            if record.topic == spec.topics[0]:  # the articles topic; the others are hand-offs
                metrics.ARTICLES_READ.inc()
            self._records.inc()
            yield beam.window.TimestampedValue(record, kafka_read.event_time(record.timestamp_ms))
        current = watermark.current_watermark()
        if mark is not None and (current is None or mark > current):
            watermark.set_watermark(mark)
        tracker.defer_remainder(Duration(seconds=0 if records else 0.2))


class ReadFromConsumerGroup(beam.PTransform):
    """This worker's share of ``spec.topics`` as a stream of `KafkaRecord`s."""

    def __init__(self, spec: GroupSpec, poll_timeout: float = 0.5) -> None:
        super().__init__()
        self._spec = spec
        self._poll_timeout = poll_timeout

    def expand(self, pbegin):
        return (
            pbegin
            | "Member" >> beam.Create([self._spec])
            | "Poll" >> beam.ParDo(_ReadGroupFn(self._poll_timeout))
        )
