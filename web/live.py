"""What the page shows, held in memory and fed from the topics by a background reader.

`TopicReader` is one Kafka consumer (no group, nothing committed) assigned to every
partition of the stories, story-alerts, alerts, decisions and dead-letter topics.
At start it seeks each partition to the first record of the last
``serve.history_hours`` (its end if there is none); topics created later are read
from their beginning. It hands each record to `LiveState.apply`.

`LiveState` keeps bounded state: the latest revision of each story (compacted
topic: latest per key wins; a tombstone removes it) with the revisions seen, the
newest article alerts (one per alert id), the newest dead letters with counts by
stage, and the escalation index as hourly buckets of the decisions. Each change
gets a sequence number, so a live page can ask for what changed since the one it
saw (`changes_since`). Records that do not parse are counted and logged with
their topic/partition@offset, never shown.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka import errors as kafka_errors

from newswatch import metrics
from newswatch.config import Settings
from newswatch.schemas import (
    SIGNAL_TYPES,
    Alert,
    DeadLetter,
    Decision,
    SchemaError,
    Story,
    StoryAlert,
    parse_seconds,
)
from newswatch.topics import make_consumer

__all__ = [
    "KINDS",
    "Bucket",
    "Change",
    "DeadLetterEntry",
    "HourlyIndex",
    "LiveState",
    "Revision",
    "StoryEntry",
    "TopicReader",
]

logger = logging.getLogger(__name__)

#: The kinds of record the page reads, one per topic.
KINDS = ("story", "story_alert", "alert", "decision", "dead_letter")

#: Revisions remembered per story, and story alerts per story.
MAX_REVISIONS = 100
MAX_STORY_ALERTS = 20
#: Changes remembered for live pages that reconnect.
MAX_CHANGES = 5000
#: Seconds between index changes announced to live pages (decisions arrive in bursts).
INDEX_CHANGE_EVERY = 5.0
#: Unreadable records logged per kind before only every 1000th is.
_LOGGED_UNREADABLE = 10

_HOUR = 3600


@dataclass(frozen=True, slots=True)
class Revision:
    """One revision of a story as it was seen on the topic."""

    revision: int
    updated_at: str
    status: str
    severity: int
    max_score: float
    signals: dict[str, int]
    outlets: int
    articles: int


@dataclass
class StoryEntry:
    """The latest revision of a story, the revisions seen and its story alerts."""

    story: Story
    history: list[Revision] = field(default_factory=list)
    alerts: list[StoryAlert] = field(default_factory=list)

    def add_revision(self, story: Story) -> None:
        if any(r.revision == story.revision for r in self.history):
            return
        self.history.append(
            Revision(
                revision=story.revision,
                updated_at=story.updated_at,
                status=story.status,
                severity=story.severity,
                max_score=story.max_score,
                signals=dict(story.signals),
                outlets=story.outlets,
                articles=len(story.articles),
            )
        )
        self.history.sort(key=lambda r: r.revision)
        del self.history[:-MAX_REVISIONS]


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """A dead letter and where it was read."""

    letter: DeadLetter
    where: str
    """topic/partition@offset of the dead-letter record."""


@dataclass(frozen=True, slots=True)
class Change:
    """Something the page shows changed: ``kind`` is story, alert, remove, index or summary."""

    seq: int
    kind: str
    key: str = ""


@dataclass
class Bucket:
    """One hour of the escalation index (the same aggregates as the replay's index)."""

    start: float
    """Unix seconds of the hour's start."""
    articles: int = 0
    alerts: int = 0
    score_sum: float = 0.0
    signals: Counter = field(default_factory=Counter)
    ids: set[str] = field(default_factory=set)

    @property
    def score_mean(self) -> float:
        return self.score_sum / self.articles if self.articles else 0.0


class HourlyIndex:
    """Decisions aggregated per hour of event time (publication, else decision time).

    Each article counts once (a decision seen again replaces the earlier one);
    hours older than ``hours`` before now are dropped.
    """

    def __init__(self, hours: float) -> None:
        self.hours = hours
        self._buckets: dict[int, Bucket] = {}
        self._where: dict[str, tuple[int, bool, float, tuple[str, ...]]] = {}
        self.decided_at: dict[str, float] = {}
        """Article id → decision time, to find the article's record on the topic."""

    def add(self, decision: Decision, now: float | None = None) -> bool:
        """Count a decision; False if it falls outside the index's span."""
        now = time.time() if now is None else now
        event = parse_seconds(decision.published) or parse_seconds(decision.decided_at)
        if event is None:
            return False
        cutoff = now - self.hours * _HOUR
        self._prune(cutoff)
        hour = int(event // _HOUR) * _HOUR
        if hour + _HOUR <= cutoff or event > now + _HOUR:
            return False
        self._remove(decision.article_id)
        bucket = self._buckets.setdefault(hour, Bucket(start=float(hour)))
        signals = tuple(s for s in decision.signals if s in SIGNAL_TYPES)
        score = float(decision.escalation_score or 0.0)
        bucket.articles += 1
        bucket.alerts += 1 if decision.alert else 0
        bucket.score_sum += score
        bucket.signals.update(signals)
        bucket.ids.add(decision.article_id)
        self._where[decision.article_id] = (hour, bool(decision.alert), score, signals)
        decided = parse_seconds(decision.decided_at)
        if decided is not None:
            self.decided_at[decision.article_id] = decided
        return True

    def _remove(self, article_id: str) -> None:
        old = self._where.pop(article_id, None)
        if old is None:
            return
        hour, alert, score, signals = old
        bucket = self._buckets.get(hour)
        if bucket is None:
            return
        bucket.articles -= 1
        bucket.alerts -= 1 if alert else 0
        bucket.score_sum -= score
        bucket.signals.subtract(signals)
        bucket.ids.discard(article_id)

    def _prune(self, cutoff: float) -> None:
        for hour in [h for h in self._buckets if h + _HOUR <= cutoff]:
            for article_id in self._buckets.pop(hour).ids:
                self._where.pop(article_id, None)
                self.decided_at.pop(article_id, None)

    def buckets(self, resolution: str = "hour", now: float | None = None) -> list[Bucket]:
        """Every bucket of the span, empty ones included, oldest first."""
        now = time.time() if now is None else now
        self._prune(now - self.hours * _HOUR)
        step = 86400 if resolution == "day" else _HOUR
        first = int((now - self.hours * _HOUR) // step) * step
        last = int(now // step) * step
        out = {start: Bucket(start=float(start)) for start in range(first, last + 1, step)}
        for hour, bucket in self._buckets.items():
            target = out.get(int(hour // step) * step)
            if target is None:
                continue
            target.articles += bucket.articles
            target.alerts += bucket.alerts
            target.score_sum += bucket.score_sum
            target.signals.update(bucket.signals)
        return [out[k] for k in sorted(out)]

    def __len__(self) -> int:
        return len(self._where)


class LiveState:
    """Bounded, thread-safe state of the topics; see the module docstring."""

    def __init__(
        self,
        *,
        max_stories: int = 2000,
        max_alerts: int = 1000,
        max_dead_letters: int = 500,
        index_hours: float = 168.0,
    ) -> None:
        self.lock = threading.RLock()
        self.max_stories = max_stories
        self.max_alerts = max_alerts
        self.stories: OrderedDict[str, StoryEntry] = OrderedDict()
        """By story id, least recently updated first."""
        self.alerts: OrderedDict[str, Alert] = OrderedDict()
        """By alert id, oldest first."""
        self.alerts_by_article: dict[str, str] = {}
        self.dead_letters: deque[DeadLetterEntry] = deque(maxlen=max_dead_letters)
        self.dead_by_stage: Counter[str] = Counter()
        self.index = HourlyIndex(index_hours)
        self.read: Counter[str] = Counter()
        self.unreadable: Counter[str] = Counter()
        self.seq = 0
        self._changes: deque[Change] = deque(maxlen=MAX_CHANGES)
        self._last_index_change = 0.0
        self._listeners: list[Callable[[], None]] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveState:
        serve = settings.serve
        return cls(
            max_stories=serve.max_stories,
            max_alerts=serve.max_alerts,
            max_dead_letters=serve.max_dead_letters,
            index_hours=serve.history_hours,
        )

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (from the reader's thread) after every batch of changes."""
        self._listeners.append(listener)

    # -- updates -----------------------------------------------------------------------

    def apply(self, kind: str, key: bytes | None, value: bytes | None, where: str) -> None:
        """Take one record of ``kind``; unreadable ones are counted and logged."""
        self.read[kind] += 1
        metrics.WEB_RECORDS.labels(kind=kind).inc()
        try:
            with self.lock:
                self._apply(kind, key, value, where)
        except (SchemaError, TypeError, ValueError, AttributeError) as exc:
            self.unreadable[kind] += 1
            metrics.WEB_UNREADABLE.labels(kind=kind).inc()
            count = self.unreadable[kind]
            if count <= _LOGGED_UNREADABLE or count % 1000 == 0:
                logger.warning(
                    "unreadable %s record at %s (%d so far): %s", kind, where, count, exc
                )

    def _apply(self, kind: str, key: bytes | None, value: bytes | None, where: str) -> None:
        if kind == "story":
            if value is None:  # a tombstone: the story is gone
                story_id = (key or b"").decode("utf-8", "replace")
                if self.stories.pop(story_id, None) is not None:
                    self._changed("remove", f"story-{story_id}")
                return
            self._story(Story.from_bytes(value))
        elif kind == "story_alert":
            self._story_alert(StoryAlert.from_bytes(value))
        elif kind == "alert":
            if value is None:
                alert_id = (key or b"").decode("utf-8", "replace")
                if self.alerts.pop(alert_id, None) is not None:
                    self._changed("remove", f"alert-{alert_id}")
                return
            self._alert(Alert.from_bytes(value))
        elif kind == "decision":
            if value is None:
                return  # a tombstone of a compacted decision: nothing to count
            if self.index.add(Decision.from_bytes(value)):
                now = time.monotonic()
                if now - self._last_index_change >= INDEX_CHANGE_EVERY:
                    self._last_index_change = now
                    self._changed("index")
        elif kind == "dead_letter":
            letter = DeadLetter.from_bytes(value)
            self.dead_letters.append(DeadLetterEntry(letter, where))
            self.dead_by_stage[str(letter.stage)] += 1
            self._changed("summary")
        else:
            raise ValueError(f"unknown record kind {kind!r}")

    def _story(self, story: Story) -> None:
        entry = self.stories.get(story.story_id)
        if entry is None:
            entry = self.stories[story.story_id] = StoryEntry(story)
        elif story.revision < entry.story.revision:
            entry.add_revision(story)  # an older revision seen late: history only
            return
        else:
            entry.story = story
            self.stories.move_to_end(story.story_id)
        entry.add_revision(story)
        while len(self.stories) > self.max_stories:
            self.stories.popitem(last=False)
        self._changed("story", story.story_id)
        self._changed("summary")

    def _story_alert(self, alert: StoryAlert) -> None:
        self._story(alert.story)  # the alert carries its story as it stood
        entry = self.stories.get(alert.story_id)
        if entry is None:
            return
        if all(a.alert_id != alert.alert_id for a in entry.alerts):
            entry.alerts.append(alert)
            entry.alerts.sort(key=lambda a: a.update)
            del entry.alerts[:-MAX_STORY_ALERTS]
            self._changed("story", alert.story_id)

    def _alert(self, alert: Alert) -> None:
        new = alert.alert_id not in self.alerts
        self.alerts[alert.alert_id] = alert
        self.alerts_by_article[alert.article_id] = alert.alert_id
        while len(self.alerts) > self.max_alerts:
            _, dropped = self.alerts.popitem(last=False)
            if self.alerts_by_article.get(dropped.article_id) == dropped.alert_id:
                del self.alerts_by_article[dropped.article_id]
        if new:
            self._changed("alert", alert.alert_id)
            self._changed("summary")

    def _changed(self, kind: str, key: str = "") -> None:
        self.seq += 1
        self._changes.append(Change(self.seq, kind, key))

    def notify(self) -> None:
        """Tell the listeners that changes are waiting (called after each batch)."""
        for listener in self._listeners:
            listener()

    # -- reads -------------------------------------------------------------------------

    def changes_since(self, seq: int) -> list[Change] | None:
        """Changes after ``seq``, each key once (latest); None if some were forgotten."""
        with self.lock:
            if seq > self.seq:  # a page of an earlier run of this server
                return None
            if seq == self.seq:
                return []
            if not self._changes or self._changes[0].seq > seq + 1:
                return None
            latest: dict[tuple[str, str], Change] = {}
            for change in self._changes:
                if change.seq > seq:
                    latest.pop((change.kind, change.key), None)
                    latest[(change.kind, change.key)] = change
            return sorted(latest.values(), key=lambda c: c.seq)

    def story_entries(self) -> list[StoryEntry]:
        """Stories, most recently updated (event time) first."""
        with self.lock:
            entries = list(self.stories.values())
        return sorted(
            entries, key=lambda e: (e.story.updated_at or "", e.story.revision), reverse=True
        )

    def alert_list(self) -> list[Alert]:
        """Article alerts, newest first."""
        with self.lock:
            return list(reversed(self.alerts.values()))

    def dead_letter_list(self, stage: str | None = None) -> list[DeadLetterEntry]:
        """Dead letters held, newest first, optionally of one stage."""
        with self.lock:
            entries = list(reversed(self.dead_letters))
        return [e for e in entries if stage is None or e.letter.stage == stage]

    def summary(self) -> dict[str, Any]:
        """Counts for the page header and ``newswatch status``."""
        with self.lock:
            statuses = Counter(e.story.status for e in self.stories.values())
            out = {
                "stories": len(self.stories),
                "statuses": dict(statuses),
                "alerts": len(self.alerts),
                "dead_letters": sum(self.dead_by_stage.values()),
                "dead_by_stage": dict(self.dead_by_stage),
                "decisions": len(self.index),
                "read": dict(self.read),
                "unreadable": dict(self.unreadable),
            }
        for kind, count in (
            ("story", out["stories"]),
            ("alert", out["alerts"]),
            ("dead_letter", len(self.dead_letters)),
            ("decision", out["decisions"]),
        ):
            metrics.WEB_HELD.labels(kind=kind).set(count)
        return out


class TopicReader:
    """Feeds a `LiveState` from the topics in a daemon thread (see the module docstring)."""

    def __init__(self, settings: Settings, state: LiveState, *, poll_timeout: float = 0.5) -> None:
        kafka = settings.kafka
        self._settings = settings
        self._state = state
        self._poll_timeout_ms = int(poll_timeout * 1000)
        self._kinds = {
            kafka.stories_topic: "story",
            kafka.story_alerts_topic: "story_alert",
            kafka.alerts_topic: "alert",
            kafka.decisions_topic: "decision",
            kafka.dead_letter_topic: "dead_letter",
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-reader", daemon=True)
        self._assigned: set[TopicPartition] = set()
        self._end: dict[TopicPartition, int] = {}
        self._next_assign = 0.0
        self.caught_up = threading.Event()
        """Set once every assigned partition was read up to its end offset at assignment."""
        self.last_poll: float | None = None
        self.error: str | None = None
        self.missing: list[str] = list(self._kinds)

    def start(self) -> TopicReader:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def running(self) -> tuple[bool, str]:
        """For readiness: the reader polled recently."""
        if not self._thread.is_alive():
            return False, "topic reader stopped"
        if self.last_poll is None:
            return False, f"topic reader not connected yet ({self.error or 'starting'})"
        age = time.time() - self.last_poll
        limit = max(30.0, 3 * self._settings.serve.refresh)
        if age > limit:
            return False, f"topic reader last polled {age:.0f} s ago"
        waiting = f"; waiting for topics {', '.join(self.missing)}" if self.missing else ""
        return True, f"topic reader polled {age:.1f} s ago{waiting}"

    def _run(self) -> None:
        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = make_consumer(
                        self._settings.bootstrap_servers,
                        group_id=None,
                        client_id="newswatch-web",
                        bootstrap_timeout_ms=5000,
                        request_timeout_ms=10_000,
                    )
                if time.monotonic() >= self._next_assign:
                    self._assign(consumer)
                if not self._assigned:  # no topic yet: nothing to catch up with
                    self.caught_up.set()
                    self.last_poll = time.time()
                    self._stop.wait(min(self._settings.serve.refresh, 1.0))
                    continue
                batch = consumer.poll(timeout_ms=self._poll_timeout_ms, max_records=2000)
                self._take(batch)
                self.last_poll = time.time()
                self.error = None
                if not self.caught_up.is_set() and self._at_end(consumer):
                    self.caught_up.set()
            except (kafka_errors.KafkaError, OSError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                logger.debug("topic reader: %s", self.error)
                self._stop.wait(1.0)
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()

    def _take(self, batch: dict[TopicPartition, list[Any]]) -> None:
        if not batch:
            return
        for tp, records in batch.items():
            kind = self._kinds[tp.topic]
            for record in records:
                self._state.apply(
                    kind, record.key, record.value, f"{tp.topic}/{tp.partition}@{record.offset}"
                )
        self._state.notify()

    def _assign(self, consumer: Any) -> None:
        """Assign every partition of the topics; new ones start where the history begins."""
        first = not self._assigned and not self._end
        present = consumer.topics()
        wanted: set[TopicPartition] = set()
        for topic in self._kinds:
            if topic in present:
                for partition in consumer.partitions_for_topic(topic) or ():
                    wanted.add(TopicPartition(topic, partition))
        self.missing = [t for t in self._kinds if t not in present]
        # Check again soon while topics are missing, else now and then for new partitions.
        self._next_assign = time.monotonic() + (
            self._settings.serve.refresh if self.missing else 60.0
        )
        new = sorted(wanted - self._assigned, key=lambda tp: (tp.topic, tp.partition))
        if not new:
            return
        consumer.assign(sorted(wanted, key=lambda tp: (tp.topic, tp.partition)))
        self._assigned = wanted
        end = consumer.end_offsets(new)
        if first:
            since = int((time.time() - self._settings.serve.history_hours * _HOUR) * 1000)
            found = consumer.offsets_for_times({tp: since for tp in new})
            for tp in new:
                at = found.get(tp)
                consumer.seek(tp, at.offset if at is not None else end[tp])
        else:
            consumer.seek_to_beginning(*new)
        self._end.update(end)
        self.caught_up.clear()
        logger.info(
            "reading %s",
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in new),
        )

    def _at_end(self, consumer: Any) -> bool:
        return all(consumer.position(tp) >= self._end.get(tp, 0) for tp in self._assigned)
