"""Progress of a replay on stderr: publishing, then the pipeline's committed offsets.

On a terminal, tqdm's bar with rate and time left, redrawn in place; otherwise (a
log file, a pipe) a plain line every few seconds, without bar or carriage return.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import IO, Any

from kafka import errors as kafka_errors
from tqdm import tqdm

from newswatch.config import Settings
from pipelines.replay_topics import consumed_offsets

__all__ = ["PipelineProgress", "Progress"]

logger = logging.getLogger(__name__)


class Progress:
    """A progress bar with rate and time left on a terminal, plain periodic lines otherwise.

    Args:
        label: What is counted (``publishing``, ``classifying``).
        total: How many there will be, if known (`update` may set it later).
        stream: Where to draw (default stderr).
        interval: Least seconds between two draws (default 0.2 on a terminal, 10 otherwise).
        tty: Whether ``stream`` is a terminal (default: ask it).
    """

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        stream: IO[str] | None = None,
        interval: float | None = None,
        tty: bool | None = None,
    ) -> None:
        stream = stream or sys.stderr
        tty = stream.isatty() if tty is None else tty
        interval = interval if interval is not None else (0.2 if tty else 10.0)
        options: dict[str, Any] = {
            "desc": label,
            "total": total,
            "file": stream,
            "unit": " records",
            "mininterval": interval,
            "maxinterval": max(interval, 10.0),
            "miniters": 1,  # draw by time only
            "smoothing": 0,  # the rate over the whole run
        }
        if tty:
            self._bar = tqdm(**options, dynamic_ncols=True)
        else:
            self._bar = _PlainLines(**options, ncols=0, leave=False)
        self._lock = threading.Lock()

    def update(self, done: int, total: int | None = None, *, force: bool = False) -> None:
        """Record progress (``done`` so far); draws at most every ``interval`` seconds."""
        with self._lock:
            if total is not None:
                self._bar.total = total
            self._bar.update(done - self._bar.n)
            if force:
                self._bar.refresh()

    def close(self) -> None:
        """Draw the final state and end the line."""
        with self._lock:
            self._bar.close()


class _PlainLines(tqdm):
    """tqdm writing each draw as a line of its own, for logs and pipes."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing its bar at close: a finished line needs no clearing
            return False
        self.fp.write((self.__str__() if msg is None else msg) + "\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        if not self.disable:
            self.refresh()  # the final state, which tqdm draws at close only on a terminal
        super().close()


class PipelineProgress:
    """Reports the pipeline's committed offsets while it runs."""

    def __init__(self, settings: Settings, stream: IO[str] | None, interval: float | None) -> None:
        self._settings = settings
        self._progress = Progress("classifying", stream=stream, interval=interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="replay-progress", daemon=True)

    def __enter__(self) -> PipelineProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(kafka_errors.KafkaError):
            done, total = consumed_offsets(self._settings)
            self._progress.update(done, total)
        self._progress.close()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            try:
                done, total = consumed_offsets(self._settings)
            except kafka_errors.KafkaError as exc:
                logger.debug("progress: offsets unavailable: %s", exc)
                continue
            self._progress.update(done, total)
