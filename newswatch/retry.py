"""Waiting before trying again, the same way everywhere: Kafka outages (tenacity), Retry-After.

`retry_kafka` runs an attempt again on Kafka errors with exponential backoff
(0.5 s doubling to 10 s), logging each retry, for up to ``seconds`` (default
300 s: a broker restart; longer outages fail the bundle and a restarted worker
resumes from the last committed offsets; None: until it succeeds); errors in
``final`` (a commit refused to a fenced member) and other exceptions are raised
at once.

Example::

    consumer = retry_kafka("offset committer", lambda: make_consumer(servers, group_id=group))

`retry_after_seconds` reads an HTTP ``Retry-After`` header for the feed fetcher and
the webhook sink alike.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import tenacity
from kafka import errors as kafka_errors

__all__ = ["retry_after_seconds", "retry_kafka"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def retry_kafka(
    what: str,
    attempt: Callable[[], T],
    *,
    seconds: float | None = 300.0,
    final: tuple[type[BaseException], ...] = (),
    retry_on: tuple[type[BaseException], ...] = (kafka_errors.KafkaError,),
    max_wait: float = 10.0,
    level: int = logging.WARNING,
) -> T:
    """``attempt()``, retried on ``retry_on`` errors (not ``final`` ones) for ``seconds``.

    Waits grow from 0.5 s to ``max_wait``; each retry is logged at ``level``.
    """

    def log(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.log(level, "%s failed (%s); retrying in %.1f s", what, error, wait)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(
            lambda exc: isinstance(exc, retry_on) and not isinstance(exc, final)
        ),
        wait=tenacity.wait_exponential(multiplier=0.5, min=0.5, max=max_wait),
        stop=tenacity.stop_never if seconds is None else tenacity.stop_after_delay(seconds),
        before_sleep=log,
        reraise=True,
    )
    return retrying(attempt)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
