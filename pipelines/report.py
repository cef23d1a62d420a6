"""The backtest report of a replay: a self-contained HTML page and its files.

`write_report` renders the Jinja2 template ``templates/report.html`` (inline
CSS, plots embedded as PNG data and also written beside it), and writes
``summary.json``, ``alerts.jsonl``, ``stories.jsonl`` and ``story-alerts.jsonl``:

* the escalation index over time, per signal type, with the alerts marked;
* the alert list: title, source, time, score, signals, evidence sentence;
* the story timeline and table, breaking stories;
* counts per signal type and per source, and alert latency;
* with labels: precision, recall and F1, the misses, and BCubed of the stories.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import logging
import statistics
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import matplotlib
from matplotlib.figure import Figure

from newswatch.schemas import (
    SIGNAL_TYPES,
    IndexPoint,
    Story,
    parse_seconds,
    parse_time,
)
from pipelines.backtest import AlertRow, Backtest, ReplayResult

__all__ = ["write_report"]

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


def write_report(result: ReplayResult, directory: Path) -> Path:
    """Write ``report.html``, its PNG plots and ``summary.json`` to ``directory``.

    Args:
        result: The replay's results.
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


def _summary(result: ReplayResult) -> dict[str, Any]:
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
        first, flagged = parse_seconds(story.first_seen), parse_seconds(story.status_changed_at)
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


def _html(result: ReplayResult, summary: dict[str, Any], images: dict[str, str]) -> str:
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
