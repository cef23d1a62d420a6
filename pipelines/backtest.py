"""Backtest results of a replay: what the pipeline wrote, read back and scored.

`collect` reads a replay's alert, decision, dead-letter, story and index topics
back into a `Backtest`; with labelled rows it scores the decisions through
`models.evaluate.evaluate`, the code path of ``newswatch model eval``, so a
replay of a labelled file and an evaluation of the same rows agree, and the
stories by BCubed against the story labels. `pipelines.report` shows it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.fields import canonical_url
from models.evaluate import EvalReport, evaluate, load_rows
from newswatch.config import Settings
from newswatch.schemas import (
    SIGNAL_TYPES,
    Alert,
    DeadLetter,
    Decision,
    IndexPoint,
    SchemaError,
    Story,
    StoryAlert,
    parse_ms,
    parse_seconds,
)
from newswatch.topics import read_topic
from pipelines.archive import SourceStats
from pipelines.index import latest_points
from pipelines.story_eval import bcubed, load_story_labels, trivial_groupings

__all__ = ["AlertRow", "Backtest", "ReplayResult", "collect", "label_metrics", "story_metrics"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert with the replay times that place it."""

    alert: Alert
    event_ms: int | None
    """Event time of the article (publication, else capture)."""
    source_delay: float | None
    """Seconds from publication until a poller could see it (capture time - published)."""
    pipeline_delay: float | None
    """Seconds from handing the article to Kafka until the alert was written."""

    @property
    def latency(self) -> float | None:
        """Alert latency in replay time: alerted_at - published."""
        if self.source_delay is None or self.pipeline_delay is None:
            return None
        return self.source_delay + self.pipeline_delay


@dataclass
class Backtest:
    """Everything a replay produced, read back from its topics."""

    alerts: list[AlertRow] = field(default_factory=list)
    """One per alert id, in event-time order."""
    alert_records: int = 0
    duplicate_alerts: int = 0
    """Alert records beyond the first for the same article."""
    decisions: dict[str, Decision] = field(default_factory=dict, repr=False)
    decision_records: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list, repr=False)
    index_points: list[IndexPoint] = field(default_factory=list, repr=False)
    """The final point of every index window."""
    index_missing: int = 0
    """Classified articles absent from the daily index (arrived later than allowed)."""
    sent: Mapping[str, Any] = field(default_factory=dict, repr=False)
    metrics: EvalReport | None = None
    """Scores of the decisions when labels were given."""
    labels_matched: list[dict[str, Any]] = field(default_factory=list, repr=False)
    labels_unmatched: int = 0
    misses: list[dict[str, Any]] = field(default_factory=list)
    """Labelled escalations the replay did not alert on."""
    false_alarms: list[dict[str, Any]] = field(default_factory=list)
    """Alerts on rows labelled as no escalation."""
    stories: list[Story] = field(default_factory=list, repr=False)
    """Every story in its final state, by first article's event time."""
    story_alerts: list[StoryAlert] = field(default_factory=list, repr=False)
    """One per story alert id, in write order."""
    story_scores: dict[str, Any] | None = None
    """BCubed scores against labelled stories (and the trivial groupings), if labelled."""

    @property
    def decisions_count(self) -> int:
        return len(self.decisions)

    @property
    def dead_letter_count(self) -> int:
        return len(self.dead_letters)

    def per_signal(self) -> dict[str, int]:
        """Alerts per signal type."""
        counts = Counter(s for row in self.alerts for s in row.alert.signals)
        return {name: counts.get(name, 0) for name in SIGNAL_TYPES}

    def per_source(self) -> list[tuple[str, int, int]]:
        """(source, articles classified, alerts), most alerts first."""
        articles = Counter(d.source for d in self.decisions.values())
        alerts = Counter(row.alert.source for row in self.alerts)
        sources = set(articles) | set(alerts)
        return sorted(
            ((s, articles.get(s, 0), alerts.get(s, 0)) for s in sources),
            key=lambda t: (-t[2], -t[1], t[0]),
        )


def _parse(cls: Any, records: Iterable[Any], topic: str) -> list[Any]:
    parsed = []
    for record in records:
        try:
            parsed.append(cls.from_bytes(record.value))
        except SchemaError as exc:
            logger.warning("%s/%d@%d: %s", topic, record.partition, record.offset, exc)
    return parsed


