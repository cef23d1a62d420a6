"""The pages other than the live list, and ``newswatch status``, on real topics.

Evidence is found in the article's own text on the articles topic; feed health
comes from checkpoints the real connector wrote after polling a local feed
server; dead letters show their stage, reason and an escaped payload preview;
backtest reports are listed and served, and nothing else from disk is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.publish import Publisher
from connectors.service import run_connectors
from newswatch.config import PROJECT_ROOT, Settings
from newswatch.schemas import Article, DeadLetter, Decision, article_id, utc_now
from tests.commands import newswatch_command
from tests.conftest import free_port
from tests.connectors.servers import FeedServer, Reply
from tests.web.conftest import (
    clean_env,
    make_alert,
    make_story,
    publish,
    publish_alerts,
    publish_dead_letters,
    publish_stories,
    wait_until,
)

ARTICLE_TEXT = (
    "Taiwan's defence ministry said it tracked 45 aircraft on Tuesday. "
    "Beijing announced live-fire drills in the strait for three days starting Wednesday. "
    "Officials in Taipei called the move provocative."
)
EVIDENCE = "Beijing announced live-fire drills in the strait for three days starting Wednesday."


def test_evidence_is_highlighted_in_the_text_of_its_article(settings: Settings, serve_page):
    article = Article(
        id=article_id("https://news.example/drills"),
        url="https://news.example/drills",
        title="China announces drills",
        text=ARTICLE_TEXT,
        published=utc_now(),
        source="Test Wire",
        feed="https://news.example/feed.xml",
        ingested_at=utc_now(),
    )
    with Publisher(settings) as publisher:
        assert publisher.publish([article]) == [article.id]
    alert = make_alert(article.title, EVIDENCE, article_id=article.id)
    story = make_story("Drills announced", EVIDENCE)
    story = story.from_dict(
        {
            **story.to_dict(),
            "evidence": [{**story.evidence[0].to_dict(), "article_id": article.id}],
        }
    )
    page = serve_page()
    publish_alerts(settings, [alert])
    publish_stories(settings, [story])
    wait_until(lambda: page.get(f"/stories/{story.story_id}")[0] == 200, 20, "the story")

    for path in (f"/alerts/{alert.alert_id}", f"/stories/{story.story_id}"):
        html = page.text(path)
        assert f"<mark>{EVIDENCE}</mark>" in html
        assert "tracked 45 aircraft on Tuesday." in html  # the sentence before, as context
        assert "called the move provocative" in html  # and after


def test_feed_health_shows_polls_validators_errors_and_backoff(
    settings: Settings, serve_page, tmp_path: Path
):
    feed = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>Wire</title>'
        b"<item><title>Taiwan reports aircraft</title><link>https://wire.example/1</link>"
        b"<guid>w-1</guid><description>Aircraft were tracked.</description></item>"
        b"</channel></rss>"
    )
    with FeedServer() as server:
        good = server.route("/good.xml", Reply(body=feed, etag='"v1"'))
        bad = server.route("/bad.xml", Reply(status=503))
        settings.connectors.feeds = [good, bad]
        settings.connectors.allow_private_addresses = True
        for _ in range(2):
            run_connectors(settings, threading.Event(), once=True)
    page = serve_page()

    html = page.text("/feeds")

    good_row = html[html.index(good) :].split("</tr>")[0]
    bad_row = html[html.index(bad) :].split("</tr>")[0]
    assert "ok" in good_row and "ETag" in good_row
    assert "50% of 2" in good_row  # the second poll was answered 304
    assert "failing (1 in a row)" in bad_row  # backing off: not polled again
    assert "503" in bad_row and "next poll in" in bad_row
    assert html.index(bad) < html.index(good)  # failing feeds first


def test_dead_letters_by_stage_with_reason_and_an_escaped_payload(settings: Settings, serve_page):
    hostile = b"<script>alert(1)</script>\x00\xff{"
    publish_dead_letters(
        settings,
        [
            DeadLetter.of("decode", ValueError("not JSON"), "t/0@7", hostile, key="k1"),
            DeadLetter.of("decode", ValueError("wrong type"), "t/1@9", b"{}", key="k2"),
            DeadLetter.of("parse", "NotAFeed", "https://feed.example/rss", b"<html>oops"),
        ],
    )
    page = serve_page()
    wait_until(lambda: "decode 2" in page.text("/dead-letters"), 20, "the dead letters")

    html = page.text("/dead-letters")
    assert "parse 1" in html
    assert "not JSON" in html and "origin t/0@7" in html and "key k1" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\x00\\xff{" in html
    assert "<script>alert" not in html
    only_parse = page.text("/dead-letters?stage=parse")
    assert "NotAFeed" in only_parse and "not JSON" not in only_parse


def test_backtest_reports_are_listed_and_served_and_nothing_else(
    settings: Settings, serve_page, tmp_path: Path
):
    reports = tmp_path / "reports"
    run = reports / "replay-2024"
    run.mkdir(parents=True)
    (run / "report.html").write_text("<html><body><h1>Backtest</h1></body></html>")
    (run / "summary.json").write_text(
        json.dumps({"articles": 1200, "classified": 1190, "alerts": 34, "dead_letters": 2})
    )
    (run / "timeline.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (run / "notes.txt").write_text("not part of a report")
    (reports / "half-written").mkdir()  # no report.html: not listed
    (tmp_path / "secret.html").write_text("outside")
    (run / "link.html").symlink_to(tmp_path / "secret.html")
    page = serve_page(args=[f"--reports-dir={reports}"])

    listing = page.text("/reports")
    assert "/reports/replay-2024/report.html" in listing and "1190" in listing and "34" in listing
    assert "half-written" not in listing
    status, headers, body = page.get("/reports/replay-2024/report.html")
    assert status == 200 and b"<h1>Backtest</h1>" in body
    assert "script-src" not in headers["Content-Security-Policy"]  # no script may run
    assert page.get("/reports/replay-2024/timeline.png")[0] == 200
    assert page.get("/reports/replay-2024/")[0] == 200  # redirected to report.html
    for path in (
        "/reports/replay-2024/notes.txt",
        "/reports/replay-2024/link.html",
        "/reports/replay-2024/..%2F..%2Fsecret.html",
        "/reports/..%2Fsecret.html/report.html",
        "/reports/half-written/report.html",
    ):
        assert page.get(path)[0] == 404, path


def test_the_index_counts_each_article_once_per_hour_of_its_event_time(
    settings: Settings, serve_page
):
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    earlier, later = now - timedelta(hours=3), now - timedelta(hours=1)

    def decision(key: str, at: datetime, alert: bool) -> tuple[bytes, bytes]:
        record = Decision(
            article_id=key,
            alert=alert,
            escalation_score=0.9 if alert else 0.2,
            taiwan_related=True,
            signals=["military"] if alert else [],
            severity=3 if alert else 0,
            model_version="test",
            published=at.isoformat().replace("+00:00", "Z"),
            source="Test Wire",
            decided_at=utc_now(),
        )
        return key.encode(), record.to_bytes()

    publish(
        settings,
        settings.kafka.decisions_topic,
        [
            decision("e1", earlier, True),
            decision("e2", earlier, False),
            decision("e3", earlier, False),
            decision("l1", later, True),
            decision("l1", later, True),  # the same article again: counted once
            decision("l2", later, True),
        ],
    )
    page = serve_page()
    wait_until(lambda: "5 articles in the index" in page.text("/"), 20, "the decisions")

    html = page.text("/index")
    stamp = "%Y-%m-%d %H:00 UTC"
    assert f"{earlier.strftime(stamp)}: 3 articles, 1 alerts" in html
    assert f"{later.strftime(stamp)}: 2 articles, 2 alerts, mean score 0.90" in html
    assert "<svg" in page.text("/fragments/index-chart")
    assert "5" in page.text("/index?resolution=day")


def test_status_shows_broker_topics_lag_feeds_stories_and_dead_letters(settings: Settings):
    publish_stories(settings, [make_story("A", "a."), make_story("B", "b.", status="breaking")])
    publish_dead_letters(settings, [DeadLetter.of("decode", "SchemaError", "t/0@1", b"x")])

    result = subprocess.run(
        newswatch_command(settings, "status"),
        cwd=PROJECT_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{settings.bootstrap_servers}: reachable" in out
    assert f"{settings.kafka.stories_topic}: 1, 2 (2)" in out
    assert f"group {settings.kafka.group_id} on {settings.kafka.articles_topic}: 0" in out
    assert "stories       2 (" in out and "breaking 1" in out and "escalated 1" in out
    assert "dead letters  1 (decode 1)" in out
    assert "feeds         0 with a checkpoint" in out

    as_json = subprocess.run(
        newswatch_command(settings, "status", "--json"),
        cwd=PROJECT_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    status = json.loads(as_json.stdout)
    assert status["records"]["stories"] == 2 and status["broker"]["reachable"] is True


def test_status_exits_1_when_the_broker_is_unreachable(settings: Settings):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "newswatch.cli",
            "status",
            f"--home={settings.home}",
            f"--bootstrap-servers=127.0.0.1:{free_port()}",
        ],
        cwd=PROJECT_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1
    assert "UNREACHABLE" in result.stdout
    assert "stories       unknown (broker unreachable)" in result.stdout
