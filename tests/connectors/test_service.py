"""The connector service against loopback feed servers and the real test broker.

Time between polls is stepped with a fake clock (the one thing here that
cannot be real in a test that lasts seconds); everything else is real:
HTTP, Kafka, the state directory.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from connectors.publish import Publisher
from connectors.service import ConnectorService, feed_sources, run_connectors
from connectors.state import StateStore
from newswatch.config import PROJECT_ROOT, Settings
from newswatch.errors import ConfigError
from newswatch.schemas import Article, DeadLetter
from newswatch.topics import make_producer
from tests.connectors.servers import Reply

DATA = Path(__file__).parents[1] / "data" / "feeds"
WSJ = (DATA / "wsj_2020-08-05T20-34-06Z.xml").read_bytes()
BBC_MORNING = (DATA / "bbc_2020-08-31T06-51-28Z.xml").read_bytes()
BBC_EVENING = (DATA / "bbc_2020-08-31T22-17-02Z.xml").read_bytes()
SEED = PROJECT_ROOT / "seeds" / "000_926da616d7d9c5df.txt"


class Clock:
    """Wall-clock seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def connector_settings(settings: Settings) -> Settings:
    """The test's settings, with feeds polled every minute from loopback servers."""
    options = settings.connectors
    options.allow_private_addresses = True
    options.poll_interval = 60.0
    options.max_backoff = 600.0
    options.connect_timeout = 2.0
    options.read_timeout = 0.3
    options.fetch_deadline = 5.0
    return settings


@contextmanager
def service(settings: Settings, clock: Clock) -> Iterator[ConnectorService]:
    """A connector service as one process would run it: own state lock, own producer."""
    with StateStore(settings.connectors.state_dir) as state, Publisher(settings) as publisher:
        yield ConnectorService(settings, publisher, state, clock=clock)


def articles(read_topic: Callable, settings: Settings) -> list[Article]:
    records = read_topic(settings, settings.kafka.articles_topic)
    assert all(r.key.decode() == Article.from_bytes(r.value).id for r in records)
    return [Article.from_bytes(r.value) for r in records]


def test_unchanged_feed_is_answered_304_and_publishes_nothing_more(
    connector_settings, clock, feed_server, read_topic
):
    url = feed_server.route("/wsj", Reply(body=WSJ, etag='"w1"'))
    connector_settings.connectors.feeds = [url]
    with service(connector_settings, clock) as connector:
        connector.poll_feeds()
        clock.advance(61)
        connector.poll_feeds()
    assert feed_server.hits("/wsj") == 2
    assert feed_server.last_request("/wsj").headers["if-none-match"] == '"w1"'
    assert connector.report.not_modified == 1 and connector.report.published == 6
    published = articles(read_topic, connector_settings)
    assert len(published) == 6 and {a.feed for a in published} == {url}


def test_changed_feed_publishes_only_its_new_entries(
    connector_settings, clock, feed_server, read_topic
):
    url = feed_server.route(
        "/bbc", Reply(body=BBC_MORNING, etag='"m"'), Reply(body=BBC_EVENING, etag='"e"')
    )
    connector_settings.connectors.feeds = [url]
    with service(connector_settings, clock) as connector:
        connector.poll_feeds()
        clock.advance(61)
        connector.poll_feeds()
    assert connector.report.published == 53 + 29
    assert connector.report.already_seen == 28
    ids = [a.id for a in articles(read_topic, connector_settings)]
    assert len(ids) == len(set(ids)) == 82


def test_failing_feed_backs_off_and_turns_unhealthy_while_others_continue(
    connector_settings, clock, feed_server, read_topic
):
    good = feed_server.route("/wsj", Reply(body=WSJ, etag='"w1"'))
    bad = feed_server.route(
        "/broken",
        Reply(status=500, body=b"Internal Server Error"),
        Reply(body=WSJ, delay=1.0),  # longer than the 0.3 s read timeout
        Reply(body=b"<html><body>Service unavailable</body></html>"),
        Reply(raw=b"garbage, not HTTP\r\n\r\n"),
    )
    connector_settings.connectors.feeds = [good, bad]
    with service(connector_settings, clock) as connector:
        for _minute in range(17):  # t = 0, 60, ..., 960 s
            connector.poll_feeds()
            clock.advance(60)
        health = connector.report.feeds
    # Backoff 120, 240, 480, then capped at 600 s: polled at t = 0, 120, 360 and 840.
    assert feed_server.hits("/broken") == 4
    assert feed_server.hits("/wsj") == 17
    assert health[bad]["healthy"] is False and health[bad]["failures"] == 4
    assert "malformed HTTP response" in health[bad]["last_error"]
    assert health[good]["healthy"] is True and health[good]["published"] == 6
    assert len(articles(read_topic, connector_settings)) == 6
    # The HTML page served as the feed went to the dead letters, once.
    (record,) = read_topic(connector_settings, connector_settings.kafka.dead_letter_topic)
    assert record.key.decode() == bad
    assert DeadLetter.from_bytes(record.value).error == "NotAFeed"


