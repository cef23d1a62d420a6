"""Workers sharing a topic through Kafka's consumer-group protocol (`pipelines.groupread`),
on the real test broker: disjoint shares, hand-over on leave, and fencing of a stale member."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from kafka import TopicPartition

from newswatch.topics import make_consumer, make_producer
from pipelines import offsets
from pipelines.groupread import GroupMember, GroupSpec


def _produce(settings, count: int) -> None:
    producer = make_producer(settings.bootstrap_servers)
    try:
        for i in range(count):
            producer.send(settings.kafka.articles_topic, key=f"k{i}".encode(), value=b"{}")
        producer.flush()
    finally:
        producer.close()


def _poll_until(members, done, timeout: float = 60.0) -> dict[str, list]:
    """Polls every member in turn until ``done(read)``; returns the records each read."""
    read: dict[GroupMember, list] = {m: [] for m in members}
    deadline = time.monotonic() + timeout
    while not done(read):
        assert time.monotonic() < deadline, f"timed out; read so far: {_shares(read)}"
        for member in members:
            read[member] += member.poll(timeout_ms=100, max_records=500)
    return read


def _shares(read) -> dict:
    return {
        m.consumer.config["client_id"]: sorted({r.partition for r in recs})
        for m, recs in read.items()
    }


def _held(member: GroupMember) -> set[int]:
    return {p for p in range(3) if member.holds(member.spec.topics[0], p)}


@pytest.fixture
def spec(settings) -> GroupSpec:
    offsets.reset_ledgers()
    return GroupSpec(
        settings.bootstrap_servers,
        (settings.kafka.articles_topic,),
        settings.kafka.group_id,
        session_timeout=3.0,
        handover_timeout=1.0,
        poll_interval_limit=10.0,
    )


def test_two_members_read_disjoint_shares_and_one_takes_all_when_the_other_leaves(settings, spec):
    first, second = GroupMember(spec), GroupMember(spec)
    try:
        _poll_until([first, second], lambda read: _held(first) and _held(second))
        assert _held(first) | _held(second) == {0, 1, 2}
        assert not _held(first) & _held(second)

        _produce(settings, 60)
        read = _poll_until([first, second], lambda read: sum(map(len, read.values())) >= 60)
        positions = [(r.partition, r.offset) for recs in read.values() for r in recs]
        assert len(positions) == len(set(positions)) == 60
        assert {r.partition for r in read[first]} <= _held(first)
        assert {r.partition for r in read[second]} <= _held(second)

        second.close()
        _poll_until([first], lambda read: _held(first) == {0, 1, 2})
    finally:
        first.close()
        second.close()


def test_a_member_put_out_of_the_group_cannot_commit_and_its_successor_resumes(settings, spec):
    stale = GroupMember(replace(spec, poll_interval_limit=2.0))
    successor = None
    try:
        _produce(settings, 30)
        read = _poll_until([stale], lambda read: len(read[stale]) >= 30)
        assert _held(stale) == {0, 1, 2}
        # The stale member settles and commits what it read: its successor resumes there.
        for record in read[stale]:
            assert stale.commit(record.topic, record.partition, record.offset + 1)
        successor = GroupMember(spec)
        # The stale member stops polling (a long pause): the group moves on without it.
        _poll_until([successor], lambda read: _held(successor) == {0, 1, 2})
        assert stale.holds(spec.topics[0], 0)  # it has not noticed yet...
        assert not stale.commit(spec.topics[0], 0, 10_000)  # ...but the broker refuses it

        consumer = make_consumer(settings.bootstrap_servers, group_id=spec.group_id)
        try:
            committed = {p: consumer.committed(TopicPartition(spec.topics[0], p)) for p in range(3)}
        finally:
            consumer.close()
        assert sum(committed.values()) == 30
        assert 10_000 not in committed.values()
        _produce(settings, 3)
        fresh = _poll_until([successor], lambda read: len(read[successor]) >= 3)
        assert len(fresh[successor]) == 3  # nothing read twice, nothing skipped
    finally:
        stale.close()
        if successor is not None:
            successor.close()
