"""Committing consumer-group offsets in order, once outcomes are durably written.

Each partition has an offset ledger of settled ranges (`OutcomeAck`s from the
writer); `CommitOffsetsFn` commits the first unsettled offset as it advances,
through the group member that holds the partition when there is one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.metrics import Metrics
from kafka import OffsetAndMetadata, TopicPartition

from newswatch import metrics
from newswatch.retry import retry_kafka
from newswatch.topics import make_consumer

__all__ = [
    "CommitOffsetsFn",
    "OutcomeAck",
    "committed_offset",
    "register_group_committer",
    "reset_ledgers",
    "start_ledger",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutcomeAck:
    """Offsets [start, end) of one partition whose outcomes are durably written."""

    topic: str
    partition: int
    start: int
    end: int
    timestamp_ms: int | None = field(default=None, compare=False)
    """Kafka timestamp of the input record (for the ack-to-outcome latency metric)."""


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
