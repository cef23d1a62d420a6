"""RSS/Atom bytes -> `Article`s and `DeadLetter`s.

feedparser only ever sees bytes we fetched (or read from a file) ourselves:
given a string it may open URLs or local paths. Its loose ``FeedParserDict``
entries are turned into `Article`s right here; nothing downstream sees them.

Rules at this boundary:

* ``id`` is `article_id` of the entry's GUID when that is globally unique (a
  URL, URN, ``tag:`` or ``yt:video:`` id), else of its canonical link, else of
  ``feed URL + '#' + GUID or title``: opaque GUIDs such as WSJ's
  ``SB1003...`` are only unique within their own feed.
* ``title`` and ``text`` are plain text (HTML stripped, whitespace normalised);
  ``text`` is the longer of content and summary, cut to ``max_entry_chars``.
* ``published`` comes from the entry's published/updated time, ISO-8601 UTC,
  or None. It is payload only: Kafka timestamps records at ingest.
* A feed that is malformed but still yields entries gets a health warning and
  its entries are published; one that yields nothing (empty body, HTML error
  page, truncated before the first item) becomes one ``parse`` dead letter
  carrying its first bytes. Entries without title and text become dead letters
  too, never silent drops.

Example::

    parsed = parse_feed(result.body, "https://feeds.bbci.co.uk/news/world/rss.xml",
                        content_type=result.content_type)
    publisher.publish(parsed.good)
    publisher.publish_dead_letters(parsed.bad)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import feedparser

from connectors.errors import EmptyEntry, NotAFeed
from connectors.fields import (
    canonical_url,
    cut,
    iso_utc,
    normalise_text,
    one_line,
    plain_text,
    title_from_text,
)
from newswatch.schemas import Article, DeadLetter, article_id, utc_now

__all__ = ["ParsedFeed", "entry_article", "parse_feed"]

logger = logging.getLogger(__name__)

#: Raw (HTML) characters kept per character of ``max_entry_chars`` before markup is stripped.
_RAW_PER_TEXT_CHAR = 4

#: feedparser complaints that do not make a feed unhealthy (the bytes parsed fine).
_BENIGN_BOZO = ("NonXMLContentType", "CharacterEncodingOverride")


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """What one feed document yielded."""

    title: str
    """The feed's own title ('' if it has none)."""
    good: list[Article] = field(default_factory=list)
    bad: list[DeadLetter] = field(default_factory=list)
    """Dead letters: the whole document, or single entries without content."""
    warning: str | None = None
    """Feed-health warning: the document is malformed but entries could be read."""
    cut: int = 0
    """How many entry texts were cut to ``max_entry_chars``."""


def parse_feed(
    data: bytes,
    feed_url: str,
    *,
    source: str | None = None,
    content_type: str = "",
    max_entry_chars: int = 200_000,
    ingested_at: str | None = None,
) -> ParsedFeed:
    """Parse an RSS/Atom document into articles and dead letters.

    Args:
        data: The raw document.
        feed_url: Where it came from (feed URL or file path); becomes ``Article.feed``.
        source: Outlet name to use instead of the feed's title.
        content_type: The HTTP Content-Type, used for the charset; XML if empty.
        max_entry_chars: Entry texts are cut to this many characters.
        ingested_at: Ingest time to stamp on every article (default: now).
    """
    if not data.strip():
        letter = DeadLetter.of("parse", NotAFeed("empty document"), feed_url, data)
        return ParsedFeed(title="", bad=[letter])
    headers = {"content-type": content_type or "application/xml"}
    if feed_url.startswith(("http://", "https://")):
        headers["content-location"] = feed_url
    parsed = feedparser.parse(data, response_headers=headers)
    entries = parsed.get("entries") or []
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    title = one_line(_value_text(parsed.feed, "title"))

    if not entries:
        if problem is not None or not parsed.get("version"):
            reason = (
                f"{type(problem).__name__}: {problem}" if problem else "no RSS/Atom root element"
            )
            letter = DeadLetter.of(
                "parse", NotAFeed(f"no entries could be read ({reason})"), feed_url, data
            )
            return ParsedFeed(title=title, bad=[letter])
        return ParsedFeed(title=title)

    warning = None
    if problem is not None:
        kind = type(problem).__name__
        if kind in _BENIGN_BOZO:
            logger.debug("feed %s: %s: %s", feed_url, kind, problem)
        else:
            warning = f"malformed feed, {len(entries)} entries read anyway ({kind}: {problem})"

    name = source or title or urlsplit(feed_url).hostname or feed_url
    language = parsed.feed.get("language") or None
    ingested_at = ingested_at or utc_now()
    good: list[Article] = []
    bad: list[DeadLetter] = []
    seen: set[str] = set()
    cut_count = 0
    for entry in entries:
        item, was_cut = entry_article(
            entry,
            feed_url=feed_url,
            source=name,
            language=language,
            max_entry_chars=max_entry_chars,
            ingested_at=ingested_at,
        )
        if isinstance(item, DeadLetter):
            bad.append(item)
            continue
        if item.id in seen:  # the same item twice in one document
            continue
        seen.add(item.id)
        cut_count += was_cut
        good.append(item)
    if cut_count:
        logger.info(
            "feed %s: cut %d entry texts to %d characters", feed_url, cut_count, max_entry_chars
        )
    return ParsedFeed(title=title, good=good, bad=bad, warning=warning, cut=cut_count)


