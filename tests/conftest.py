"""Fixtures shared by every test module: one real Kafka broker, fresh topics per test.

- ``kafka_broker`` (session): a `LocalBroker` on free loopback ports with its data
  in a temporary directory. Tests may ``stop()``, ``kill()`` and ``start()`` it;
  ``start()`` reuses the same log dir, so records and committed offsets survive.
- ``settings`` (function): `Settings` pointing at that broker, with four topics and
  a consumer group unique to the test, the topics already created.

Nothing here skips: without the broker jars the session fails, saying how to get them.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from newswatch.broker import LocalBroker
from newswatch.config import Settings, load_settings, replace
from newswatch.errors import BrokerError
from newswatch.topics import ensure_topics


def free_port() -> int:
    """A loopback port nobody listens on right now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_broker(data_dir: Path, attempts: int = 3) -> LocalBroker:
    """Start a `LocalBroker` in ``data_dir`` on free ports, re-picking ports if one was taken.

    Other broker settings (``lib_dir``, ``heap``, ...) follow the usual layering, so
    ``NEWSWATCH_BROKER_LIB_DIR`` can point the tests at jars elsewhere.
    """
    base = load_settings().broker
    for _ in range(attempts):
        broker = LocalBroker(
            replace(base, data_dir=data_dir, port=free_port(), controller_port=free_port())
        )
        try:
            broker.start()
            return broker
        except BrokerError as exc:
            error = str(exc)
        if "in use" not in error:
            break
    pytest.fail(f"cannot start the test Kafka broker: {error}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A real single-node KRaft broker for the whole session."""
    broker = start_broker(tmp_path_factory.mktemp("kafka-broker"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def settings(kafka_broker: LocalBroker, tmp_path, request: pytest.FixtureRequest) -> Settings:
    """Settings for one test: the session broker, and topics and a group of its own."""
    if not kafka_broker.is_running():  # an earlier test stopped or killed it
        kafka_broker.start()
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")[:100]
    return isolated_settings(kafka_broker, tmp_path, name)


def isolated_settings(
    broker: LocalBroker, home: Path, name: str, *, partitions: int = 3
) -> Settings:
    """Settings on ``broker`` with topics and a consumer group no other test uses (created)."""
    prefix = f"t.{name}.{uuid.uuid4().hex[:8]}"
    settings = Settings(home=home)
    settings.kafka.partitions = partitions
    settings.broker = replace(broker.settings)
    settings.connectors.state_dir = home / "state"
    kafka = settings.kafka
    kafka.bootstrap_servers = broker.bootstrap_servers
    kafka.articles_topic = f"{prefix}.articles"
    kafka.alerts_topic = f"{prefix}.alerts"
    kafka.decisions_topic = f"{prefix}.decisions"
    kafka.dead_letter_topic = f"{prefix}.dead-letters"
    kafka.stories_topic = f"{prefix}.stories"
    kafka.story_alerts_topic = f"{prefix}.story-alerts"
    kafka.classified_topic = f"{prefix}.classified"
    kafka.group_id = f"{prefix}.group"
    ensure_topics(settings)
    return settings
