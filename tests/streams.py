"""What a test reads back from its topics: records, outcomes and the group's offsets."""

from __future__ import annotations

from kafka import TopicPartition

from newswatch import topics
from newswatch.config import Settings
from newswatch.schemas import Decision
from newswatch.topics import make_consumer

__all__ = [
    "articles_committed",
    "committed_offsets",
    "decided_ids",
    "read_topic",
    "settled",
    "totals",
]


def read_topic(settings: Settings, topic: str) -> list:
    """Every record currently in ``topic`` on the settings' broker (`topics.read_topic`)."""
    return topics.read_topic(settings.bootstrap_servers, topic, timeout=30)


def committed_offsets(
    settings: Settings, topic: str | None = None
) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed and the end offsets of each partition (of the articles topic)."""
    consumer = make_consumer(settings.bootstrap_servers, group_id=settings.kafka.group_id)
    try:
        topic = topic or settings.kafka.articles_topic
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        end = {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
        return {tp.partition: consumer.committed(tp) or 0 for tp in tps}, end
    finally:
        consumer.close()


def totals(settings: Settings) -> tuple[int, int]:
    """Committed and end offsets summed over the articles and classified topics: equal once
    every article and every Taiwan-related article's story step is done."""
    kafka = settings.kafka
    consumer = make_consumer(settings.bootstrap_servers, group_id=kafka.group_id)
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in (kafka.articles_topic, kafka.classified_topic)
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        end = consumer.end_offsets(tps)
        return sum(consumer.committed(tp) or 0 for tp in tps), sum(end.values())
    finally:
        consumer.close()


def settled(settings: Settings) -> bool:
    """Every article read so far is decided and committed, story step included."""
    committed, end = totals(settings)
    return committed == end


def articles_committed(settings: Settings) -> int:
    return sum(committed_offsets(settings)[0].values())


def decided_ids(settings: Settings) -> set[str]:
    records = read_topic(settings, settings.kafka.decisions_topic)
    return {Decision.from_bytes(r.value).article_id for r in records}
