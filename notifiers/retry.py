"""Delivery attempts: exponential backoff with jitter, Retry-After honoured, a time limit.

`deliver` tries a sink until it succeeds, fails permanently, or has failed for
``give_up_after`` seconds; between attempts it waits 1, 2, 4 ... seconds (up
to ``max_backoff``) plus up to a second of jitter, or as long as the receiver
asked with ``Retry-After`` (never past the time limit). A ``stop`` event cuts a
wait short: the notification is then abandoned, to be delivered after the next
start.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import tenacity

from notifiers.errors import Abandoned, PermanentFailure, TransientFailure
from notifiers.messages import Notification
from notifiers.routes import Sink

__all__ = ["Outcome", "deliver"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a delivery ended."""

    delivered: bool
    abandoned: bool = False
    error: str = ""
    """Exception type of the last failure ('' when delivered)."""
    reason: str = ""
    """Why it failed, for the dead letter."""
    attempts: int = 0


def deliver(
    sink: Sink,
    notification: Notification,
    *,
    give_up_after: float,
    max_backoff: float,
    stop: threading.Event,
    what: str = "",
) -> Outcome:
    """Deliver ``notification`` through ``sink``, retrying transient failures."""
    started = time.monotonic()
    what = what or f"{notification.kind} alert {notification.alert_id}"
    backoff = tenacity.wait_exponential_jitter(initial=1.0, max=max_backoff, jitter=1.0)

    def wait(state: tenacity.RetryCallState) -> float:
        remaining = max(0.0, give_up_after - (time.monotonic() - started))
        exc = state.outcome.exception() if state.outcome else None
        asked = getattr(exc, "retry_after", None)
        return min(asked if asked is not None else backoff(state), remaining)

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Abandoned()

    def log_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "%s: attempt %d for %s failed (%s); next in %.1f s",
            notification.route,
            state.attempt_number,
            what,
            exc,
            delay,
        )

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientFailure),
        stop=tenacity.stop_after_delay(give_up_after),
        wait=wait,
        sleep=sleep,
        before_sleep=log_retry,
        reraise=True,
    )
    attempts = 0
    try:
        for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                if stop.is_set() and attempts > 1:
                    raise Abandoned()
                sink.deliver(notification)
    except Abandoned:
        return Outcome(False, abandoned=True, attempts=attempts)
    except PermanentFailure as exc:
        return Outcome(False, error=type(exc).__name__, reason=str(exc), attempts=attempts)
    except TransientFailure as exc:
        elapsed = time.monotonic() - started
        reason = f"gave up after {attempts} attempts in {elapsed:.0f} s: {exc}"
        return Outcome(False, error="RetriesExhausted", reason=reason, attempts=attempts)
    return Outcome(True, attempts=attempts)
