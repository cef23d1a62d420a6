"""``newswatch run``, ``newswatch pipeline`` and ``newswatch alerts``.

``run`` is the main job: it starts the embedded broker when no
``--bootstrap-servers`` is given, creates the topics, runs the connectors
(the bundled ``seeds/`` when no source is named) and the streaming pipeline,
until SIGINT/SIGTERM, or with ``--until-idle`` until everything available has
been classified.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from newswatch.config import PROJECT_ROOT, Settings, add_common_flags, add_flags, load_settings

__all__ = ["read_alerts", "register"]

logger = logging.getLogger(__name__)

_KAFKA_FLAGS = [
    "bootstrap_servers",
    "articles_topic",
    "alerts_topic",
    "decisions_topic",
    "dead_letter_topic",
    "partitions",
    "group_id",
]
_RUNNER_FLAGS = ["runner", "prism_location", "flink_master", "flink_job_server_jar", "parallelism"]
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


def _pipeline_flags(parser: argparse.ArgumentParser) -> None:
    add_common_flags(parser)
    add_flags(parser, "kafka", _KAFKA_FLAGS)
    add_flags(parser, "model", _MODEL_FLAGS)
    add_flags(parser, "runner", _RUNNER_FLAGS)
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
    from newswatch.broker import LocalBroker

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
    from connectors.service import run_connectors
    from newswatch.topics import ensure_topics
    from pipelines.classify import run as run_pipeline

    settings = load_settings(args)
    if not settings.connectors.feeds and not settings.connectors.files:
        settings.connectors.files = [PROJECT_ROOT / "seeds"]
    with embedded_broker(settings, keep=args.keep_broker):
        ensure_topics(settings)
        stop = threading.Event()
        failure: list[BaseException] = []

        def connectors() -> None:
            try:
                report = run_connectors(settings, stop, once=args.until_idle)
                logger.info("connectors: %s", report)
            except BaseException as exc:  # reported below; the pipeline keeps its own exit
                failure.append(exc)
                logger.exception("connectors failed")

        thread = threading.Thread(target=connectors, name="connectors", daemon=True)
        thread.start()
        if args.until_idle:
            thread.join()  # publish everything first, so the pipeline's end offsets cover it
        report = run_pipeline(settings, until_idle=args.until_idle, stop=stop)
        stop.set()
        thread.join(timeout=60)
        print(f"newswatch: {report.summary()}", file=sys.stderr)
        if failure:
            raise failure[0]
    return 0


def _pipeline_command(args: argparse.Namespace) -> int:
    from newswatch.topics import ensure_topics
    from pipelines.classify import run as run_pipeline

    settings = load_settings(args)
    with embedded_broker(settings):
        ensure_topics(settings)
        report = run_pipeline(settings, until_idle=args.until_idle)
    print(f"newswatch: {report.summary()}", file=sys.stderr)
    return 0


def read_alerts(
    settings: Settings, *, from_beginning: bool, until_idle: bool, poll_timeout: float = 1.0
) -> Iterator[dict]:
    """Alerts from the alerts topic as dicts, each alert id once (dedup at the sink)."""
    from kafka import TopicPartition

    from newswatch.topics import make_consumer

    topic = settings.kafka.alerts_topic
    consumer = make_consumer(settings.bootstrap_servers, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            from newswatch.errors import ConfigError

            raise ConfigError(
                f"alerts topic {topic!r} does not exist at {settings.bootstrap_servers}"
            )
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        end = consumer.end_offsets(tps)
        seen: set[str] = set()
        while True:
            batch = consumer.poll(timeout_ms=int(poll_timeout * 1000))
            for records in batch.values():
                for record in records:
                    try:
                        alert = json.loads(record.value)
                    except (TypeError, ValueError):
                        logger.warning("skipping unreadable alert at %s@%d", topic, record.offset)
                        continue
                    alert_id = alert.get("alert_id") if isinstance(alert, dict) else None
                    if alert_id in seen:
                        continue
                    seen.add(alert_id)
                    yield alert
            if until_idle and all(consumer.position(tp) >= end[tp] for tp in tps):
                return
    finally:
        consumer.close()


def _alerts_command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    with embedded_broker(settings, keep=False):
        try:
            for alert in read_alerts(
                settings, from_beginning=args.from_beginning, until_idle=args.until_idle
            ):
                print(json.dumps(alert, ensure_ascii=False), flush=True)
        except BrokenPipeError:
            pass
    return 0
