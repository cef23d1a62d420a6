"""Replaying archived feed snapshots through the real pipeline, broker and model.

The snapshots in tests/data/archive are real (see its README): two CNN snapshots
eleven hours apart that both carry "The US is standing firm with Taiwan...", an
item without a publication time, and two Daily Telegraph snapshots whose items
have no dates at all. One replay per module serves most tests.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from kafka import TopicPartition

from connectors.feeds import parse_feed
from newswatch.config import PROJECT_ROOT, Settings, replace
from newswatch.schemas import Alert, Article
from newswatch.topics import make_admin, make_consumer, read_topic
from pipelines.replay import ReplayOptions, replay
from pipelines.replay_topics import REPLAY_PREFIX
from tests.conftest import isolated_settings

ARCHIVE = PROJECT_ROOT / "tests" / "data" / "archive"
TAIWAN_TITLE = "The US is standing firm with Taiwan, and it's making that point very clear"


def capture_time(path: Path) -> datetime:
    day, clock = path.stem.rstrip("Z").split("T")
    return datetime.fromisoformat(f"{day}T{clock.replace('-', ':')}+00:00")


def sightings() -> dict[str, list[tuple[Article, Path]]]:
    """Every entry of every snapshot, by article id, parsed as the live connector does."""
    seen: dict[str, list[tuple[Article, Path]]] = {}
    for path in sorted(ARCHIVE.glob("*/*.xml")):
        for article in parse_feed(path.read_bytes(), str(path.parent)).good:
            seen.setdefault(article.id, []).append((article, path))
    return seen


def replay_settings(broker) -> Settings:
    settings = Settings(home=Path("/nonexistent"))
    settings.broker = replace(broker.settings)
    settings.kafka.bootstrap_servers = broker.bootstrap_servers
    return settings


@pytest.fixture(scope="module")
def live_settings(kafka_broker) -> Settings:
    """Live topics of their own, which no replay may touch."""
    return isolated_settings(kafka_broker, Path("/nonexistent"), "replay-live")


@pytest.fixture(scope="module")
def archive_replay(live_settings, tmp_path_factory):
    """One replay of the test archive with a report, its topics kept for inspection."""
    report_dir = tmp_path_factory.mktemp("report")
    result = replay(
        live_settings,
        ReplayOptions(sources=(ARCHIVE,), report_dir=report_dir, keep_topics=True),
    )
    yield result
    admin = make_admin(live_settings.bootstrap_servers)
    try:
        admin.delete_topics(result.kept_topics, raise_errors=False)
    finally:
        admin.close()


def test_entry_seen_in_many_snapshots_alerts_once(archive_replay, live_settings):
    alerts_topic = next(t for t in archive_replay.kept_topics if t.endswith(".alerts"))
    records = [
        Alert.from_bytes(r.value) for r in read_topic(live_settings.bootstrap_servers, alerts_topic)
    ]
    per_article = Counter(a.article_id for a in records)
    seen = sightings()
    taiwan = next(i for i, s in seen.items() if s[0][0].title == TAIWAN_TITLE)
    assert len(seen[taiwan]) == 2, "the fixture item is in both CNN snapshots"
    assert per_article[taiwan] == 1
    assert all(count == 1 for count in per_article.values()), per_article
    assert archive_replay.backtest.duplicate_alerts == 0
    assert [row.alert.title for row in archive_replay.backtest.alerts].count(TAIWAN_TITLE) == 1


def test_every_distinct_entry_is_classified_once(archive_replay):
    seen = sightings()
    backtest, stats = archive_replay.backtest, archive_replay.stats
    assert set(backtest.decisions) == set(seen)
    assert backtest.decision_records == len(seen)
    assert stats.entries == sum(len(s) for s in seen.values())
    assert stats.repeats == stats.entries - len(seen) > 0


def test_missing_publication_time_falls_back_to_first_capture_time(archive_replay, live_settings):
    articles_topic = next(t for t in archive_replay.kept_topics if t.endswith(".articles"))
    records = {
        Article.from_bytes(r.value).id: (Article.from_bytes(r.value), r.timestamp)
        for r in read_topic(live_settings.bootstrap_servers, articles_topic)
    }
    undated = {i: s for i, s in sightings().items() if s[0][0].published is None}
    assert archive_replay.stats.fallbacks == len(undated) > 10
    for article_id, seen in undated.items():
        first = min(capture_time(path) for _article, path in seen)
        article, timestamp_ms = records[article_id]
        assert timestamp_ms == int(first.timestamp() * 1000), article.title
        assert article.published is None and article.ingested_at == first.strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    # Dated entries keep their publication time as event time.
    dated = next(a for a, _ts in records.values() if a.published)
    assert records[dated.id][1] == int(
        datetime.fromisoformat(dated.published.replace("Z", "+00:00")).timestamp() * 1000
    )
    assert f"fell back to capture time for {len(undated)} articles" in archive_replay.summary()


def test_index_counts_every_classified_article_however_late(archive_replay):
    backtest = archive_replay.backtest
    # "How Somalia's pirates were stopped" was published 240 days before CNN's feed
    # carried it; a replay's windows stay open until its input ends, so it counts.
    pirates = [
        seen
        for seen in sightings().values()
        if seen[0][0].published
        and min(capture_time(path) for _a, path in seen).timestamp()
        - datetime.fromisoformat(seen[0][0].published.replace("Z", "+00:00")).timestamp()
        > 200 * 86400
    ]
    assert len(pirates) == 1
    days = [p for p in backtest.index_points if p.resolution == "day"]
    hours = [p for p in backtest.index_points if p.resolution == "hour"]
    assert backtest.index_missing == 0
    assert sum(p.articles for p in days) == sum(p.articles for p in hours)
    assert sum(p.articles for p in days) == len(backtest.decisions)
    assert sum(p.alerts for p in days) == len(backtest.alerts)
    assert any(p.window_start.startswith("2020-01-07") for p in days)
    taiwan = next(r for r in backtest.alerts if r.alert.title == TAIWAN_TITLE)
    day = datetime.fromtimestamp(taiwan.event_ms / 1000, UTC).strftime("%Y-%m-%dT00:00:00Z")
    point = next(p for p in days if p.window_start == day)
    for signal in taiwan.alert.signals:
        assert point.signals[signal]["count"] >= 1


def test_replay_writes_only_to_its_own_topics(archive_replay, live_settings):
    prefix = f"{REPLAY_PREFIX}{archive_replay.run_id}."
    kept = archive_replay.kept_topics
    assert kept and all(t.startswith(prefix) for t in kept)
    kafka = live_settings.kafka
    live = [kafka.articles_topic, kafka.alerts_topic, kafka.decisions_topic]
    live.append(kafka.dead_letter_topic)
    consumer = make_consumer(live_settings.bootstrap_servers)
    try:
        for topic in live:
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            assert sum(consumer.end_offsets(tps).values()) == 0, topic
    finally:
        consumer.close()


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium is needed to render the report: apt-get install -y chromium")


def screenshot(page: Path, out: Path, profile: Path) -> None:
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            "--window-size=1280,2400",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_report_renders_in_headless_chromium(archive_replay, tmp_path):
    page = archive_replay.report_path
    text = page.read_text(encoding="utf-8")
    assert archive_replay.backtest.alerts
    for row in archive_replay.backtest.alerts:
        assert html.escape(row.alert.title) in text
    assert not re.search(r"""(src|href)=['"](?!data:|https?:|#)""", text), "no local files"
    for plot in ("timeline.png", "signals.png", "sources.png", "latency.png"):
        assert (page.parent / plot).stat().st_size > 5_000

    shot = tmp_path / "report.png"
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    screenshot(page, shot, profile)
    image = matplotlib.image.imread(shot)
    height, width = image.shape[:2]
    assert (width, height) == (1280, 2400)
    pixels = image[..., :3].reshape(-1, 3)
    # A blank or failed page is one colour; the report has text, tables and plots.
    assert float(pixels.std()) > 0.05
    assert len(np.unique((pixels * 255).astype(np.uint8), axis=0)) > 200


def test_paced_replay_streams_through_the_running_pipeline_and_cleans_up(
    live_settings, archive_replay
):
    cnn = ARCHIVE / "cnn"
    span = capture_time(max(cnn.glob("*.xml"))) - capture_time(min(cnn.glob("*.xml")))
    speed = span.total_seconds() / 4  # the two snapshots four seconds apart
    result = replay(
        replace(live_settings),
        ReplayOptions(sources=(cnn,), speed=speed, progress_interval=30),
    )
    cnn_ids = {i for i, s in sightings().items() if s[0][1].parent == cnn}
    assert set(result.backtest.decisions) == cnn_ids
    assert result.backtest.duplicate_alerts == 0
    expected = {r.alert.article_id for r in archive_replay.backtest.alerts} & cnn_ids
    assert {r.alert.article_id for r in result.backtest.alerts} == expected
    assert result.backtest.index_missing == 0
    assert result.publish_seconds >= 4
    admin = make_admin(live_settings.bootstrap_servers)
    try:
        leftover = [t for t in admin.list_topics() if t.startswith(REPLAY_PREFIX + result.run_id)]
    finally:
        admin.close()
    assert leftover == []