def collect(
    settings: Settings,
    index_topic: str | None,
    sent: Mapping[str, Any],
    *,
    labels: Path | None = None,
    records: Mapping[str, Sequence[Any]] | None = None,
) -> Backtest:
    """Read a finished replay's topics into a `Backtest`.

    Args:
        settings: The replay's settings (its topics).
        index_topic: The replay's index topic, if the index ran.
        sent: Per article id, what the publisher sent (`pipelines.replay_publisher.SentArticle`).
        labels: Labelled JSON-lines rows to score the decisions against.
        records: The replay's records by topic (each with ``value``, ``partition``
            and ``offset``), when it wrote none to a broker (a bounded run);
            default: read the topics.
    """
    servers, kafka = settings.bootstrap_servers, settings.kafka

    def read(topic: str) -> Sequence[Any]:
        if records is not None:
            return records.get(topic, ())
        return read_topic(servers, topic)

    alerts: list[Alert] = _parse(Alert, read(kafka.alerts_topic), "alerts")
    decisions: list[Decision] = _parse(Decision, read(kafka.decisions_topic), "decisions")
    letters = _parse(DeadLetter, read(kafka.dead_letter_topic), "dead letters")
    points: list[IndexPoint] = []
    if index_topic:
        points, _after_close = latest_points(_parse(IndexPoint, read(index_topic), "index"))

    stories: dict[str, Story] = {}
    for story in _parse(Story, read(kafka.stories_topic), "stories"):
        held = stories.get(story.story_id)
        if held is None or story.revision >= held.revision:
            stories[story.story_id] = story
    story_alerts: dict[str, StoryAlert] = {}
    for alert in _parse(StoryAlert, read(kafka.story_alerts_topic), "story alerts"):
        story_alerts.setdefault(alert.alert_id, alert)

    unique: dict[str, Alert] = {}
    for alert in alerts:
        unique[alert.alert_id] = alert  # a re-sent alert replaces the earlier one
    rows = [_alert_row(alert, sent.get(alert.article_id)) for alert in unique.values()]
    rows.sort(key=lambda r: (r.event_ms or 0, r.alert.alert_id))
    by_article = {d.article_id: d for d in decisions}
    daily = sum(p.articles for p in points if p.resolution == "day")
    result = Backtest(
        alerts=rows,
        alert_records=len(alerts),
        duplicate_alerts=len(alerts) - len({a.article_id for a in alerts}),
        decisions=by_article,
        decision_records=len(decisions),
        dead_letters=letters,
        index_points=points,
        index_missing=max(0, len(by_article) - daily) if points else 0,
        sent=sent,
        stories=sorted(stories.values(), key=lambda s: (s.first_seen, s.story_id)),
        story_alerts=list(story_alerts.values()),
    )
    if labels is not None:
        label_metrics(result, load_rows(labels))
        story_metrics(result, labels)
    return result


def story_labels_file(labels: Path) -> Path | None:
    """The story labels beside a labelled file: ``dev.jsonl`` → ``dev-stories.jsonl``."""
    candidate = Path(labels).with_name(Path(labels).stem + "-stories.jsonl")
    return candidate if candidate.is_file() else None


def story_metrics(backtest: Backtest, labels: Path) -> None:
    """BCubed scores of the replay's stories against the labelled rows' stories.

    A row's story comes from its ``story`` field, else from the story labels file
    beside it (`story_labels_file`); rows the replay did not classify as
    Taiwan-related count as stories of their own, as in the labels' own scoring.
    """
    story_file = story_labels_file(labels)
    rows = load_story_labels([labels], [story_file] if story_file else [])
    matched = {r["id"]: r for r in backtest.labels_matched if r.get("id")}
    rows = [r for r in rows if r["id"] in matched]
    if not rows:
        return
    by_url = {getattr(v, "url", ""): k for k, v in backtest.sent.items()}
    story_of: dict[str, str] = {}
    for story in backtest.stories:
        for member in story.articles:
            story_of[member.article_id] = story.story_id
    predicted: dict[str, str] = {}
    for row in rows:
        article = row["id"] if row["id"] in backtest.decisions else by_url.get(row.get("url", ""))
        if article in story_of:
            predicted[row["id"]] = story_of[article]
    gold = {r["id"]: r["story"] for r in rows}
    scores = {"pipeline": bcubed(gold, predicted)}
    for name, grouping in trivial_groupings(rows).items():
        scores[name] = bcubed(gold, grouping)
    backtest.story_scores = {
        "rows": len(rows),
        "stories": len(set(gold.values())),
        "scores": {k: dataclasses.asdict(v) for k, v in scores.items()},
    }


