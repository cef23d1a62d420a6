"""The webhook sink: one HTTP POST per notification.

Headers: ``Content-Type: application/json``, ``Idempotency-Key`` (the alert id,
the same on every re-delivery), ``X-Newswatch-Alert-Id`` and, with a secret,
``X-Newswatch-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact body
bytes under the secret. A receiver verifies it with::

    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    hmac.compare_digest(expected, request.headers["X-Newswatch-Signature"])

2xx delivers; 408, 429, 5xx and connection errors are retried (``Retry-After``
honoured); any other status, redirects included (a POST must not be turned into
a GET elsewhere), is a permanent failure. Written on the standard library's
urllib: one POST needs no client library.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from newswatch.config import WebhookSettings
from newswatch.errors import ConfigError
from newswatch.retry import retry_after_seconds
from notifiers.errors import PermanentFailure, TransientFailure
from notifiers.messages import Notification

__all__ = ["SIGNATURE_HEADER", "WebhookSink", "sign"]

SIGNATURE_HEADER = "X-Newswatch-Signature"

_RETRIED_STATUSES = {408, 425, 429}


def sign(secret: str | bytes, body: bytes) -> str:
    """The signature header value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


class WebhookSink:
    """POSTs notifications to one URL."""

    kind = "webhook"

    def __init__(
        self, settings: WebhookSettings, secret: str | None, where: str = "webhook"
    ) -> None:
        parsed = urllib.parse.urlsplit(settings.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"{where}: webhook.url must be an http(s) URL")
        if settings.format not in ("json", "slack"):
            raise ConfigError(f"{where}: webhook.format must be 'json' or 'slack'")
        self.settings = settings
        self._secret = secret
        # The path and query of a webhook URL are often its credential: logs get the origin.
        self._origin = f"{parsed.scheme}://{parsed.netloc.rpartition('@')[2]}"
        self._opener = urllib.request.build_opener(_NoRedirects)

    def __str__(self) -> str:
        return f"webhook {self._origin}"

    def __repr__(self) -> str:
        return f"WebhookSink({self._origin!r})"

    def request(self, notification: Notification) -> urllib.request.Request:
        """The HTTP request for ``notification`` (body, headers, signature)."""
        body = notification.slack_body if self.settings.format == "slack" else notification.body
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "newswatch-notifier/0.1",
            "Idempotency-Key": notification.alert_id,
            "X-Newswatch-Alert-Id": notification.alert_id,
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        return urllib.request.Request(self.settings.url, data=body, headers=headers, method="POST")

    def deliver(self, notification: Notification) -> None:
        request = self.request(notification)
        try:
            with self._opener.open(request, timeout=self.settings.timeout) as response:
                response.read(64 * 1024)
        except urllib.error.HTTPError as exc:
            detail = _excerpt(exc)
            reason = f"HTTP {exc.code} {exc.reason} from {self}" + (f": {detail}" if detail else "")
            if exc.code in _RETRIED_STATUSES or exc.code >= 500:
                raise TransientFailure(
                    reason, retry_after_seconds(exc.headers.get("Retry-After"))
                ) from exc
            raise PermanentFailure(reason) from exc
        except (urllib.error.URLError, OSError) as exc:
            cause = getattr(exc, "reason", exc)
            raise TransientFailure(f"{self}: {cause}") from exc


def _excerpt(exc: urllib.error.HTTPError, limit: int = 300) -> str:
    try:
        text = exc.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""
    return " ".join(text.split())
