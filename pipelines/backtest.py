"""Backtest results of a replay: what the pipeline wrote, scored, and shown as a report.

`collect` reads a replay's alert, decision, dead-letter and index topics back
into a `Backtest`; with labelled rows it scores the decisions through
`models.evaluate.evaluate`, the code path of ``newswatch model eval``, so a
replay of a labelled file and an evaluation of the same rows agree.
`write_report` renders a self-contained HTML page from the Jinja2 template
``templates/report.html`` (inline CSS, plots embedded as PNG data and also
written beside it):

* the escalation index over time, per signal type, with the alerts marked;
* the alert list: title, source, time, score, signals, evidence sentence;
* counts per signal type and per source, and alert latency;
* with labels: precision, recall and F1, and the misses.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import io
import json
import logging
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import matplotlib
from matplotlib.figure import Figure

from connectors.fields import canonical_url
from models.evaluate import evaluate, load_rows
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
    parse_time,
)
from newswatch.topics import read_topic
from pipelines.index import latest_points
from pipelines.story_eval import bcubed, load_story_labels, trivial_groupings

__all__ = ["AlertRow", "Backtest", "collect", "label_metrics", "write_report"]

logger = logging.getLogger(__name__)

#: Plot colours of the signal types (colour-blind safe, Okabe-Ito).
_COLOURS = {
    "military": "#D55E00",
    "rhetoric": "#E69F00",
    "economic": "#009E73",
    "diplomatic": "#0072B2",
    "arms": "#CC79A7",
    "grayzone": "#56B4E9",
}


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
    metrics: Any = None
    """`models.evaluate.EvalReport` when labels were given."""
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
    alerted = _seconds(alert.alerted_at)
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


def _seconds(value: str | None) -> float | None:
    ms = parse_ms(value)
    return ms / 1000 if ms is not None else None


# --------------------------------------------------------------------------- report


def write_report(result: Any, directory: Path) -> Path:
    """Write ``report.html``, its PNG plots and ``summary.json`` to ``directory``.

    Args:
        result: A `pipelines.replay.ReplayResult`.
        directory: Created if missing; files of an earlier report are replaced.

    Returns:
        The path of the HTML page.
    """
    matplotlib.use("Agg")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backtest: Backtest = result.backtest
    plots = {
        "timeline.png": _plot_timeline(backtest),
        "signals.png": _plot_signals(backtest),
        "sources.png": _plot_sources(backtest),
        "latency.png": _plot_latency(backtest),
        "stories.png": _plot_stories(backtest),
    }
    images: dict[str, str] = {}
    for name, png in plots.items():
        if png is None:
            continue
        (directory / name).write_bytes(png)
        images[name] = base64.b64encode(png).decode("ascii")
    _write_jsonl(directory / "alerts.jsonl", (row.alert for row in backtest.alerts))
    _write_jsonl(directory / "stories.jsonl", backtest.stories)
    _write_jsonl(directory / "story-alerts.jsonl", backtest.story_alerts)
    summary = _summary(result)
    (directory / "summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    page = directory / "report.html"
    page.write_text(_html(result, summary, images), encoding="utf-8")
    return page


def _write_jsonl(path: Path, records: Iterable[Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record.to_json() + "\n")


def _summary(result: Any) -> dict[str, Any]:
    backtest: Backtest = result.backtest
    stats = result.stats
    latencies = [r.latency for r in backtest.alerts if r.latency is not None]
    out: dict[str, Any] = {
        "run_id": result.run_id,
        "articles": stats.articles,
        "files": stats.files,
        "snapshots": stats.snapshots,
        "entries_read": stats.entries,
        "repeats_skipped": stats.repeats,
        "fallback_to_capture_time": stats.fallbacks,
        "outside_range": stats.out_of_range,
        "future_dated": stats.future,
        "classified": backtest.decisions_count,
        "alerts": len(backtest.alerts),
        "alert_records": backtest.alert_records,
        "duplicate_alerts": backtest.duplicate_alerts,
        "dead_letters": backtest.dead_letter_count,
        "index_windows": len(backtest.index_points),
        "index_missing": backtest.index_missing,
        "seconds": round(result.seconds, 2),
        "publish_seconds": round(result.publish_seconds, 2),
        "pipeline_seconds": round(result.pipeline_seconds, 2),
        "articles_per_second": round(result.articles_per_second, 2),
        "alerts_per_signal": backtest.per_signal(),
        "latency_median_seconds": round(statistics.median(latencies), 1) if latencies else None,
        "stories": len(backtest.stories),
        "escalated_stories": sum(1 for s in backtest.stories if s.escalation),
        "story_alerts": sum(1 for a in backtest.story_alerts if a.update == 0),
        "story_updates": sum(1 for a in backtest.story_alerts if a.update > 0),
        "breaking_stories": _breaking(backtest),
    }
    if backtest.story_scores is not None:
        out["story_scores"] = backtest.story_scores
    if backtest.metrics is not None:
        out["labels"] = {
            "matched": backtest.metrics.n,
            "unmatched": backtest.labels_unmatched,
            **backtest.metrics.to_dict(),
        }
    return out


def _breaking(backtest: Backtest) -> list[dict[str, Any]]:
    """Stories that were flagged breaking: when, relative to their first article."""
    out = []
    for alert in backtest.story_alerts:
        if "breaking" not in alert.reasons:
            continue
        story = alert.story
        first, flagged = _seconds(story.first_seen), _seconds(story.status_changed_at)
        out.append(
            {
                "story_id": story.story_id,
                "headline": story.headline,
                "first_seen": story.first_seen,
                "breaking_at": story.status_changed_at,
                "hours_after_first_article": round((flagged - first) / 3600, 1)
                if first is not None and flagged is not None
                else None,
                "outlets": story.outlets,
            }
        )
    return out


def _figure(height: float = 3.2, rows: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    figure = Figure(figsize=(10, height), dpi=110, layout="constrained")
    axes = figure.subplots(rows, 1, **kwargs)
    return figure, axes


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _timeline_points(backtest: Backtest) -> tuple[str, list[IndexPoint], int]:
    """The windows to plot: hourly for a short replay, else daily.

    Archives hold a few entries with absurd dates (1970, a year before the
    rest); the plot spans the central 99 % of the articles and says how many
    fall outside.

    Returns:
        The resolution, its points within the span, and the articles left out.
    """
    days = sorted(
        (p for p in backtest.index_points if p.resolution == "day"), key=lambda p: p.window_start
    )
    hours = [p for p in backtest.index_points if p.resolution == "hour"]
    total = sum(p.articles for p in days)
    if not days or not total:
        return "hour", hours, 0
    low = high = None
    running = 0
    for point in days:
        running += point.articles
        if low is None and running > 0.005 * total:
            low = point.window_start
        if high is None and running >= 0.995 * total:
            high = point.window_end
    inside = [p for p in days if low <= p.window_start < high]
    outside = total - sum(p.articles for p in inside)
    if len(inside) <= 4 and hours:
        return "hour", [p for p in hours if low <= p.window_start < high], outside
    return "day", inside, outside


def _when(value: str) -> datetime:
    return parse_time(value)


def _plot_timeline(backtest: Backtest) -> bytes | None:
    resolution, points, outside = _timeline_points(backtest)
    span = (_when(points[0].window_start), _when(points[-1].window_end)) if points else None
    alert_times = [
        (datetime.fromtimestamp(r.event_ms / 1000, UTC), r.alert.escalation_score, r.alert)
        for r in backtest.alerts
        if r.event_ms is not None
    ]
    if span:
        alert_times = [a for a in alert_times if span[0] <= a[0] < span[1]]
    if not points and not alert_times:
        return None
    figure, (top, middle, bottom) = _figure(7.2, rows=3, sharex=True)
    starts = [_when(p.window_start) for p in points]
    width = 1 / 24 if resolution == "hour" else 1.0
    for name in SIGNAL_TYPES:
        counts = [p.signals.get(name, {}).get("count", 0) for p in points]
        if any(counts):
            top.plot(starts, counts, label=name, color=_COLOURS[name], linewidth=1.4)
    top.set_ylabel(f"articles with signal\nper {resolution}")
    note = f"; {outside:,} articles dated outside this span not shown" if outside else ""
    adjective = "daily" if resolution == "day" else f"{resolution}ly"
    top.set_title(f"Escalation index ({adjective} windows, event time{note})", loc="left")
    if top.get_legend_handles_labels()[0]:
        top.legend(loc="upper left", ncols=6, fontsize=8, frameon=False)
    middle.bar(
        starts, [p.articles for p in points], width=width, align="edge", color="#BBBBBB",
        label="articles classified",
    )  # fmt: skip
    middle.bar(
        starts, [p.alerts for p in points], width=width, align="edge", color="#C0392B",
        label="alerts",
    )  # fmt: skip
    middle.set_ylabel(f"per {resolution}")
    middle.legend(loc="upper left", fontsize=8, frameon=False)
    if alert_times:
        times, scores, alerts = zip(*alert_times, strict=True)
        colours = [
            _COLOURS.get(a.signals[0], "#333333") if a.signals else "#333333" for a in alerts
        ]
        sizes = [18 + 14 * a.severity for a in alerts]
        bottom.scatter(times, scores, c=colours, s=sizes, edgecolors="black", linewidths=0.4)
    bottom.set_ylim(0, 1.05)
    if span:
        bottom.set_xlim(*span)
    bottom.set_ylabel("alerts\n(escalation score)")
    bottom.set_xlabel("event time (UTC); marker colour: first signal, size: severity")
    figure.autofmt_xdate()
    return _png(figure)


def _plot_signals(backtest: Backtest) -> bytes:
    counts = backtest.per_signal()
    figure, axes = _figure(2.6)
    names = list(counts)
    axes.barh(names, [counts[n] for n in names], color=[_COLOURS[n] for n in names])
    axes.invert_yaxis()
    axes.set_xlabel("alerts with the signal")
    axes.set_title("Alerts per signal type", loc="left")
    return _png(figure)


def _story_lanes(backtest: Backtest, top: int) -> list[Story]:
    """The stories worth a lane: escalated first, then the largest, by first article."""
    ranked = sorted(
        (s for s in backtest.stories if s.escalation or len(s.articles) > 1),
        key=lambda s: (not s.escalation, -len(s.articles), s.first_seen),
    )[:top]
    return sorted(ranked, key=lambda s: (s.first_seen, s.story_id))


def _plot_stories(backtest: Backtest, top: int = 30) -> bytes | None:
    """One lane per story, its articles as points (escalations in red), breaking marked."""
    lanes = _story_lanes(backtest, top)
    if not lanes:
        return None
    figure, axes = _figure(max(2.6, 0.32 * len(lanes) + 1.2))
    for y, story in enumerate(lanes):
        times = [_when(m.published) for m in story.articles if m.published]
        if not times:
            continue
        axes.plot([min(times), max(times)], [y, y], color="#BBBBBB", linewidth=1, zorder=1)
        calm = [_when(m.published) for m in story.articles if m.published and not m.escalation]
        hot = [_when(m.published) for m in story.articles if m.published and m.escalation]
        axes.scatter(calm, [y] * len(calm), s=14, color="#777777", zorder=2)
        axes.scatter(hot, [y] * len(hot), s=22, color="#C0392B", zorder=3)
        broke = [
            _when(a.story.status_changed_at)
            for a in backtest.story_alerts
            if a.story_id == story.story_id and "breaking" in a.reasons
        ]
        axes.scatter(broke[:1], [y] * len(broke[:1]), marker="*", s=90, color="#E69F00", zorder=4)
    axes.set_yticks(range(len(lanes)))
    axes.set_yticklabels([s.headline[:60] for s in lanes], fontsize=7)
    axes.invert_yaxis()
    axes.set_title(
        f"Stories ({len(lanes)} of {len(backtest.stories)}: escalated first, then the largest); "
        "red: escalating article, star: breaking",
        loc="left",
        fontsize=9,
    )
    figure.autofmt_xdate()
    return _png(figure)


def _plot_sources(backtest: Backtest, top: int = 15) -> bytes:
    rows = backtest.per_source()[:top]
    figure, axes = _figure(max(2.4, 0.28 * len(rows) + 1.0))
    names = [r[0][:40] for r in rows]
    axes.barh(names, [r[1] for r in rows], color="#BBBBBB", label="articles classified")
    axes.barh(names, [r[2] for r in rows], color="#C0392B", label="alerts")
    axes.invert_yaxis()
    axes.set_xscale("symlog")
    axes.set_xlabel("count (symmetric log scale)")
    axes.set_title(f"Top {len(rows)} sources by alerts", loc="left")
    axes.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(figure)


def _plot_latency(backtest: Backtest) -> bytes | None:
    latencies = [r.latency / 3600 for r in backtest.alerts if r.latency is not None]
    if not latencies:
        return None
    figure, axes = _figure(2.6)
    axes.hist(latencies, bins=min(30, max(5, len(latencies))), color="#0072B2")
    axes.set_xlabel("alert latency in replay time (hours): capture - published + pipeline")
    axes.set_ylabel("alerts")
    axes.set_title("Alert latency", loc="left")
    return _png(figure)


def _html(result: Any, summary: dict[str, Any], images: dict[str, str]) -> str:
    """The report page: ``templates/report.html`` over the replay's results."""
    backtest: Backtest = result.backtest
    return (
        _templates()
        .get_template("report.html")
        .render(
            run_id=result.run_id,
            summary=summary,
            images=images,
            backtest=backtest,
            metric_rows=_metric_rows(backtest.metrics) if backtest.metrics is not None else [],
            stories=_shown_stories(backtest),
            latency=_latency(backtest),
        )
    )


