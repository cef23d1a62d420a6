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

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from kafka import errors as kafka_errors

from newswatch.config import Settings
from newswatch.errors import BrokerError, ConfigError
from newswatch.schemas import DeadLetter
from pipelines import backtest
from pipelines.archive import ReplayItem, SourceStats, iter_sources
from pipelines.backtest import ReplayResult
from pipelines.classify import run as run_pipeline
from pipelines.index import IndexSpec
from pipelines.replay_progress import PipelineProgress, Progress
from pipelines.replay_publisher import ReplayPublisher, publish_items
from pipelines.replay_topics import (
    consumed_offsets,
    create_replay_topics,
    delete_replay_topics,
    index_topic,
    replay_settings,
)
from pipelines.report import write_report

__all__ = [
    "REPLAY_LATENESS",
    "REPLAY_LATE_EVERY",
    "ReplayOptions",
    "new_run_id",
    "replay",
]

logger = logging.getLogger(__name__)

#: Allowed lateness of a replay's index windows: past any archive's age, so that
#: windows close only when the replay's input ends (see `ReplayOptions`).
REPLAY_LATENESS = 100 * 365 * 86400.0

#: A replay's index window may fire again every this many late articles (progress
#: on runners that fire late panes; Prism waits for the close): fewer index records
#: and runner-side bundles than one per article. The closing pane is final.
REPLAY_LATE_EVERY = 1000


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
        from pipelines.bounded import replay_bounded  # import cycle: it imports this module

        return replay_bounded(rsettings, run_id, options, model_handler=model_handler, index=index)
    began = time.monotonic()
    topics = create_replay_topics(rsettings)
    stats = SourceStats()
    stop = threading.Event()
    publisher = ReplayPublisher(rsettings)
    things = iter_sources(options.sources, stats, start=options.start, end=options.end)
    publish_seconds = pipeline_seconds = 0.0
    report = None
    try:
        if options.speed is None:
            progress = Progress("publishing", stream=stream, interval=options.progress_interval)
            try:
                publish_items(things, publisher, speed=None, progress=progress, stop=stop)
            finally:
                publisher.close()
                progress.close()
            publish_seconds = time.monotonic() - began
            pipeline_began = time.monotonic()
            with PipelineProgress(rsettings, stream, options.progress_interval):
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
        result.report_path = write_report(result, Path(options.report_dir))
    return result


def _paced(
    rsettings: Settings,
    things: Iterable[ReplayItem | DeadLetter],
    publisher: ReplayPublisher,
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
    failure: list[BaseException] = []
    published = threading.Event()
    timing: dict[str, float] = {}
    began = time.monotonic()

    def publish() -> None:
        try:
            publish_items(things, publisher, speed=options.speed, progress=None, stop=stop)
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
        with PipelineProgress(rsettings, stream, options.progress_interval):
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


def _caught_up(settings: Settings) -> bool:
    committed, end = consumed_offsets(settings)
    return committed >= end
