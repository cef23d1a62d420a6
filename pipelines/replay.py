"""Replays and backtests: archived feeds through the very same pipeline, in event time.

    newswatch replay SOURCE... [--from DATE] [--to DATE] [--speed N|max]
                     [--labels FILE] [--report DIR] [--keep-topics]

A SOURCE is any of:

* a directory of archived feed snapshots, RSS/Atom files named by capture
  time (``feeds/<feed>/2020-08-10T11-09-17Z.xml``), walked recursively; a
  ``manifest.jsonl`` beside them (as in the shared archive) supplies capture
  times and outlet names and is not itself replayed;
* a JSON-lines file of entries, plain or gzip (``entries.jsonl.gz``,
  ``labelled/dev.jsonl``), read as a stream;
* a directory of documents, or one document, read by `connectors.files`.

Every entry becomes an `Article` through the connectors' own conversion, so
its id is the one a live run would give it: an entry seen in many successive
snapshots is one article (published once, at its first sighting). Its event
time is its publication time, else the capture time of the snapshot (else
the file's modification time); fallbacks are counted and reported.

The articles go to isolated topics, ``newswatch.replay.<run-id>.articles``
(and ``.alerts``, ``.decisions``, ``.dead-letters``, ``.index``), created for
the run and deleted afterwards unless ``--keep-topics``, with the Kafka record
timestamp set to the event time. Entries are sent in the order a poller would
have seen them (snapshots by capture time, rows in file order, several sources
interleaved by that time), not sorted by event time: out-of-order and late
entries are the pipeline's business, which handles them with event-time
windows and watermarks exactly as live. Then `pipelines.classify.run` runs the
same graph over those topics, with the escalation index branch switched on;
its windows stay open until the replay's input ends (`REPLAY_LATENESS`). A
replay cannot write to live topics.

With ``--speed N`` entries are published at N times the pace at which they
were captured while the pipeline runs streaming beside the publisher; with
``--speed max`` (the default) everything is published first and the pipeline
processes the backlog and exits.

With ``--runner dask`` the same steps run instead as one bounded job on a Dask
cluster (``--dask-scheduler``, else a local one of ``--dask-workers``
processes), reading the sources directly: no broker, no topics, no pace (see
`pipelines.bounded`). The report is the same.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from kafka import errors as kafka_errors

from newswatch.config import Settings, add_common_flags, add_flags, load_settings
from newswatch.errors import BrokerError, ConfigError
from newswatch.schemas import DeadLetter
from pipelines.archive import ReplayItem, SourceStats, iter_sources

__all__ = [
    "REPLAY_LATENESS",
    "REPLAY_LATE_EVERY",
    "REPLAY_PREFIX",
    "Progress",
    "ReplayOptions",
    "ReplayResult",
    "SentArticle",
    "create_replay_topics",
    "delete_replay_topics",
    "index_topic",
    "new_run_id",
    "register",
    "replay",
    "replay_settings",
]

logger = logging.getLogger(__name__)

#: Every replay topic and consumer group starts with this.
REPLAY_PREFIX = "newswatch.replay."

#: Allowed lateness of a replay's index windows: past any archive's age, so that
#: windows close only when the replay's input ends (see `ReplayOptions`).
REPLAY_LATENESS = 100 * 365 * 86400.0

#: A replay's index window may fire again every this many late articles (progress
#: on runners that fire late panes; Prism waits for the close): fewer index records
#: and runner-side bundles than one per article. The closing pane is final.
REPLAY_LATE_EVERY = 1000

_KAFKA_FLAGS = ["bootstrap_servers", "partitions"]
_MODEL_FLAGS = ["version", "artifacts_dir", "batch_size"]
_RUNNER_FLAGS = ["runner", "prism_location", "dask_scheduler", "dask_workers"]


# --------------------------------------------------------------------------- topics


def replay_settings(settings: Settings, run_id: str) -> Settings:
    """A copy of ``settings`` whose topics and consumer group belong to replay ``run_id``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", run_id):
        raise ConfigError(f"replay run id {run_id!r}: use letters, digits, '-' and '_' only")
    prefix = f"{REPLAY_PREFIX}{run_id}."
    kafka = dataclasses.replace(
        settings.kafka,
        articles_topic=prefix + "articles",
        alerts_topic=prefix + "alerts",
        decisions_topic=prefix + "decisions",
        dead_letter_topic=prefix + "dead-letters",
        stories_topic=prefix + "stories",
        story_alerts_topic=prefix + "story-alerts",
        classified_topic=prefix + "classified",
        group_id=prefix + "pipeline",
        # One partition: the reader meets the articles in event-time order, as the
        # stories need. With several, Prism's watermark did not hold back the slower
        # partitions (a 3-partition replay of 2,386 rows: 1,221 articles reached the
        # story step behind stories already built; with one: none).
        partitions=1,
    )
    live = set(_topics(settings.kafka, ""))
    ours = _topics(kafka, prefix + "index")
    if live & set(ours) or not all(t.startswith(REPLAY_PREFIX) for t in ours):
        raise ConfigError(f"replay topics {ours} would overlap the live topics {sorted(live)}")
    return dataclasses.replace(settings, kafka=kafka)


