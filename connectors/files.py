"""Local documents -> `Article`s and `DeadLetter`s.

`read_document` turns one file into records, by extension:

* ``.txt``: the first non-empty line is the title, the rest the text. A file
  holding only URLs and ``#`` comments is a feed list, not an article, and is
  skipped (so ``seeds/feeds.txt`` can live beside the seed articles);
* ``.html``/``.htm``: title from <h1> (when the <title> contains it) or
  <title>, visible text, canonical URL, ``article:published_time`` and
  ``og:site_name`` when present;
* ``.json`` (one object or a list) and ``.jsonl`` (one object per line): rows
  with ``title`` and ``text``/``summary``/``content``, and optionally
  ``url``, ``id``/``guid``, ``published``, ``source``, ``language``, as in
  ``data/labelled/*.jsonl``; a bad row becomes a dead letter, the others pass;
* ``.xml``: an RSS/Atom snapshot, parsed like a fetched feed (see `feeds`).

Text that is not UTF-8 is decoded by: byte-order mark, UTF-8, the charset the
document declares, Windows-1252 line by line for mostly-ASCII and mixed files,
charset detection (charset-normalizer, for CJK and other multi-byte legacy
encodings), and finally UTF-8 with replacement characters. Which one was used
is reported in `Document.encoding`. Binary or garbled files are dead letters.

Ids: a row's GUID or URL like a feed entry; documents without either get
``article_id("file:" + sha256 of the bytes)``, so moving a file keeps its id and
changing it makes a new one.

`changed_files` lists the new and changed files of a directory against its
checkpoint; the service reads, publishes and only then records them.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import charset_normalizer

from connectors.errors import (
    DocumentTooLarge,
    EmptyDocument,
    EmptyEntry,
    MalformedDocument,
    SourceDataError,
    UndecodableDocument,
)
from connectors.feeds import parse_feed
from connectors.fields import (
    canonical_url,
    cut,
    iso_utc,
    normalise_text,
    one_line,
    parse_html,
    plain_text,
    title_from_text,
)
from newswatch.schemas import Article, DeadLetter, article_id, utc_now

__all__ = [
    "SUFFIXES",
    "Document",
    "FileChange",
    "changed_files",
    "decode_text",
    "read_document",
]

logger = logging.getLogger(__name__)

#: Extensions read as documents (case-insensitive).
SUFFIXES = frozenset({".txt", ".html", ".htm", ".json", ".jsonl", ".xml"})

_TEXT_KEYS = ("text", "summary", "content", "body", "description")
_PUBLISHED_KEYS = ("published", "published_at", "date", "updated", "pubDate")
_META_PUBLISHED = ("article:published_time", "og:published_time", "date", "dc.date", "pubdate")
_META_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE
)
_URL_LINE = re.compile(r"^(https?://\S+)(\s.*)?$")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Share of characters that may be control or replacement characters in readable text.
_GARBLE_LIMIT = 0.05


@dataclass(frozen=True, slots=True)
class Document:
    """What one file yielded."""

    path: Path
    sha256: str
    good: list[Article] = field(default_factory=list)
    bad: list[DeadLetter] = field(default_factory=list)
    encoding: str = "utf-8"
    """How the bytes were decoded ('utf-8', 'cp1252', 'mixed utf-8/cp1252', ...)."""
    skipped: str | None = None
    """Why the file was deliberately not read (e.g. 'feed list')."""
    warning: str | None = None
    """A malformed-but-readable XML snapshot, as for feeds."""

    @property
    def fallback_decoding(self) -> bool:
        """True when the bytes were not clean UTF-8 (or ASCII)."""
        return self.encoding not in ("utf-8", "utf-8-sig", "ascii")


@dataclass(frozen=True, slots=True)
class FileChange:
    """A new or changed file found by `changed_files`."""

    path: Path
    relative: str
    """Path relative to the watched directory: the checkpoint key."""
    size: int
    mtime_ns: int


def read_document(
    path: Path,
    data: bytes | None = None,
    *,
    source: str | None = None,
    max_entry_chars: int = 200_000,
    max_bytes: int = 20 * 1024 * 1024,
    ingested_at: str | None = None,
) -> Document:
    """Read one local document into articles and dead letters; never raises on bad content.

    Args:
        path: The file; its extension picks the format.
        data: Its bytes, if already read.
        source: Outlet name for documents that name none (default: the folder's name).
        max_entry_chars: Texts are cut to this many characters.
        max_bytes: Larger files become a dead letter.
        ingested_at: Ingest time to stamp on every article (default: now).
    """
    path = Path(path)
    origin = str(path)
    if data is None:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) > max_bytes:
        error = DocumentTooLarge(f"file is larger than {max_bytes} bytes")
        return Document(path, digest, bad=[DeadLetter.of("decode", error, origin, data)])
    if not data.strip():
        error = EmptyDocument("file is empty" if not data else "file holds only whitespace")
        return Document(path, digest, bad=[DeadLetter.of("parse", error, origin, data)])

    suffix = path.suffix.lower()
    context = _Context(
        path=path,
        digest=digest,
        source=source or path.parent.name or "local",
        max_entry_chars=max_entry_chars,
        ingested_at=ingested_at or utc_now(),
    )
    if suffix == ".xml":
        parsed = parse_feed(
            data,
            origin,
            content_type="application/xml",
            max_entry_chars=max_entry_chars,
            ingested_at=context.ingested_at,
        )
        return Document(path, digest, parsed.good, parsed.bad, warning=parsed.warning)

    declared = None
    if suffix in (".html", ".htm"):
        match = _META_CHARSET.search(data[:4096])
        declared = match.group(1).decode("ascii") if match else None
    try:
        text, encoding = decode_text(data, declared)
    except UndecodableDocument as exc:
        return Document(path, digest, bad=[DeadLetter.of("decode", exc, origin, data)])
    if encoding not in ("utf-8", "utf-8-sig"):
        logger.warning("file %s is not UTF-8; decoded as %s", path, encoding)

    try:
        if suffix == ".txt":
            if _is_feed_list(text):
                return Document(path, digest, encoding=encoding, skipped="feed list")
            good, bad = [_text_article(text, context)], []
        elif suffix in (".html", ".htm"):
            good, bad = [_html_article(text, context)], []
        elif suffix == ".json":
            good, bad = _json_rows(text, context)
        elif suffix == ".jsonl":
            good, bad = _jsonl_rows(text, context)
        else:
            raise MalformedDocument(f"unsupported file type {suffix!r}")
    except SourceDataError as exc:
        return Document(
            path, digest, bad=[DeadLetter.of("parse", exc, origin, data)], encoding=encoding
        )
    return Document(path, digest, good, bad, encoding=encoding)


def decode_text(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """Decode a document's bytes robustly.

    Returns:
        The text and the name of the decoding used.

    Raises:
        UndecodableDocument: The bytes are binary or decode only to garble.
    """
    text, encoding = _decode(data, declared)
    if text:
        bad = sum(1 for ch in text if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r\f"))
        if bad / len(text) > _GARBLE_LIMIT:
            raise UndecodableDocument(
                f"{bad} of {len(text)} characters are control or replacement characters "
                f"after decoding as {encoding} (binary file?)"
            )
    return text, encoding


def _decode(data: bytes, declared: str | None) -> tuple[str, str]:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                break
    if b"\x00" in data:
        # UTF-16/32 without a byte-order mark is rare in news files; NULs mean binary.
        raise UndecodableDocument("file contains NUL bytes (binary file?)")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if declared:
        try:
            codecs.lookup(declared)
            return data.decode(declared), declared.lower()
        except (LookupError, UnicodeDecodeError):
            pass
    high = sum(1 for byte in data if byte >= 0x80)
    if high / len(data) < 0.3:
        # Mostly ASCII with some high bytes: Western text in Windows-1252 (a superset of
        # Latin-1's printable range), possibly pasted together with UTF-8 lines.
        text, mixed = _decode_lines(data)
        if text is not None:
            return text, "mixed utf-8/cp1252" if mixed else "cp1252"
    best = charset_normalizer.from_bytes(data).best()
    if best is not None:
        return str(best), f"{best.encoding} (detected)"
    return data.decode("utf-8", errors="replace"), "utf-8 with replacement characters"


def _decode_lines(data: bytes) -> tuple[str | None, bool]:
    """UTF-8 where a line is valid UTF-8, Windows-1252 elsewhere; (None, _) if neither fits."""
    parts: list[str] = []
    utf8_high = False
    for line in data.splitlines(keepends=True):
        try:
            parts.append(line.decode("utf-8"))
            utf8_high = utf8_high or not line.isascii()
        except UnicodeDecodeError:
            try:
                parts.append(line.decode("cp1252"))
            except UnicodeDecodeError:
                return None, False
    return "".join(parts), utf8_high


@dataclass(frozen=True, slots=True)
class _Context:
    path: Path
    digest: str
    source: str
    max_entry_chars: int
    ingested_at: str

    def article(
        self,
        *,
        identity: str,
        url: str,
        title: str,
        text: str,
        published: str | None = None,
        source: str | None = None,
        language: str | None = None,
    ) -> Article:
        text, was_cut = cut(text, self.max_entry_chars)
        if was_cut:
            logger.info("file %s: text cut to %d characters", self.path, self.max_entry_chars)
        return Article(
            id=article_id(identity),
            url=url,
            title=title or title_from_text(text),
            text=text,
            published=published,
            source=source or self.source,
            feed=str(self.path),
            ingested_at=self.ingested_at,
            language=language or None,
        )


def _is_feed_list(text: str) -> bool:
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    return bool(lines) and all(_URL_LINE.match(line) for line in lines)


def _text_article(text: str, context: _Context) -> Article:
    text = normalise_text(text)
    if not text:
        raise EmptyDocument("file holds no visible text")
    title, _, body = text.partition("\n")
    return context.article(
        identity=f"file:{context.digest}", url="", title=one_line(title), text=body
    )


def _html_article(markup: str, context: _Context) -> Article:
    doc = parse_html(markup)
    title = doc.heading if doc.heading and doc.heading in doc.title else doc.title or doc.heading
    text = doc.text
    if not title and not text:
        raise EmptyDocument("page has neither a title nor visible text")
    lines = text.split("\n")
    if title in lines:
        lines.remove(title)  # the <h1> opens the story; the title need not be repeated
        text = "\n".join(lines)
    url = canonical_url(doc.canonical) if doc.canonical.startswith(("http://", "https://")) else ""
    published = next((iso_utc(doc.meta[key]) for key in _META_PUBLISHED if doc.meta.get(key)), None)
    return context.article(
        identity=url or f"file:{context.digest}",
        url=url,
        title=title,
        text=text,
        published=published,
        source=doc.meta.get("og:site_name"),
        language=doc.language,
    )


def _json_rows(text: str, context: _Context) -> tuple[list[Article], list[DeadLetter]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedDocument(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    rows = data if isinstance(data, list) else [data]
    good: list[Article] = []
    bad: list[DeadLetter] = []
    for index, row in enumerate(rows, start=1):
        _add_row(row, f"{context.path}#{index}", context, good, bad)
    return good, bad


def _jsonl_rows(text: str, context: _Context) -> tuple[list[Article], list[DeadLetter]]:
    good: list[Article] = []
    bad: list[DeadLetter] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        origin = f"{context.path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            error = MalformedDocument(f"line {number} is not valid JSON: {exc.msg}")
            bad.append(DeadLetter.of("parse", error, origin, line))
            continue
        _add_row(row, origin, context, good, bad)
    return good, bad


def _add_row(
    row: Any, origin: str, context: _Context, good: list[Article], bad: list[DeadLetter]
) -> None:
    """Turn one JSON row into an article, or a dead letter naming its line or index."""
    if not isinstance(row, Mapping):
        error = MalformedDocument(f"row is a JSON {type(row).__name__}, not an object")
        bad.append(DeadLetter.of("parse", error, origin, json.dumps(row, ensure_ascii=False)))
        return
    payload = json.dumps(row, ensure_ascii=False, sort_keys=True, default=str)
    title = one_line(plain_text(_string(row.get("title"))))
    text = next((plain_text(_string(row[k])) for k in _TEXT_KEYS if _string(row.get(k))), "")
    raw_url = _string(row.get("url") or row.get("link")).strip()
    url = canonical_url(raw_url) if raw_url.startswith(("http://", "https://")) else ""
    guid = _string(row.get("guid")).strip()
    row_id = _string(row.get("id")).strip()
    if guid and ":" in guid:
        identity = guid
    elif url:
        identity = url
    elif row_id or guid:
        identity = f"id:{row_id or guid}"
    else:
        identity = "file:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()
    if not title and not text:
        error = EmptyEntry("row has neither title nor text")
        bad.append(DeadLetter.of("parse", error, origin, payload, key=article_id(identity)))
        return
    published = next(
        (iso_utc(_string(row[k])) for k in _PUBLISHED_KEYS if _string(row.get(k))), None
    )
    good.append(
        context.article(
            identity=identity,
            url=url,
            title=title,
            text=text,
            published=published,
            source=one_line(_string(row.get("source"))) or None,
            language=_string(row.get("language")) or None,
        )
    )


def _string(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def changed_files(
    directory: Path,
    known: Mapping[str, Mapping[str, Any]],
    *,
    settle: float = 0.0,
    now: float | None = None,
) -> tuple[list[FileChange], list[str]]:
    """New or changed documents under ``directory``, and known files that are gone.

    Args:
        directory: The watched directory (searched recursively; hidden entries skipped),
            or a single file.
        known: Checkpointed fingerprints by relative path (``size``, ``mtime_ns``).
        settle: Skip files modified less than this many seconds ago (still being written).
        now: The current time, for ``settle``.
    """
    directory = Path(directory)
    now = time.time() if now is None else now
    changes: list[FileChange] = []
    present: set[str] = set()
    for path, relative in _documents(directory):
        try:
            stat = path.stat()
        except OSError:
            continue  # removed while scanning
        present.add(relative)
        seen = known.get(relative)
        if seen and (seen.get("size"), seen.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
            continue
        if settle and now - stat.st_mtime < settle:
            continue
        changes.append(FileChange(path, relative, stat.st_size, stat.st_mtime_ns))
    vanished = sorted(set(known) - present)
    return changes, vanished


def _documents(directory: Path) -> Iterator[tuple[Path, str]]:
    """(path, relative path) of every document under ``directory``, or of the file itself."""
    if directory.is_file():
        yield directory, directory.name
        return
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.endswith(("~", ".tmp", ".part", ".swp")):
                continue
            path = Path(root, name)
            if path.suffix.lower() in SUFFIXES:
                yield path, path.relative_to(directory).as_posix()
