"""Logging set-up, done once by the CLI."""

import logging
import time
from collections.abc import Callable

__all__ = ["RepeatFilter", "configure_logging"]


class RepeatFilter(logging.Filter):
    """Passes a library's repeated message once per ``window`` seconds, with a count of the rest.

    kafka-python logs every failed reconnect at ERROR, dozens a second while a
    broker is down; a message is one logger, level and format string (the
    arguments, e.g. the node, may differ). The first passes, the others within
    ``window`` seconds are counted, and the next one to pass says how many there were.
    """

    def __init__(
        self, prefix: str, window: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        passed_at, held = self._seen.get(key, (float("-inf"), 0))
        if now - passed_at < self.window:
            self._seen[key] = (passed_at, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} [and {held} more like it in the last {self.window:.0f} s]"
        return True


def configure_logging(verbosity: int = 0) -> None:
    """Log to stderr under the ``newswatch`` names; leave alone a host app's set-up."""
    root = logging.getLogger()
    if root.handlers:
        return
    level = {0: logging.INFO}.get(verbosity, logging.DEBUG if verbosity > 0 else logging.WARNING)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # Third-party libraries are chatty at INFO.
    for noisy in ("kafka", "apache_beam", "urllib3", "absl"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if level > logging.DEBUG:
        for handler in root.handlers:
            handler.addFilter(RepeatFilter("kafka"))