def _topics(kafka: Any, index_topic: str) -> list[str]:
    names = [
        kafka.articles_topic,
        kafka.alerts_topic,
        kafka.decisions_topic,
        kafka.dead_letter_topic,
        kafka.stories_topic,
        kafka.story_alerts_topic,
        kafka.classified_topic,
    ]
    return [*names, index_topic] if index_topic else names


def index_topic(settings: Settings) -> str:
    """The index topic of a replay's settings."""
    return settings.kafka.articles_topic.removesuffix("articles") + "index"


def create_replay_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the replay's topics; fail if any exists (a replay never appends).

    Records carry event times from the archive, years old; the topics keep
    them regardless of age (``retention.ms=-1``), so time-based retention
    cannot delete a replay's input while it runs.
    """
    from newswatch.topics import MAX_MESSAGE_BYTES, make_admin, topic_specs

    size = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    specs = {spec.name: spec for spec in topic_specs(settings)}
    configs: dict[str, tuple[int, dict[str, str]]] = {}
    for name, spec in specs.items():
        kept = {**spec.configs}
        if kept.get("cleanup.policy") == "delete":
            kept["retention.ms"] = "-1"
        configs[name] = (spec.partitions, kept)
    configs[index_topic(settings)] = (1, {"cleanup.policy": "delete", "retention.ms": "-1", **size})
    servers = settings.bootstrap_servers
    deadline = time.monotonic() + timeout
    admin = make_admin(servers)
    try:
        existing = set(admin.list_topics()) & set(configs)
        if existing:
            raise ConfigError(f"replay topics already exist: {sorted(existing)}; use a new run id")
        while True:
            try:
                result = admin.create_topics(
                    {
                        name: {
                            "num_partitions": partitions,
                            "replication_factor": settings.kafka.replication_factor,
                            "configs": topic_configs,
                        }
                        for name, (partitions, topic_configs) in configs.items()
                    },
                    raise_errors=False,
                )
                for topic in result["topics"]:
                    error = kafka_errors.for_code(topic["error_code"])
                    if error is not kafka_errors.NoError:
                        raise error(f"topic {topic['name']}: {topic.get('error_message')}")
                break
            except (kafka_errors.RetriableError, kafka_errors.InvalidReplicationFactorError) as exc:
                if time.monotonic() >= deadline:
                    raise BrokerError(f"cannot create replay topics on {servers}: {exc}") from exc
                time.sleep(0.5)
            except kafka_errors.KafkaError as exc:
                raise BrokerError(f"cannot create replay topics on {servers}: {exc}") from exc
        admin.wait_for_topics(list(configs), timeout_ms=int(timeout * 1000))
    finally:
        admin.close()
    return list(configs)


def delete_replay_topics(settings: Settings, topics: Sequence[str]) -> None:
    """Delete a replay's topics and its consumer group (never anything else)."""
    from newswatch.topics import make_admin

    topics = [t for t in topics if t.startswith(REPLAY_PREFIX)]
    admin = make_admin(settings.bootstrap_servers)
    try:
        admin.delete_topics(topics, raise_errors=False)
        group = settings.kafka.group_id
        if group.startswith(REPLAY_PREFIX):
            with contextlib.suppress(kafka_errors.KafkaError):
                admin.delete_groups([group])
    except kafka_errors.KafkaError as exc:
        logger.warning("could not delete replay topics %s: %s", ", ".join(topics), exc)
    finally:
        admin.close()


# --------------------------------------------------------------------------- progress


