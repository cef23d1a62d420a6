"""SIGINT/SIGTERM: the first one stops gracefully, a second one exits at once.

The commands that use this (run, pipeline, ingest, notify) are stopped for real in
test_shutdown.py and the connector and notifier tests; these pin the shared rules.
"""

from __future__ import annotations

import logging
import signal
import threading

import pytest

from newswatch import signals


@pytest.fixture(autouse=True)
def no_signal_yet(monkeypatch):
    """Each test starts in a process that no signal has asked to stop."""
    monkeypatch.setattr(signals, "_SIGNALLED", threading.Event())
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in handlers.items():
        signal.signal(s, handler)


def test_first_signal_sets_stop_and_logs_what_stopping_does(caplog):
    stop = threading.Event()
    restore = signals.stop_on_signals(stop, "draining (repeat to exit now)")
    try:
        with caplog.at_level(logging.WARNING):
            signal.raise_signal(signal.SIGTERM)
    finally:
        restore()
    assert stop.is_set() and signals.interrupted()
    assert "SIGTERM: draining (repeat to exit now)" in caplog.messages


def test_a_second_signal_exits_at_once():
    stop = threading.Event()
    restore = signals.stop_on_signals(stop, "draining")
    try:
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        restore()


def test_a_signal_after_a_signalled_drain_still_exits_at_once():
    stop = threading.Event()
    restore = signals.stop_on_signals(stop, "draining")
    signal.raise_signal(signal.SIGTERM)
    restore()
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)


def test_without_a_signal_the_undo_puts_the_previous_handlers_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    restore = signals.stop_on_signals(threading.Event(), "draining")
    assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    restore()
    assert {s: signal.getsignal(s) for s in before} == before
    assert not signals.interrupted()


def test_off_the_main_thread_nothing_is_installed():
    before = signal.getsignal(signal.SIGTERM)
    restores = []
    worker = threading.Thread(
        target=lambda: restores.append(signals.stop_on_signals(threading.Event(), "draining"))
    )
    worker.start()
    worker.join()
    assert signal.getsignal(signal.SIGTERM) is before
    restores[0]()  # the undo does nothing
    assert signal.getsignal(signal.SIGTERM) is before
