"""/metrics, /healthz and /readyz of the worker and of the web page.

The worker is ``newswatch pipeline --metrics-port`` as an operator runs it (real
broker, Prism, the real model); its counters must match what it wrote to the
topics. The web page's counters must match what was published. ``/readyz`` must
turn unready when the broker stops (a broker of the test's own) and ready again
when it is back.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from connectors.files import read_document
from newswatch.config import PROJECT_ROOT, Settings
from newswatch.health import worker_endpoint
from newswatch.schemas import Article, DeadLetter, article_id, utc_now
from newswatch.topics import read_topic
from tests.commands import newswatch_command
from tests.conftest import free_port, isolated_settings, start_broker
from tests.web.conftest import (
    clean_env,
    fetch,
    json_of,
    make_alert,
    make_decision,
    make_story,
    metric_values,
    publish,
    publish_alerts,
    publish_dead_letters,
    publish_stories,
    stop,
    wait_until,
)

SEED = PROJECT_ROOT / "seeds" / "000_926da616d7d9c5df.txt"


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str) -> float:
    return sum(v for (sample, _), v in samples.items() if sample == name)


def articles(count_seed: int, count_plain: int) -> list[Article]:
    """Copies of the seed article (escalations) and articles naming neither Taiwan nor China."""
    seed = read_document(SEED).good[0]
    out = [
        Article(**{**seed.to_dict(), "id": article_id(f"metrics-seed-{i}-{time.time()}")})
        for i in range(count_seed)
    ]
    out += [
        Article(
            id=article_id(f"metrics-plain-{i}-{time.time()}"),
            url=f"https://news.example/plain/{i}",
            title=f"Local council approves budget {i}",
            text="The council approved the annual budget after a short debate.",
            published=utc_now(),
            source="Local Paper",
            feed="https://news.example/feed.xml",
            ingested_at=utc_now(),
        )
        for i in range(count_plain)
    ]
    return out


def test_worker_metrics_match_what_the_pipeline_wrote(settings: Settings, tmp_path: Path):
    batch = articles(3, 5)
    garbage = [b"not json at all", b'{"id": 5}']
    publish(
        settings,
        settings.kafka.articles_topic,
        [(a.id.encode(), a.to_bytes()) for a in batch] + [(b"junk", g) for g in garbage],
    )
    records = len(batch) + len(garbage)
    port = free_port()
    log = tmp_path / "pipeline.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            newswatch_command(settings, "pipeline", f"--metrics-port={port}"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env=clean_env(NEWSWATCH_SERVE_REFRESH="1"),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def scrape() -> dict:
        if worker.poll() is not None:
            raise AssertionError(f"pipeline exited ({worker.returncode}):\n{log.read_text()}")
        try:
            status, _, body = fetch(url + "/metrics", timeout=5)
        except OSError:
            return {}
        assert status == 200
        return metric_values(body.decode())

    try:
        # Every record's outcome acknowledged: the last thing the worker counts.
        samples = wait_until(
            lambda: (
                (s := scrape())
                and value(s, "newswatch_ack_to_outcome_seconds_count") >= records
                and s
            ),
            240,
            "the worker to count an outcome for every record",
        )
        decisions = read_topic(settings.bootstrap_servers, settings.kafka.decisions_topic)
        alerts = read_topic(settings.bootstrap_servers, settings.kafka.alerts_topic)
        letters = read_topic(settings.bootstrap_servers, settings.kafka.dead_letter_topic)
        stories = read_topic(settings.bootstrap_servers, settings.kafka.stories_topic)

        assert value(samples, "newswatch_articles_read_total") == records
        assert value(samples, "newswatch_decisions_total") == len(decisions) == len(batch)
        assert value(samples, "newswatch_alerts_total") == len(alerts) == 3
        assert value(samples, "newswatch_dead_letters_total", stage="decode") == len(letters) == 2
        assert total(samples, "newswatch_stories_total") == len(stories)
        assert value(samples, "newswatch_ack_to_outcome_seconds_count") == records
        assert value(samples, "newswatch_classify_batch_seconds_count") >= 1
        assert value(samples, "newswatch_classify_batch_seconds_sum") > 0
        for partition in range(settings.kafka.partitions):
            assert (
                value(
                    samples,
                    "newswatch_reader_last_poll_timestamp_seconds",
                    topic=settings.kafka.articles_topic,
                    partition=str(partition),
                )
                > time.time() - 60
            )
        # The committed offsets catch up: lag 0 on every partition, and ready.
        wait_until(
            lambda: (
                (s := scrape())
                and all(
                    (
                        "newswatch_consumer_lag",
                        (
                            ("group", settings.kafka.group_id),
                            ("partition", str(p)),
                            ("topic", settings.kafka.articles_topic),
                        ),
                    )
                    in s
                    and value(
                        s,
                        "newswatch_consumer_lag",
                        group=settings.kafka.group_id,
                        partition=str(p),
                        topic=settings.kafka.articles_topic,
                    )
                    == 0
                    for p in range(settings.kafka.partitions)
                )
            ),
            60,
            "the consumer lag to reach 0",
        )
        assert value(scrape(), "newswatch_broker_up") == 1
        status, _, body = fetch(url + "/readyz")
        assert status == 200, body
        assert json_of(body)["checks"]["consumers"]["ok"]
        assert fetch(url + "/healthz")[0] == 200
    finally:
        code = stop(worker)
    assert code == 0, log.read_text()


def test_web_metrics_count_the_records_the_page_read(settings: Settings, serve_page):
    page = serve_page()
    story = make_story("Drills near Taiwan", "Ships gathered east of Taiwan.")
    grown = make_story(
        "Drills near Taiwan", "Ships gathered east of Taiwan.", story_id=story.story_id, revision=1
    )
    others = [make_story(f"Story {i}", f"Evidence {i}.") for i in range(2)]
    publish_stories(settings, [story, grown, *others])
    wrong_type = {**make_story("Wrong", "types").to_dict(), "severity": "3"}
    publish(
        settings,
        settings.kafka.stories_topic,
        [(b"broken", b"{not a story"), (b"wrong", json.dumps(wrong_type).encode())],
    )
    publish_alerts(settings, [make_alert(f"Alert {i}", f"Sentence {i}.") for i in range(2)])
    publish_dead_letters(
        settings,
        [
            DeadLetter.of("decode", "SchemaError", "t/0@1", b"x"),
            DeadLetter.of("decode", "SchemaError", "t/0@2", b"y"),
            DeadLetter.of("parse", "NotAFeed", "https://feed.example/rss", b"<html>"),
        ],
    )
    publish(
        settings,
        settings.kafka.decisions_topic,
        [
            (f"a{i}".encode(), make_decision(f"a{i}", alert=i < 2, signals=["military"]).to_bytes())
            for i in range(5)
        ],
    )

    def scrape() -> dict:
        return metric_values(page.text("/metrics"))

    samples = wait_until(
        lambda: (
            (s := scrape()) and total(s, "newswatch_web_records_total") >= 4 + 2 + 2 + 3 + 5 and s
        ),
        30,
        "the page to read every record",
    )

    assert value(samples, "newswatch_web_records_total", kind="story") == 6
    assert value(samples, "newswatch_web_records_total", kind="alert") == 2
    assert value(samples, "newswatch_web_records_total", kind="dead_letter") == 3
    assert value(samples, "newswatch_web_records_total", kind="decision") == 5
    assert value(samples, "newswatch_web_unreadable_records_total", kind="story") == 2
    assert value(samples, "newswatch_web_held", kind="story") == 3
    assert value(samples, "newswatch_web_held", kind="alert") == 2
    assert value(samples, "newswatch_web_held", kind="dead_letter") == 3
    assert value(samples, "newswatch_web_held", kind="decision") == 5
    assert "unreadable story record at" in page.output()
    assert "Story: severity must be int, not str" in page.output()
    assert "3</strong> stories" in page.text("/")  # the page renders without them


def test_readyz_turns_unready_when_the_broker_stops_and_ready_when_it_is_back(
    tmp_path: Path, serve_page
):
    broker = start_broker(tmp_path / "own-broker")
    try:
        own = isolated_settings(broker, tmp_path / "home", "readyz")
        page = serve_page(settings=own)

        def readiness() -> tuple[int, dict]:
            status, _, body = page.get("/readyz")
            return status, json_of(body)

        wait_until(lambda: readiness()[0] == 200, 30, "/readyz to answer 200")
        assert readiness()[1]["checks"]["lag"]["ok"]

        broker.stop()
        _, answer = wait_until(
            lambda: (r := readiness())[0] == 503 and r, 60, "/readyz to answer 503"
        )
        assert answer["ready"] is False
        assert answer["checks"]["broker"]["ok"] is False
        assert page.get("/healthz")[0] == 200  # alive all the same
        assert "broker unreachable" in page.text("/")

        broker.start()
        wait_until(lambda: readiness()[0] == 200, 90, "/readyz to answer 200 again")
    finally:
        broker.stop()


def test_metrics_endpoint_is_off_unless_a_port_is_given():
    with worker_endpoint(Settings()) as port:
        assert port is None
