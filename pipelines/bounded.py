"""Bounded replays on Beam's DaskRunner: archived entries through the pipeline, no broker.

    newswatch replay SOURCE... --runner dask [--dask-scheduler ADDRESS] [--dask-workers N]

The sources are read on the client by `pipelines.archive.iter_sources`, as a
replay through Kafka reads them (the same articles, ids, event times, dead
letters and statistics); each article becomes the record a live reader would
hand the pipeline, and one bounded Beam job runs the same steps on a Dask
cluster (`pipelines.daskrunner.BoundedDaskRunner`)::

    Create(records) → DecodeArticles → ClassifyArticles → AssignStories(bounded)
        → RouteOutcomes ─┐
    EscalationIndex(bounded) ─┴▶ Messages: (topic, key, value), gathered to the client

What the streaming pipeline would write to Kafka comes back as messages,
grouped under the replay's topic names and read into a `Backtest` by
`pipelines.backtest.collect`, so ``--report`` writes the same files. With no
scheduler address a LocalCluster of ``--dask-workers`` processes is started
for the run and shut down after it. On a remote cluster the workers need
newswatch and the model artefact installed, as the client has them.

Differences from a streaming replay: the articles are all there at once, so
stories are built in event-time order over the whole input and index windows
get one final value each; there is no pace (``--speed``) and no topic.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from models.handler import EscalationModelHandler
from newswatch.config import Settings, replace
from newswatch.errors import ConfigError
from newswatch.schemas import DeadLetter, IndexPoint
from pipelines import backtest
from pipelines.archive import ReplayItem, SourceStats, iter_sources
from pipelines.backtest import ReplayResult
from pipelines.daskrunner import BoundedDaskRunner, local_cluster
from pipelines.index import EscalationIndex, IndexSpec
from pipelines.kafka_read import KafkaRecord
from pipelines.kafka_write import OutboundMessage
from pipelines.replay import ReplayOptions
from pipelines.replay_publisher import SentArticle
from pipelines.report import write_report
from pipelines.stories import AssignStories
from pipelines.transforms import ClassifyArticles, DecodeArticles, RouteOutcomesFn

__all__ = ["SINK", "build_bounded", "local_threads", "partitions", "replay_bounded"]

logger = logging.getLogger(__name__)

#: Label of the job's one sink: every message the replay would have written.
SINK = "Messages"


def build_bounded(
    pipeline: beam.Pipeline,
    settings: Settings,
    records: Sequence[KafkaRecord],
    model_handler: Any,
    *,
    index: IndexSpec | None = None,
) -> beam.PCollection:
    """Adds the classification graph over ``records`` to ``pipeline``; returns the messages.

    The steps are those of `pipelines.classify.build` between the Kafka read
    and write; stories and the index run in their bounded form.
    """
    kafka = settings.kafka
    source = pipeline | "Articles" >> beam.Create(records)
    articles, undecodable = source | "DecodeArticles" >> DecodeArticles(kafka.dead_letter_topic)
    predictions, failed = articles | "ClassifyArticles" >> ClassifyArticles(
        model_handler, kafka.dead_letter_topic
    )
    routed = predictions
    if settings.stories.enabled:
        routed = predictions | "AssignStories" >> AssignStories(
            settings.bootstrap_servers, kafka, settings.stories, bounded=True
        )
    decided = routed | "RouteOutcomes" >> beam.ParDo(RouteOutcomesFn(kafka))
    outcomes = (decided, undecodable, failed) | "AllOutcomes" >> beam.Flatten()
    messages = [outcomes | "OutcomeMessages" >> beam.FlatMap(lambda record: record.messages)]
    if index is not None:
        messages.append(
            predictions
            | "EscalationIndex" >> EscalationIndex(index, bounded=True)
            | "IndexMessages" >> beam.Map(_index_message, index.topic)
        )
    return messages | SINK >> beam.Flatten()


def local_threads(workers: int) -> int:
    """Inference threads per worker of a local cluster: this machine's cores shared out."""
    return max(1, (os.cpu_count() or 1) // workers)


def partitions(articles: int) -> int:
    """Dask partitions (bundles) for a run: about 500 articles each, at least 8 to share out."""
    return max(1, min(articles, max(8, math.ceil(articles / 500))))


def _index_message(point: IndexPoint, topic: str) -> OutboundMessage:
    return OutboundMessage(topic, point.key.encode(), point.to_bytes())


def _records(topic: str, values: Iterable[tuple[bytes | None, bytes, int]]) -> list[KafkaRecord]:
    """(key, value, timestamp ms) → the records a reader of ``topic`` would hand over."""
    return [
        KafkaRecord(topic, 0, offset, offset, key, value, timestamp_ms)
        for offset, (key, value, timestamp_ms) in enumerate(values)
    ]


def replay_bounded(
    settings: Settings,
    run_id: str,
    options: ReplayOptions,
    *,
    model_handler: Any = None,
    index: IndexSpec | None = None,
) -> ReplayResult:
    """Replay ``options.sources`` as one bounded job on Dask; a `ReplayResult`.

    Args:
        settings: The replay's settings (`pipelines.replay.replay_settings`): its
            topic names label the messages; no broker is used.
        run_id: The replay's id.
        options: A `pipelines.replay.ReplayOptions` (``speed`` and ``keep_topics``
            do not apply).
        model_handler: The Beam model handler (default: the escalation model).
        index: The escalation index to compute, if any.
    """
    if options.speed is not None:
        raise ConfigError("--speed needs the streaming runner (prism); --runner dask has no pace")
    if options.keep_topics:
        raise ConfigError("--keep-topics: a replay with --runner dask writes no topics")
    runner = settings.runner
    began = time.monotonic()
    stats = SourceStats()
    items: list[ReplayItem] = []
    letters: list[DeadLetter] = []
    for thing in iter_sources(options.sources, stats, start=options.start, end=options.end):
        (letters if isinstance(thing, DeadLetter) else items).append(thing)
    kafka = settings.kafka
    records = _records(
        kafka.articles_topic,
        ((i.article.id.encode(), i.article.to_bytes(), i.event_ms) for i in items),
    )
    read_seconds = time.monotonic() - began
    logger.info(
        "replay %s: %d articles read in %.1f s; classifying on Dask",
        run_id,
        len(items),
        read_seconds,
    )

    workers = runner.dask_workers
    model = settings.model
    if not runner.dask_scheduler and model.threads == 0:
        model = replace(model, threads=local_threads(workers))
    # A bounded job has no stragglers to wait for: batches fill from the input.
    model = replace(model, max_batch_wait=0.0)
    if model_handler is None:
        model_handler = EscalationModelHandler(model)
    settings = replace(settings, model=model)

    pipeline_began = time.monotonic()
    sent_at = time.time()
    with contextlib.ExitStack() as stack:
        address = runner.dask_scheduler or stack.enter_context(local_cluster(workers))
        args = [f"--dask_client_address={address}", *runner.beam_args]
        if not any(a.startswith(("--dask_npartitions", "--dask_partition_size")) for a in args):
            args.append(f"--dask_npartitions={partitions(len(records))}")
        beam_options = PipelineOptions(args, save_main_session=False)
        pipeline = beam.Pipeline(runner=BoundedDaskRunner(), options=beam_options)
        build_bounded(pipeline, settings, records, model_handler, index=index)
        try:
            result = pipeline.run()
        except OSError as exc:  # distributed's Client: no scheduler there
            raise ConfigError(f"--dask-scheduler {address}: cannot connect ({exc})") from exc
        try:
            result.wait_until_finish()
            messages: list[OutboundMessage] = result.gather(SINK)
        finally:
            result.client.close()
    pipeline_seconds = time.monotonic() - pipeline_began

    by_topic: dict[str, list[tuple[bytes | None, bytes, int]]] = {}
    for message in messages:
        by_topic.setdefault(message.topic, []).append((message.key, message.value, 0))
    for letter in letters:
        by_topic.setdefault(kafka.dead_letter_topic, []).append(
            (letter.origin.encode(), letter.to_bytes(), 0)
        )
    sent = {
        i.article.id: SentArticle(i.event_ms, i.arrival_ms, sent_at, i.article.url, i.fallback)
        for i in items
    }
    result_backtest = backtest.collect(
        settings,
        index.topic if index is not None else None,
        sent,
        labels=options.labels,
        records={topic: _records(topic, values) for topic, values in by_topic.items()},
    )
    replayed = ReplayResult(
        run_id=run_id,
        kept_topics=[],
        stats=stats,
        backtest=result_backtest,
        publish_seconds=read_seconds,
        pipeline_seconds=pipeline_seconds,
        seconds=time.monotonic() - began,
    )
    if options.report_dir is not None:
        replayed.report_path = write_report(replayed, Path(options.report_dir))
    return replayed