class Progress:
    """A progress bar with rate and ETA on a terminal, plain periodic lines otherwise."""

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        stream: IO[str] | None = None,
        interval: float | None = None,
        tty: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._interval = interval if interval is not None else (0.2 if self._tty else 10.0)
        self._started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def update(self, done: int, total: int | None = None, *, force: bool = False) -> None:
        """Record progress; draws at most every ``interval`` seconds."""
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
            now = time.monotonic()
            if not force and now - self._last < self._interval:
                return
            self._last = now
            line = self.line(now)
            if self._tty:
                self._stream.write("\r\x1b[2K" + line)
            else:
                self._stream.write(line + "\n")
            self._stream.flush()

    def line(self, now: float | None = None) -> str:
        """The current state as one line."""
        elapsed = max(1e-9, (now or time.monotonic()) - self._started)
        rate = self.done / elapsed
        total = self.total
        if total:
            fraction = min(1.0, self.done / total)
            left = (total - self.done) / rate if rate > 0 else math.inf
            eta = _duration(left) if math.isfinite(left) else "?"
            bar = ""
            if self._tty:
                width = 28
                filled = int(fraction * width)
                bar = "[" + "#" * filled + "." * (width - filled) + "] "
            return (
                f"{self.label}: {bar}{self.done:,}/{total:,} ({fraction:.0%}) "
                f"{rate:,.1f}/s ETA {eta}"
            )
        return f"{self.label}: {self.done:,} {rate:,.1f}/s elapsed {_duration(elapsed)}"

    def close(self) -> None:
        """Draw the final state and end the line."""
        self.update(self.done, force=True)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# --------------------------------------------------------------------------- publishing


@dataclass
class SentArticle:
    """What the report needs to know about a replayed article."""

    event_ms: int
    arrival_ms: int
    sent_at: float
    """Wall-clock time (s since the epoch) at which it was handed to Kafka."""
    url: str
    fallback: bool


class _ReplayPublisher:
    """Writes replay items with record timestamp = event time, acknowledged in batches."""

    def __init__(self, settings: Settings, *, batch: int = 2000) -> None:
        from newswatch.topics import make_producer

        self._articles_topic = settings.kafka.articles_topic
        self._dead_letter_topic = settings.kafka.dead_letter_topic
        self._producer = make_producer(
            settings.bootstrap_servers, client_id="newswatch-replay", linger_ms=20
        )
        self._batch = batch
        self._pending: list[tuple[str, Any]] = []
        self.sent: dict[str, SentArticle] = {}
        self.dead_letters = 0

    def send(self, thing: ReplayItem | DeadLetter) -> None:
        if isinstance(thing, DeadLetter):
            future = self._producer.send(
                self._dead_letter_topic, key=thing.origin.encode(), value=thing.to_bytes()
            )
            self._pending.append((thing.origin, future))
            self.dead_letters += 1
        else:
            article = thing.article
            future = self._producer.send(
                self._articles_topic,
                key=article.id.encode(),
                value=article.to_bytes(),
                timestamp_ms=thing.event_ms,
            )
            self._pending.append((article.id, future))
            self.sent[article.id] = SentArticle(
                thing.event_ms, thing.arrival_ms, time.time(), article.url, thing.fallback
            )
        if len(self._pending) >= self._batch:
            self.settle()

    def settle(self) -> None:
        """Wait until the broker acknowledged everything sent so far."""
        if not self._pending:
            return
        self._producer.flush()
        for key, future in self._pending:
            try:
                future.get(timeout=60)
            except kafka_errors.KafkaError as exc:
                raise BrokerError(f"replay record {key} was not acknowledged: {exc}") from exc
        self._pending = []

    def close(self) -> None:
        try:
            self.settle()
        finally:
            self._producer.close(timeout=30)


def _publish(
    things: Iterable[ReplayItem | DeadLetter],
    publisher: _ReplayPublisher,
    *,
    speed: float | None,
    progress: Progress | None,
    stop: threading.Event,
) -> None:
    """Send everything, pacing by arrival time when ``speed`` is given."""
    first_arrival: int | None = None
    wall_start = time.monotonic()
    count = 0
    for thing in things:
        if stop.is_set():
            break
        if speed is not None and isinstance(thing, ReplayItem):
            if first_arrival is None:
                first_arrival = thing.arrival_ms
            due = wall_start + (thing.arrival_ms - first_arrival) / 1000 / speed
            while not stop.is_set() and time.monotonic() < due:
                # Hand over what is buffered before idling, so the pipeline sees it now.
                publisher.settle()
                stop.wait(min(1.0, due - time.monotonic()))
        publisher.send(thing)
        count += 1
        if progress is not None:
            progress.update(count)
    publisher.settle()
    if progress is not None:
        progress.update(count, force=True)


