"""The embedded broker and the topics: what newswatch relies on from Kafka."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from kafka import TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from newswatch.broker import LocalBroker
from newswatch.cli import main
from newswatch.cluster import LocalCluster
from newswatch.config import BrokerSettings, Settings, load_settings, replace
from newswatch.errors import BrokerError
from newswatch.topics import ensure_topics, make_admin, make_consumer, make_producer

from .conftest import free_port

DAY_MS = 24 * 60 * 60 * 1000


def produce(servers: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send keyed records with the project's producer and wait for every acknowledgement."""
    producer = make_producer(servers)
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=10)
    finally:
        producer.close()


def consume(consumer, count: int, timeout: float = 30.0) -> list:
    """Poll until ``count`` records arrived or ``timeout`` passed; return what arrived."""
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def consume_until_assigned(consumer, timeout: float = 30.0) -> list:
    """Poll until the group assigned partitions, then once more; return what arrived."""
    records: list = []
    deadline = time.monotonic() + timeout
    while not consumer.assignment() and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records + consume(consumer, 1, timeout=1)


def read_all(servers: str, topic: str, count: int) -> list:
    """Read a topic from its beginning, outside any consumer group."""
    consumer = make_consumer(servers)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        return consume(consumer, count)
    finally:
        consumer.close()


def topic_configs(servers: str, topic: str) -> dict[str, str]:
    admin = make_admin(servers)
    try:
        result = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
    finally:
        admin.close()
    (by_topic,) = result.values()
    return {key: entry["value"] for key, entry in by_topic[topic].items()}


def partition_count(servers: str, topic: str) -> int:
    admin = make_admin(servers)
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    return len(described["partitions"])


def test_broker_answers_metadata_on_loopback(kafka_broker: LocalBroker) -> None:
    admin = make_admin(kafka_broker.bootstrap_servers)
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    (node,) = cluster["brokers"]
    assert (node["host"], node["port"]) == ("127.0.0.1", kafka_broker.settings.port)
    status = kafka_broker.status()
    assert status.running and status.pid and status.port == kafka_broker.settings.port


def test_committed_offsets_survive_a_broker_restart(
    kafka_broker: LocalBroker, settings: Settings
) -> None:
    servers, topic = settings.bootstrap_servers, settings.kafka.articles_topic
    assert partition_count(servers, topic) == 3
    produce(servers, topic, [(b"key-%d" % i, b"article %d" % i) for i in range(1000)])

    consumer = make_consumer(servers, settings.kafka.group_id, topics=[topic])
    assert len(consume(consumer, 1000)) == 1000
    consumer.commit()
    consumer.close()

    kafka_broker.stop()
    assert not kafka_broker.is_running()
    kafka_broker.start()

    consumer = make_consumer(servers, settings.kafka.group_id, topics=[topic])
    try:
        records = consume_until_assigned(consumer)
        partitions = [TopicPartition(topic, p) for p in range(3)]
        ends = consumer.end_offsets(partitions)
        assert records == []
        assert {tp: consumer.committed(tp) for tp in partitions} == ends
        assert sum(ends.values()) == 1000
    finally:
        consumer.close()
    records = read_all(servers, topic, 1000)
    assert {r.key for r in records} == {b"key-%d" % i for i in range(1000)}


def test_acknowledged_records_survive_a_broker_crash(
    kafka_broker: LocalBroker, settings: Settings
) -> None:
    servers, topic = settings.bootstrap_servers, settings.kafka.articles_topic
    produce(servers, topic, [(b"key-%d" % i, b"article %d" % i) for i in range(100)])

    assert kafka_broker.kill()
    kafka_broker.start()

    assert len(read_all(servers, topic, 100)) == 100


def test_a_three_node_cluster_takes_writes_with_a_leader_down_and_loses_none(tmp_path) -> None:
    ports = [(free_port(), free_port()) for _ in range(3)]
    cluster = LocalCluster(replace(load_settings().broker, data_dir=tmp_path / "kafka"), ports)
    settings = Settings(home=tmp_path / "home")
    settings.kafka.bootstrap_servers = cluster.bootstrap_servers
    settings.kafka.replication_factor = 3
    servers, topic = settings.bootstrap_servers, settings.kafka.articles_topic
    with cluster:
        ensure_topics(settings)
        admin = make_admin(servers)
        try:
            assert len(admin.describe_cluster()["brokers"]) == 3
            (described,) = admin.describe_topics([topic])
        finally:
            admin.close()
        assert {len(p["replica_nodes"]) for p in described["partitions"]} == {3}
        assert topic_configs(servers, topic)["min.insync.replicas"] == "2"
        produce(servers, topic, [(b"key-%d" % i, b"article %d" % i) for i in range(100)])

        leader = described["partitions"][0]["leader_id"]
        (down,) = [node for node in cluster.nodes if node.node_id == leader]
        assert down.kill()
        produce(servers, topic, [(b"key-%d" % i, b"article %d" % i) for i in range(100, 200)])
        records = read_all(servers, topic, 200)
        assert {r.key for r in records} == {b"key-%d" % i for i in range(200)}
        down.start()
    assert not any(node.is_running() for node in cluster.nodes)


