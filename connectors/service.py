"""The connector loop: feeds and document folders -> the articles topic.

`run_connectors` polls every feed when it is due (conditional GET, backoff
after failures, Retry-After honoured) and rescans document folders every
``watch_interval``, until ``stop`` is set; with ``once=True`` it goes through
everything one time and returns. For each source the order is always: read,
publish, wait for the broker's acknowledgement, then save the checkpoint, so
a crash anywhere re-sends at worst (consumers deduplicate by key) and never
loses an article.

A bad feed never stops the loop: fetch errors become backoff and a health
entry, unreadable documents become dead letters.

Sources:

* ``connectors.feeds``: http(s) URLs, or files listing one URL per line
  (``#`` comments, optionally a source name after the URL). ``file://`` URLs
  are refused: archived snapshots are local documents, read through
  ``connectors.files`` (``--files``), which keeps the network fetcher free of
  local file access.
* ``connectors.files``: directories (searched recursively) or single files.

With neither configured, the bundled ``seeds/`` folder is read.

Example::

    stop = threading.Event()
    report = run_connectors(load_settings(), stop, once=True)
    print(report.summary())
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.errors import FetchError
from connectors.feeds import parse_feed
from connectors.fetch import Fetcher, FetchResult
from connectors.files import Document, FileChange, changed_files, read_document
from connectors.publish import Publisher
from connectors.state import DirectoryState, FeedState, StateStore
from newswatch import metrics
from newswatch.config import PROJECT_ROOT, Settings
from newswatch.errors import ConfigError
from newswatch.schemas import Article, DeadLetter, utc_now

__all__ = [
    "SEEDS_DIR",
    "ConnectorReport",
    "ConnectorService",
    "FeedSource",
    "feed_sources",
    "run_connectors",
    "sources",
]

logger = logging.getLogger(__name__)

#: Read when neither feeds nor files are configured.
SEEDS_DIR = PROJECT_ROOT / "seeds"

#: Feeds fetched at the same time.
MAX_PARALLEL_FETCHES = 8
#: Articles gathered from documents before they are published as one batch.
FILE_BATCH_RECORDS = 500
#: Seconds between health summaries in the log.
HEALTH_LOG_INTERVAL = 600.0

_FEED_LINE = re.compile(r"^(\S+)(?:\s+(.*))?$")


@dataclass(frozen=True, slots=True)
class FeedSource:
    """A feed to poll."""

    url: str
    name: str | None = None
    """Source name for its articles; the feed's own title when None."""


