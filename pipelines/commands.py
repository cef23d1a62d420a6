"""``newswatch run``, ``newswatch pipeline`` and ``newswatch alerts``.

``run`` is the main job: it starts the embedded broker when no
``--bootstrap-servers`` is given, creates the topics, runs the connectors
(the bundled ``seeds/`` when no source is named) and the streaming pipeline,
until SIGINT/SIGTERM, or with ``--until-idle`` until everything available has
been classified. Each story alert and update it finds is printed on stdout as
one line (``--json``: its JSON record); logs go to stderr. With notification
routes configured (or ``--notify-webhook URL``) it delivers them too
(`notifiers`), and with ``--until-idle`` it exits once they are delivered.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from kafka import TopicPartition

from connectors.service import run_connectors
from newswatch.broker import LocalBroker
from newswatch.config import PROJECT_ROOT, Settings, load_settings
from newswatch.errors import ConfigError
from newswatch.flags import add_common_flags, add_flags
from newswatch.health import add_metrics_flags, worker_endpoint
from newswatch.schemas import Alert, Story
from newswatch.topics import ensure_topics, make_consumer
from notifiers.companion import RunCompanion

__all__ = ["follow_topic", "read_alerts", "read_stories", "register", "story_line"]

logger = logging.getLogger(__name__)

_KAFKA_FLAGS = [
    "bootstrap_servers",
    "articles_topic",
    "alerts_topic",
    "decisions_topic",
    "dead_letter_topic",
    "stories_topic",
    "story_alerts_topic",
    "classified_topic",
    "partitions",
    "group_id",
    "session_timeout",
    "handover_timeout",
]
_RUNNER_FLAGS = ["runner", "prism_location"]
_MODEL_FLAGS = ["version", "artifacts_dir", "batch_size"]
_CONNECTOR_FLAGS = [
    "feeds",
    "files",
    "poll_interval",
    "watch_interval",
    "allow_private_addresses",
]


def register(subparsers: Any) -> None:
    """Add the ``run``, ``pipeline`` and ``alerts`` subcommands."""
    run = subparsers.add_parser(
        "run",
        help="run connectors and the streaming pipeline (embedded broker and seeds by default)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _pipeline_flags(run)
    add_flags(run, "connectors", _CONNECTOR_FLAGS)
    add_flags(run, "notify", ["webhook"], prefix="notify-")
    run.add_argument(
        "--json",
        action="store_true",
        help="print each story alert as its JSON record, not as one readable line "
        "(default: readable lines)",
    )
    run.add_argument(
        "--keep-broker",
        action="store_true",
        help="leave the embedded broker running on exit (it is stopped if this command started it)",
    )
    run.set_defaults(handler=_run_command)

    pipeline = subparsers.add_parser(
        "pipeline", help="run only the streaming pipeline (articles topic → alerts topic)"
    )
    _pipeline_flags(pipeline)
    pipeline.set_defaults(handler=_pipeline_command)

    alerts = subparsers.add_parser(
        "alerts", help="print alerts from the alerts topic as JSON lines"
    )
    add_common_flags(alerts)
    add_flags(alerts, "kafka", ["bootstrap_servers", "alerts_topic"])
    alerts.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest alert, not new ones"
    )
    alerts.add_argument(
        "--until-idle",
        action="store_true",
        help="exit once every alert present at start has been printed",
    )
    alerts.set_defaults(handler=_alerts_command)

    stories = subparsers.add_parser(
        "stories",
        help="print escalation stories from the stories topic as they change",
        description="Print each change of a story (new, growing, escalated, breaking, "
        "dormant) as one line, or as the story's JSON record with --json.",
    )
    add_common_flags(stories)
    add_flags(stories, "kafka", ["bootstrap_servers", "stories_topic"])
    stories.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest story record, not with new changes (default: new only)",
    )
    stories.add_argument(
        "--until-idle",
        action="store_true",
        help="exit once every story record present at start has been printed",
    )
    stories.add_argument(
        "--json", action="store_true", help="print each story record as one JSON line"
    )
    stories.set_defaults(handler=_stories_command)


def _pipeline_flags(parser: argparse.ArgumentParser) -> None:
    add_common_flags(parser)
    add_flags(parser, "kafka", _KAFKA_FLAGS)
    add_flags(parser, "model", _MODEL_FLAGS)
    add_flags(parser, "runner", _RUNNER_FLAGS)
    add_metrics_flags(parser)
    parser.add_argument(
        "--until-idle",
        action="store_true",
        help="process what is available, then exit 0 (instead of running until stopped)",
    )


@contextlib.contextmanager
def embedded_broker(settings: Settings, keep: bool = True) -> Iterator[None]:
    """Start the local broker if no external Kafka is configured; stop it after if asked."""
    if not settings.embedded_broker:
        yield
        return
    broker = LocalBroker(settings.broker)
    began = time.monotonic()
    started = broker.start()
    print(
        f"newswatch: Kafka broker {'started' if started else 'running'} at "
        f"{broker.bootstrap_servers} ({time.monotonic() - began:.1f}s)",
        file=sys.stderr,
    )
    try:
        yield
    finally:
        if started and not keep:
            broker.stop()


def _run_command(args: argparse.Namespace) -> int:
    from pipelines import classify  # lazy: loads Beam and torch, ~3.5 s on --help

    settings = load_settings(args)
    # Fail fast on a runner that cannot stream (before the broker).
    classify.pipeline_options(settings)
    if not settings.connectors.feeds and not settings.connectors.files:
        settings.connectors.files = [PROJECT_ROOT / "seeds"]
    # Story alerts printed, and delivered when routes are configured; a bad route fails here.
    companion = RunCompanion(settings, as_json=args.json)
    with embedded_broker(settings, keep=args.keep_broker), worker_endpoint(settings):
        ensure_topics(settings)
        stop = threading.Event()
        failure: list[BaseException] = []

        def connectors() -> None:
            try:
                run_connectors(settings, stop, once=args.until_idle)  # logs its own summary
            except BaseException as exc:  # reported below; the pipeline keeps its own exit
                failure.append(exc)
                logger.exception("connectors failed")

        companion.start()
        try:
            thread = threading.Thread(target=connectors, name="connectors", daemon=True)
            thread.start()
            if args.until_idle:
                thread.join()  # publish everything first, so the pipeline's end offsets cover it
            report = classify.run(settings, until_idle=args.until_idle, stop=stop)
            stop.set()
            thread.join(timeout=60)
            # Then the story alerts the pipeline wrote: printed, delivered and committed.
            tail = companion.end(drain=args.until_idle and not classify.interrupted())
        except KeyboardInterrupt:
            raise  # a second signal: exit at once, waiting for nothing
        except BaseException:
            companion.end(drain=False)  # no Kafka client may outlive the broker
            raise
        print(f"newswatch: {report.summary()}{tail}", file=sys.stderr)
        if failure:
            raise failure[0]
    return 0


def _pipeline_command(args: argparse.Namespace) -> int:
    from pipelines import classify  # lazy: loads Beam and torch, ~3.5 s on --help

    settings = load_settings(args)
    # Fail fast on a runner that cannot stream (before the broker).
    classify.pipeline_options(settings)
    with embedded_broker(settings), worker_endpoint(settings):
        ensure_topics(settings)
        report = classify.run(settings, until_idle=args.until_idle)
    print(f"newswatch: {report.summary()}", file=sys.stderr)
    return 0


def follow_topic(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool,
    until_idle: bool,
    poll_timeout: float = 1.0,
) -> Iterator[Any]:
    """The records of ``topic`` as they arrive (from the oldest, or only new ones).

    With ``until_idle``, stop once every record present at the start was read.

    Raises:
        ConfigError: the topic does not exist.
    """
    consumer = make_consumer(settings.bootstrap_servers, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ConfigError(f"topic {topic!r} does not exist at {settings.bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        end = consumer.end_offsets(tps)
        while True:
            batch = consumer.poll(timeout_ms=int(poll_timeout * 1000))
            for records in batch.values():
                yield from records
            if until_idle and all(consumer.position(tp) >= end[tp] for tp in tps):
                return
    finally:
        consumer.close()


def _follow_unique(
    settings: Settings,
    topic: str,
    parse: Callable[[bytes], Any],
    identity: Callable[[Any], Any],
    *,
    from_beginning: bool,
    until_idle: bool,
    poll_timeout: float,
) -> Iterator[Any]:
    """`follow_topic`, each record parsed and each identity yielded once (dedup at the sink).

    Tombstones are skipped; an unreadable record is logged with its offset and skipped.
    """
    seen: set[Any] = set()
    for record in follow_topic(
        settings,
        topic,
        from_beginning=from_beginning,
        until_idle=until_idle,
        poll_timeout=poll_timeout,
    ):
        if record.value is None:
            continue
        try:
            item = parse(record.value)
        except ValueError as exc:  # SchemaError and JSONDecodeError are ValueErrors
            logger.warning("skipping unreadable record at %s@%d: %s", topic, record.offset, exc)
            continue
        key = identity(item)
        if key in seen:
            continue
        seen.add(key)
        yield item


def read_alerts(
    settings: Settings, *, from_beginning: bool, until_idle: bool, poll_timeout: float = 1.0
) -> Iterator[Alert]:
    """Alerts from the alerts topic, each alert id once (dedup at the sink)."""
    return _follow_unique(
        settings,
        settings.kafka.alerts_topic,
        Alert.from_bytes,
        lambda alert: alert.alert_id,
        from_beginning=from_beginning,
        until_idle=until_idle,
        poll_timeout=poll_timeout,
    )


def read_stories(
    settings: Settings, *, from_beginning: bool, until_idle: bool, poll_timeout: float = 1.0
) -> Iterator[Story]:
    """Story records as they change (each revision once)."""
    return _follow_unique(
        settings,
        settings.kafka.stories_topic,
        Story.from_bytes,
        lambda story: (story.story_id, story.revision),
        from_beginning=from_beginning,
        until_idle=until_idle,
        poll_timeout=poll_timeout,
    )


def story_line(story: Story) -> str:
    """One readable line for a story as it changed."""
    signals = ",".join(f"{name} {count}" for name, count in story.signals.items()) or "-"
    evidence = f' "{story.evidence[0].sentence}"' if story.evidence else ""
    link = next((a.url for a in reversed(story.articles) if a.url), "")
    return (
        f"{story.updated_at} {story.status:<9} {story.headline} | {len(story.articles)} articles, "
        f"{story.outlets} outlets | signals {signals} | severity {story.severity} | "
        f"score {story.max_score:.2f}{evidence}{' ' + link if link else ''}"
    )


def _stories_command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    with embedded_broker(settings, keep=False):
        try:
            for story in read_stories(
                settings, from_beginning=args.from_beginning, until_idle=args.until_idle
            ):
                print(story.to_json() if args.json else story_line(story), flush=True)
        except BrokenPipeError:
            pass
    return 0


def _alerts_command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    with embedded_broker(settings, keep=False):
        try:
            for alert in read_alerts(
                settings, from_beginning=args.from_beginning, until_idle=args.until_idle
            ):
                print(alert.to_json(), flush=True)
        except BrokenPipeError:
            pass
    return 0
