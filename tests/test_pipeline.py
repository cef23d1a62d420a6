"""The streaming pipeline end to end, on a real broker and a real Beam runner (Prism).

Real news in: the seed article (the Nov 2025 China-Japan row over Taiwan) and
non-Taiwan items from the labelled set (real outlets' RSS items, 2023; see
../shared/data/labelled/dev.jsonl), plus garbage bytes on the articles topic.
"""

from __future__ import annotations

import threading
import time

import pytest

from connectors.publish import Publisher
from newswatch.config import Settings
from newswatch.schemas import Alert, Article, DeadLetter, Decision, Story, StoryAlert
from newswatch.topics import make_producer
from pipelines.classify import run
from tests.articles import non_taiwan_articles, seed_article
from tests.streams import committed_offsets, read_topic


@pytest.fixture
def published(settings: Settings) -> tuple[Article, list[Article]]:
    """Seed and 20 non-Taiwan items on the articles topic, with garbage in between."""
    seed, others = seed_article(), non_taiwan_articles(20)
    with Publisher(settings) as publisher:
        publisher.publish(others[:10])
    producer = make_producer(settings.bootstrap_servers)
    producer.send(settings.kafka.articles_topic, key=b"garbage", value=b"\xff\xfe not json {")
    producer.flush()
    producer.close()
    with Publisher(settings) as publisher:
        publisher.publish([seed, *others[10:]])
    return seed, others


def test_seed_alerts_and_others_do_not_on_a_streaming_runner(settings, published):
    seed, others = published
    stop = threading.Event()
    watched: dict = {}

    def watch() -> None:
        """Streaming: the job keeps running; stop (drain) once every record has an outcome."""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not stop.is_set():
            committed, end = committed_offsets(settings)
            if committed == end:
                watched["settled_while_running"] = True
                break
            time.sleep(1)
        stop.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    # Beam's job server installs signal handlers, so the pipeline runs in the main thread.
    report = run(settings, stop=stop, install_signal_handlers=False)
    watcher.join(5)
    assert watched.get("settled_while_running"), "outcomes were not all written within 240 s"

    alerts = [Alert.from_bytes(r.value) for r in read_topic(settings, settings.kafka.alerts_topic)]
    assert {a.article_id for a in alerts} == {seed.id}
    (alert,) = {a.alert_id: a for a in alerts}.values()
    assert {"rhetoric", "economic", "diplomatic"} <= set(alert.signals)
    assert alert.evidence and alert.title == seed.title

    decisions = [
        Decision.from_bytes(r.value) for r in read_topic(settings, settings.kafka.decisions_topic)
    ]
    assert {d.article_id for d in decisions} == {seed.id} | {a.id for a in others}
    assert {d.article_id for d in decisions if d.alert} == {seed.id}

    dead = read_topic(settings, settings.kafka.dead_letter_topic)
    letters = [DeadLetter.from_bytes(r.value) for r in dead]
    assert [(d.stage, d.key, d.payload) for d in letters] == [
        ("decode", "garbage", b"\xff\xfe not json {")
    ]
    committed, end = committed_offsets(settings)
    assert committed == end
    assert report.counters.get("alerts", 0) >= 1


def test_until_idle_processes_the_backlog_and_exits(settings, published):
    _seed, others = published
    report = run(settings, until_idle=True, install_signal_handlers=False)
    decisions = read_topic(settings, settings.kafka.decisions_topic)
    assert len({Decision.from_bytes(r.value).article_id for r in decisions}) == 1 + len(others)
    committed, end = committed_offsets(settings)
    assert committed == end
    assert report.counters.get("dead_letters_decode") == 1


def test_the_seed_becomes_one_escalated_story_with_one_story_alert(settings, published):
    seed, _others = published
    run(settings, until_idle=True, install_signal_handlers=False)
    records = read_topic(settings, settings.kafka.stories_topic)
    stories = {s.story_id: s for s in (Story.from_bytes(r.value) for r in records)}
    (story,) = [s for s in stories.values() if seed.id in {a.article_id for a in s.articles}]
    assert [a.article_id for a in story.articles] == [seed.id]
    assert [s.story_id for s in stories.values() if s.escalation] == [story.story_id]
    assert story.escalation and story.status == "escalated" and story.headline == seed.title
    assert {"rhetoric", "economic", "diplomatic"} <= set(story.signals)
    assert story.evidence and story.evidence[0].article_id == seed.id
    alerts = [
        StoryAlert.from_bytes(r.value)
        for r in read_topic(settings, settings.kafka.story_alerts_topic)
    ]
    assert [(a.story_id, a.update, a.reasons) for a in alerts] == [
        (story.story_id, 0, ["escalated"])
    ]


def test_restart_resumes_from_committed_offsets(settings, published):
    run(settings, until_idle=True, install_signal_handlers=False)
    first = len(read_topic(settings, settings.kafka.decisions_topic))
    # Nothing new: a second run reads nothing and writes nothing.
    report = run(settings, until_idle=True, install_signal_handlers=False)
    assert report.counters.get("articles_decoded", 0) == 0
    assert len(read_topic(settings, settings.kafka.decisions_topic)) == first
    # A new article: only it is processed.
    extra = non_taiwan_articles(21)[20]
    with Publisher(settings) as publisher:
        publisher.publish([extra])
    report = run(settings, until_idle=True, install_signal_handlers=False)
    assert report.counters.get("articles_decoded") == 1
