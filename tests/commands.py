"""Command lines that run ``newswatch`` as the operator does, pointed at a test's own topics.

A test that starts ``newswatch pipeline``, ``run``, ``serve`` or ``status`` as a
subprocess gives it the test's home, broker, topics and consumer group with the
same flags; `newswatch_command` builds that command line.
"""

from __future__ import annotations

import sys

from newswatch.config import Settings

__all__ = ["kafka_flags", "newswatch_command"]


def kafka_flags(settings: Settings) -> list[str]:
    """The flags that point a command at the test's broker, topics and group."""
    kafka = settings.kafka
    return [
        f"--bootstrap-servers={kafka.bootstrap_servers}",
        f"--articles-topic={kafka.articles_topic}",
        f"--alerts-topic={kafka.alerts_topic}",
        f"--decisions-topic={kafka.decisions_topic}",
        f"--dead-letter-topic={kafka.dead_letter_topic}",
        f"--stories-topic={kafka.stories_topic}",
        f"--story-alerts-topic={kafka.story_alerts_topic}",
        f"--group-id={kafka.group_id}",
    ]


def _worker_flags(settings: Settings, command: str) -> list[str]:
    """Topics only the pipeline's workers use."""
    if command not in ("pipeline", "run"):
        return []
    return [f"--classified-topic={settings.kafka.classified_topic}"]


def newswatch_command(settings: Settings, command: str, *flags: str) -> list[str]:
    """``python -m newswatch.cli COMMAND`` on the test's home and topics, then ``flags``."""
    return [
        sys.executable,
        "-m",
        "newswatch.cli",
        command,
        f"--home={settings.home}",
        *kafka_flags(settings),
        *_worker_flags(settings, command),
        *flags,
    ]
