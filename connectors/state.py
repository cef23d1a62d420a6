"""Restart-safe checkpoints of every source, under ``state_dir``.

One small JSON file per source, replaced atomically (temp file, fsync,
`os.replace`), so a crash leaves either the old or the new checkpoint:

* ``feeds/<id>.json``: a feed's ETag/Last-Modified validators, the ids it has
  already published (the newest `SEEN_PER_SOURCE`), consecutive failures, the
  next poll time and its health;
* ``files/<id>.json``: a watched directory's file fingerprints (size, mtime,
  sha256) and the ids it has already published.

The service changes a checkpoint only after the broker acknowledged the
records it covers, so a crash in between means a resend (deduplicated by key
downstream), never a loss. A lock file keeps two connector processes off the
same state directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from newswatch.errors import ConfigError
from newswatch.schemas import article_id, utc_now

__all__ = [
    "SEEN_PER_SOURCE",
    "DirectoryState",
    "FeedState",
    "StateStore",
    "backoff_delay",
    "read_checkpoints",
    "write_atomically",
]

logger = logging.getLogger(__name__)

#: Published ids remembered per source; far more than any feed carries at once.
SEEN_PER_SOURCE = 10_000


def backoff_delay(
    failures: int, base: float, cap: float, retry_after: float | None = None
) -> float:
    """Seconds until the next poll after ``failures`` consecutive failures.

    ``base * 2**failures``, capped at ``cap``; a server's Retry-After is honoured
    (up to the same cap) when it asks for longer.
    """
    cap = max(cap, base)
    delay = min(base * 2.0 ** min(failures, 62), cap)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


class _Seen:
    """An insertion-ordered, bounded set of ids (dict keys keep the order)."""

    def __init__(self, ids: list[str] | None = None, limit: int = SEEN_PER_SOURCE) -> None:
        self.limit = limit
        self._ids: dict[str, None] = dict.fromkeys(ids or [])
        self._trim()

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: Iterable[str]) -> None:
        for key in ids:
            self._ids.pop(key, None)  # re-adding moves an id to the newest end
            self._ids[key] = None
        self._trim()

    def _trim(self) -> None:
        excess = len(self._ids) - self.limit
        if excess > 0:
            for key in list(self._ids)[:excess]:
                del self._ids[key]

    def to_list(self) -> list[str]:
        return list(self._ids)


@dataclass
class FeedState:
    """Checkpoint and health of one feed."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    seen: _Seen = field(default_factory=_Seen)
    """Ids of articles (and dead-lettered entries) already acknowledged by the broker."""
    failures: int = 0
    """Consecutive failed polls; 0 means healthy."""
    next_poll: float = 0.0
    """Earliest time (Unix seconds) of the next poll."""
    last_ok: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    last_warning: str | None = None
    published: int = 0
    """Articles published from this feed, over all runs."""
    dead_letters: int = 0
    polls: int = 0
    """Polls of this feed, over all runs."""
    not_modified: int = 0
    """Of those, polls the server answered with 304 Not Modified."""
    bad_document: str | None = None
    """sha256 of the last document sent to the dead letters, so a broken feed is not resent."""

    @property
    def healthy(self) -> bool:
        return self.failures == 0

    def succeeded(
        self,
        now: float,
        poll_interval: float,
        *,
        etag: str | None,
        last_modified: str | None,
        articles: Sequence[str],
        dead_letters: Sequence[str] = (),
        warning: str | None = None,
    ) -> None:
        """Record a poll whose records the broker acknowledged: new validators, healthy again.

        Args:
            articles: Ids of the articles published.
            dead_letters: Ids of the entries sent to the dead letters.
        """
        self.etag, self.last_modified = etag, last_modified
        self.seen.add([*articles, *dead_letters])
        self.published += len(articles)
        self.dead_letters += len(dead_letters)
        self.failures = 0
        self.bad_document = None
        self.last_ok = _iso(now)
        self.last_warning = warning
        self.next_poll = now + poll_interval

    def incomplete(
        self,
        now: float,
        poll_interval: float,
        *,
        articles: Sequence[str],
        dead_letters: Sequence[str] = (),
        error: str,
    ) -> None:
        """Record a poll whose records were only partly acknowledged.

        The acknowledged ids are remembered, but the validators stay as they
        were, so the next poll fetches the whole feed again and re-sends the
        rest. The feed is not blamed (no backoff): the broker was the problem.
        """
        self.seen.add([*articles, *dead_letters])
        self.published += len(articles)
        self.dead_letters += len(dead_letters)
        self.last_error = error
        self.last_error_at = _iso(now)
        self.next_poll = now + poll_interval

    def failed(
        self,
        now: float,
        error: str,
        *,
        poll_interval: float,
        max_backoff: float,
        retry_after: float | None = None,
    ) -> float:
        """Record a failed poll and schedule the next one with backoff; returns the delay."""
        self.failures += 1
        self.last_error = error
        self.last_error_at = _iso(now)
        delay = backoff_delay(self.failures, poll_interval, max_backoff, retry_after)
        self.next_poll = now + delay
        return delay

    def health(self) -> dict[str, Any]:
        """A summary for logs and reports."""
        return {
            "url": self.url,
            "healthy": self.healthy,
            "failures": self.failures,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_warning": self.last_warning,
            "published": self.published,
            "dead_letters": self.dead_letters,
            "next_poll": _iso(self.next_poll) if self.next_poll else None,
        }


