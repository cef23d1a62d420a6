"""The newswatch topics, and Kafka clients with safe defaults.

``ensure_topics(settings)`` creates the topics named in `KafkaSettings`, idempotently:

- articles: ``partitions`` partitions, kept 7 days (the replay window);
- decisions: ``partitions`` partitions, compacted (one record per article id);
- alerts: one partition (readers see alerts in write order), compacted, so a re-sent
  alert with the same alert id replaces the earlier one;
- dead letters: one partition, kept 30 days;
- stories: one partition, compacted (the latest state of each story);
- story alerts: one partition (alerts in write order), kept 30 days.

Every topic accepts records up to `MAX_MESSAGE_BYTES`. Use `make_producer`,
`make_consumer` and `make_admin` rather than the kafka-python classes directly:
their defaults never lose or skip a record silently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.admin import ConfigResource, ConfigResourceType

from newswatch.config import Settings
from newswatch.errors import BrokerError
from newswatch.retry import retry_kafka

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_REQUEST_BYTES",
    "REFUSALS",
    "Producer",
    "TopicSpec",
    "ensure_topics",
    "make_admin",
    "make_consumer",
    "make_producer",
    "read_topic",
    "topic_specs",
]

logger = logging.getLogger(__name__)

#: Largest record batch a topic accepts (broker ``message.max.bytes``, topic
#: ``max.message.bytes``): a long article with its HTML stripped fits easily.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

#: What a producer may send in one request; below `MAX_MESSAGE_BYTES` so that a
#: record the producer accepts is never refused by the broker for batch overhead.
MAX_REQUEST_BYTES = MAX_MESSAGE_BYTES - 64 * 1024

_DAY_MS = 24 * 60 * 60 * 1000

#: Errors of a broker that is up but not yet serving topic admin (just started,
#: not yet unfenced, controller moving); worth retrying for a few seconds.
_NOT_READY = (
    kafka_errors.InvalidReplicationFactorError,
    kafka_errors.RetriableError,
    kafka_errors.BrokerNotAvailableError,
)


@dataclass(frozen=True)
class TopicSpec:
    """Name, partition count and topic-level configs of one topic."""

    name: str
    partitions: int
    configs: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics newswatch needs, from ``settings.kafka``."""
    kafka = settings.kafka
    size = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    compact = {"cleanup.policy": "compact", **size}
    return [
        TopicSpec(
            kafka.articles_topic,
            kafka.partitions,
            {"cleanup.policy": "delete", "retention.ms": str(7 * _DAY_MS), **size},
        ),
        TopicSpec(
            kafka.classified_topic,
            1,
            {"cleanup.policy": "delete", "retention.ms": str(7 * _DAY_MS), **size},
        ),
        TopicSpec(kafka.decisions_topic, kafka.partitions, compact),
        TopicSpec(kafka.alerts_topic, 1, compact),
        TopicSpec(kafka.stories_topic, 1, compact),
        TopicSpec(
            kafka.story_alerts_topic,
            1,
            {"cleanup.policy": "delete", "retention.ms": str(30 * _DAY_MS), **size},
        ),
        TopicSpec(
            kafka.dead_letter_topic,
            1,
            {"cleanup.policy": "delete", "retention.ms": str(30 * _DAY_MS), **size},
        ),
    ]


def ensure_topics(
    settings: Settings, timeout: float = 30.0, *, specs: Sequence[TopicSpec] | None = None
) -> None:
    """Create the newswatch topics that do not exist yet; leave existing ones alone.

    Existing topics are not altered (an operator may have tuned them), but a
    partition count or config different from ours is logged as a warning.

    Args:
        settings: Broker address and replication factor (and the topics, by default).
        timeout: Seconds to wait for a broker that is not ready for topic admin yet.
        specs: The topics to create instead of `topic_specs` (a replay's own).

    Raises:
        BrokerError: the broker cannot be reached, or refuses a topic, within
            ``timeout`` seconds.
    """
    specs = list(topic_specs(settings) if specs is None else specs)
    servers = settings.bootstrap_servers
    try:
        retry_kafka(
            f"topic admin on {servers}",
            lambda: _create_missing(servers, specs, settings.kafka.replication_factor),
            seconds=timeout,
            retry_on=_NOT_READY,
            max_wait=0.5,
            level=logging.DEBUG,
        )
    except _NOT_READY as exc:
        raise BrokerError(
            f"cannot create topics on {servers} within {timeout:.0f} s: {exc}"
        ) from exc
    except kafka_errors.KafkaError as exc:
        raise BrokerError(f"cannot create topics on {servers}: {exc}") from exc


def _create_missing(servers: str, specs: list[TopicSpec], replication_factor: int) -> None:
    admin = make_admin(servers)
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            result = admin.create_topics(
                {
                    spec.name: {
                        "num_partitions": spec.partitions,
                        "replication_factor": replication_factor,
                        "configs": spec.configs,
                    }
                    for spec in missing
                },
                raise_errors=False,
            )
            for topic in result["topics"]:
                error = kafka_errors.for_code(topic["error_code"])
                if error is kafka_errors.NoError or error is kafka_errors.TopicAlreadyExistsError:
                    continue
                raise error(
                    f"topic {topic['name']}: {topic.get('error_message') or error.__name__}"
                )
            for spec in missing:
                logger.info("created topic %s (%d partitions)", spec.name, spec.partitions)
        admin.wait_for_topics([spec.name for spec in specs], timeout_ms=10_000)
        _warn_on_drift(admin, [spec for spec in specs if spec.name in existing])
    finally:
        admin.close()