def test_ensure_topics_creates_the_four_topics_with_their_policies(settings: Settings) -> None:
    servers, kafka = settings.bootstrap_servers, settings.kafka
    ensure_topics(settings)  # a second call changes nothing and raises nothing

    articles = topic_configs(servers, kafka.articles_topic)
    assert articles["cleanup.policy"] == "delete"
    assert articles["retention.ms"] == str(7 * DAY_MS)
    assert articles["max.message.bytes"] == str(16 * 1024 * 1024)
    assert topic_configs(servers, kafka.alerts_topic)["cleanup.policy"] == "compact"
    assert topic_configs(servers, kafka.decisions_topic)["cleanup.policy"] == "compact"
    dead_letters = topic_configs(servers, kafka.dead_letter_topic)
    assert dead_letters["cleanup.policy"] == "delete"
    assert dead_letters["retention.ms"] == str(30 * DAY_MS)
    assert partition_count(servers, kafka.articles_topic) == kafka.partitions
    assert partition_count(servers, kafka.decisions_topic) == kafka.partitions
    assert partition_count(servers, kafka.alerts_topic) == 1


def test_ensure_topics_leaves_an_existing_topic_alone_but_warns(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    servers = settings.bootstrap_servers
    settings.kafka.alerts_topic += ".preexisting"
    admin = make_admin(servers)
    try:
        admin.create_topics(
            {settings.kafka.alerts_topic: {"num_partitions": 1, "replication_factor": 1}},
            wait_for_metadata=True,
        )
    finally:
        admin.close()

    with caplog.at_level(logging.WARNING, logger="newswatch.topics"):
        ensure_topics(settings)

    assert topic_configs(servers, settings.kafka.alerts_topic)["cleanup.policy"] == "delete"
    assert f"{settings.kafka.alerts_topic} has cleanup.policy=delete" in caplog.text


def test_an_article_above_kafkas_default_1_mib_limit_goes_through(settings: Settings) -> None:
    servers, topic = settings.bootstrap_servers, settings.kafka.articles_topic
    big = b"x" * (3 * 1024 * 1024)
    produce(servers, topic, [(b"big", big)])

    (record,) = read_all(servers, topic, 1)
    assert record.value == big


def test_start_on_a_running_broker_is_a_no_op(kafka_broker: LocalBroker) -> None:
    pid = kafka_broker.status().pid
    again = LocalBroker(replace(kafka_broker.settings))

    assert again.start() is False
    assert again.status().pid == pid


def test_start_without_jars_tells_how_to_fetch_them(tmp_path) -> None:
    broker = LocalBroker(BrokerSettings(data_dir=tmp_path / "kafka", lib_dir=tmp_path / "lib"))

    with pytest.raises(BrokerError, match=r"deploy/setup\.sh.*mvn .*dependency:copy-dependencies"):
        broker.start()
    assert not broker.is_running()


def test_start_on_a_taken_port_fails_fast(tmp_path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        broker = LocalBroker(BrokerSettings(data_dir=tmp_path / "kafka", port=port))

        with pytest.raises(BrokerError, match=f"port {port} .* in use"):
            broker.start()


def test_a_broker_that_cannot_start_reports_why(tmp_path) -> None:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        ports = a.getsockname()[1], b.getsockname()[1]
    broker = LocalBroker(
        BrokerSettings(
            data_dir=tmp_path / "kafka", port=ports[0], controller_port=ports[1], heap="lots"
        )
    )

    with pytest.raises(BrokerError, match="Invalid maximum heap size"):
        broker.start()
    assert not broker.is_running()


def test_status_command_exits_0_when_running_and_1_when_not(
    kafka_broker: LocalBroker, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = ["--data-dir", str(kafka_broker.data_dir), "--port", str(kafka_broker.settings.port)]

    assert main(["broker", "status", *running]) == 0
    assert f"running: pid {kafka_broker.status().pid}" in capsys.readouterr().out
    assert main(["broker", "status", "--data-dir", str(tmp_path / "none")]) == 1
    assert "not running" in capsys.readouterr().out


def test_start_command_on_a_running_broker_says_so(
    kafka_broker: LocalBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--data-dir", str(kafka_broker.data_dir), "--port", str(kafka_broker.settings.port)]

    assert main(["broker", "start", *flags]) == 0
    assert f"already running at {kafka_broker.bootstrap_servers}" in capsys.readouterr().out