def entry_article(
    entry: Any,
    *,
    feed_url: str,
    source: str,
    language: str | None,
    max_entry_chars: int,
    ingested_at: str,
) -> tuple[Article | DeadLetter, bool]:
    """One feedparser entry as an `Article` (or a `DeadLetter` if it has no content).

    Returns:
        The record, and whether its text was cut to ``max_entry_chars``.
    """
    # Raw values are cut before their markup is stripped: stripping costs several times
    # a value's size in memory, and all but max_entry_chars of the result goes anyway.
    raw_limit = max_entry_chars * _RAW_PER_TEXT_CHAR if max_entry_chars > 0 else None
    title = one_line(_value_text(entry, "title", raw_limit))
    summary = _value_text(entry, "summary", raw_limit)
    raw_contents = entry.get("content") or []
    contents = [_detail_text(c, raw_limit) for c in raw_contents]
    text = max([summary, *contents], key=len)
    raw_cut = raw_limit is not None and any(
        len(value or "") > raw_limit
        for value in [entry.get("summary"), *(c.get("value") for c in raw_contents)]
    )
    link = canonical_url(entry.get("link") or "")
    guid = (entry.get("id") or "").strip()
    identity = _identity(guid, link, feed_url, title or text[:200])
    key = article_id(identity)
    if not title and not text:
        payload = json.dumps(entry, default=str, ensure_ascii=False)
        letter = DeadLetter.of(
            "parse", EmptyEntry("entry has neither title nor text"), feed_url, payload, key=key
        )
        return letter, False
    text, was_cut = cut(text, max_entry_chars)
    was_cut = was_cut or raw_cut
    if not title:
        title = title_from_text(text)
    # dict.get: the parsed dates as given, without feedparser's deprecated (warning)
    # alias from updated to published; the fallback order is ours.
    dates = (dict.get(entry, k) for k in ("published_parsed", "updated_parsed", "created_parsed"))
    published = iso_utc(next((d for d in dates if d), None))
    url = link or (guid if guid.startswith(("http://", "https://")) else "")
    article = Article(
        id=key,
        url=url,
        title=title,
        text=text,
        published=published,
        source=source,
        feed=feed_url,
        ingested_at=ingested_at,
        language=_language(entry) or language,
    )
    return article, was_cut


def _identity(guid: str, link: str, feed_url: str, title: str) -> str:
    if guid and ":" in guid:
        return guid
    if link:
        return link
    return f"{feed_url}#{guid or title}"


def _value_text(obj: Any, name: str, limit: int | None = None) -> str:
    """Plain text of ``obj[name]`` (its first ``limit`` characters), honouring ``<name>_detail``."""
    value = obj.get(name) or ""
    detail = obj.get(f"{name}_detail") or {}
    return _as_text(value[:limit], detail.get("type", "text/html"))


def _detail_text(detail: Any, limit: int | None = None) -> str:
    return _as_text((detail.get("value") or "")[:limit], detail.get("type", "text/html"))


def _as_text(value: str, kind: str) -> str:
    # feedparser has already decoded entities of text/plain values: '<' there is a character.
    return normalise_text(value) if kind == "text/plain" else plain_text(value)


def _language(entry: Any) -> str | None:
    for name in ("title_detail", "summary_detail"):
        detail = entry.get(name) or {}
        if detail.get("language"):
            return str(detail["language"])
    return None