# --------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class ReplayOptions:
    """One replay: what to read, how fast, and what to do with the outcome."""

    sources: tuple[Path, ...]
    start: datetime | None = None
    """--from: only entries with an event time at or after this."""
    end: datetime | None = None
    """--to: only entries with an event time before this."""
    speed: float | None = None
    """Replay pace as a multiple of real time; None publishes as fast as possible."""
    labels: Path | None = None
    report_dir: Path | None = None
    keep_topics: bool = False
    run_id: str | None = None
    allowed_lateness: float = REPLAY_LATENESS
    """Seconds after its end an index window still takes late articles (default: 100 years).

    A replay keeps its windows open until its input is exhausted, so the index
    counts every article. A shorter lateness does not work with the reader as
    it is: when a poll comes back empty it moves the partition's watermark to
    the wall clock, years past an archive, which closes every window still
    waiting for articles (measured on the archive: 4,476 to 14,255 of 18,413
    articles lost at 7 days). Without that, 7 days would cover 99.7 % of the
    archive's entries, whose capture lags publication by 7 h median, 66 h p99.
    """
    progress_interval: float | None = None
    """Seconds between progress lines (default: 0.2 s on a terminal, 10 s otherwise)."""


@dataclass
class ReplayResult:
    """What a replay did and found."""

    run_id: str
    kept_topics: list[str]
    """The replay's topics, if kept (--keep-topics); else empty, they were deleted."""
    stats: SourceStats
    backtest: Any
    """A `pipelines.backtest.Backtest`."""
    publish_seconds: float = 0.0
    pipeline_seconds: float = 0.0
    seconds: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    report_path: Path | None = None

    @property
    def articles_per_second(self) -> float:
        """Classified articles per second of the pipeline phase."""
        done = self.backtest.decisions_count
        return done / self.pipeline_seconds if self.pipeline_seconds > 0 else 0.0

    def summary(self) -> str:
        """The closing lines printed by ``newswatch replay``."""
        s, b = self.stats, self.backtest
        lines = [
            f"replay {self.run_id}: {s.articles:,} articles from {s.files:,} files "
            f"({s.snapshots:,} feed snapshots; {s.entries:,} entries read, "
            f"{s.repeats:,} repeats of an article already seen)",
            f"  event time fell back to capture time for {s.fallbacks:,} articles "
            "(no publication time in the source)",
            f"  classified {b.decisions_count:,}, alerts {len(b.alerts):,} "
            f"(duplicate alert records {b.duplicate_alerts:,}), dead letters "
            f"{b.dead_letter_count:,} (sources {s.dead_letters:,}, of which future-dated "
            f"{s.future:,}), outside --from/--to {s.out_of_range:,}",
            f"  index: {len(b.index_points):,} windows; classified articles missing from it "
            f"(later than the allowed lateness): {b.index_missing:,}",
            f"  duration {self.seconds:.1f} s (publish {self.publish_seconds:.1f} s, pipeline "
            f"{self.pipeline_seconds:.1f} s), {self.articles_per_second:,.1f} articles/s",
        ]
        if b.metrics is not None:
            m = b.metrics.escalation
            lines.append(
                f"  labels: {b.metrics.n} rows matched, escalation precision {m.precision:.3f} "
                f"recall {m.recall:.3f} F1 {m.f1:.3f} ({b.labels_unmatched} rows not replayed)"
            )
        if self.report_path is not None:
            lines.append(f"  report: {self.report_path}")
        if self.kept_topics:
            lines.append(f"  topics kept: {', '.join(self.kept_topics)}")
        return "\n".join(lines)


