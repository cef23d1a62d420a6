"""A replay's own topics and consumer group: names, creation, deletion, progress offsets.

Every replay runs on ``newswatch.replay.<run-id>.*`` (articles, alerts, decisions,
dead letters, stories, story alerts, classified, and the escalation index), never on
the live topics. `create_replay_topics` creates them through
`newswatch.topics.ensure_topics`, with the live topics' partitions and policies
except that nothing expires; `delete_replay_topics` removes them and the group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Sequence
from typing import Any

from kafka import TopicPartition
from kafka import errors as kafka_errors

from newswatch.config import Settings, replace
from newswatch.errors import ConfigError
from newswatch.topics import (
    MAX_MESSAGE_BYTES,
    TopicSpec,
    ensure_topics,
    make_admin,
    make_consumer,
    topic_specs,
)

__all__ = [
    "REPLAY_PREFIX",
    "consumed_offsets",
    "create_replay_topics",
    "delete_replay_topics",
    "index_topic",
    "replay_settings",
    "replay_topic_specs",
]

logger = logging.getLogger(__name__)

#: Every replay topic and consumer group starts with this.
REPLAY_PREFIX = "newswatch.replay."


def replay_settings(settings: Settings, run_id: str) -> Settings:
    """A copy of ``settings`` whose topics and consumer group belong to replay ``run_id``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", run_id):
        raise ConfigError(f"replay run id {run_id!r}: use letters, digits, '-' and '_' only")
    prefix = f"{REPLAY_PREFIX}{run_id}."
    kafka = replace(
        settings.kafka,
        articles_topic=prefix + "articles",
        alerts_topic=prefix + "alerts",
        decisions_topic=prefix + "decisions",
        dead_letter_topic=prefix + "dead-letters",
        stories_topic=prefix + "stories",
        story_alerts_topic=prefix + "story-alerts",
        classified_topic=prefix + "classified",
        group_id=prefix + "pipeline",
        # One partition: the reader meets the articles in event-time order, as the
        # stories need. With several, Prism's watermark did not hold back the slower
        # partitions (a 3-partition replay of 2,386 rows: 1,221 articles reached the
        # story step behind stories already built; with one: none).
        partitions=1,
    )
    live = set(_topics(settings.kafka, ""))
    ours = _topics(kafka, prefix + "index")
    if live & set(ours) or not all(t.startswith(REPLAY_PREFIX) for t in ours):
        raise ConfigError(f"replay topics {ours} would overlap the live topics {sorted(live)}")
    return replace(settings, kafka=kafka)


def _topics(kafka: Any, index_topic: str) -> list[str]:
    names = [
        kafka.articles_topic,
        kafka.alerts_topic,
        kafka.decisions_topic,
        kafka.dead_letter_topic,
        kafka.stories_topic,
        kafka.story_alerts_topic,
        kafka.classified_topic,
    ]
    return [*names, index_topic] if index_topic else names


def index_topic(settings: Settings) -> str:
    """The index topic of a replay's settings."""
    return settings.kafka.articles_topic.removesuffix("articles") + "index"


def replay_topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics of a replay's settings: the live ones' specs, kept regardless of age.

    Records carry event times from the archive, years old; the topics keep
    them (``retention.ms=-1``), so time-based retention cannot delete a
    replay's input while it runs.
    """
    specs = []
    for spec in topic_specs(settings):
        configs = {**spec.configs}
        if configs.get("cleanup.policy") == "delete":
            configs["retention.ms"] = "-1"
        specs.append(dataclasses.replace(spec, configs=configs))
    index_configs = {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "max.message.bytes": str(MAX_MESSAGE_BYTES),
    }
    specs.append(TopicSpec(index_topic(settings), 1, index_configs))
    return specs


def create_replay_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the replay's topics; fail if any exists (a replay never appends).

    Raises:
        ConfigError: a topic of this run id exists already.
        BrokerError: the broker refuses a topic, or cannot be reached within ``timeout``.
    """
    specs = replay_topic_specs(settings)
    names = [spec.name for spec in specs]
    admin = make_admin(settings.bootstrap_servers)
    try:
        existing = set(admin.list_topics()) & set(names)
    finally:
        admin.close()
    if existing:
        raise ConfigError(f"replay topics already exist: {sorted(existing)}; use a new run id")
    ensure_topics(settings, timeout, specs=specs)
    return names


def delete_replay_topics(settings: Settings, topics: Sequence[str]) -> None:
    """Delete a replay's topics and its consumer group (never anything else)."""
    topics = [t for t in topics if t.startswith(REPLAY_PREFIX)]
    admin = make_admin(settings.bootstrap_servers)
    try:
        admin.delete_topics(topics, raise_errors=False)
        group = settings.kafka.group_id
        if group.startswith(REPLAY_PREFIX):
            with contextlib.suppress(kafka_errors.KafkaError):
                admin.delete_groups([group])
    except kafka_errors.KafkaError as exc:
        logger.warning("could not delete replay topics %s: %s", ", ".join(topics), exc)
    finally:
        admin.close()


def consumed_offsets(settings: Settings) -> tuple[int, int]:
    """(committed, end) offsets of the replay's group, summed over the articles topic."""
    consumer = make_consumer(settings.bootstrap_servers, group_id=settings.kafka.group_id)
    try:
        topic = settings.kafka.articles_topic
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        end = consumer.end_offsets(tps)
        committed = sum(consumer.committed(tp) or 0 for tp in tps)
        return committed, sum(end.values())
    finally:
        consumer.close()
