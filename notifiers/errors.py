"""Why a delivery attempt failed, as the retry policy needs to know it."""

from __future__ import annotations

__all__ = ["Abandoned", "DeliveryFailed", "PermanentFailure", "TransientFailure"]


class DeliveryFailed(Exception):
    """A sink could not deliver a notification."""


class TransientFailure(DeliveryFailed):
    """Worth another attempt: a connection error, a timeout, HTTP 408/429/5xx, SMTP 4xx."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds the receiver asked us to wait (HTTP Retry-After), if it did."""


class PermanentFailure(DeliveryFailed):
    """No attempt will succeed: HTTP 4xx (but 408/429), SMTP 5xx, a refused command."""


class Abandoned(Exception):
    """The notifier is stopping: the delivery is left for the next start (not committed)."""
