"""SIGINT and SIGTERM for the long-running commands: the first stops gracefully, a second at once.

``newswatch run``, ``pipeline``, ``replay``, ``ingest`` and ``notify`` stop the same way.
The first SIGINT or SIGTERM sets the command's stop event and logs what stopping does
(the pipeline drains, the connectors finish the publish in flight, the notifier leaves
what it has not delivered); the command then ends normally. A second signal raises
`KeyboardInterrupt` at once, even after the drain has finished.

Example::

    stop = threading.Event()
    restore = stop_on_signals(stop, "draining (repeat to exit now)", logger=logger)
    try:
        work_until(stop)
    finally:
        restore()
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["interrupted", "stop_on_signals"]

_logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Set once a SIGINT/SIGTERM asked this process to stop.
_SIGNALLED = threading.Event()


def interrupted() -> bool:
    """True once a SIGINT/SIGTERM asked this process to stop (not an idle end)."""
    return _SIGNALLED.is_set()


def stop_on_signals(
    stop: threading.Event, stopping: str, *, logger: logging.Logger | None = None
) -> Callable[[], None]:
    """Set ``stop`` on the first SIGINT/SIGTERM; a signal that finds it set exits at once.

    Args:
        stop: The event the first signal sets.
        stopping: What stopping does, logged as a warning after the signal's name.
        logger: The logger of the component that stops (default: this module's).

    Returns:
        The undo: it puts the previous handlers back, unless a signal asked this
        process to stop; then a further signal still exits at once instead of
        falling back to the default handler. Signal handlers belong to the main
        thread: on any other, nothing is installed and the undo does nothing.
    """
    log = logger or _logger
    if threading.current_thread() is not threading.main_thread():
        return _nothing

    def exit_now(signum: int, _frame: FrameType | None) -> None:
        log.warning("second %s: exiting without draining", signal.Signals(signum).name)
        raise KeyboardInterrupt

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            exit_now(signum, frame)
        log.warning("%s: %s", signal.Signals(signum).name, stopping)
        _SIGNALLED.set()
        stop.set()

    previous = {s: signal.signal(s, handle) for s in _SIGNALS}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, exit_now if _SIGNALLED.is_set() else handler)

    return restore


def _nothing() -> None:
    """The undo when nothing was installed."""
