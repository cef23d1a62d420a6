"""The crash test of bench/chaos, small: kill -9 the worker twice and the broker once, lose nothing.

The full run (10,000 articles, six worker kills) is ``bench/chaos``; these stream 600
real archived entries and 6 garbage records over a minute, so each fits in about two:
once on the embedded single broker, once on a three-node cluster with one node killed.
The bench runs as a subprocess, as an operator runs it, and prints its report as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from newswatch.config import PROJECT_ROOT

CHAOS = PROJECT_ROOT / "bench" / "chaos"


def run_chaos(*flags: str) -> dict:
    """``bench/chaos FLAGS --json``: its report (`ChaosReport.to_dict`); its stderr is printed."""
    process = subprocess.Popen(
        [sys.executable, str(CHAOS), *flags, "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    try:
        out, err = process.communicate(timeout=600)
    except BaseException:
        process.terminate()  # SIGTERM: the bench stops its workers and brokers on the way out
        process.communicate(timeout=120)
        raise
    print("\n" + err)
    assert out.strip(), f"bench/chaos printed no report (exit {process.returncode})"
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("brokers", [1, 3], ids=["one-broker", "three-node-cluster"])
def test_every_article_gets_an_outcome_across_worker_and_broker_kills(tmp_path, brokers):
    report = run_chaos(
        f"--brokers={brokers}",
        "--articles=600",
        "--garbage=6",
        "--rate=10",
        "--worker-kills=2",
        "--max-kill-delay=5",
        "--final-uptime=30",
        "--seed=7",
        "--deadline=420",
        f"--workdir={tmp_path / 'chaos'}",
    )

    assert report["failure"] is None
    assert report["lost"] == [] and report["two_kinds"] == [] and report["unexpected"] == []
    assert report["input_ids"] == report["outcome_ids"] == 606
    assert report["worker_kills"] == 2 and report["broker_kills"] == 1
    assert report["unexpected_exits"] == [] and report["orphans"] == 0
    assert report["final_exit"] == 0 and report["committed_equals_end"]
    assert report["alerts_printed"] == report["alerts_printed_ids"] == report["alert_ids"]