def test_retry_after_is_honoured(connector_settings, clock, feed_server):
    url = feed_server.route(
        "/busy", Reply(status=503, headers={"Retry-After": "300"}), Reply(body=WSJ)
    )
    connector_settings.connectors.feeds = [url]
    with service(connector_settings, clock) as connector:
        connector.poll_feeds()
        clock.advance(299)
        assert connector.poll_feeds() == 0  # the regular backoff (120 s) would have polled
        clock.advance(2)
        assert connector.poll_feeds() == 1
    assert feed_server.hits("/busy") == 2
    assert connector.report.published == 6


def test_restart_on_the_same_state_dir_publishes_no_duplicates(
    connector_settings, clock, feed_server, read_topic
):
    # No validators: every poll gets the full feed, so only the checkpointed ids prevent resends.
    url = feed_server.route(
        "/bbc", Reply(body=BBC_MORNING), Reply(body=BBC_MORNING), Reply(body=BBC_EVENING)
    )
    connector_settings.connectors.feeds = [url]
    with service(connector_settings, clock) as first:
        first.poll_feeds()
    for expected in (0, 29):
        clock.advance(61)
        with service(connector_settings, clock) as restarted:
            restarted.poll_feeds()
        assert restarted.report.published == expected
    ids = [a.id for a in articles(read_topic, connector_settings)]
    assert len(ids) == len(set(ids)) == 82


def with_broker_down(
    settings: Settings,
    state: StateStore,
    clock,
    broker,
    step: Callable[[ConnectorService], object],
) -> ConnectorService:
    """Run one connector ``step`` with the broker stopped and a producer that gives up fast."""
    producer = make_producer(
        settings.bootstrap_servers,
        max_block_ms=2000,
        request_timeout_ms=1000,
        delivery_timeout_ms=2000,
    )
    publisher = Publisher(settings, producer=producer, timeout=10)
    connector = ConnectorService(settings, publisher, state, clock=clock)
    broker.stop()
    try:
        step(connector)
    finally:
        broker.start()
        publisher.close(timeout=5)
    return connector


def test_records_the_broker_did_not_acknowledge_are_sent_again_after_a_restart(
    connector_settings, clock, feed_server, read_topic, kafka_broker
):
    url = feed_server.route("/wsj", Reply(body=WSJ, etag='"w1"'))
    connector_settings.connectors.feeds = [url]
    with StateStore(connector_settings.connectors.state_dir) as state:
        connector = with_broker_down(
            connector_settings, state, clock, kafka_broker, ConnectorService.poll_feeds
        )
        feed = state.feed(url)
        assert connector.report.unacknowledged == 6 and connector.report.published == 0
        assert feed.etag is None and len(feed.seen) == 0  # nothing checkpointed
        assert feed.healthy  # the feed is not blamed for the broker
    clock.advance(61)
    with service(connector_settings, clock) as restarted:
        restarted.poll_feeds()
    assert restarted.report.published == 6
    assert feed_server.last_request("/wsj").headers.get("if-none-match") is None
    assert len(articles(read_topic, connector_settings)) == 6


