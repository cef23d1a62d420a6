"""The escalation index: classified articles aggregated over event-time windows.

An optional branch of the classification pipeline (``build(..., index=IndexSpec(...))``):

    ClassifyArticles ─▶ IndexFeatures ─┬▶ IndexHour (fixed 1 h windows) ─┐
                                       └▶ IndexDay  (fixed 1 d windows) ─┴▶ WriteIndex (Kafka)

Each window yields one `IndexPoint`: how many articles were classified, how
many alerted, their mean escalation score and, per signal type, how many
articles carry the signal and the mean score of that signal.

Event time is the article's publication time, else its ingest time; a replay
also stamps its Kafka records with exactly that, so the reader's watermark
runs on the same clock. Each article is put back at its own event time after
RunInference, whose batching gives a whole batch one timestamp.

A window fires when the watermark passes its end, again for late articles
(every ``late_every`` of them, accumulating), and a last time when it closes at
end + ``allowed_lateness`` (then ``final`` is set): the last pane up to that
one holds the window's value (`latest_points`). Articles later than that are
left out of the index (they are still classified and alerted on); the replay
reports how many.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration, Timestamp

from newswatch import metrics
from newswatch.schemas import SIGNAL_TYPES, IndexPoint, parse_ms, utc_now
from newswatch.topics import make_producer

__all__ = [
    "RESOLUTIONS",
    "EscalationIndex",
    "IndexCombineFn",
    "IndexFeaturesFn",
    "IndexPoints",
    "IndexSpec",
    "WriteIndexFn",
    "event_time_ms",
    "index_features",
    "latest_points",
]

logger = logging.getLogger(__name__)


#: Window sizes of the index, in seconds.
RESOLUTIONS: dict[str, int] = {"hour": 3600, "day": 86400}

# Accumulator layout: articles, alerts, sum of escalation scores, then per
# signal type its article count, then per signal type its score sum.
_N = len(SIGNAL_TYPES)
_WIDTH = 3 + 2 * _N


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """Where the index goes and how late an article may arrive for it."""

    topic: str
    """Kafka topic for `IndexPoint` records, keyed ``<resolution>/<window start>``."""
    allowed_lateness: float = 2 * 86400.0
    """Seconds after a window's end during which late articles still update it."""
    resolutions: tuple[str, ...] = ("hour", "day")
    late_every: int = 1
    """After its on-time pane, a window may fire again for every this many late
    articles; its closing pane (end + allowed lateness) carries them all. Prism
    fires an aggregation only at the window's end and at its close."""

    def __post_init__(self) -> None:
        unknown = [r for r in self.resolutions if r not in RESOLUTIONS]
        if unknown or not self.resolutions:
            raise ValueError(f"index resolutions must be among {sorted(RESOLUTIONS)}: {unknown}")
        if self.allowed_lateness < 0:
            raise ValueError("index allowed_lateness must not be negative")
        if self.late_every < 1:
            raise ValueError("index late_every must be at least 1")


def event_time_ms(article: Any) -> int | None:
    """An article's event time, ms since the epoch: its publication time, else its ingest time.

    Replays ingest an entry at its capture time, so this is the capture time
    when the source gave no publication time; None if neither parses.
    """
    for value in (article.published, article.ingested_at):
        ms = parse_ms(value)
        if ms is not None:
            return ms
    return None


def index_features(element: tuple[Any, Any]) -> list[float]:
    """(ack, PredictionResult) → one accumulator row for `IndexCombineFn`."""
    _ack, prediction = element
    result = prediction.inference
    row = [0.0] * _WIDTH
    row[0] = 1.0
    row[1] = 1.0 if result.escalation else 0.0
    row[2] = float(result.escalation_score)
    signals = set(result.signals)
    scores = result.signal_scores or {}
    for i, name in enumerate(SIGNAL_TYPES):
        row[3 + i] = 1.0 if name in signals else 0.0
        row[3 + _N + i] = float(scores.get(name, 0.0))
    return row


