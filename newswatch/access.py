"""Who may read the web page and the metrics endpoint.

Both bind to 127.0.0.1 by default and then need no credentials. Any other bind
address needs a bearer token (``NEWSWATCH_SERVE_TOKEN``) or a basic-auth user and
password (``NEWSWATCH_SERVE_USER``, ``NEWSWATCH_SERVE_PASSWORD``); without them the
server refuses to start. Configured credentials are required on loopback too.

A token is accepted as ``Authorization: Bearer <token>`` (scrapers, curl) or as the
password of basic auth with any user name (browsers, which prompt for basic auth).
Every comparison is constant-time (`hmac.compare_digest`); no credential is logged
or rendered.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass, field

from newswatch.config import ServeSettings
from newswatch.errors import ConfigError

__all__ = ["Credentials", "is_loopback", "require_credentials"]

#: Paths answered without credentials: liveness and readiness carry no data.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Credentials:
    """The credentials a server requires; none when both are empty."""

    token: str = field(default="", repr=False)
    user: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @classmethod
    def from_settings(cls, serve: ServeSettings) -> Credentials:
        if bool(serve.user) != bool(serve.password):
            raise ConfigError(
                "basic auth needs both NEWSWATCH_SERVE_USER and NEWSWATCH_SERVE_PASSWORD"
            )
        return cls(serve.token, serve.user, serve.password)

    @property
    def required(self) -> bool:
        return bool(self.token or self.user)

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries valid credentials."""
        if not self.required:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer":
            return bool(self.token) and _same(value, self.token)
        if scheme != "basic":
            return False
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        # Evaluate both checks always, so timing does not tell which one failed.
        by_token = bool(self.token) and _same(password, self.token)
        by_user = bool(self.user) and (_same(user, self.user) & _same(password, self.password))
        return by_token or by_user


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def require_credentials(host: str, credentials: Credentials, what: str) -> None:
    """Refuse a non-loopback bind without credentials.

    Raises:
        ConfigError: ``host`` is not loopback and no credentials are configured.
    """
    if not is_loopback(host) and not credentials.required:
        raise ConfigError(
            f"{what} would listen on {host}, which is not loopback, without credentials: set "
            "NEWSWATCH_SERVE_TOKEN, or NEWSWATCH_SERVE_USER and NEWSWATCH_SERVE_PASSWORD, in the "
            "environment (or bind to 127.0.0.1)"
        )