def test_one_pass_publishes_documents_and_feeds_and_a_second_pass_nothing_new(
    connector_settings, feed_server, tmp_path, read_topic
):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SEED, docs)
    (docs / "empty.txt").write_bytes(b"")
    url = feed_server.route("/wsj", Reply(body=WSJ, etag='"w1"'))
    connector_settings.connectors.feeds = [url]
    connector_settings.connectors.files = [docs]

    first = run_connectors(connector_settings, threading.Event(), once=True)
    assert (first.published, first.dead_letters, first.files_read) == (7, 1, 2)
    second = run_connectors(connector_settings, threading.Event(), once=True)
    assert (second.published, second.dead_letters, second.not_modified) == (0, 0, 1)

    published = articles(read_topic, connector_settings)
    assert len(published) == 7
    seed = next(a for a in published if a.feed.endswith(SEED.name))
    assert seed.title == SEED.read_text(encoding="utf-8").splitlines()[0].strip()
    (record,) = read_topic(connector_settings, connector_settings.kafka.dead_letter_topic)
    assert record.key.decode() == str(docs / "empty.txt")


def test_watch_mode_publishes_new_and_changed_files_only(connector_settings, tmp_path, read_topic):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Coast guard drill\nShips gathered off Kinmen.\n")
    connector_settings.connectors.files = [docs]
    connector_settings.connectors.watch_interval = 0.2
    stop = threading.Event()
    result: list = []
    worker = threading.Thread(
        target=lambda: result.append(run_connectors(connector_settings, stop)), daemon=True
    )

    def titles_become(expected: list[str]) -> None:
        deadline = time.monotonic() + 20
        while sorted(a.title for a in articles(read_topic, connector_settings)) != expected:
            assert time.monotonic() < deadline, f"never published {expected}"
            time.sleep(0.2)

    worker.start()
    try:
        titles_become(["Coast guard drill"])
        (docs / "b.txt").write_text("Air defence zone\nAircraft entered the zone.\n")
        titles_become(["Air defence zone", "Coast guard drill"])
        (docs / "a.txt").write_text("Coast guard drill ends\nThe ships left.\n")
        titles_become(["Air defence zone", "Coast guard drill", "Coast guard drill ends"])
        (docs / "b.txt").touch()  # newer mtime, same bytes: not a change
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive()
    assert len(articles(read_topic, connector_settings)) == 3
    assert result[0].published == 3


def test_feed_lists_are_read_from_files_with_names_and_comments(tmp_path):
    listing = tmp_path / "feeds.txt"
    listing.write_text(
        "# Taiwan\nhttps://www.taipeitimes.com/xml/index.rss  Taipei Times\n\n"
        "https://feeds.bbci.co.uk/news/world/rss.xml # BBC World\n"
    )
    sources = feed_sources([str(listing), "https://feeds.bbci.co.uk/news/world/rss.xml"])
    assert [(s.url, s.name) for s in sources] == [
        ("https://www.taipeitimes.com/xml/index.rss", "Taipei Times"),
        ("https://feeds.bbci.co.uk/news/world/rss.xml", None),
    ]


@pytest.mark.parametrize(
    "entry", ["file:///work/shared/data/archive/feeds/bbc/x.xml", "ftp://x/y", "no/such/list.txt"]
)
def test_unusable_feed_entries_fail_at_start_up(entry):
    with pytest.raises(ConfigError):
        feed_sources([entry])


def test_one_pass_skips_a_feed_that_is_backing_off_but_reports_it(connector_settings, feed_server):
    url = feed_server.route("/busy", Reply(status=429, headers={"Retry-After": "3600"}))
    connector_settings.connectors.feeds = [url]
    first = run_connectors(connector_settings, threading.Event(), once=True)
    second = run_connectors(connector_settings, threading.Event(), once=True)
    assert feed_server.hits("/busy") == 1
    assert (first.polls, second.polls) == (1, 0)
    assert second.feeds[url]["healthy"] is False
    assert second.feeds[url]["last_error"] == "HTTP 429 Too Many Requests"


def test_documents_the_broker_did_not_acknowledge_are_not_checkpointed_and_are_sent_later(
    connector_settings, clock, tmp_path, read_topic, kafka_broker
):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SEED, docs)
    connector_settings.connectors.files = [docs]
    with StateStore(connector_settings.connectors.state_dir) as state:
        connector = with_broker_down(
            connector_settings, state, clock, kafka_broker, ConnectorService.scan_files
        )
        assert connector.report.unacknowledged == 1 and connector.report.published == 0
        directory = state.directory(docs)
        assert directory.files == {} and len(directory.seen) == 0  # nothing checkpointed
    with service(connector_settings, clock) as restarted:
        restarted.scan_files()
    assert restarted.report.published == 1
    assert [a.feed for a in articles(read_topic, connector_settings)] == [str(docs / SEED.name)]
