"""The crash test of bench/chaos, small: kill -9 the worker twice and the broker once, lose nothing.

The full run (10,000 articles, six worker kills) is ``bench/chaos``; these stream 600
real archived entries and 6 garbage records over a minute, so each fits in about two:
once on the embedded single broker, once on a three-node cluster with one node killed.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys

import pytest

from newswatch.config import PROJECT_ROOT


def load_chaos():
    """bench/chaos is a script without a .py suffix; load it as a module."""
    loader = importlib.machinery.SourceFileLoader("chaos", str(PROJECT_ROOT / "bench" / "chaos"))
    spec = importlib.util.spec_from_loader("chaos", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("brokers", [1, 3], ids=["one-broker", "three-node-cluster"])
def test_every_article_gets_an_outcome_across_worker_and_broker_kills(tmp_path, brokers):
    chaos = load_chaos()
    plan = chaos.ChaosPlan(
        brokers=brokers,
        articles=600,
        garbage=6,
        rate=10.0,
        worker_kills=2,
        broker_kill=True,
        max_kill_delay=5.0,
        final_uptime=30.0,
        seed=7,
        deadline=420.0,
        workdir=tmp_path / "chaos",
    )

    report = chaos.run_chaos(plan)

    print("\n" + report.render())
    assert report.failure is None
    assert report.lost == [] and report.two_kinds == [] and report.unexpected == []
    assert report.input_ids == report.outcome_ids == 606
    assert report.worker_kills == 2 and report.broker_kills == 1
    assert report.unexpected_exits == [] and report.orphans == 0
    assert report.final_exit == 0 and report.committed_equals_end
    assert report.alerts_printed == report.alerts_printed_ids == report.alert_ids