@dataclass
class ConnectorReport:
    """What a run did, for logs, the CLI and tests."""

    polls: int = 0
    not_modified: int = 0
    failed_polls: int = 0
    """Polls that failed: fetch errors, unreadable feed documents."""
    published: int = 0
    """Articles acknowledged by the broker."""
    already_seen: int = 0
    """Articles skipped because an earlier poll or run published them."""
    dead_letters: int = 0
    files_read: int = 0
    unacknowledged: int = 0
    """Records the broker did not acknowledge (they are re-sent later)."""
    feeds: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Health of every feed, by URL (see `FeedState.health`)."""

    def summary(self) -> str:
        """One line for the log or the terminal."""
        failing = sum(1 for h in self.feeds.values() if not h["healthy"])
        return (
            f"{self.published} articles published, {self.dead_letters} dead letters, "
            f"{self.already_seen} already seen; {self.polls} feed polls "
            f"({self.not_modified} not modified, {self.failed_polls} failed), "
            f"{failing} of {len(self.feeds)} feeds failing; {self.files_read} files read"
        )


def feed_sources(entries: Iterable[str]) -> list[FeedSource]:
    """Expand feed settings into sources: URLs as they are, files into their URL lines.

    Raises:
        ConfigError: An entry is neither an http(s) URL nor a readable list of them.
    """
    found: dict[str, FeedSource] = {}
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        if "://" in entry or entry.lower().startswith("file:"):
            source = _feed_line(entry, f"feed {entry!r}")
            found.setdefault(source.url, source)
            continue
        path = Path(entry).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"--feeds {entry}: not a URL, and not a readable file ({exc})"
            ) from exc
        for number, line in enumerate(lines, start=1):
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                source = _feed_line(line, f"{path}:{number}")
                found.setdefault(source.url, source)
    return list(found.values())


def sources(settings: Settings) -> tuple[list[FeedSource], list[Path]]:
    """The feeds and folders a run will read: checked, expanded, seeds by default.

    Raises:
        ConfigError: A feed entry or folder is unusable.
    """
    feeds = feed_sources(settings.connectors.feeds)
    folders = [Path(p).expanduser() for p in settings.connectors.files]
    if not feeds and not folders:
        folders = [SEEDS_DIR]
    for folder in folders:
        if not folder.exists():
            raise ConfigError(f"--files {folder}: no such file or directory")
    return feeds, folders


def _feed_line(line: str, where: str) -> FeedSource:
    match = _FEED_LINE.match(line)
    url = match.group(1) if match else line
    scheme = url.split(":", 1)[0].lower()
    if scheme == "file":
        raise ConfigError(
            f"{where}: file:// feeds are not fetched; put snapshot .xml files in a "
            "directory and pass it with --files"
        )
    if scheme not in ("http", "https"):
        raise ConfigError(f"{where}: feed URLs must start with http:// or https://, not {url!r}")
    name = (match.group(2) or "").strip() if match else ""
    return FeedSource(url=url, name=name or None)


class ConnectorService:
    """Polls feeds and scans folders, publishing through one `Publisher`.

    Args:
        settings: All settings (connectors, topic names).
        publisher: Where records go.
        state: Checkpoints (already locked for this process).
        fetcher: HTTP client; one built from the settings by default.
        clock: Wall-clock seconds; replaceable so tests can step time.
    """

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        state: StateStore,
        *,
        fetcher: Fetcher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = settings.connectors
        self.publisher = publisher
        self.state = state
        self.fetcher = fetcher or Fetcher(self.options)
        self.clock = clock
        self.feeds, self.directories = sources(settings)
        if self.directories == [SEEDS_DIR] and not self.options.files:
            logger.info("no feeds or files configured; reading the bundled seeds in %s", SEEDS_DIR)
        self.report = ConnectorReport()
        self._last_health_log = 0.0

    # -- the loop -------------------------------------------------------------

    def run(self, stop: threading.Event, once: bool = False) -> ConnectorReport:
        """Poll and scan until ``stop`` is set, or one pass when ``once``."""
        logger.info(
            "connectors: %d feeds, %d folders -> %s%s",
            len(self.feeds),
            len(self.directories),
            self.publisher.articles_topic,
            " (one pass)" if once else "",
        )
        if once:
            self.scan_files(settle=0.0, stop=stop)
            self.poll_feeds(due_only=False, stop=stop)
        else:
            self._loop(stop)
        # Every feed, including those that were backing off and not polled this time.
        self.report.feeds = {f.url: self.state.feed(f.url).health() for f in self.feeds}
        self._log_health(force=True)
        return self.report

    def _loop(self, stop: threading.Event) -> None:
        next_scan = 0.0
        settle = min(1.0, self.options.watch_interval)
        while not stop.is_set():
            now = self.clock()
            if now >= next_scan:
                self.scan_files(settle=settle, stop=stop)
                next_scan = self.clock() + self.options.watch_interval
            self.poll_feeds(due_only=True, stop=stop)
            self._log_health()
            wake = min([next_scan, *(self.state.feed(f.url).next_poll for f in self.feeds)])
            stop.wait(min(max(wake - self.clock(), 0.05), 60.0))

    # -- feeds ----------------------------------------------------------------

    def poll_feeds(self, *, due_only: bool = True, stop: threading.Event | None = None) -> int:
        """Poll the feeds that are due, a few at a time; returns how many were polled.

        Args:
            due_only: Poll only feeds whose next poll time has come. Otherwise
                poll all, except feeds backing off after errors or Retry-After.
            stop: Checked between feeds; in-flight fetches finish, no new ones start.
        """
        now = self.clock()
        due = []
        for source in self.feeds:
            state = self.state.feed(source.url)
            waiting = state.next_poll > now
            if waiting and (due_only or state.failures):
                if not due_only:
                    logger.info(
                        "feed %s is backing off after %d failures; skipped this pass",
                        source.url,
                        state.failures,
                    )
                continue
            due.append(source)
        if not due:
            return 0
        polled = 0
        pool = ThreadPoolExecutor(
            max_workers=min(MAX_PARALLEL_FETCHES, len(due)), thread_name_prefix="feed-fetch"
        )
        try:
            # Workers get the validators, not the state: only this thread touches checkpoints.
            futures: dict[Future[FetchResult | FetchError], FeedSource] = {}
            for source in due:
                state = self.state.feed(source.url)
                future = pool.submit(self._fetch, source.url, state.etag, state.last_modified)
                futures[future] = source
            for future in as_completed(futures):
                self._handle_feed(futures[future], future.result())
                polled += 1
                if stop is not None and stop.is_set():
                    break
        finally:
            # Fetches not yet started are dropped (their feeds stay due); running ones finish.
            pool.shutdown(wait=True, cancel_futures=True)
        return polled

    def poll_feed(self, source: FeedSource) -> None:
        """Fetch, parse, publish and checkpoint one feed now."""
        state = self.state.feed(source.url)
        self._handle_feed(source, self._fetch(source.url, state.etag, state.last_modified))

    def _fetch(
        self, url: str, etag: str | None, last_modified: str | None
    ) -> FetchResult | FetchError:
        try:
            return self.fetcher.fetch(url, etag=etag, last_modified=last_modified)
        except FetchError as exc:
            return exc
        except Exception as exc:  # one feed's surprise must not stop the others
            logger.exception("feed %s: unexpected error while fetching", url)
            return FetchError(url, f"unexpected {type(exc).__name__}: {exc}")

    def _handle_feed(self, source: FeedSource, outcome: FetchResult | FetchError) -> None:
        url = source.url
        state = self.state.feed(url)
        now = self.clock()
        self.report.polls += 1
        state.polls += 1
        try:
            if isinstance(outcome, FetchError):
                # Name the failing hop only when a redirect led away from the feed URL.
                error = outcome.reason if outcome.url == url else str(outcome)
                self._feed_failed(state, now, error, outcome.retry_after)
            elif outcome.not_modified:
                self.report.not_modified += 1
                state.not_modified += 1
                metrics.FEED_POLLS.labels(outcome="not_modified").inc()
                logger.debug("feed %s not modified", url)
                state.succeeded(
                    now,
                    self.options.poll_interval,
                    etag=outcome.etag,
                    last_modified=outcome.last_modified,
                    articles=[],
                    warning=state.last_warning,
                )
            else:
                self._publish_feed(source, state, outcome, now)
        except Exception as exc:  # one feed's surprise must not stop the others
            logger.exception("feed %s: unexpected error", url)
            self._feed_failed(state, now, f"{type(exc).__name__}: {exc}", None)
        self.state.save_feed(state)
        self.report.feeds[url] = state.health()

    def _feed_failed(
        self, state: FeedState, now: float, error: str, retry_after: float | None
    ) -> None:
        self.report.failed_polls += 1
        metrics.FEED_POLLS.labels(outcome="failed").inc()
        delay = state.failed(
            now,
            error,
            poll_interval=self.options.poll_interval,
            max_backoff=self.options.max_backoff,
            retry_after=retry_after,
        )
        logger.warning(
            "feed %s failed (%d in a row): %s; next poll in %.0f s",
            state.url,
            state.failures,
            error,
            delay,
        )

    def _publish_feed(
        self, source: FeedSource, state: FeedState, result: FetchResult, now: float
    ) -> None:
        url = source.url
        parsed = parse_feed(
            result.body,
            url,
            source=source.name,
            content_type=result.content_type,
            max_entry_chars=self.options.max_entry_chars,
        )
        if not parsed.good and any(letter.key is None for letter in parsed.bad):
            # The document as a whole is unreadable: dead-letter it once, back off.
            digest = hashlib.sha256(result.body).hexdigest()
            letter = next(d for d in parsed.bad if d.key is None)
            if digest != state.bad_document and self._send_dead_letters([letter]):
                state.bad_document = digest
            self._feed_failed(state, now, f"{letter.error}: {letter.message}", None)
            return
        metrics.FEED_POLLS.labels(outcome="ok").inc()
        if parsed.warning:
            logger.warning("feed %s: %s", url, parsed.warning)
        fresh = [a for a in parsed.good if a.id not in state.seen]
        letters = [d for d in parsed.bad if d.key not in state.seen]
        self.report.already_seen += len(parsed.good) - len(fresh)
        acked = self._send_articles(fresh)
        acked_letters = self._send_dead_letters(letters)
        if len(acked) == len(fresh) and len(acked_letters) == len(letters):
            state.succeeded(
                now,
                self.options.poll_interval,
                etag=result.etag,
                last_modified=result.last_modified,
                articles=acked,
                dead_letters=[d.key for d in acked_letters if d.key],
                warning=parsed.warning,
            )
            if fresh or letters:
                logger.info(
                    "feed %s: %d new articles published (%d entries, %d dead letters)",
                    url,
                    len(acked),
                    len(parsed.good),
                    len(acked_letters),
                )
        else:
            missing = len(fresh) - len(acked) + len(letters) - len(acked_letters)
            state.incomplete(
                now,
                self.options.poll_interval,
                articles=acked,
                dead_letters=[d.key for d in acked_letters if d.key],
                error=f"{missing} records not acknowledged by the broker",
            )
            logger.error(
                "feed %s: %d of %d records not acknowledged; they are re-sent next poll",
                url,
                missing,
                len(fresh) + len(letters),
            )

    # -- files ----------------------------------------------------------------

    def scan_files(self, *, settle: float = 0.0, stop: threading.Event | None = None) -> int:
        """Publish new and changed documents of every folder; returns how many files were read."""
        read = 0
        for directory in self.directories:
            if stop is not None and stop.is_set():
                break
            read += self._scan_directory(directory, settle, stop)
        return read

    def _scan_directory(self, directory: Path, settle: float, stop: threading.Event | None) -> int:
        state = self.state.directory(directory)
        source = (directory if directory.is_dir() else directory.parent).name or None
        try:
            changes, vanished = changed_files(
                directory, state.files, settle=settle, now=self.clock()
            )
        except OSError as exc:
            logger.error("folder %s cannot be scanned: %s", directory, exc)
            return 0
        for relative in vanished:
            del state.files[relative]
        batch: list[tuple[FileChange, Document]] = []
        records = 0
        read = 0
        for change in changes:
            if stop is not None and stop.is_set():
                break
            document = self._read(change, state, source)
            if document is None:
                continue
            read += 1
            batch.append((change, document))
            records += len(document.good) + len(document.bad)
            if records >= FILE_BATCH_RECORDS:
                self._publish_files(state, batch)
                batch, records = [], 0
        self._publish_files(state, batch)
        state.last_scan = utc_now()
        self.state.save_directory(state)
        self.report.files_read += read
        return read

    def _read(
        self, change: FileChange, state: DirectoryState, source: str | None
    ) -> Document | None:
        """Read a changed file; None if it cannot be read now or its content is known."""
        try:
            with change.path.open("rb") as handle:
                data = handle.read(self.options.max_feed_bytes + 1)
        except OSError as exc:
            logger.warning("file %s cannot be read: %s", change.path, exc)
            return None
        known = state.files.get(change.relative)
        digest = hashlib.sha256(data).hexdigest()
        if known and known.get("sha256") == digest:  # touched, not changed
            state.files[change.relative] = _fingerprint(change, digest)
            return None
        try:
            document = read_document(
                change.path,
                data,
                source=source,
                max_entry_chars=self.options.max_entry_chars,
                max_bytes=self.options.max_feed_bytes,
            )
        except Exception as exc:  # a document that trips a bug is kept, not lost
            logger.exception("file %s: unexpected error while reading", change.path)
            letter = DeadLetter.of("parse", exc, str(change.path), data)
            document = Document(change.path, digest, bad=[letter])
        if document.skipped:
            logger.info("file %s skipped: %s", change.path, document.skipped)
        if document.warning:
            logger.warning("file %s: %s", change.path, document.warning)
        return document

    def _publish_files(
        self, state: DirectoryState, batch: list[tuple[FileChange, Document]]
    ) -> None:
        """Publish a batch of documents; checkpoint files whose records were all acknowledged."""
        if not batch:
            return
        articles: dict[str, Article] = {}
        done: set[str] = set()  # ids that need no sending: published by an earlier scan
        for _change, document in batch:
            for article in document.good:
                if article.id in state.seen:
                    done.add(article.id)
                    self.report.already_seen += 1
                else:
                    articles.setdefault(article.id, article)
        letters = [
            letter
            for _change, document in batch
            for letter in document.bad
            if letter.key is None or letter.key not in state.seen
        ]
        acked = self._send_articles(list(articles.values()))
        acked_letters = self._send_dead_letters(letters)
        done.update(acked)
        state.seen.add([*acked, *(d.key for d in acked_letters if d.key)])
        state.published += len(acked)
        state.dead_letters += len(acked_letters)
        sent = {id(d) for d in letters}
        delivered = {id(d) for d in acked_letters}
        for change, document in batch:
            complete = all(a.id in done for a in document.good) and all(
                id(d) in delivered for d in document.bad if id(d) in sent
            )
            if not complete:
                logger.error(
                    "file %s: not all records acknowledged; retried next scan", change.path
                )
                continue
            state.files[change.relative] = _fingerprint(change, document.sha256)
            if document.good or document.bad:
                logger.info(
                    "file %s: %d articles, %d dead letters",
                    change.path,
                    len(document.good),
                    len(document.bad),
                )
        self.state.save_directory(state)

    # -- publishing and health ----------------------------------------------

    def _send_articles(self, articles: list[Article]) -> list[str]:
        if not articles:
            return []
        acked = self.publisher.publish(articles)
        self.report.published += len(acked)
        self.report.unacknowledged += len(articles) - len(acked)
        return acked

    def _send_dead_letters(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        if not letters:
            return []
        acked = self.publisher.publish_dead_letters(letters)
        self.report.dead_letters += len(acked)
        self.report.unacknowledged += len(letters) - len(acked)
        return acked

    def _log_health(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_health_log < HEALTH_LOG_INTERVAL:
            return
        self._last_health_log = now
        for source in self.feeds:
            state = self.state.feed(source.url)
            if not state.healthy:
                logger.warning(
                    "feed %s unhealthy: %d failures, last error %s (at %s), last ok %s",
                    source.url,
                    state.failures,
                    state.last_error,
                    state.last_error_at,
                    state.last_ok or "never",
                )
        logger.info("connectors: %s", self.report.summary())


def _fingerprint(change: FileChange, digest: str) -> dict[str, Any]:
    return {"size": change.size, "mtime_ns": change.mtime_ns, "sha256": digest}


def run_connectors(
    settings: Settings, stop: threading.Event, once: bool = False
) -> ConnectorReport:
    """Run the feed pollers and folder watchers until ``stop`` is set (or one pass if ``once``).

    The broker and topics must exist (see `newswatch.topics.ensure_topics`).
    Stopping finishes the publish in flight, flushes the producer and saves
    every checkpoint before returning.

    Raises:
        ConfigError: Bad feed list or folder, or the state directory is in use.
    """
    with StateStore(settings.connectors.state_dir) as state:
        service_publisher = Publisher(settings)
        try:
            service = ConnectorService(settings, service_publisher, state)
            report = service.run(stop, once=once)
        finally:
            service_publisher.close()
    logger.info("connectors stopped: %s", report.summary())
    return report
