"""WriteToKafkaFn on the real test broker: acks only after the broker's, a refusal heals, and
an outage longer than the producer's timeouts is waited out."""

from __future__ import annotations

import threading
import time

import pytest
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from kafka import errors as kafka_errors
from kafka.admin import NewTopic

from newswatch.topics import make_admin
from pipelines.kafka_write import OutboundMessage, OutboundRecord, WriteToKafkaFn
from pipelines.offsets import OutcomeAck
from tests.streams import read_topic


def _write(fn: WriteToKafkaFn, topic: str, value: bytes, offset: int, *more: tuple) -> list:
    """One bundle of one record: ``value`` to ``topic``, and any ``(topic, value)`` in ``more``."""
    fn.start_bundle()
    ack = OutcomeAck(topic="articles", partition=0, start=offset, end=offset + 1)
    messages = tuple(OutboundMessage(t, b"key", v) for t, v in ((topic, value), *more))
    record = OutboundRecord(messages=messages, ack=ack)
    fn.process(record, timestamp=Timestamp(0), window=GlobalWindow())
    return list(fn.finish_bundle())


def test_a_refused_record_fails_its_bundle_and_the_next_bundle_is_written(settings):
    small_topic = settings.kafka.articles_topic + ".small"
    admin = make_admin(settings.bootstrap_servers)
    try:
        admin.create_topics(
            [NewTopic(small_topic, 1, 1, topic_configs={"max.message.bytes": "1024"})]
        )
        # Created is not yet usable: wait until the partition has a leader.
        admin.wait_for_topics([small_topic], timeout_ms=30_000)
    finally:
        admin.close()
    fn = WriteToKafkaFn(settings.bootstrap_servers)
    fn.setup()
    try:
        with pytest.raises(kafka_errors.MessageSizeTooLargeError):
            _write(fn, small_topic, b"x" * 8000, offset=0)
        # The runner retries a failed bundle on the same DoFn instance.
        (acked,) = _write(fn, settings.kafka.decisions_topic, b"{}", offset=0)
    finally:
        fn.teardown()
    assert acked.value == ("articles/0", OutcomeAck("articles", 0, 0, 1))
    (record,) = read_topic(settings, settings.kafka.decisions_topic)
    assert (record.key, record.value) == (b"key", b"{}")


def test_records_that_time_out_while_the_broker_is_down_are_sent_when_it_is_back(
    settings, kafka_broker
):
    # Timeouts far shorter than the outage: sends expire and metadata waits run out.
    fn = WriteToKafkaFn(
        settings.bootstrap_servers,
        max_block_ms=1_000,
        request_timeout_ms=1_000,
        delivery_timeout_ms=2_000,
        linger_ms=0,
        reconnect_backoff_max_ms=500,
    )
    fn.setup()
    try:
        assert len(_write(fn, settings.kafka.decisions_topic, b"before", offset=0)) == 1
        assert kafka_broker.kill()
        restart = threading.Timer(8.0, kafka_broker.start)
        restart.start()
        try:
            began = time.monotonic()
            # One record for a topic with known metadata (its send expires), then one for
            # a topic this producer has no metadata for (its send cannot even start).
            (acked,) = _write(
                fn,
                settings.kafka.decisions_topic,
                b"during",
                1,
                (settings.kafka.alerts_topic, b"alert"),
            )
            waited = time.monotonic() - began
        finally:
            restart.join()
    finally:
        fn.teardown()
    assert waited > 5  # it was written only once the broker was back
    assert acked.value == ("articles/0", OutcomeAck("articles", 0, 1, 2))
    assert b"alert" in [r.value for r in read_topic(settings, settings.kafka.alerts_topic)]
    decisions = [r.value for r in read_topic(settings, settings.kafka.decisions_topic)]
    assert decisions.count(b"before") == 1 and b"during" in decisions
