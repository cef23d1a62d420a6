"""Prometheus metrics of every newswatch process, defined once.

Each process exports the metrics it updates: the worker (``newswatch run`` and
``newswatch pipeline`` with ``--metrics-port``) counts what the connectors and the
pipeline do, the web page (``newswatch serve``) what it reads from the topics,
and the notifiers their deliveries. The Beam pipeline runs on Prism with LOOPBACK
workers, so its DoFns run in the launching process and update these same objects,
one call beside each Beam ``Metrics.counter`` increment. Counts in DoFns are of
attempts, as Beam's attempted metrics are: a retried bundle counts again.

Metric names and meanings are listed in docs/operating.md ("Metrics").

Example::

    from newswatch import metrics

    metrics.DEAD_LETTERS.labels(stage="decode").inc()
    with metrics.CLASSIFY_BATCH_SECONDS.time():
        results = model.classify(batch)
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "ACK_TO_OUTCOME_SECONDS",
    "ALERTS",
    "ARTICLES_PUBLISHED",
    "ARTICLES_READ",
    "BROKER_UP",
    "CLASSIFY_BATCH_SECONDS",
    "CONSUMER_LAG",
    "CONTENT_TYPE_LATEST",
    "DEAD_LETTERS",
    "DECISIONS",
    "FEED_POLLS",
    "HANDOVER_SECONDS",
    "NAMESPACE",
    "NOTIFIER_DELIVERIES",
    "NOTIFIER_FAILURES",
    "OFFSET_COMMITS_REFUSED",
    "PARTITIONS_ASSIGNED",
    "READER_LAST_POLL",
    "STORIES",
    "STORY_ALERTS",
    "WEB_HELD",
    "WEB_RECORDS",
    "WEB_UNREADABLE",
    "count_dead_letters",
    "exposition",
    "observe_ack_to_outcome",
    "reader_polled",
]

#: Namespace of the pipeline's Beam metrics (``Metrics.counter(NAMESPACE, name)``); the
#: Prometheus metrics below share it as their ``newswatch_`` prefix.
NAMESPACE = "newswatch"

# -- worker: connectors --------------------------------------------------------------

ARTICLES_PUBLISHED = Counter(
    "newswatch_articles_published", "Articles the connectors published (acknowledged by Kafka)."
)
FEED_POLLS = Counter(
    "newswatch_feed_polls",
    "Feed polls by outcome: ok (fetched and published), not_modified (304), failed.",
    ["outcome"],
)

# -- worker: pipeline ----------------------------------------------------------------

ARTICLES_READ = Counter(
    "newswatch_articles_read", "Records the pipeline read from the articles topic."
)
DECISIONS = Counter("newswatch_decisions", "Articles classified (one decision each).")
ALERTS = Counter("newswatch_alerts", "Article alerts raised (escalations).")
STORIES = Counter(
    "newswatch_stories", "Story records emitted by story clustering, by status.", ["status"]
)
STORY_ALERTS = Counter("newswatch_story_alerts", "Story alerts raised.")
DEAD_LETTERS = Counter(
    "newswatch_dead_letters",
    "Dead letters by stage (parse, decode, publish: connectors; decode, classify: pipeline).",
    ["stage"],
)
CLASSIFY_BATCH_SECONDS = Histogram(
    "newswatch_classify_batch_seconds",
    "Seconds the classifier took for one batch of articles.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ACK_TO_OUTCOME_SECONDS = Histogram(
    "newswatch_ack_to_outcome_seconds",
    "Seconds from an article's record timestamp (its producer send) to the broker's "
    "acknowledgement of its outcome (decision, with alert, or dead letter).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
READER_LAST_POLL = Gauge(
    "newswatch_reader_last_poll_timestamp_seconds",
    "Unix time of the pipeline's last poll of each articles partition.",
    ["topic", "partition"],
)

PARTITIONS_ASSIGNED = Counter(
    "newswatch_partitions_assigned",
    "Articles partitions the consumer group assigned to this worker (each assignment counts).",
)
OFFSET_COMMITS_REFUSED = Counter(
    "newswatch_offset_commits_refused",
    "Offset commits not made because the partition had moved to another worker (fencing).",
)
HANDOVER_SECONDS = Histogram(
    "newswatch_handover_seconds",
    "Seconds this worker took to drain partitions revoked by the group before handing them over.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
)

# -- any process with a broker monitor (worker, web page) -----------------------------

BROKER_UP = Gauge("newswatch_broker_up", "1 if the last broker check succeeded, else 0.")
CONSUMER_LAG = Gauge(
    "newswatch_consumer_lag",
    "Records of the articles topic the pipeline group has not committed, per partition.",
    ["group", "topic", "partition"],
)

# -- notifiers -----------------------------------------------------------------------

NOTIFIER_DELIVERIES = Counter(
    "newswatch_notifier_deliveries", "Story alerts delivered, by sink.", ["sink"]
)
NOTIFIER_FAILURES = Counter(
    "newswatch_notifier_failures", "Failed delivery attempts of story alerts, by sink.", ["sink"]
)

# -- web page ------------------------------------------------------------------------

WEB_RECORDS = Counter(
    "newswatch_web_records",
    "Records the web page read, by kind (story, story_alert, alert, decision, dead_letter).",
    ["kind"],
)
WEB_UNREADABLE = Counter(
    "newswatch_web_unreadable_records",
    "Records the web page could not parse (logged with topic/partition@offset), by kind.",
    ["kind"],
)
WEB_HELD = Gauge("newswatch_web_held", "Items the web page holds in memory, by kind.", ["kind"])


def count_dead_letters(letters: Iterable[Any]) -> None:
    """Count dead letters (anything with a ``stage``) by stage."""
    for letter in letters:
        DEAD_LETTERS.labels(stage=letter.stage).inc()


def reader_polled(topic: str, partition: int) -> None:
    """Note that the pipeline just polled ``topic``/``partition`` (for /readyz)."""
    READER_LAST_POLL.labels(topic=topic, partition=str(partition)).set(time.time())


def observe_ack_to_outcome(timestamp_ms: int | None) -> None:
    """Record the time since a record's Kafka timestamp (skipped when it has none)."""
    if timestamp_ms is not None and timestamp_ms > 0:
        ACK_TO_OUTCOME_SECONDS.observe(max(0.0, time.time() - timestamp_ms / 1000.0))


def last_reader_poll() -> float | None:
    """Unix time of the pipeline's most recent partition poll in this process, if any."""
    times = [
        sample.value
        for family in READER_LAST_POLL.collect()
        for sample in family.samples
        if sample.value > 0
    ]
    return max(times) if times else None


def exposition() -> bytes:
    """The text exposition of every metric of this process (``/metrics``)."""
    return generate_latest(REGISTRY)
