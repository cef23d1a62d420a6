"""Feed health for the page and ``newswatch status``, from the connectors' checkpoints."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from connectors.state import read_checkpoints

__all__ = ["FeedRow", "FolderRow", "feed_health"]


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One feed as the health table shows it."""

    url: str
    healthy: bool
    failures: int
    """Consecutive failed polls."""
    last_poll: str | None
    """The later of the last success and the last error, ISO-8601 UTC."""
    last_ok: str | None
    last_error: str | None
    last_error_at: str | None
    warning: str | None
    validators: str
    """Which validators the feed gave: 'ETag', 'Last-Modified', both or none."""
    polls: int
    not_modified: int
    published: int
    dead_letters: int
    next_poll: str | None
    backoff: float | None
    """Seconds until the next poll while the feed is failing, else None."""

    @property
    def not_modified_ratio(self) -> float | None:
        """Share of polls answered 304 Not Modified (None before the first counted poll)."""
        return self.not_modified / self.polls if self.polls else None


@dataclass(frozen=True, slots=True)
class FolderRow:
    """One watched folder."""

    directory: str
    files: int
    published: int
    dead_letters: int
    last_scan: str | None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def feed_health(state_dir: Path, now: float | None = None) -> tuple[list[FeedRow], list[FolderRow]]:
    """Every feed (failing first, then by URL) and watched folder with a checkpoint."""
    now = time.time() if now is None else now
    feeds, folders = read_checkpoints(state_dir)
    rows = []
    for feed in feeds:
        validators = " and ".join(
            name
            for name, value in (("ETag", feed.etag), ("Last-Modified", feed.last_modified))
            if value
        )
        polled = [t for t in (feed.last_ok, feed.last_error_at) if t]
        rows.append(
            FeedRow(
                url=feed.url,
                healthy=feed.healthy,
                failures=feed.failures,
                last_poll=max(polled) if polled else None,
                last_ok=feed.last_ok,
                last_error=feed.last_error,
                last_error_at=feed.last_error_at,
                warning=feed.last_warning,
                validators=validators or "none",
                polls=feed.polls,
                not_modified=feed.not_modified,
                published=feed.published,
                dead_letters=feed.dead_letters,
                next_poll=_iso(feed.next_poll) if feed.next_poll else None,
                backoff=max(0.0, feed.next_poll - now) if feed.failures else None,
            )
        )
    rows.sort(key=lambda r: (r.healthy, r.url))
    folder_rows = [
        FolderRow(f.directory, len(f.files), f.published, f.dead_letters, f.last_scan)
        for f in folders
    ]
    return rows, sorted(folder_rows, key=lambda r: r.directory)
