"""The escalation index over event-time windows, on Prism with `TestStream`.

Each element is what RunInference hands on: (ack, PredictionResult) with the
article and its classification. Element timestamps play the Kafka record
timestamps; the index places every article at its own event time (publication,
else ingest), whatever timestamp the batching inside RunInference gave it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to, equal_to_per_window
from apache_beam.transforms.window import IntervalWindow, TimestampedValue

from newswatch.config import Settings
from newswatch.schemas import SIGNAL_TYPES, Article, Classification, IndexPoint
from pipelines.classify import pipeline_options
from pipelines.index import (
    EscalationIndex,
    IndexFeaturesFn,
    IndexPoints,
    IndexSpec,
    latest_points,
)
from pipelines.offsets import OutcomeAck

DAY = datetime(2020, 8, 11, tzinfo=UTC).timestamp()
HOUR = 3600


def at(hours: float) -> float:
    """Seconds since the epoch, ``hours`` after 2020-08-11T00:00Z."""
    return DAY + hours * HOUR


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def prediction(
    number: int, published_hours: float | None, signals: tuple[str, ...] = (), *, ingested=None
) -> tuple[OutcomeAck, PredictionResult]:
    """An (ack, PredictionResult) pair as ClassifyArticles emits it."""
    article = Article(
        id=f"a{number}",
        url=f"https://example.org/{number}",
        title=f"article {number}",
        text="",
        published=iso(at(published_hours)) if published_hours is not None else None,
        source="test",
        feed="test",
        ingested_at=iso(at(ingested)) if ingested is not None else "",
    )
    result = Classification(
        taiwan_related=bool(signals),
        taiwan_score=1.0 if signals else 0.0,
        escalation=bool(signals),
        escalation_score=0.9 if signals else 0.1,
        signals=list(signals),
        signal_scores={name: (0.8 if name in signals else 0.0) for name in SIGNAL_TYPES},
        severity=2 if signals else 0,
        evidence=[],
        model="test",
        model_version="test",
    )
    return OutcomeAck("articles", 0, number, number + 1), PredictionResult(article, result)


def summary(point: IndexPoint) -> tuple:
    """What a test compares: counts, per-signal counts, and the pane (timing, final)."""
    counts = tuple(point.signals[name]["count"] for name in SIGNAL_TYPES)
    return (point.articles, point.alerts, counts, point.pane_timing, point.final)


def closed_on_time(value: tuple) -> list[tuple]:
    """The panes of a window whose articles were all on time.

    It fires when the watermark passes its end, then once more when it closes
    (end + allowed lateness): the SDK asks for a closing pane even without new
    data (``ClosingBehavior.EMIT_ALWAYS``), which marks the value final.
    """
    return [(*value, "ON_TIME", False), (*value, "LATE", True)]


def options():
    return pipeline_options(Settings())


def signal_counts(**counts: int) -> tuple[int, ...]:
    return tuple(counts.get(name, 0) for name in SIGNAL_TYPES)


def hourly(stream: TestStream, lateness: float = 86400.0):
    """The hourly index points of ``stream``, still in their windows."""

    def build(pipeline):
        return (
            pipeline
            | stream
            | "Features" >> beam.ParDo(IndexFeaturesFn())
            | "Hourly" >> IndexPoints("hour", lateness)
            | "Summary" >> beam.Map(summary)
        )

    return build


def test_hourly_window_counts_articles_alerts_and_signals():
    stream = (
        TestStream()
        .add_elements(
            [
                TimestampedValue(prediction(1, 10.1), at(10.1)),
                TimestampedValue(prediction(2, 10.5, ("military", "rhetoric")), at(10.5)),
                TimestampedValue(prediction(3, 10.9, ("military",)), at(10.9)),
                TimestampedValue(prediction(4, 11.2, ("grayzone",)), at(11.2)),
            ]
        )
        .advance_watermark_to(at(24))
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=options()) as pipeline:
        points = hourly(stream)(pipeline)
        assert_that(
            points,
            equal_to_per_window(
                {
                    IntervalWindow(at(10), at(11)): closed_on_time(
                        (3, 2, signal_counts(military=2, rhetoric=1))
                    ),
                    IntervalWindow(at(11), at(12)): closed_on_time(
                        (1, 1, signal_counts(grayzone=1))
                    ),
                }
            ),
        )


def test_late_article_within_allowed_lateness_updates_its_window():
    stream = (
        TestStream()
        .add_elements(
            [
                TimestampedValue(prediction(1, 10.1), at(10.1)),
                TimestampedValue(prediction(2, 10.5, ("military",)), at(10.5)),
            ]
        )
        .advance_watermark_to(at(12))
        # Published 10:40, read after the watermark passed 11:00: late, within a day.
        .add_elements([TimestampedValue(prediction(3, 10 + 40 / 60, ("rhetoric",)), at(12.1))])
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=options()) as pipeline:
        points = hourly(stream)(pipeline)
        assert_that(
            points,
            equal_to_per_window(
                {
                    IntervalWindow(at(10), at(11)): [
                        (2, 1, signal_counts(military=1), "ON_TIME", False),
                        # The late firing; the window closes with it (end + lateness
                        # is passed by the same watermark step), so it is final.
                        (3, 2, signal_counts(military=1, rhetoric=1), "LATE", True),
                    ]
                }
            ),
        )


def test_every_late_article_within_the_lateness_reaches_the_closing_pane():
    # Late firings every 2 articles; whether a runner fires them (Prism fires an
    # aggregation only when the watermark passes the end and at the close), the
    # closing pane holds all of the window's articles and is marked final.
    stream = (
        TestStream()
        .add_elements([TimestampedValue(prediction(1, 10.1), at(10.1))])
        .advance_watermark_to(at(12))
        .add_elements(
            [
                TimestampedValue(prediction(2, 10.2, ("military",)), at(12.1)),
                TimestampedValue(prediction(3, 10.3), at(12.2)),
            ]
        )
        .advance_watermark_to(at(13))
        .add_elements([TimestampedValue(prediction(4, 10.4, ("arms",)), at(13.1))])
        .advance_watermark_to(at(36))  # past 11:00 + 1 day: the window closes
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=options()) as pipeline:
        panes = (
            pipeline
            | stream
            | "Features" >> beam.ParDo(IndexFeaturesFn())
            | "Hourly" >> IndexPoints("hour", 86400.0, late_every=2)
            | "Summary" >> beam.Map(summary)
        )
        window = IntervalWindow(at(10), at(11))
        assert_that(
            panes | "OnTime" >> beam.Filter(lambda pane: pane[3] == "ON_TIME"),
            equal_to_per_window({window: [(1, 0, signal_counts(), "ON_TIME", False)]}),
            label="OnTimePane",
        )
        assert_that(
            panes | "Final" >> beam.Filter(lambda pane: pane[4]),
            equal_to_per_window(
                {window: [(4, 2, signal_counts(military=1, arms=1), "LATE", True)]}
            ),
            label="ClosingPane",
        )


def test_article_later_than_allowed_lateness_is_left_out_of_the_index():
    stream = (
        TestStream()
        .add_elements([TimestampedValue(prediction(1, 10.5, ("military",)), at(10.5))])
        .advance_watermark_to(at(11 + 2))
        # Published 10:50 but read when the watermark is two hours past its window:
        # beyond the one-hour lateness, so the window has been closed for good.
        .add_elements([TimestampedValue(prediction(2, 10 + 50 / 60, ("arms",)), at(13.1))])
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=options()) as pipeline:
        points = hourly(stream, lateness=HOUR)(pipeline)
        assert_that(
            points,
            equal_to_per_window(
                {IntervalWindow(at(10), at(11)): closed_on_time((1, 1, signal_counts(military=1)))}
            ),
        )


def test_windows_follow_article_event_time_not_element_timestamp():
    # RunInference emits a batch with one timestamp (here: all at 15:00); each article
    # still counts in the hour it was published, or ingested when it has no date.
    stream = (
        TestStream()
        .add_elements(
            [
                TimestampedValue(prediction(1, 10.2, ("economic",)), at(15)),
                TimestampedValue(prediction(2, 13.7), at(15)),
                TimestampedValue(prediction(3, None, ("diplomatic",), ingested=13.1), at(15)),
            ]
        )
        .advance_watermark_to(at(24))
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=options()) as pipeline:
        points = hourly(stream)(pipeline)
        assert_that(
            points,
            equal_to_per_window(
                {
                    IntervalWindow(at(10), at(11)): closed_on_time(
                        (1, 1, signal_counts(economic=1))
                    ),
                    IntervalWindow(at(13), at(14)): closed_on_time(
                        (2, 1, signal_counts(diplomatic=1))
                    ),
                }
            ),
        )


def test_daily_points_sum_their_hours_and_carry_mean_scores():
    stream = (
        TestStream()
        .add_elements(
            [
                TimestampedValue(prediction(1, 1.0, ("military",)), at(1)),
                TimestampedValue(prediction(2, 9.0), at(9)),
                TimestampedValue(prediction(3, 23.5, ("military", "arms")), at(23.5)),
                TimestampedValue(prediction(4, 24.5), at(24.5)),
            ]
        )
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=options()) as pipeline:
        points = (
            pipeline
            | stream
            | EscalationIndex(IndexSpec(topic="unused", resolutions=("day",)))
            | "Final" >> beam.Filter(lambda p: p.final)
            | beam.Map(
                lambda p: (
                    p.resolution,
                    p.window_start,
                    p.articles,
                    p.alerts,
                    p.signals["military"]["count"],
                    round(p.signals["military"]["mean_score"], 4),
                    round(p.escalation_score_mean, 4),
                )
            )
        )
        assert_that(
            points,
            equal_to(
                [
                    # Day one: 3 articles, 2 alerts; military 0.8 twice, 0.0 once.
                    ("day", "2020-08-11T00:00:00Z", 3, 2, 2, round(1.6 / 3, 4), round(1.9 / 3, 4)),
                    ("day", "2020-08-12T00:00:00Z", 1, 0, 0, 0.0, 0.1),
                ]
            ),
        )


def test_a_windows_value_is_its_last_pane_up_to_the_final_one():
    def point(start, pane, articles, final=False, resolution="hour") -> IndexPoint:
        return IndexPoint(
            resolution, start, start, articles, 0, 0.0, {}, pane_index=pane, final=final
        )

    ten, day = "2020-08-11T10:00:00Z", "2020-08-11T00:00:00Z"
    points = [
        point(ten, 0, 2),
        point(ten, 2, 4, final=True),
        point(ten, 1, 3),
        # After the close the runner started the window over for one too-late article.
        point(ten, 3, 1, final=True),
        point(day, 0, 9, resolution="day"),
    ]
    latest, after_close = latest_points(IndexPoint.from_bytes(p.to_bytes()) for p in points)
    assert [(p.resolution, p.articles) for p in latest] == [("day", 9), ("hour", 4)]
    assert after_close == 1


def test_index_spec_refuses_unknown_resolutions():
    with pytest.raises(ValueError, match="resolutions"):
        IndexSpec(topic="t", resolutions=("minute",))
