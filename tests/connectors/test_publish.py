"""Publisher on the real test broker: keys, acknowledgements, timestamps, dead letters."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from kafka.admin import ConfigResource, ConfigResourceType

from connectors.feeds import parse_feed
from connectors.publish import Publisher
from newswatch.schemas import Article, DeadLetter
from newswatch.topics import make_admin, make_producer

DATA = Path(__file__).parents[1] / "data" / "feeds"
WSJ_URL = "https://feeds.a.dj.com/rss/RSSWorldNews.xml"


def wsj_articles() -> list[Article]:
    return parse_feed((DATA / "wsj_2020-08-05T20-34-06Z.xml").read_bytes(), WSJ_URL).good


def test_publish_returns_acknowledged_ids_and_keys_records_by_article_id(settings, read_topic):
    articles = wsj_articles()
    with Publisher(settings) as publisher:
        acked = publisher.publish(articles)
    assert acked == [a.id for a in articles]
    records = read_topic(settings, settings.kafka.articles_topic)
    assert sorted((r.key.decode(), Article.from_bytes(r.value)) for r in records) == sorted(
        (a.id, a) for a in articles
    )


def test_record_timestamps_are_ingest_time_not_publication_time(settings, read_topic):
    began = time.time()
    with Publisher(settings) as publisher:
        publisher.publish(wsj_articles())
    for record in read_topic(settings, settings.kafka.articles_topic):
        assert began - 5 <= record.timestamp / 1000 <= time.time() + 5
        assert Article.from_bytes(record.value).published.startswith("2020-08-0")


def test_dead_letters_are_keyed_by_origin(settings, read_topic):
    page = (DATA / "malformed" / "latimes_2021-09-19T23-55-33Z.xml").read_bytes()
    letters = parse_feed(page, "https://www.latimes.com/local/rss2.0.xml").bad
    with Publisher(settings) as publisher:
        assert publisher.publish_dead_letters(letters) == letters
    (record,) = read_topic(settings, settings.kafka.dead_letter_topic)
    assert record.key == b"https://www.latimes.com/local/rss2.0.xml"
    letter = DeadLetter.from_bytes(record.value)
    assert (letter.stage, letter.error, letter.payload) == ("parse", "NotAFeed", page)


def test_records_for_a_missing_topic_are_not_acknowledged(settings):
    settings.kafka.articles_topic = settings.kafka.articles_topic + ".missing"
    producer = make_producer(settings.bootstrap_servers, max_block_ms=1000)
    with Publisher(settings, producer=producer, timeout=5) as publisher:
        assert publisher.publish(wsj_articles()) == []


def test_nothing_to_publish_needs_no_broker_round_trip(settings):
    with Publisher(settings) as publisher:
        assert publisher.publish([]) == []
        assert publisher.publish_dead_letters([]) == []


def _shrink_articles_topic(settings, max_bytes: int) -> None:
    admin = make_admin(settings.bootstrap_servers)
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC,
            settings.kafka.articles_topic,
            configs={"max.message.bytes": str(max_bytes)},
        )
        admin.alter_configs([resource])
    finally:
        admin.close()
    time.sleep(1)  # let the broker apply it


def test_an_article_the_broker_refuses_becomes_a_dead_letter_and_later_ones_still_go_through(
    settings, read_topic
):
    small, *rest = wsj_articles()
    big = dataclasses.replace(rest[0], text="Taiwan " * 2000)  # ~14 KB, over the topic's limit
    _shrink_articles_topic(settings, 4096)
    with Publisher(settings) as publisher:
        first = publisher.publish([small, big])
        # An idempotent producer that saw a refusal fails every later send; this one must not.
        later = publisher.publish(rest[1:3])
    assert first == [small.id, big.id]  # the refused one is done: as a dead letter
    assert later == [a.id for a in rest[1:3]]
    articles = [
        Article.from_bytes(r.value) for r in read_topic(settings, settings.kafka.articles_topic)
    ]
    assert sorted(a.id for a in articles) == sorted([small.id, *(a.id for a in rest[1:3])])
    (record,) = read_topic(settings, settings.kafka.dead_letter_topic)
    letter = DeadLetter.from_bytes(record.value)
    assert (letter.stage, letter.error, letter.key) == (
        "publish",
        "MessageSizeTooLargeError",
        big.id,
    )
    assert settings.kafka.articles_topic in letter.message
    assert Article.from_bytes(letter.payload) == big
