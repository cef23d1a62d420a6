"""Archived sources as a stream of replay items: entries in the order a poller met them.

`iter_sources` reads snapshot directories, JSON-lines entry files (plain or
gzip) and document directories through the connectors' own conversion
(`connectors.feeds.parse_feed`, `connectors.files.read_document`), so each
entry gets the article id a live run would give it. Every distinct article is
yielded once, at its first sighting, as a `ReplayItem` with its event time
(publication, else capture time) and arrival time (capture time, else event
time); unreadable input is yielded as `DeadLetter`s. Nothing is sorted beyond
the files: snapshots by capture time, rows in file order.

Example::

    stats = SourceStats()
    for thing in iter_sources([Path("archive/feeds")], stats):
        ...
    print(stats.articles, stats.repeats, stats.fallbacks)
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import heapq
import itertools
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from connectors.feeds import parse_feed
from connectors.files import SUFFIXES, read_document
from newswatch.errors import ConfigError
from newswatch.schemas import Article, DeadLetter, parse_ms
from pipelines.index import event_time_ms

__all__ = ["ReplayItem", "SourceStats", "iter_sources"]

logger = logging.getLogger(__name__)

#: Kafka refuses record timestamps more than an hour ahead of the broker's clock
#: (``message.timestamp.after.max.ms``); entries dated later than this margin
#: become dead letters instead.
_FUTURE_MARGIN = timedelta(minutes=55)

_CAPTURE_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2})[-:](\d{2})[-:](\d{2})(?:\.\d+)?Z")
_GZIP_MAGIC = b"\x1f\x8b"
_MANIFEST = "manifest.jsonl"


@dataclass(frozen=True, slots=True)
class ReplayItem:
    """One article to replay, with the times that place it."""

    article: Article
    event_ms: int
    """Event time, ms since the epoch: publication, else capture time."""
    arrival_ms: int
    """When a live poller would have seen it: capture time, else the event time."""
    fallback: bool
    """True when the source gave no usable publication time."""


@dataclass
class SourceStats:
    """What reading the sources found."""

    files: int = 0
    snapshots: int = 0
    entries: int = 0
    """Entries read, counting every sighting in every snapshot."""
    repeats: int = 0
    """Sightings of an article already seen (successive snapshots): not replayed again."""
    articles: int = 0
    """Distinct articles handed to the publisher."""
    fallbacks: int = 0
    """Articles whose event time is the capture time (no publication time)."""
    out_of_range: int = 0
    """Articles outside --from/--to."""
    future: int = 0
    """Articles dated in the future (dead-lettered)."""
    dead_letters: int = 0
    """Dead letters from the sources: unreadable files, feeds and rows."""
    warnings: int = 0
    """Malformed-but-readable feeds."""


def iter_sources(
    sources: Sequence[Path],
    stats: SourceStats,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
) -> Iterator[ReplayItem | DeadLetter]:
    """Replay items and dead letters from ``sources``, each distinct article once.

    Args:
        sources: Snapshot directories, JSON-lines files (plain or gzip), documents.
        stats: Updated while iterating.
        start: Only articles with an event time at or after this.
        end: Only articles with an event time before this.
        now: The clock, for refusing future timestamps.
    """
    seen: set[str] = set()
    limit = (now or datetime.now(UTC)) + _FUTURE_MARGIN
    limit_ms = int(limit.timestamp() * 1000)
    start_ms = int(start.timestamp() * 1000) if start else None
    end_ms = int(end.timestamp() * 1000) if end else None
    for path in sources:
        if not Path(path).exists():
            raise ConfigError(f"replay source not found: {path}")
    # Each source is already in arrival order; several are interleaved as a poller
    # would have met them (a k-way merge: one pending item per source in memory).
    streams = [_arrival_ordered(_read_source(Path(path), stats)) for path in sources]
    for _arrival, _order, thing in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
        if isinstance(thing, DeadLetter):
            stats.dead_letters += 1
            yield thing
            continue
        stats.entries += 1
        if thing.article.id in seen:
            stats.repeats += 1
            continue
        seen.add(thing.article.id)
        if (start_ms is not None and thing.event_ms < start_ms) or (
            end_ms is not None and thing.event_ms >= end_ms
        ):
            stats.out_of_range += 1
            continue
        if thing.event_ms > limit_ms:
            stats.future += 1
            stats.dead_letters += 1
            yield DeadLetter.of(
                "replay",
                "FutureTimestamp",
                thing.article.feed,
                thing.article.to_bytes(),
                key=thing.article.id,
            )
            continue
        stats.articles += 1
        stats.fallbacks += thing.fallback
        yield thing


def _arrival_ordered(
    things: Iterator[ReplayItem | DeadLetter],
) -> Iterator[tuple[int, int, ReplayItem | DeadLetter]]:
    """(arrival, sequence, thing): dead letters travel with the item before them."""
    arrival = -1
    for order, thing in zip(itertools.count(), things, strict=False):
        if isinstance(thing, ReplayItem):
            arrival = thing.arrival_ms
        yield arrival, order, thing


def _read_source(path: Path, stats: SourceStats) -> Iterator[ReplayItem | DeadLetter]:
    if not path.exists():
        raise ConfigError(f"replay source not found: {path}")
    if path.is_dir():
        yield from _read_directory(path, stats)
    elif _is_jsonl(path):
        stats.files += 1
        yield from _read_jsonl(path, _mtime_ms(path))
    else:
        stats.files += 1
        yield from _read_file(path, _capture_ms(path, {}) if _is_xml(path) else None, None, stats)


def _read_directory(directory: Path, stats: SourceStats) -> Iterator[ReplayItem | DeadLetter]:
    """Every file under ``directory``, in the order a poller would have met them."""
    manifest: dict[Path, dict[str, Any]] = {}
    files: list[Path] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root, name)
            if name == _MANIFEST:
                manifest.update(_load_manifest(path))
            elif not name.startswith(".") and (path.suffix.lower() in SUFFIXES or _is_jsonl(path)):
                files.append(path)
    keyed = []
    for path in files:
        capture = _capture_ms(path, manifest) if _is_xml(path) else None
        keyed.append(
            (capture if capture is not None else _mtime_ms(path), str(path), path, capture)
        )
    keyed.sort()
    for _order, _name, path, capture in keyed:
        stats.files += 1
        if _is_jsonl(path):
            yield from _read_jsonl(path, _mtime_ms(path))
        else:
            outlet = manifest.get(path.resolve(), {}).get("outlet")
            yield from _read_file(path, capture, outlet, stats)


def _read_file(
    path: Path, capture_ms: int | None, outlet: str | None, stats: SourceStats
) -> Iterator[ReplayItem | DeadLetter]:
    """One document or feed snapshot."""
    data = path.read_bytes()
    if capture_ms is not None:
        # A snapshot: the feed key is its folder, the same for every snapshot of the
        # feed, so entries without a global GUID or link keep one id across snapshots.
        stats.snapshots += 1
        parsed = parse_feed(data, str(path.parent), source=outlet, ingested_at=_iso(capture_ms))
        if parsed.warning:
            stats.warnings += 1
            logger.info("snapshot %s: %s", path, parsed.warning)
        good, bad = parsed.good, [dataclasses.replace(d, origin=str(path)) for d in parsed.bad]
        arrival = capture_ms
    else:
        arrival = _mtime_ms(path)
        document = read_document(path, data, ingested_at=_iso(arrival))
        if document.warning:
            stats.warnings += 1
        good, bad = document.good, document.bad
    yield from bad
    for article in good:
        yield _item(article, arrival, known_capture=True)


def _read_jsonl(path: Path, file_ms: int) -> Iterator[ReplayItem | DeadLetter]:
    """A JSON-lines file of entries, row by row (it may not fit in memory)."""
    # read_document picks the format by extension: name the rows' file .jsonl.
    as_jsonl = path if path.suffix.lower() == ".jsonl" else path.with_name(path.stem + ".jsonl")
    with _open_maybe_gzip(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            document = read_document(as_jsonl, line, ingested_at=_iso(file_ms))
            for letter in document.bad:
                yield dataclasses.replace(letter, origin=f"{path}:{number}")
            for article in document.good:
                article = dataclasses.replace(article, feed=str(path))
                yield _item(article, file_ms, known_capture=False)


def _item(article: Article, capture_ms: int, *, known_capture: bool) -> ReplayItem:
    published = event_time_ms(dataclasses.replace(article, ingested_at=""))
    fallback = published is None
    event = capture_ms if fallback else published
    # A live poller sees an entry when the snapshot is taken; a row of an entries
    # file stands for an entry seen as it was published.
    arrival = capture_ms if known_capture else event
    return ReplayItem(
        article=dataclasses.replace(article, ingested_at=_iso(arrival)),
        event_ms=event,
        arrival_ms=arrival,
        fallback=fallback,
    )


def _load_manifest(path: Path) -> dict[Path, dict[str, Any]]:
    """Snapshot metadata by resolved file path, from an archive's manifest.jsonl."""
    entries: dict[Path, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("manifest %s: line %d is not JSON; ignored", path, number)
                continue
            if isinstance(row, dict) and row.get("file"):
                entries[(path.parent / row["file"]).resolve()] = row
    return entries


def _capture_ms(path: Path, manifest: dict[Path, dict[str, Any]]) -> int:
    """Capture time of a snapshot: manifest, else its file name, else its mtime."""
    row = manifest.get(path.resolve())
    if row and row.get("captured_utc"):
        parsed = parse_ms(row["captured_utc"])
        if parsed is not None:
            return parsed
    match = _CAPTURE_NAME.search(path.name)
    if match:
        day, hh, mm, ss = match.groups()
        parsed = parse_ms(f"{day}T{hh}:{mm}:{ss}Z")
        if parsed is not None:
            return parsed
    return _mtime_ms(path)


def _is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".jsonl", ".jsonl.gz"))


def _is_xml(path: Path) -> bool:
    return path.suffix.lower() == ".xml"


@contextlib.contextmanager
def _open_maybe_gzip(path: Path) -> Iterator[IO[bytes]]:
    with path.open("rb") as raw:
        magic = raw.read(2)
    opener = gzip.open if magic == _GZIP_MAGIC else open
    with opener(path, "rb") as handle:
        yield handle


def _mtime_ms(path: Path) -> int:
    return int(path.stat().st_mtime * 1000)


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
