"""Progress of a replay on stderr: publishing, then the pipeline's committed offsets.

On a terminal, a bar with rate and ETA redrawn in place; otherwise (a log file, a
pipe) a plain line every few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
import time
from typing import IO

from kafka import errors as kafka_errors

from newswatch.config import Settings
from pipelines.replay_topics import consumed_offsets

__all__ = ["PipelineProgress", "Progress"]

logger = logging.getLogger(__name__)


class Progress:
    """A progress bar with rate and ETA on a terminal, plain periodic lines otherwise."""

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        stream: IO[str] | None = None,
        interval: float | None = None,
        tty: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._interval = interval if interval is not None else (0.2 if self._tty else 10.0)
        self._started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def update(self, done: int, total: int | None = None, *, force: bool = False) -> None:
        """Record progress; draws at most every ``interval`` seconds."""
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
            now = time.monotonic()
            if not force and now - self._last < self._interval:
                return
            self._last = now
            line = self.line(now)
            if self._tty:
                self._stream.write("\r\x1b[2K" + line)
            else:
                self._stream.write(line + "\n")
            self._stream.flush()

    def line(self, now: float | None = None) -> str:
        """The current state as one line."""
        elapsed = max(1e-9, (now or time.monotonic()) - self._started)
        rate = self.done / elapsed
        total = self.total
        if total:
            fraction = min(1.0, self.done / total)
            left = (total - self.done) / rate if rate > 0 else math.inf
            eta = _duration(left) if math.isfinite(left) else "?"
            bar = ""
            if self._tty:
                width = 28
                filled = int(fraction * width)
                bar = "[" + "#" * filled + "." * (width - filled) + "] "
            return (
                f"{self.label}: {bar}{self.done:,}/{total:,} ({fraction:.0%}) "
                f"{rate:,.1f}/s ETA {eta}"
            )
        return f"{self.label}: {self.done:,} {rate:,.1f}/s elapsed {_duration(elapsed)}"

    def close(self) -> None:
        """Draw the final state and end the line."""
        self.update(self.done, force=True)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


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