@dataclass
class DirectoryState:
    """Checkpoint of one watched directory."""

    directory: str
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Relative path -> {"size", "mtime_ns", "sha256"} of every file already published."""
    seen: _Seen = field(default_factory=_Seen)
    published: int = 0
    dead_letters: int = 0
    last_scan: str | None = None


class StateStore:
    """Loads and atomically saves checkpoints under one state directory.

    Args:
        state_dir: Where checkpoints live; created if missing.
        seen_limit: Ids remembered per source.

    Raises:
        ConfigError: Another process holds the state directory.
    """

    def __init__(self, state_dir: Path, *, seen_limit: int = SEEN_PER_SOURCE) -> None:
        self.root = Path(state_dir)
        self.seen_limit = seen_limit
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / ".lock", "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock.close()
            raise ConfigError(
                f"state directory {self.root} is in use by another connector process"
            ) from exc
        self._feeds: dict[str, FeedState] = {}
        self._dirs: dict[str, DirectoryState] = {}

    def close(self) -> None:
        """Release the state directory."""
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def feed(self, url: str) -> FeedState:
        """The checkpoint of a feed (a fresh one if it was never polled)."""
        if url not in self._feeds:
            data = self._load(self._feed_path(url))
            state = FeedState(url=url, seen=_Seen(limit=self.seen_limit))
            if data is not None:
                state = _from_dict(FeedState, data, self.seen_limit)
                state.url = url
            self._feeds[url] = state
        return self._feeds[url]

    def save_feed(self, state: FeedState) -> None:
        write_atomically(self._feed_path(state.url), _to_json(state))

    def directory(self, path: Path) -> DirectoryState:
        """The checkpoint of a watched directory."""
        key = str(Path(path).resolve())
        if key not in self._dirs:
            data = self._load(self._dir_path(key))
            state = DirectoryState(directory=key, seen=_Seen(limit=self.seen_limit))
            if data is not None:
                state = _from_dict(DirectoryState, data, self.seen_limit)
                state.directory = key
            self._dirs[key] = state
        return self._dirs[key]

    def save_directory(self, state: DirectoryState) -> None:
        write_atomically(self._dir_path(state.directory), _to_json(state))

    def _feed_path(self, url: str) -> Path:
        return self.root / "feeds" / f"{article_id(url)}.json"

    def _dir_path(self, directory: str) -> Path:
        return self.root / "files" / f"{article_id(directory)}.json"

    def _load(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            # Starting over costs re-sends (deduplicated by key); refusing to start costs news.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                path.replace(aside)
            logger.warning(
                "checkpoint %s is unreadable (%s); moved to %s, starting afresh", path, exc, aside
            )
            return None


def read_checkpoints(state_dir: Path) -> tuple[list[FeedState], list[DirectoryState]]:
    """Every feed and folder checkpoint under ``state_dir`` (without their seen ids), unlocked.

    For viewers (the web page, ``newswatch status``) while a connector process
    holds the directory: checkpoints are replaced atomically, so each read sees a
    whole file. Unreadable ones are skipped (the connector sets them aside itself).
    """
    found: dict[str, list] = {"feeds": [], "files": []}
    for kind, cls in (("feeds", FeedState), ("files", DirectoryState)):
        for path in sorted(Path(state_dir).glob(f"{kind}/*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                found[kind].append(_from_dict(cls, data, 0))
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                logger.debug("checkpoint %s unreadable: %s", path, exc)
    return found["feeds"], found["files"]


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _to_json(state: FeedState | DirectoryState) -> bytes:
    data = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    data["seen"] = state.seen.to_list()
    data["saved_at"] = utc_now()
    return json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8")


def _from_dict(cls: type, data: dict[str, Any], seen_limit: int) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in names}
    values["seen"] = _Seen([str(x) for x in data.get("seen") or []], limit=seen_limit)
    return cls(**values)
