"""The exceptions connectors raise on purpose.

`FetchError`s say what happened to which URL; the service turns them into
feed-health entries and backoff, never into a crash. `SourceDataError`s name
what is wrong with a feed's or file's content; they become `DeadLetter`s.
"""

from __future__ import annotations

from newswatch.errors import NewswatchError

__all__ = [
    "BadResponse",
    "ConnectionFailed",
    "DocumentTooLarge",
    "EmptyDocument",
    "EmptyEntry",
    "FeedTooLarge",
    "FetchError",
    "FetchTimeout",
    "HostNotFound",
    "MalformedDocument",
    "NotAFeed",
    "PrivateAddressRefused",
    "SourceDataError",
    "TooManyRedirects",
    "UndecodableDocument",
    "UnexpectedStatus",
    "UnsupportedURL",
]


class FetchError(NewswatchError):
    """A feed could not be fetched.

    Attributes:
        url: The URL of the hop that failed.
        reason: What happened, without the URL.
        retry_after: Seconds the server asked us to wait (Retry-After), if any.
    """

    def __init__(self, url: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url
        self.reason = message
        self.retry_after = retry_after


class UnsupportedURL(FetchError):
    """The URL is not http(s), has no host, or carries credentials."""


class HostNotFound(FetchError):
    """DNS gave no address for the host."""


class PrivateAddressRefused(FetchError):
    """The host resolves to a loopback, private, link-local or otherwise non-public address."""


class TooManyRedirects(FetchError):
    """The redirect chain is longer than ``max_redirects``."""


class FeedTooLarge(FetchError):
    """The response body exceeds ``max_feed_bytes`` (checked while streaming)."""


class FetchTimeout(FetchError):
    """Connecting, reading or the whole fetch took too long."""


class ConnectionFailed(FetchError):
    """The connection was refused, reset or failed the TLS handshake."""


class BadResponse(FetchError):
    """The server's answer is not valid HTTP, or uses a content encoding we cannot read."""


class UnexpectedStatus(FetchError):
    """The server answered with an HTTP status other than 200 or 304.

    Attributes:
        status: The HTTP status code.
    """

    def __init__(
        self, url: str, status: int, reason: str = "", *, retry_after: float | None = None
    ) -> None:
        super().__init__(url, f"HTTP {status} {reason}".strip(), retry_after=retry_after)
        self.status = status


class SourceDataError(ValueError):
    """Input from a feed or file that cannot become an article; it goes to the dead letters."""


class NotAFeed(SourceDataError):
    """The bytes are empty, an HTML page or too broken to yield any entry."""


class EmptyEntry(SourceDataError):
    """A feed entry or document row has neither a title nor any text."""


class EmptyDocument(SourceDataError):
    """A local document is empty or holds only whitespace."""


class UndecodableDocument(SourceDataError):
    """A local document is binary or in no encoding we can read."""


class MalformedDocument(SourceDataError):
    """A local document does not have the structure its extension promises (JSON, XML, ...)."""


class DocumentTooLarge(SourceDataError):
    """A local document is larger than ``max_feed_bytes``."""