class IndexFeaturesFn(beam.DoFn):
    """(ack, PredictionResult) → a feature row stamped with the article's event time.

    RunInference batches elements, and a batch leaves it with one timestamp
    (that of an element of the batch, or the end of the window when a final
    flush empties it); each row is put back at its own article's event time.
    """

    def __init__(self) -> None:
        self._undated = Metrics.counter(metrics.NAMESPACE, "index_undated_articles")

    def process(self, element: tuple[Any, Any], timestamp=beam.DoFn.TimestampParam) -> Iterator:
        event_ms = event_time_ms(element[1].example)
        if event_ms is None:
            self._undated.inc()
            yield window.TimestampedValue(index_features(element), timestamp)
            return
        yield window.TimestampedValue(index_features(element), Timestamp(micros=event_ms * 1000))


class IndexCombineFn(beam.CombineFn):
    """Sums feature rows; the means are taken when a point is formed."""

    def create_accumulator(self) -> list[float]:
        return [0.0] * _WIDTH

    def add_input(self, accumulator: list[float], row: Sequence[float]) -> list[float]:
        for i, value in enumerate(row):
            accumulator[i] += value
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[float]]) -> list[float]:
        merged = [0.0] * _WIDTH
        for accumulator in accumulators:
            for i, value in enumerate(accumulator):
                merged[i] += value
        return merged

    def extract_output(self, accumulator: list[float]) -> list[float]:
        return list(accumulator)


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _point(
    element: tuple[str, list[float]],
    win=beam.DoFn.WindowParam,
    pane=beam.DoFn.PaneInfoParam,
) -> IndexPoint:
    resolution, sums = element
    timing = {0: "EARLY", 1: "ON_TIME", 2: "LATE"}.get(int(pane.timing), "UNKNOWN")
    return _make_point(
        resolution,
        float(win.start),
        float(win.end),
        sums,
        pane_index=int(pane.index),
        pane_timing=timing,
        final=bool(pane.is_last),
    )


def _make_point(
    resolution: str,
    start: float,
    end: float,
    sums: Sequence[float],
    *,
    pane_index: int,
    pane_timing: str,
    final: bool,
) -> IndexPoint:
    articles = int(sums[0])
    mean = (lambda total: total / articles) if articles else (lambda total: 0.0)
    return IndexPoint(
        resolution=resolution,
        window_start=_iso(start),
        window_end=_iso(end),
        articles=articles,
        alerts=int(sums[1]),
        escalation_score_mean=round(mean(sums[2]), 6),
        signals={
            name: {"count": int(sums[3 + i]), "mean_score": round(mean(sums[3 + _N + i]), 6)}
            for i, name in enumerate(SIGNAL_TYPES)
        },
        pane_index=pane_index,
        pane_timing=pane_timing,
        final=final,
        emitted_at=utc_now(),
    )


def _window_rows(element: tuple[Any, Any], resolutions: Sequence[str]) -> Iterator[tuple]:
    """(ack, PredictionResult) → ((resolution, window start), feature row) per resolution.

    The fixed window of the article's event time, as `window.FixedWindows`
    assigns it; an article without one is left out (and counted missing).
    """
    event_ms = event_time_ms(element[1].example)
    if event_ms is None:
        return
    row = index_features(element)
    for resolution in resolutions:
        size = RESOLUTIONS[resolution]
        yield (resolution, event_ms // 1000 // size * size), row


def _window_point(key: tuple[str, int], sums: list[float]) -> IndexPoint:
    resolution, start = key
    end = start + RESOLUTIONS[resolution]
    return _make_point(
        resolution, start, end, sums, pane_index=0, pane_timing="ON_TIME", final=True
    )


class IndexPoints(beam.PTransform):
    """Feature rows (from `IndexFeaturesFn`) → `IndexPoint`s in fixed windows of one size.

    The output stays in those windows, one pane per firing.
    """

    def __init__(self, resolution: str, allowed_lateness: float, late_every: int = 1) -> None:
        super().__init__()
        if resolution not in RESOLUTIONS:
            raise ValueError(f"unknown index resolution {resolution!r}")
        self._resolution = resolution
        self._allowed_lateness = allowed_lateness
        self._late_every = late_every

    def expand(self, rows):
        name = self._resolution.capitalize()
        return (
            rows
            | f"{name}Windows"
            >> beam.WindowInto(
                window.FixedWindows(RESOLUTIONS[self._resolution]),
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(self._late_every)),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                allowed_lateness=Duration(seconds=self._allowed_lateness),
            )
            | f"Key{name}" >> beam.Map(lambda row, r=self._resolution: (r, row))
            | f"Combine{name}" >> beam.CombinePerKey(IndexCombineFn())
            | f"{name}Points" >> beam.Map(_point)
        )


