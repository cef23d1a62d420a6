"""WriteToKafkaFn on the real test broker: acks only after the broker's, and a refusal heals."""

from __future__ import annotations

import time

import pytest
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from kafka import errors as kafka_errors
from kafka.admin import NewTopic

from newswatch.topics import make_admin
from pipelines.kafkaio import OutboundMessage, OutboundRecord, OutcomeAck, WriteToKafkaFn
from tests.test_pipeline import read_topic


def _write(fn: WriteToKafkaFn, topic: str, value: bytes, offset: int) -> list:
    fn.start_bundle()
    ack = OutcomeAck(topic="articles", partition=0, start=offset, end=offset + 1)
    record = OutboundRecord(messages=(OutboundMessage(topic, b"key", value),), ack=ack)
    fn.process(record, timestamp=Timestamp(0), window=GlobalWindow())
    return list(fn.finish_bundle())


def test_a_refused_record_fails_its_bundle_and_the_next_bundle_is_written(settings):
    small_topic = settings.kafka.articles_topic + ".small"
    admin = make_admin(settings.bootstrap_servers)
    try:
        admin.create_topics(
            [NewTopic(small_topic, 1, 1, topic_configs={"max.message.bytes": "1024"})]
        )
    finally:
        admin.close()
    time.sleep(1)
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