def _alert_row(alert: Alert, sent: Any) -> AlertRow:
    alerted = parse_seconds(alert.alerted_at)
    if sent is None:
        return AlertRow(alert, parse_ms(alert.published), None, None)
    source_delay = max(0.0, (sent.arrival_ms - sent.event_ms) / 1000)
    pipeline_delay = alerted - sent.sent_at if alerted is not None else None
    return AlertRow(alert, sent.event_ms, source_delay, pipeline_delay)


def label_metrics(backtest: Backtest, rows: Sequence[Mapping[str, Any]]) -> None:
    """Score the replay's decisions against labelled rows (keyed by id or url).

    Rows are matched to articles by the article id (a row's ``id`` may be one),
    else by canonical URL. Rows that were not replayed, or that were replayed
    but have no decision (dead-lettered), are left out and counted.
    """
    by_url: dict[str, str] = {}
    for article_id, sent in backtest.sent.items():
        if getattr(sent, "url", ""):
            by_url.setdefault(sent.url, article_id)
    matched: list[Mapping[str, Any]] = []
    predictions: list[Decision] = []
    unmatched = 0
    for row in rows:
        key = str(row.get("id") or "")
        decision = backtest.decisions.get(key)
        if decision is None and row.get("url"):
            article = by_url.get(canonical_url(str(row["url"])))
            decision = backtest.decisions.get(article) if article else None
        if decision is None:
            unmatched += 1
            continue
        matched.append(row)
        predictions.append(decision)
    backtest.labels_matched = [dict(r) for r in matched]
    backtest.labels_unmatched = unmatched
    if not matched:
        return
    report = evaluate(matched, predictions)
    backtest.metrics = report
    for row, decision in zip(matched, predictions, strict=True):
        gold = bool(row["escalation"])
        if gold and not decision.alert:
            backtest.misses.append(_label_row(row, decision))
        elif decision.alert and not gold:
            backtest.false_alarms.append(_label_row(row, decision))


def _label_row(row: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    return {
        "id": row.get("id"),
        "title": row.get("title"),
        "url": row.get("url"),
        "source": row.get("source"),
        "published": row.get("published"),
        "gold_signals": list(row.get("signals") or []),
        "gold_severity": row.get("severity"),
        "predicted_signals": list(decision.signals),
        "escalation_score": decision.escalation_score,
    }


@dataclass
class ReplayResult:
    """What a replay did and found."""

    run_id: str
    kept_topics: list[str]
    """The replay's topics, if kept (--keep-topics); else empty, they were deleted."""
    stats: SourceStats
    backtest: Backtest
    publish_seconds: float = 0.0
    pipeline_seconds: float = 0.0
    seconds: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    report_path: Path | None = None

    @property
    def articles_per_second(self) -> float:
        """Classified articles per second of the pipeline phase."""
        done = self.backtest.decisions_count
        return done / self.pipeline_seconds if self.pipeline_seconds > 0 else 0.0

    def summary(self) -> str:
        """The closing lines printed by ``newswatch replay``."""
        s, b = self.stats, self.backtest
        lines = [
            f"replay {self.run_id}: {s.articles:,} articles from {s.files:,} files "
            f"({s.snapshots:,} feed snapshots; {s.entries:,} entries read, "
            f"{s.repeats:,} repeats of an article already seen)",
            f"  event time fell back to capture time for {s.fallbacks:,} articles "
            "(no publication time in the source)",
            f"  classified {b.decisions_count:,}, alerts {len(b.alerts):,} "
            f"(duplicate alert records {b.duplicate_alerts:,}), dead letters "
            f"{b.dead_letter_count:,} (sources {s.dead_letters:,}, of which future-dated "
            f"{s.future:,}), outside --from/--to {s.out_of_range:,}",
            f"  index: {len(b.index_points):,} windows; classified articles missing from it "
            f"(later than the allowed lateness): {b.index_missing:,}",
            f"  duration {self.seconds:.1f} s (publish {self.publish_seconds:.1f} s, pipeline "
            f"{self.pipeline_seconds:.1f} s), {self.articles_per_second:,.1f} articles/s",
        ]
        if b.metrics is not None:
            m = b.metrics.escalation
            lines.append(
                f"  labels: {b.metrics.n} rows matched, escalation precision {m.precision:.3f} "
                f"recall {m.recall:.3f} F1 {m.f1:.3f} ({b.labels_unmatched} rows not replayed)"
            )
        if self.report_path is not None:
            lines.append(f"  report: {self.report_path}")
        if self.kept_topics:
            lines.append(f"  topics kept: {', '.join(self.kept_topics)}")
        return "\n".join(lines)
