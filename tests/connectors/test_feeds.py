"""Feed documents -> articles and dead letters, on recorded real feeds (see tests/data/feeds)."""

from __future__ import annotations

import warnings
from pathlib import Path

from connectors.feeds import parse_feed
from newswatch.schemas import Article, article_id

DATA = Path(__file__).parents[1] / "data" / "feeds"
WSJ_URL = "https://feeds.a.dj.com/rss/RSSWorldNews.xml"


def recorded(name: str) -> bytes:
    return (DATA / name).read_bytes()


def rss(items: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Test Wire</title><link>https://wire.example/</link>{items}</channel></rss>"
    ).encode()


def test_rss_items_become_articles_with_plain_fields():
    parsed = parse_feed(recorded("wsj_2020-08-05T20-34-06Z.xml"), WSJ_URL, ingested_at="T")
    assert parsed.title == "WSJ.com: World News"
    assert parsed.bad == [] and parsed.warning is None
    assert len(parsed.good) == 6
    azar = next(a for a in parsed.good if "Azar" in a.title)
    assert azar.title == "Health and Human Services Secretary Azar to Visit Taiwan"
    assert azar.url.startswith("https://www.wsj.com/articles/")
    assert azar.published is not None and azar.published.endswith("Z")
    assert azar.source == "WSJ.com: World News"
    assert azar.feed == WSJ_URL
    assert azar.language == "en-us"
    assert azar.ingested_at == "T"
    assert "Taiwan" in azar.text and "<" not in azar.text


def test_opaque_guids_give_way_to_the_link_as_identity():
    # WSJ GUIDs such as SB1003... are unique only within the feed.
    parsed = parse_feed(recorded("wsj_2020-08-05T20-34-06Z.xml"), WSJ_URL)
    assert all(a.id == article_id(a.url) for a in parsed.good)


def test_published_is_the_entry_time_in_utc_and_ingested_at_is_now():
    parsed = parse_feed(recorded("wsj_2020-08-05T20-34-06Z.xml"), WSJ_URL)
    beirut = next(a for a in parsed.good if a.title.startswith("Beirut Explosion"))
    assert beirut.published == "2020-08-05T19:44:00Z"  # Wed, 05 Aug 2020 15:44:00 -0400
    assert not beirut.ingested_at.startswith("2020")