def _warn_on_drift(admin: KafkaAdminClient, specs: list[TopicSpec]) -> None:
    """Log existing topics whose partitions or configs differ from ours."""
    if not specs:
        return
    described = {t["name"]: t for t in admin.describe_topics([spec.name for spec in specs])}
    configs = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, spec.name) for spec in specs],
        config_filter="all",
    )
    by_topic = next(iter(configs.values()), {}) if configs else {}
    for spec in specs:
        partitions = len(described.get(spec.name, {}).get("partitions") or [])
        if partitions < spec.partitions:
            logger.warning(
                "topic %s has %d partitions, fewer than the configured %d",
                spec.name,
                partitions,
                spec.partitions,
            )
        actual = by_topic.get(spec.name, {})
        for key, wanted in spec.configs.items():
            value = _config_value(actual.get(key))
            if value is not None and value != wanted:
                logger.warning(
                    "topic %s has %s=%s, newswatch expects %s", spec.name, key, value, wanted
                )


def _config_value(entry: Any) -> str | None:
    if isinstance(entry, dict):
        return entry.get("value")
    return entry


#: Broker refusals of a record itself, which no retry can cure. After one, an
#: idempotent KafkaProducer fails every later send too (see `Producer`).
REFUSALS: tuple[type[Exception], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTimestampError,
    kafka_errors.CorruptRecordError,
    kafka_errors.InvalidRecordError,
)


class Producer:
    """A `KafkaProducer` that replaces itself after a refused or an expired record.

    After a refusal (`REFUSALS`) an idempotent KafkaProducer fails every later
    send, whatever its topic, and after a batch expired undelivered (a broker
    outage) its sequence numbers no longer match the broker's; the next ``send``
    here goes through a new one. Everything else is the wrapped producer's.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._producer = KafkaProducer(**config)
        self._stale: str | None = None
        """Why the wrapped producer must be replaced before the next send, if it must."""

    def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        if self._stale is not None:
            self._producer.close(timeout=5)
            self._producer = KafkaProducer(**self._config)
            logger.info("replaced the producer: %s", self._stale)
            self._stale = None
        future = self._producer.send(topic, *args, **kwargs)
        future.add_errback(self._on_error)
        return future

    def _on_error(self, error: BaseException) -> None:
        if isinstance(error, REFUSALS):
            self._stale = "the broker refused a record"
        elif isinstance(error, kafka_errors.KafkaTimeoutError):
            self._stale = "records expired undelivered"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


def make_producer(bootstrap_servers: str, **overrides: Any) -> Producer:
    """A producer that waits for the full ISR, never duplicates on retry, and fits big articles.

    Callers must still ``flush()`` (or ``get()`` the futures) before they record
    progress anywhere else: an acknowledged send is the only proof of delivery.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_request_size": MAX_REQUEST_BYTES,
        "delivery_timeout_ms": 120_000,
        "request_timeout_ms": 30_000,
        "allow_auto_create_topics": False,
        "client_id": "newswatch-producer",
    }
    config.update(overrides)
    return Producer(config)


def make_consumer(
    bootstrap_servers: str, group_id: str | None = None, **overrides: Any
) -> KafkaConsumer:
    """A consumer that commits only when told and starts a new group at the earliest record.

    Pass topics as a keyword (``topics=[...]``) or call ``subscribe``/``assign`` later.
    """
    topics = overrides.pop("topics", ())
    config: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # Readers never see records of aborted transactions, should a writer use them.
        "isolation_level": "read_committed",
        "allow_auto_create_topics": False,
        "client_id": "newswatch-consumer",
    }
    config.update(overrides)
    return KafkaConsumer(*topics, bootstrap_servers=bootstrap_servers, **config)


def make_admin(bootstrap_servers: str, **overrides: Any) -> KafkaAdminClient:
    """An admin client for topic and group management."""
    config: dict[str, Any] = {
        "client_id": "newswatch-admin",
        "request_timeout_ms": 30_000,
        "bootstrap_timeout_ms": 10_000,
    }
    config.update(overrides)
    return KafkaAdminClient(bootstrap_servers=bootstrap_servers, **config)


def read_topic(bootstrap_servers: str, topic: str, timeout: float = 120.0) -> list[Any]:
    """Every record currently in ``topic`` (up to the end offsets at the call), per partition.

    Raises:
        TimeoutError: the records could not all be read within ``timeout`` seconds.
    """
    consumer = make_consumer(bootstrap_servers, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout:.0f} s")
            for tp, batch in consumer.poll(timeout_ms=500).items():
                records.extend(r for r in batch if r.offset < end[tp])
        return records
    finally:
        consumer.close()