def new_run_id() -> str:
    """A fresh, sortable replay id: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def replay(
    settings: Settings,
    options: ReplayOptions,
    *,
    model_handler: Any = None,
    install_signal_handlers: bool = False,
    stream: IO[str] | None = None,
) -> ReplayResult:
    """Replay ``options.sources`` through the classification pipeline on isolated topics.

    Args:
        settings: The live settings; only the broker, model and runner are used.
        options: What to replay and how.
        model_handler: The Beam model handler (default: the escalation model).
        install_signal_handlers: Let SIGINT/SIGTERM drain the pipeline (CLI only).
        stream: Where progress goes (default stderr).
    """
    from pipelines import backtest
    from pipelines.classify import run as run_pipeline
    from pipelines.index import IndexSpec

    for source in options.sources:
        if not Path(source).exists():
            raise ConfigError(f"replay source not found: {source}")
    if options.labels is not None and not Path(options.labels).is_file():
        raise ConfigError(f"--labels file not found: {options.labels}")
    run_id = options.run_id or new_run_id()
    rsettings = replay_settings(settings, run_id)
    index = IndexSpec(
        topic=index_topic(rsettings),
        allowed_lateness=options.allowed_lateness,
        late_every=REPLAY_LATE_EVERY,
    )
    if settings.runner.runner == "dask":
        from pipelines.bounded import replay_bounded

        return replay_bounded(rsettings, run_id, options, model_handler=model_handler, index=index)
    began = time.monotonic()
    topics = create_replay_topics(rsettings)
    logger.info("replay %s: topics %s", run_id, ", ".join(topics))
    stats = SourceStats()
    stop = threading.Event()
    publisher = _ReplayPublisher(rsettings)
    things = iter_sources(options.sources, stats, start=options.start, end=options.end)
    publish_seconds = pipeline_seconds = 0.0
    report = None
    try:
        if options.speed is None:
            progress = Progress("publishing", stream=stream, interval=options.progress_interval)
            try:
                _publish(things, publisher, speed=None, progress=progress, stop=stop)
            finally:
                publisher.close()
                progress.close()
            publish_seconds = time.monotonic() - began
            pipeline_began = time.monotonic()
            with _PipelineProgress(rsettings, stream, options.progress_interval):
                report = run_pipeline(
                    rsettings,
                    until_idle=True,
                    model_handler=model_handler,
                    install_signal_handlers=install_signal_handlers,
                    index=index,
                )
            pipeline_seconds = time.monotonic() - pipeline_began
        else:
            report, publish_seconds, pipeline_seconds = _paced(
                rsettings,
                things,
                publisher,
                options,
                model_handler,
                index,
                stream,
                stop,
                install_signal_handlers,
            )
        result_backtest = backtest.collect(
            rsettings, index.topic, publisher.sent, labels=options.labels
        )
    finally:
        stop.set()
        if not options.keep_topics:
            delete_replay_topics(rsettings, topics)
    result = ReplayResult(
        run_id=run_id,
        kept_topics=topics if options.keep_topics else [],
        stats=stats,
        backtest=result_backtest,
        publish_seconds=publish_seconds,
        pipeline_seconds=pipeline_seconds,
        seconds=time.monotonic() - began,
        counters=dict(report.counters) if report is not None else {},
    )
    if options.report_dir is not None:
        result.report_path = backtest.write_report(result, Path(options.report_dir))
    return result


def _paced(
    rsettings: Settings,
    things: Iterable[ReplayItem | DeadLetter],
    publisher: _ReplayPublisher,
    options: ReplayOptions,
    model_handler: Any,
    index: Any,
    stream: IO[str] | None,
    stop: threading.Event,
    install_signal_handlers: bool,
) -> tuple[Any, float, float]:
    """Publish at ``options.speed`` while the pipeline runs streaming; drain when caught up.

    The pipeline runs in this thread (Beam's job server wants the main thread
    for its signal handler), the publisher beside it. ``stop`` ends both: set
    by SIGINT through the pipeline's handler, or once everything published
    has an outcome.
    """
    from pipelines.classify import run as run_pipeline

    failure: list[BaseException] = []
    published = threading.Event()
    timing: dict[str, float] = {}
    began = time.monotonic()

    def publish() -> None:
        try:
            _publish(things, publisher, speed=options.speed, progress=None, stop=stop)
        except BaseException as exc:  # re-raised below, after the pipeline drained
            failure.append(exc)
            stop.set()
        finally:
            try:
                publisher.close()
            except BrokerError as exc:
                failure.append(exc)
                stop.set()
            timing["publish"] = time.monotonic() - began
            published.set()

    def drain_when_caught_up() -> None:
        while not stop.is_set():
            if published.is_set():
                try:
                    if _caught_up(rsettings):
                        break
                except kafka_errors.KafkaError as exc:
                    logger.debug("replay: offsets unavailable: %s", exc)
            stop.wait(1.0)
        stop.set()

    threads = [
        threading.Thread(target=publish, name="replay-publisher", daemon=True),
        threading.Thread(target=drain_when_caught_up, name="replay-drain", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        with _PipelineProgress(rsettings, stream, options.progress_interval):
            report = run_pipeline(
                rsettings,
                model_handler=model_handler,
                stop=stop,
                install_signal_handlers=install_signal_handlers,
                index=index,
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    if failure:
        raise failure[0]
    return report, timing.get("publish", 0.0), time.monotonic() - began


def _offsets(settings: Settings) -> tuple[int, int]:
    """(committed, end) summed over the articles topic's partitions."""
    from kafka import TopicPartition

    from newswatch.topics import make_consumer

    consumer = make_consumer(settings.bootstrap_servers, group_id=settings.kafka.group_id)
    try:
        topic = settings.kafka.articles_topic
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        end = consumer.end_offsets(tps)
        committed = sum(consumer.committed(tp) or 0 for tp in tps)
        return committed, sum(end.values())
    finally:
        consumer.close()