def test_an_unreadable_date_leaves_published_empty_and_an_updated_date_stands_in():
    items = (
        "<item><title>A</title><link>https://wire.example/a</link><pubDate>soon</pubDate></item>"
        "<item><title>B</title><link>https://wire.example/b</link><atom:updated xmlns:atom="
        '"http://www.w3.org/2005/Atom">2020-08-05T19:44:00Z</atom:updated></item>'
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor feedparser's deprecated updated->published alias
        unreadable, updated = parse_feed(rss(items), "https://wire.example/rss").good
    assert unreadable.published is None
    assert updated.published == "2020-08-05T19:44:00Z"


def test_configured_source_name_replaces_the_feed_title():
    parsed = parse_feed(recorded("wsj_2020-08-05T20-34-06Z.xml"), WSJ_URL, source="WSJ World")
    assert {a.source for a in parsed.good} == {"WSJ World"}


def test_atom_entries_become_articles_keyed_by_their_ids():
    url = "https://www.youtube.com/feeds/videos.xml?channel_id=UCNye-wNBqNL5ZzHSJj3l8Bg"
    parsed = parse_feed(recorded("aljazeeraenglish_2020-08-09T11-06-46Z.xml"), url)
    assert parsed.title == "Al Jazeera English"
    assert len(parsed.good) == 14
    first = parsed.good[0]
    assert first.id == article_id("yt:video:KeGUI6fGJxY")
    assert first.url == "https://www.youtube.com/watch?v=KeGUI6fGJxY"
    assert first.title == "Hundreds of protesters injured as anger simmers in Beirut"
    assert first.text.startswith("Outrage over Tuesday")
    assert first.published == "2020-08-09T05:37:20Z"


def test_the_same_item_in_consecutive_snapshots_keeps_its_id():
    url = "http://feeds.bbci.co.uk/news/rss.xml"
    morning = parse_feed(recorded("bbc_2020-08-31T06-51-28Z.xml"), url)
    evening = parse_feed(recorded("bbc_2020-08-31T22-17-02Z.xml"), url)
    assert morning.title == "BBC News - Home"  # from CDATA
    shared = {a.id for a in morning.good} & {a.id for a in evening.good}
    assert len(morning.good) == 53 and len(evening.good) == 57 and len(shared) == 28


def test_well_formed_feed_without_items_is_neither_error_nor_warning():
    parsed = parse_feed(recorded("straittimes_2020-09-04T20-37-48Z.xml"), "https://st.example/")
    assert parsed.title == "The Straits Times Singapore News"
    assert parsed.good == [] and parsed.bad == [] and parsed.warning is None


def test_html_error_page_becomes_one_dead_letter_with_its_bytes():
    page = recorded("malformed/latimes_2021-09-19T23-55-33Z.xml")
    parsed = parse_feed(page, "https://www.latimes.com/local/rss2.0.xml")
    assert parsed.good == []
    (letter,) = parsed.bad
    assert (letter.stage, letter.error) == ("parse", "NotAFeed")
    assert letter.origin == "https://www.latimes.com/local/rss2.0.xml"
    assert letter.payload == page and letter.payload_size == len(page)
    assert letter.key is None


def test_empty_body_becomes_a_dead_letter():
    parsed = parse_feed(
        recorded("malformed/nzherald_2020-04-28T00-43-18Z.xml"), "https://nz.example"
    )
    assert parsed.good == []
    assert [(d.error, d.message) for d in parsed.bad] == [("NotAFeed", "empty document")]


def test_truncated_feed_publishes_complete_items_with_a_health_warning():
    parsed = parse_feed(recorded("malformed/fox_2020-05-17T23-30-03Z.xml"), "https://fox.example")
    assert parsed.warning is not None and "malformed" in parsed.warning
    assert len(parsed.good) == 1
    assert parsed.good[0].title.startswith("Canadian Forces Snowbirds jet")
    # The item cut off after its opening tag is reported, not dropped.
    assert [d.error for d in parsed.bad] == ["EmptyEntry"]


def test_dead_letter_is_bounded_for_big_documents():
    garbage = b"<html>" + b"x" * 200_000
    (letter,) = parse_feed(garbage, "https://big.example").bad
    assert letter.payload_size == len(garbage)
    assert len(letter.payload) == 64 * 1024


def test_entry_without_title_or_text_becomes_a_dead_letter():
    parsed = parse_feed(
        rss(
            "<item><guid>https://wire.example/1</guid></item>"
            "<item><title>Kept</title><link>https://wire.example/2</link></item>"
        ),
        "https://wire.example/rss",
    )
    assert [a.title for a in parsed.good] == ["Kept"]
    (letter,) = parsed.bad
    assert letter.error == "EmptyEntry" and letter.key == article_id("https://wire.example/1")


def test_html_in_items_becomes_plain_text():
    parsed = parse_feed(
        rss(
            "<item><title>Drills &amp;amp; warnings</title><link>https://wire.example/3</link>"
            "<description>&lt;p&gt;PLA &lt;b&gt;drills&lt;/b&gt;&amp;nbsp;near   Taiwan.&lt;/p&gt;"
            "&lt;script&gt;track()&lt;/script&gt;&lt;p&gt;Second paragraph.&lt;/p&gt;</description>"
            "</item>"
        ),
        "https://wire.example/rss",
    )
    (article,) = parsed.good
    assert article.title == "Drills & warnings"
    assert article.text == "PLA drills near Taiwan.\nSecond paragraph."


def test_untitled_item_is_titled_from_its_text():
    item = "<item><link>https://wire.example/4</link><description>Short note.</description></item>"
    (article,) = parse_feed(rss(item), "https://wire.example/rss").good
    assert article.title == "Short note." and article.text == "Short note."


def test_item_without_guid_or_link_is_identified_by_feed_and_title():
    url = "https://wire.example/rss"
    (article,) = parse_feed(rss("<item><title>Only a title</title></item>"), url).good
    assert article.id == article_id(f"{url}#Only a title") and article.url == ""


def test_long_texts_are_cut_to_max_entry_chars():
    body = "word " * 1000
    parsed = parse_feed(
        rss(f"<item><title>Long</title><link>https://wire.example/5</link><description>{body}"
            "</description></item>"),
        "https://wire.example/rss",
        max_entry_chars=100,
    )  # fmt: skip
    assert len(parsed.good[0].text) <= 100 and parsed.cut == 1


def test_tracking_parameters_do_not_change_identity():
    a = parse_feed(
        rss("<item><title>A</title><link>https://wire.example/6?utm_source=rss#top</link></item>"),
        "https://wire.example/rss",
    ).good[0]
    assert a.url == "https://wire.example/6" and a.id == article_id("https://wire.example/6")


def test_a_url_given_as_the_document_is_not_fetched():
    # feedparser fetches a URL passed as a string; parse_feed takes bytes only, so this
    # is a broken document (and the loopback guard would fail the test on a connection).
    parsed = parse_feed(b"http://10.0.0.1/feed.xml", "https://wire.example/rss")
    assert parsed.good == [] and [d.error for d in parsed.bad] == ["NotAFeed"]


def test_articles_round_trip_through_their_wire_format():
    for article in parse_feed(recorded("bbc_2020-08-31T06-51-28Z.xml"), "https://bbc").good:
        assert Article.from_bytes(article.to_bytes()) == article
