"""Cleaning of article fields: plain text from HTML, timestamps, canonical URLs.

Feeds and files both hand their raw values through these functions, so an
article reads the same whichever connector produced it.
"""

from __future__ import annotations

import email.utils
import re
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from urllib.parse import urlsplit, urlunsplit

from newswatch.schemas import parse_time

__all__ = [
    "HtmlDocument",
    "canonical_url",
    "cut",
    "iso_utc",
    "normalise_text",
    "one_line",
    "parse_html",
    "plain_text",
    "title_from_text",
]

# Elements whose content is never visible text.
_INVISIBLE = frozenset(
    {"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "head"}
)
# Elements that start a new line of text.
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
        "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
    }
)  # fmt: skip
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")
_TRACKING = re.compile(r"^(utm_[a-z]+|fbclid|gclid|mc_cid|mc_eid|ocid)$", re.IGNORECASE)


@dataclass
class HtmlDocument:
    """What a web page says about itself, plus its visible text."""

    title: str = ""
    """Text of the <title> element."""
    heading: str = ""
    """Text of the first <h1>."""
    text: str = ""
    """Visible text, one block per line."""
    canonical: str = ""
    """<link rel="canonical"> or og:url, if present."""
    meta: dict[str, str] = field(default_factory=dict)
    """<meta name|property=... content=...> values, names lower-cased."""
    language: str = ""
    """The lang attribute of <html>."""


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.doc = HtmlDocument()
        self._parts: list[str] = []
        self._hidden: list[str] = []
        self._in_title = False
        self._in_h1 = False
        self._title: list[str] = []
        self._h1: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): (v or "") for k, v in attrs}
        if tag == "title":
            self._in_title = True
        elif tag == "h1" and not self.doc.heading:
            self._in_h1 = True
        elif tag == "meta":
            name = (values.get("name") or values.get("property") or "").lower()
            if name and "content" in values:
                self.doc.meta.setdefault(name, values["content"])
        elif tag == "html" and values.get("lang"):
            self.doc.language = self.doc.language or values["lang"]
        elif tag == "link" and "canonical" in values.get("rel", "").lower().split():
            self.doc.canonical = self.doc.canonical or values.get("href", "")
        if tag in _INVISIBLE and tag not in _VOID:
            self._hidden.append(tag)
        if tag in _BLOCKS:
            self._parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>, <meta .../>: no content, so nothing may stay open.
        self.handle_starttag(tag, attrs)
        if tag in _INVISIBLE:
            self._close_hidden(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.doc.title = one_line("".join(self._title))
        elif tag == "h1" and self._in_h1:
            self._in_h1 = False
            self.doc.heading = one_line("".join(self._h1))
        if tag in _INVISIBLE:
            self._close_hidden(tag)
        if tag in _BLOCKS:
            self._parts.append("\n")

    def _close_hidden(self, tag: str) -> None:
        if tag in self._hidden:
            # Close the innermost open element of that name (and anything left open inside it).
            index = len(self._hidden) - 1 - self._hidden[::-1].index(tag)
            del self._hidden[index:]

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title.append(data)
            return
        if self._hidden:
            return
        if self._in_h1:
            self._h1.append(data)
        self._parts.append(data)

    def result(self) -> HtmlDocument:
        if self._in_title:  # unclosed <title>
            self.doc.title = one_line("".join(self._title))
        if self._in_h1:
            self.doc.heading = one_line("".join(self._h1))
        self.doc.text = normalise_text("".join(self._parts))
        self.doc.canonical = self.doc.canonical or self.doc.meta.get("og:url", "")
        return self.doc


def parse_html(markup: str) -> HtmlDocument:
    """Title, first heading, canonical link, meta values and visible text of a web page."""
    parser = _Extractor()
    parser.feed(markup)
    parser.close()
    return parser.result()


def plain_text(markup: str) -> str:
    """HTML (or plain text) to plain text: tags, scripts and styles gone, entities decoded."""
    if "<" not in markup and "&" not in markup:
        return normalise_text(markup)
    return parse_html(markup).text


def normalise_text(text: str) -> str:
    """NFC, no control characters, single spaces, one line per paragraph, no blank lines."""
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text))
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def one_line(text: str) -> str:
    """`normalise_text` joined into a single line (for titles)."""
    return " ".join(normalise_text(text).split("\n"))


def cut(text: str, limit: int) -> tuple[str, bool]:
    """Cut text to at most ``limit`` characters; returns (text, whether it was cut)."""
    if limit <= 0 or len(text) <= limit:
        return text, False
    return text[:limit].rstrip(), True


def title_from_text(text: str, limit: int = 120) -> str:
    """A stand-in headline for untitled items: the first line, cut at a word boundary."""
    first = text.split("\n", 1)[0].strip()
    if len(first) <= limit:
        return first
    head = first[:limit].rsplit(" ", 1)[0] or first[:limit]
    return head.rstrip(" ,;:-") + "…"


def iso_utc(value: str | time.struct_time | datetime | None) -> str | None:
    """A timestamp as ISO-8601 UTC (``2020-08-05T19:44:00Z``), or None if unreadable.

    Accepts feedparser's ``*_parsed`` tuples (already UTC), ISO-8601 strings and
    RFC 822 dates; naive times are taken as UTC.
    """
    when: datetime | None = None
    try:
        if isinstance(value, datetime):
            when = value
        elif isinstance(value, time.struct_time):
            when = datetime(*value[:6], tzinfo=UTC)
        elif isinstance(value, str) and value.strip():
            text = value.strip()
            try:
                when = parse_time(text)
            except ValueError:
                when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_url(url: str) -> str:
    """A link as identity: scheme and host lower-cased, fragment and tracking parameters gone."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return url
    # Filter the raw pairs, so the query keeps its original encoding.
    pairs = [p for p in parts.query.split("&") if p and not _TRACKING.match(p.split("=", 1)[0])]
    return urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", "&".join(pairs), "")
    )