def _caught_up(settings: Settings) -> bool:
    committed, end = _offsets(settings)
    return committed >= end


class _PipelineProgress:
    """Reports the pipeline's committed offsets while it runs."""

    def __init__(self, settings: Settings, stream: IO[str] | None, interval: float | None) -> None:
        self._settings = settings
        self._progress = Progress("classifying", stream=stream, interval=interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="replay-progress", daemon=True)

    def __enter__(self) -> _PipelineProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(kafka_errors.KafkaError):
            done, total = _offsets(self._settings)
            self._progress.update(done, total)
        self._progress.close()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            try:
                done, total = _offsets(self._settings)
            except kafka_errors.KafkaError as exc:
                logger.debug("progress: offsets unavailable: %s", exc)
                continue
            self._progress.update(done, total)


# --------------------------------------------------------------------------- command


def register(subparsers: Any) -> None:
    """Add the ``replay`` subcommand."""
    parser = subparsers.add_parser(
        "replay",
        help="replay archived feeds or entry files through the pipeline (backtest)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_flags(parser)
    add_flags(parser, "kafka", _KAFKA_FLAGS)
    add_flags(parser, "model", _MODEL_FLAGS)
    add_flags(parser, "runner", _RUNNER_FLAGS)
    parser.add_argument(
        "sources",
        nargs="+",
        type=Path,
        metavar="SOURCE",
        help="snapshot directory, JSON-lines file (.jsonl, .jsonl.gz) or documents",
    )
    parser.add_argument(
        "--from", dest="start", type=_date, help="only entries published at or after DATE"
    )
    parser.add_argument("--to", dest="end", type=_date, help="only entries published before DATE")
    parser.add_argument(
        "--speed",
        type=_speed,
        default=None,
        metavar="N|max",
        help="pace as a multiple of real time (3600: an hour of archive per second); "
        "default max: publish everything, then process the backlog",
    )
    parser.add_argument(
        "--labels", type=Path, help="labelled JSON-lines rows (by id or url) to score against"
    )
    parser.add_argument(
        "--report", type=Path, metavar="DIR", help="write an HTML report with plots to DIR"
    )
    parser.add_argument(
        "--keep-topics", action="store_true", help="keep the replay's topics afterwards"
    )
    parser.add_argument("--run-id", help="name of the replay's topics (default: time + random)")
    parser.set_defaults(handler=_replay_command)


def _date(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed takes a number or 'max', not {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError("--speed must be a positive number")
    return value


def _replay_command(args: argparse.Namespace) -> int:
    from pipelines.commands import embedded_broker

    settings = load_settings(args)
    options = ReplayOptions(
        sources=tuple(args.sources),
        start=args.start,
        end=args.end,
        speed=args.speed,
        labels=args.labels,
        report_dir=args.report,
        keep_topics=args.keep_topics,
        run_id=args.run_id,
    )
    bounded = settings.runner.runner == "dask"  # no broker: the archive goes straight to Dask
    with contextlib.nullcontext() if bounded else embedded_broker(settings, keep=False):
        result = replay(settings, options, install_signal_handlers=True)
    print(result.summary())
    return 0
