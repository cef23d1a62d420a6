"""The streaming pipeline: articles topic → classifier → alerts, decisions, dead letters.

    ReadArticles (this worker's share, by the consumer group) → DecodeArticles
        → ClassifyArticles (RunInference) → AssignStories → RouteOutcomes
        → WriteOutcomes (Kafka, acks=all) → CommitOffsets (fenced by the group)

`build` wires the graph onto a pipeline; `run` executes it on a real Beam
runner in streaming mode: Prism (a single static binary built from the Go
module proxy). Offsets are committed only after each record's outcome was
acknowledged by Kafka. Bounded replays run the same steps on Dask
(`pipelines.bounded`).

Run it with ``newswatch pipeline`` (pipeline only) or ``newswatch run``
(broker, connectors and pipeline together).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from models.handler import EscalationModelHandler
from newswatch.config import Settings
from newswatch.errors import ConfigError
from newswatch.signals import interrupted, stop_on_signals
from pipelines import kafka_read, offsets
from pipelines.groupread import GroupSpec, ReadFromConsumerGroup, close_members, on_handover
from pipelines.index import EscalationIndex, IndexSpec, WriteIndexFn
from pipelines.kafka_read import ReadFromKafkaPartitions, plan_partitions
from pipelines.kafka_write import WriteToKafkaFn
from pipelines.offsets import CommitOffsetsFn
from pipelines.prism import PrismJobService
from pipelines.stories import AssignStories, reset_books
from pipelines.transforms import (
    AckKV,
    ClassifyArticles,
    DecodeArticles,
    DecodeClassifiedFn,
    HandOff,
    RouteOutcomesFn,
)

__all__ = [
    "PipelineReport",
    "articles_source",
    "build",
    "classify_records",
    "interrupted",
    "pipeline_options",
    "run",
]

logger = logging.getLogger(__name__)


def build(
    pipeline: beam.Pipeline,
    settings: Settings,
    source: beam.PTransform,
    model_handler: Any,
    *,
    index: IndexSpec | None = None,
) -> None:
    """Adds the pipeline to ``pipeline``: ``source`` (`KafkaRecord`s) → outcomes → Kafka.

    The source is this worker's share of the articles topic
    (`ReadFromConsumerGroup`), or a fixed plan of partitions for a bounded read
    (`ReadFromKafkaPartitions`). Offsets are committed once outcomes are written.
    """
    kafka = settings.kafka
    servers = settings.bootstrap_servers
    records = pipeline | "ReadArticles" >> source
    stories = settings.stories.enabled
    hand_off = stories and isinstance(source, ReadFromConsumerGroup)
    (
        classify_records(
            records, settings, model_handler, index=index, hand_off=hand_off, handed=stories
        )
        | "WriteOutcomes" >> beam.ParDo(WriteToKafkaFn(servers)).with_output_types(AckKV)
        | "CommitOffsets" >> beam.ParDo(CommitOffsetsFn(servers, kafka.group_id))
    )


def classify_records(
    records: beam.PCollection,
    settings: Settings,
    model_handler: Any,
    *,
    index: IndexSpec | None = None,
    hand_off: bool = False,
    handed: bool = False,
) -> beam.PCollection:
    """`KafkaRecord`s → `OutboundRecord`s: the decision, alert, story changes or dead letter
    of each record, with the offsets it settles.

    With ``hand_off`` (workers sharing the stream), Taiwan-related articles reach
    the story step through the one-partition classified topic, read back here
    by whichever worker the group gives it; otherwise they go straight to it.
    With ``handed``, ``records`` include that topic's (a backlog, in a bounded read).
    With ``index``, also the escalation index over event-time windows (see
    `pipelines.index`), written to ``index.topic``; off unless asked for.
    """
    kafka = settings.kafka
    outcomes = []
    if handed or hand_off:
        records, classified = records | "ByTopic" >> beam.Partition(
            lambda record, n: 1 if record.topic == kafka.classified_topic else 0, 2
        )
    articles, undecodable = records | "DecodeArticles" >> DecodeArticles(kafka.dead_letter_topic)
    predictions, failed = articles | "ClassifyArticles" >> ClassifyArticles(
        model_handler, kafka.dead_letter_topic
    )
    outcomes += [undecodable, failed]
    if index is not None:
        (
            predictions
            | "EscalationIndex" >> EscalationIndex(index)
            | "WriteIndex" >> beam.ParDo(WriteIndexFn(settings.bootstrap_servers, index.topic))
        )
    to_route = predictions
    if hand_off:
        to_route, sent = predictions | "HandOff" >> HandOff(kafka.classified_topic)
        outcomes.append(sent)
    if handed or hand_off:
        returned = classified | "DecodeClassified" >> beam.ParDo(
            DecodeClassifiedFn(kafka.dead_letter_topic)
        ).with_outputs(DecodeClassifiedFn.DEAD, main="good")
        outcomes.append(returned[DecodeClassifiedFn.DEAD])
        to_route = (to_route, returned.good) | "WithHandedBack" >> beam.Flatten()
    if settings.stories.enabled:
        to_route = to_route | "AssignStories" >> AssignStories(
            settings.bootstrap_servers, kafka, settings.stories
        )
    outcomes.append(to_route | "RouteOutcomes" >> beam.ParDo(RouteOutcomesFn(kafka)))
    return outcomes | "AllOutcomes" >> beam.Flatten()


def articles_source(settings: Settings, *, until_idle: bool = False) -> beam.PTransform:
    """What this worker reads: its share of the articles (and classified) topic as a member
    of the group, or, with ``until_idle``, every partition from the group's offsets to its
    current end."""
    kafka = settings.kafka
    servers = settings.bootstrap_servers
    topics = [kafka.articles_topic]
    if settings.stories.enabled:
        topics.append(kafka.classified_topic)
    if not until_idle:
        # The story book follows the classified topic's one partition from worker to worker.
        on_handover(kafka.classified_topic, reset_books)
        logger.info(
            "pipeline reading %s as a member of group %s", ", ".join(topics), kafka.group_id
        )
        return ReadFromConsumerGroup(
            GroupSpec(
                servers,
                tuple(topics),
                kafka.group_id,
                session_timeout=kafka.session_timeout,
                handover_timeout=kafka.handover_timeout,
            )
        )
    partitions = [
        p
        for topic in topics
        for p in plan_partitions(servers, topic, kafka.group_id, until_end=True)
    ]
    for p in partitions:
        offsets.start_ledger((servers, kafka.group_id, p.topic, p.partition), p.start)
    logger.info(
        "pipeline reading %s",
        ", ".join(f"{p.topic}/{p.partition}@{p.start}..{p.stop}" for p in partitions),
    )
    return ReadFromKafkaPartitions(partitions)


#: Seconds (ten years): the gRPC deadline of the job's state and message streams.
JOB_STREAM_TIMEOUT = 10 * 365 * 24 * 3600


def pipeline_options(settings: Settings, job_endpoint: str = "") -> PipelineOptions:
    """Beam options for the configured runner, always in streaming mode.

    ``job_endpoint``: a Prism job service already running (`PrismJobService`);
    without one, Beam starts Prism itself.
    """
    runner = settings.runner
    # Beam's portable runner opens the job's state and message streams with
    # job_server_timeout as their gRPC deadline (default 300 s): when it passes,
    # the client tears the job down, so a streaming job would die after five
    # minutes. The streams must live as long as the job.
    args = ["--streaming", f"--job_server_timeout={JOB_STREAM_TIMEOUT}"]
    if runner.runner == "prism":
        if not runner.prism_location.is_file():
            raise ConfigError(
                f"Prism runner binary not found at {runner.prism_location}; run deploy/setup.sh "
                "(it builds Prism from the Go module proxy) or pass --prism-location"
            )
        args += [
            "--runner=PrismRunner",
            f"--prism_location={runner.prism_location}",
            "--environment_type=LOOPBACK",
            "--prism_log_level=warn",
        ]
        if job_endpoint:
            args.append(f"--job_endpoint={job_endpoint}")
    else:
        raise ConfigError(
            f"runner {runner.runner!r} runs bounded replays only (newswatch replay --runner "
            "dask); the streaming pipeline runs on prism"
        )
    return PipelineOptions(args + list(runner.beam_args))


@dataclass
class PipelineReport:
    """What one pipeline run did, from its Beam metrics."""

    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        keys = ("articles_decoded", "alerts", "no_alert_decisions", "dead_letters_decode")
        parts = [f"{k}={self.counters.get(k, 0)}" for k in keys]
        return f"pipeline: {' '.join(parts)} in {self.seconds:.1f}s"


def _counters(result: Any) -> dict[str, int]:
    try:
        query = result.metrics().query()
    except Exception:  # metrics are informative only
        logger.debug("metrics unavailable", exc_info=True)
        return {}
    counters: dict[str, int] = {}
    for item in query.get("counters", []):
        if item.key.metric.namespace == "newswatch":
            name = item.key.metric.name
            counters[name] = counters.get(name, 0) + int(item.committed or item.attempted or 0)
    return counters


def run(
    settings: Settings,
    *,
    until_idle: bool = False,
    model_handler: Any = None,
    stop: threading.Event | None = None,
    install_signal_handlers: bool = True,
    index: IndexSpec | None = None,
) -> PipelineReport:
    """Runs the pipeline until ``stop`` is set (or, with ``until_idle``, the backlog is done).

    Setting ``stop`` (SIGINT/SIGTERM do) drains: readers stop polling, in-flight
    records are classified, written and committed, then the job finishes.
    """
    stop = stop or threading.Event()
    threading.excepthook = _quiet_state_stream_end
    kafka_read.reset_stop()
    offsets.reset_ledgers()
    reset_books()
    watcher = threading.Thread(
        target=_forward_stop, args=(stop,), name="pipeline-stop", daemon=True
    )
    watcher.start()
    restores = []
    services = contextlib.ExitStack()
    if install_signal_handlers:
        # From the start: a SIGTERM while the model loads or the runner starts must
        # not kill this process and orphan the runner, a child process.
        restores.append(stop_on_signals(stop, _DRAINING, logger=logger))
    started = time.monotonic()
    finished = False
    try:
        if model_handler is None:
            model_handler = EscalationModelHandler(settings.model)
        options = pipeline_options(settings)  # fail fast on a bad runner set-up
        source = articles_source(settings, until_idle=until_idle)
        if stop.is_set():
            logger.info("stopped before the job started")
            return PipelineReport(seconds=time.monotonic() - started)
        if settings.runner.runner == "prism":
            # Prism out of reach of the terminal's Ctrl-C, which must drain the job.
            endpoint = services.enter_context(PrismJobService(settings.runner.prism_location))
            options = pipeline_options(settings, job_endpoint=endpoint)
        pipeline = beam.Pipeline(options=options)
        build(pipeline, settings, source, model_handler, index=index)
        result = pipeline.run()
        if install_signal_handlers:
            # Again once the job runs: Beam's job server replaced the SIGINT handler
            # with one that kills the runner, which would prevent draining.
            restores.append(stop_on_signals(stop, _DRAINING, logger=logger))
        result.wait_until_finish()
        # Before the runner goes: the job's metrics are served by it.
        counters = _counters(result)
        finished = True
    finally:
        stop.set()
        close_members(drained=finished)
        for restore in reversed(restores):
            if restore:
                restore()
        services.close()
    report = PipelineReport(counters, time.monotonic() - started)
    logger.info("%s", report.summary())
    return report


def _quiet_state_stream_end(args: threading.ExceptHookArgs) -> None:
    """Beam's state reader thread dies noisily when the runner stops after the job: log it."""
    if (
        args.thread is not None
        and args.thread.name == "read_state"
        and "StatusCode.UNAVAILABLE" in repr(args.exc_value)
    ):
        logger.debug("state stream closed with the runner: %s", args.exc_value)
        return
    _PREVIOUS_EXCEPTHOOK(args)


_PREVIOUS_EXCEPTHOOK = threading.excepthook


def _forward_stop(stop: threading.Event) -> None:
    stop.wait()
    kafka_read.request_stop()


#: What the first SIGINT/SIGTERM does to a run (`newswatch.signals`); a second exits at once.
_DRAINING = "draining (in-flight articles are finished and committed; repeat to exit now)"
