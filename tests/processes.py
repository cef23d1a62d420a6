"""``newswatch pipeline`` as the operator runs it: a subprocess of its own, and waiting on it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from newswatch.config import PROJECT_ROOT, Settings
from tests.commands import newswatch_command

__all__ = ["start_pipeline", "wait_for"]


def start_pipeline(settings: Settings, log: Path, *options: str) -> subprocess.Popen:
    """``newswatch pipeline`` on the test's topics, in its own process group."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            newswatch_command(settings, "pipeline", *options),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )


def wait_for(condition: Callable[[], bool], timeout: float, what: str, worker=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if worker is not None and worker.poll() is not None:
            pytest.fail(f"pipeline exited ({worker.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
