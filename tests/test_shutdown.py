"""Stopping and disturbing a running ``newswatch pipeline``.

SIGTERM drains and commits, a second SIGTERM exits at once, and a broker restart under
a running worker is ridden out.

The pipeline runs as the operator runs it, a subprocess on the real broker, the Prism
runner and the real model, fed with real archived entries that name China or Taiwan
(so each one goes through the model and work is in flight when the signal lands).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from connectors.publish import Publisher
from newswatch.config import Settings
from newswatch.schemas import Article, ClassifiedArticle
from pipelines.classify import run
from tests.articles import model_bound_articles
from tests.processes import start_pipeline, wait_for
from tests.streams import (
    articles_committed,
    committed_offsets,
    decided_ids,
    read_topic,
    settled,
    totals,
)


def process_group(pgid: int) -> list[int]:
    """Live processes of a process group (the pipeline and its Prism runner)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


@pytest.fixture
def worker(settings: Settings, tmp_path: Path):
    """A running pipeline that has classified a first article; killed with its group after."""
    process = start_pipeline(settings, tmp_path / "pipeline.log")
    try:
        with Publisher(settings) as publisher:
            publisher.publish(model_bound_articles(1))
        wait_for(
            lambda: articles_committed(settings) == 1 and settled(settings),
            180,
            "the first article",
            process,
        )
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        print((tmp_path / "pipeline.log").read_text(errors="replace")[-3000:])


def publish_and_wait_for_work_in_flight(settings: Settings, count: int) -> list[Article]:
    """Publish ``count`` model-bound articles and return once the first of them is committed.

    The batch is large enough (seconds of model work) that most of it is still
    unread or in flight at that moment.
    """
    articles = model_bound_articles(count + 1)[1:]
    before, _ = totals(settings)
    with Publisher(settings) as publisher:
        assert len(publisher.publish(articles)) == count
    seen: dict[str, tuple[int, int]] = {}

    def progressed() -> bool:
        seen["totals"] = totals(settings)
        return seen["totals"][0] > before

    wait_for(progressed, 120, "the first commit of the batch")
    committed, end = seen["totals"]
    assert committed < end, "the batch was done before the signal: nothing was in flight"
    return articles


def awaiting_story_step(settings: Settings) -> set[str]:
    """Ids of the articles on the classified topic above the group's committed offset."""
    committed, _ = committed_offsets(settings, settings.kafka.classified_topic)
    records = read_topic(settings, settings.kafka.classified_topic)
    return {
        ClassifiedArticle.from_bytes(r.value).article.id
        for r in records
        if r.offset >= committed[r.partition]
    }


def ids_below(settings: Settings, committed: dict[int, int]) -> set[str]:
    """Ids of the articles at offsets below each partition's committed offset."""
    records = read_topic(settings, settings.kafka.articles_topic)
    return {Article.from_bytes(r.value).id for r in records if r.offset < committed[r.partition]}


#: Articles per batch: several seconds of model work on two cores, so a signal
#: sent at the batch's first commit lands with most of it unread or in flight.
BATCH = 240


def test_sigterm_drains_in_flight_articles_commits_them_and_exits_0(settings, worker):
    articles = publish_and_wait_for_work_in_flight(settings, BATCH)
    at_signal, _ = committed_offsets(settings)

    worker.send_signal(signal.SIGTERM)

    assert worker.wait(180) == 0
    committed, end = committed_offsets(settings)
    assert all(at_signal[p] <= committed[p] <= end[p] for p in end)
    # Drained: what it read was decided and committed, or handed to the story step (the
    # classified topic) uncommitted there; and nothing unread was decided.
    decided, read = decided_ids(settings), ids_below(settings, committed)
    assert decided <= read
    assert read <= decided | awaiting_story_step(settings)
    assert process_group(worker.pid) == []  # the Prism runner went with it
    # The rest waits, uncommitted, for the next run.
    run(settings, until_idle=True, install_signal_handlers=False)
    assert committed_offsets(settings)[0] == end
    assert {a.id for a in articles} <= decided_ids(settings)


def test_second_sigterm_exits_at_once_and_a_restart_finishes_the_rest(settings, worker):
    articles = publish_and_wait_for_work_in_flight(settings, BATCH)

    worker.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    began = time.monotonic()
    worker.send_signal(signal.SIGTERM)

    # 130: interrupted mid-drain; 0: the drain had already finished. Never killed by it.
    assert worker.wait(30) in (130, 0)
    assert time.monotonic() - began < 15
    wait_for(lambda: process_group(worker.pid) == [], 15, "the Prism runner to exit")
    # At least once: whatever the abrupt exit left uncommitted is processed by the next run.
    run(settings, until_idle=True, install_signal_handlers=False)
    committed, end = committed_offsets(settings)
    assert committed == end
    assert {a.id for a in articles} <= decided_ids(settings)


def test_sigterm_while_the_pipeline_starts_exits_0_and_leaves_no_runner(settings, tmp_path):
    log = tmp_path / "pipeline.log"
    process = start_pipeline(settings, log)
    try:
        wait_for(lambda: b"pipeline reading" in log.read_bytes(), 120, "start-up", process)

        process.send_signal(signal.SIGTERM)

        assert process.wait(120) == 0
        wait_for(lambda: process_group(process.pid) == [], 15, "the Prism runner to exit")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def test_a_running_worker_rides_out_a_broker_restart_and_commits_everything(
    settings, worker, kafka_broker
):
    articles = publish_and_wait_for_work_in_flight(settings, BATCH)

    assert kafka_broker.kill()  # while outcomes are being written and committed
    time.sleep(20)
    assert worker.poll() is None
    kafka_broker.start()

    wait_for(lambda: totals(settings)[0] == totals(settings)[1], 300, "every commit", worker)
    assert worker.poll() is None, "the worker stopped on a broker restart"
    assert {a.id for a in articles} <= decided_ids(settings)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(180) == 0
