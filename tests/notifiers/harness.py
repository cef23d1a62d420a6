"""Story alerts on the session broker, and a notifier running on them.

- ``story_alert(...)`` builds a real `StoryAlert` (with its `Story`);
- ``publish(settings, ...)`` writes alerts (or raw bytes) to the test's story-alerts
  topic, keyed by story id, as the pipeline does;
- ``running(settings)`` runs a `NotifierService` in a thread for the block;
- ``committed`` / ``wait_until_committed`` read the notifier group's offsets.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from kafka import TopicPartition

from newswatch.config import RouteSettings, Settings
from newswatch.schemas import (
    DeadLetter,
    Story,
    StoryAlert,
    StoryArticle,
    StoryEvidence,
    story_alert_id,
)
from newswatch.topics import make_consumer, make_producer, read_topic
from notifiers.service import NotifierService, NotifyReport

HEADLINE = "China's navy encircles Taiwan in live-fire drills"
EVIDENCE = "The PLA Eastern Theater Command said warships fired live rounds east of Taiwan."
LINK = "https://news.example.org/asia/taiwan-drills"


def story_alert(
    story_id: str = "story-1",
    update: int = 0,
    *,
    severity: int = 2,
    status: str = "escalated",
    signals: dict[str, int] | None = None,
    outlets: int = 2,
    reasons: list[str] | None = None,
    headline: str = HEADLINE,
    evidence: str = EVIDENCE,
    link: str = LINK,
) -> StoryAlert:
    """A story alert as the pipeline writes it."""
    signals = {"military": 2, "grayzone": 1} if signals is None else signals
    articles = [
        StoryArticle(
            article_id=f"{story_id}-a{i}",
            url=link if i == 0 else f"{link}-{i}",
            title=headline,
            source=f"Outlet {i}",
            published="2026-12-03T08:00:00Z",
            escalation=True,
            escalation_score=0.9,
            signals=list(signals),
            severity=severity,
        )
        for i in range(outlets)
    ]
    story = Story(
        story_id=story_id,
        headline=headline,
        first_seen="2026-12-03T08:00:00Z",
        last_seen="2026-12-03T09:00:00Z",
        articles=articles,
        outlets=outlets,
        escalation=True,
        max_score=0.93,
        signals=signals,
        severity=severity,
        evidence=[StoryEvidence(evidence, f"{story_id}-a0", link, "Outlet 0", 0.93)],
        status=status,
        status_changed_at="2026-12-03T09:00:00Z",
        updated_at="2026-12-03T09:00:00Z",
        revision=update,
    )
    return StoryAlert(
        alert_id=story_alert_id(story_id, update),
        story_id=story_id,
        update=update,
        reasons=reasons if reasons is not None else ["escalated"],
        story=story,
        alerted_at="2026-12-03T09:00:01Z",
    )


def publish(settings: Settings, *alerts: StoryAlert | bytes) -> None:
    """Write story alerts (or raw bytes) to the story-alerts topic and wait for the acks."""
    producer = make_producer(settings.bootstrap_servers)
    try:
        for alert in alerts:
            if isinstance(alert, bytes):
                producer.send(settings.kafka.story_alerts_topic, key=b"junk", value=alert)
            else:
                producer.send(
                    settings.kafka.story_alerts_topic,
                    key=alert.story_id.encode(),
                    value=alert.to_bytes(),
                )
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def end_offset(settings: Settings) -> int:
    consumer = make_consumer(settings.bootstrap_servers, group_id=None)
    try:
        tp = TopicPartition(settings.kafka.story_alerts_topic, 0)
        return consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def committed(settings: Settings) -> int:
    """The notifier group's committed offset on the story-alerts topic (-1: none)."""
    consumer = make_consumer(settings.bootstrap_servers, group_id=settings.notify.group_id)
    try:
        offset = consumer.committed(TopicPartition(settings.kafka.story_alerts_topic, 0))
    finally:
        consumer.close()
    return -1 if offset is None else offset


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def wait_until_committed(settings: Settings, timeout: float = 30.0) -> int:
    """Wait until the notifier committed everything on the topic (every alert settled)."""
    end = end_offset(settings)
    wait_until(lambda: committed(settings) >= end, timeout, f"committed offset {end}")
    return end


def dead_letters(settings: Settings) -> list[DeadLetter]:
    return [
        DeadLetter.from_bytes(r.value)
        for r in read_topic(settings.bootstrap_servers, settings.kafka.dead_letter_topic)
    ]


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[NotifierService]:
    """A notifier on ``settings`` in a thread, stopped (and checked) after the block."""
    service = NotifierService(settings)
    stop = threading.Event()
    outcome: list[NotifyReport | BaseException] = []

    def run() -> None:
        try:
            outcome.append(service.run(stop))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name="test-notifier", daemon=True)
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the notifier did not stop within 60 s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]


def route(**fields: Any) -> RouteSettings:
    """A route with short timing (group_wait 0.2 s, group_interval 1 s) unless given."""
    fields.setdefault("group_wait", 0.2)
    fields.setdefault("group_interval", 1.0)
    return RouteSettings(**fields)