@functools.cache
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipelines", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_escape_like_html_module,
    )
    env.filters.update(
        number=_number,
        duration=_human,
        published=_published,
        colour=lambda name: _COLOURS.get(name, "#555"),
    )
    return env


def _escape_like_html_module(value: Any) -> Any:
    """Escape a value as `html.escape` does, before autoescaping sees it.

    Autoescaping would write quotes as ``&#39;`` and ``&#34;``; the report has
    always used `html.escape` (``&#x27;``, ``&quot;``), and whoever searches a
    report for a title escapes it that way. Markup (macros, filters' HTML)
    passes unchanged.
    """
    if hasattr(value, "__html__"):
        return value
    return markupsafe.Markup(html.escape(str(value)))


def _number(value: float, spec: str = ",") -> str:
    """``value`` in a format spec; by default a count with thousands separators."""
    return format(value, spec)


def _published(row: AlertRow) -> str:
    """When an alert's article came out: its publication time, else its capture time."""
    when = (row.alert.published or "").replace("T", " ")
    if not when and row.event_ms is not None:
        captured = datetime.fromtimestamp(row.event_ms / 1000, UTC)
        when = captured.strftime("%Y-%m-%d %H:%M:%SZ") + " (captured; no date)"
    return when or "-"


def _metric_rows(metrics: Any) -> list[tuple[str, Any]]:
    """(decision, scores) of an `models.evaluate.EvalReport`: escalation, Taiwan, each signal."""
    return [
        ("escalation", metrics.escalation),
        ("taiwan_related", metrics.taiwan_related),
        *((f"signal {n}", s) for n, s in metrics.signals.items()),
    ]


def _shown_stories(backtest: Backtest, top: int = 60) -> list[Story]:
    """The stories the report lists: escalated first, then the largest, by first article."""
    shown = sorted(
        backtest.stories, key=lambda s: (not s.escalation, -len(s.articles), s.first_seen)
    )[:top]
    return sorted(shown, key=lambda s: (s.first_seen, s.story_id))


def _latency(backtest: Backtest) -> dict[str, str] | None:
    """Median and p90 of the total, source and pipeline delays; None without latencies."""
    rows = [r for r in backtest.alerts if r.latency is not None]
    if not rows:
        return None

    def stats(values: list[float]) -> str:
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        return f"median {_human(statistics.median(ordered))}, p90 {_human(p90)}"

    return {
        "total": stats([r.latency for r in rows if r.latency is not None]),
        "source": stats([r.source_delay for r in rows if r.source_delay is not None]),
        "pipeline": stats([r.pipeline_delay for r in rows if r.pipeline_delay is not None]),
    }


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