class EscalationIndex(beam.PTransform):
    """(ack, PredictionResult) pairs → `IndexPoint`s for every configured resolution.

    ``bounded``: the input is finite and the runner may lack windows and
    triggers (the DaskRunner); each article is keyed by its fixed window
    and the windows are combined once, giving one final point per window.
    """

    def __init__(self, spec: IndexSpec, *, bounded: bool = False) -> None:
        super().__init__()
        self._spec = spec
        self._bounded = bounded

    def expand(self, predictions):
        if self._bounded:
            return (
                predictions
                | "IndexWindows" >> beam.FlatMap(_window_rows, self._spec.resolutions)
                | "CombineWindows" >> beam.CombinePerKey(IndexCombineFn())
                | "WindowPoints" >> beam.MapTuple(_window_point)
            )
        rows = predictions | "IndexFeatures" >> beam.ParDo(IndexFeaturesFn())
        points = []
        for resolution in self._spec.resolutions:
            name = resolution.capitalize()
            points.append(
                rows
                | f"Index{name}"
                >> IndexPoints(resolution, self._spec.allowed_lateness, self._spec.late_every)
                # All resolutions go to one writer: give the Flatten one windowing.
                | f"Unwindow{name}" >> beam.WindowInto(window.GlobalWindows())
            )
        return points | "AllPoints" >> beam.Flatten()


class WriteIndexFn(beam.DoFn):
    """Writes `IndexPoint`s to Kafka (acks=all), keyed by resolution and window.

    A bundle is done only once the broker acknowledged all its records; a
    refused record fails the bundle, which the runner retries.
    """

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._written = Metrics.counter(metrics.NAMESPACE, "index_points_written")

    def setup(self) -> None:
        self._producer = make_producer(self._bootstrap_servers, client_id="newswatch-index")

    def start_bundle(self) -> None:
        self._futures: list[Any] = []

    def process(self, point: IndexPoint) -> Iterator[None]:
        self._futures.append(
            self._producer.send(self._topic, key=point.key.encode(), value=point.to_bytes())
        )
        return iter(())

    def finish_bundle(self) -> None:
        if not self._futures:
            return
        self._producer.flush()
        for future in self._futures:
            future.get(timeout=60)
            self._written.inc()
        self._futures = []

    def teardown(self) -> None:
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.close(timeout=10)


def latest_points(points: Iterable[IndexPoint]) -> tuple[list[IndexPoint], int]:
    """The final value of every window, and how many articles came after it closed.

    A window's value is its last pane up to the first one marked ``final``. Prism
    may still admit an article after that (its lateness check trails the close)
    and start the window over with it; such panes are not part of the window's
    value, and the articles they hold are counted instead.

    Returns:
        The points, ordered by resolution and window start; and the number of
        articles in panes after a final one (the highest such count per window).
    """
    panes: dict[str, list[IndexPoint]] = {}
    for point in points:
        panes.setdefault(point.key, []).append(point)
    latest: list[IndexPoint] = []
    after_close = 0
    for key_panes in panes.values():
        key_panes.sort(key=lambda p: p.pane_index)
        closed = next((i for i, p in enumerate(key_panes) if p.final), len(key_panes) - 1)
        latest.append(key_panes[closed])
        after_close += max((p.articles for p in key_panes[closed + 1 :]), default=0)
    latest.sort(key=lambda p: (p.resolution, p.window_start))
    return latest, after_close
