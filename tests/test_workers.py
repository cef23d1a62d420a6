"""Several workers share the articles topic through Kafka's consumer-group protocol.

Two ``newswatch pipeline`` processes with one group id, on the real broker, Prism and
model: each reads a disjoint share of the partitions; when one is killed (``kill -9``)
the other takes its partitions over and finishes everything; started again, it gets a
share back.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from connectors.publish import Publisher
from newswatch.config import Settings
from tests.articles import model_bound_articles
from tests.processes import start_pipeline, wait_for
from tests.streams import decided_ids, totals

_CHANGE = re.compile(r"\b(assigned|handed over|lost) (\S.*)$")


def held(log: Path) -> set[int]:
    """Partitions a worker holds now, from its log of assignments and hand-overs."""
    partitions: set[int] = set()
    for line in log.read_text(errors="replace").splitlines():
        match = _CHANGE.search(line)
        if not match or match.group(2) == "nothing":
            continue
        named = {int(name.rsplit("/", 1)[1]) for name in match.group(2).split(", ")}
        partitions = partitions | named if match.group(1) == "assigned" else partitions - named
    return partitions


@pytest.fixture
def workers(settings: Settings, tmp_path: Path):
    """Starts workers on demand (``start(name)``); kills what is left after the test."""
    running = {}

    def start(name: str):
        log = tmp_path / f"{name}.log"
        log.write_bytes(b"")
        running[name] = start_pipeline(settings, log, "--session-timeout=3")
        return running[name], log

    yield start
    for name, process in running.items():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        print(f"--- {name}\n" + (tmp_path / f"{name}.log").read_text(errors="replace")[-2000:])


def test_two_workers_share_the_partitions_and_one_finishes_when_the_other_dies(settings, workers):
    everything = {0, 1, 2}
    first, first_log = workers("first")
    second, second_log = workers("second")
    wait_for(
        lambda: held(first_log) and held(second_log),
        180,
        "both workers to hold partitions",
        first,
    )
    wait_for(lambda: held(first_log) | held(second_log) == everything, 60, "a full assignment")
    assert not held(first_log) & held(second_log)

    articles = model_bound_articles(220)
    before, after = articles[:160], articles[160:]
    with Publisher(settings) as publisher:
        assert len(publisher.publish(before)) == len(before)
    wait_for(lambda: totals(settings)[0] > 10, 120, "the first commits", second)
    assert "reading" in first_log.read_text() and "reading" in second_log.read_text()

    os.killpg(first.pid, signal.SIGKILL)  # no drain, no goodbye to the group
    first.wait(30)
    with Publisher(settings) as publisher:  # some land on the dead worker's partitions
        assert len(publisher.publish(after)) == len(after)

    wait_for(lambda: held(second_log) == everything, 60, "the survivor to take over", second)
    wait_for(lambda: totals(settings)[0] == totals(settings)[1], 300, "every commit", second)
    assert {a.id for a in articles} <= decided_ids(settings)

    again, again_log = workers("again")
    wait_for(lambda: held(again_log), 180, "the restarted worker to get a share", again)
    wait_for(
        lambda: (
            held(again_log) | held(second_log) == everything
            and not held(again_log) & held(second_log)
        ),
        60,
        "the partitions to spread again",
        second,
    )
