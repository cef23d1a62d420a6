"""Safe HTTP fetching of feeds: the only place connectors touch the network.

`Fetcher.fetch` does one conditional GET and follows redirects by hand, so
that every hop is checked the same way:

* only ``http``/``https`` URLs without credentials;
* the host is resolved once, every DNS answer is checked (loopback, private,
  link-local, multicast, reserved, unspecified and other non-global addresses
  are refused unless ``allow_private_addresses`` or ``allowed_networks`` say
  otherwise), and the socket connects to that checked address, so a second
  DNS answer can never sneak in between check and connect;
* TLS verifies the certificate against the URL's host name, not the address;
* connect and per-read timeouts, plus a deadline for the whole fetch enforced
  by a watchdog, so a server dripping one byte at a time cannot hold a poller;
* the body is counted while it streams in (after gzip decoding too) and the
  fetch stops as soon as it passes ``max_feed_bytes``;
* ``ETag``/``Last-Modified`` validators are sent back, and 304 comes back as
  ``FetchResult.not_modified``;
* ``Retry-After`` on 429/503 (and other errors) is passed on in the exception.

It is built on the standard library's `http.client` rather than urllib3:
pinning the connection to a pre-validated address needs only a pre-connected
socket there, and it adds no dependency.

Example::

    fetcher = Fetcher(settings.connectors)
    result = fetcher.fetch("https://feeds.bbci.co.uk/news/world/rss.xml", etag=old_etag)
    if not result.not_modified:
        parse_feed(result.body, result.url, content_type=result.content_type)
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from connectors.errors import (
    BadResponse,
    ConnectionFailed,
    FeedTooLarge,
    FetchError,
    FetchTimeout,
    HostNotFound,
    PrivateAddressRefused,
    TooManyRedirects,
    UnexpectedStatus,
    UnsupportedURL,
)
from newswatch.config import ConnectorSettings
from newswatch.errors import ConfigError
from newswatch.retry import retry_after_seconds

__all__ = ["FetchResult", "Fetcher", "address_allowed"]

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of one successful fetch (200 or 304)."""

    url: str
    """The URL after redirects."""
    status: int
    """200 (body holds the feed) or 304 (not modified, body empty)."""
    body: bytes
    etag: str | None
    """Validator to send back as If-None-Match next time."""
    last_modified: str | None
    """Validator to send back as If-Modified-Since next time."""
    content_type: str
    redirects: int = 0

    @property
    def not_modified(self) -> bool:
        """True when the server said the feed has not changed since the validators."""
        return self.status == 304


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_allowed(address: IPAddress, allowed_networks: Iterable[IPNetwork] = ()) -> bool:
    """Whether a feed may be fetched from this address under the default (public-only) policy.

    Args:
        address: A resolved address.
        allowed_networks: Networks allowed even though they are not public.
    """
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address):
        # Addresses that embed an IPv4 address are judged by it as well.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            candidates.append(embedded)
        if address.teredo is not None:
            candidates.append(address.teredo[1])
    networks = list(allowed_networks)
    if any(address in net for net in networks if net.version == address.version):
        return True
    return all(_is_public(ip) for ip in candidates)


def _is_public(ip: IPAddress) -> bool:
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP connection over a socket that is already connected (and maybe TLS-wrapped)."""

    def __init__(self, host: str, port: int, sock: socket.socket, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.sock = sock

    def connect(self) -> None:
        # Reconnecting would resolve the host name again; this connection is single-use.
        raise ConnectionError("pinned connection is closed")


class _Watchdog:
    """Shuts a socket down when the fetch deadline passes, interrupting any blocked read."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket | None) -> None:
        self._sock = sock

    def _fire(self) -> None:
        self.expired = True
        if self._sock is not None:
            # The plain socket method: SSLSocket.shutdown would tear down its SSL
            # object under the feet of the reading thread.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


class Fetcher:
    """Fetches feeds over HTTP(S) with the safety rules in the module docstring.

    Args:
        settings: Timeouts, caps, address policy and User-Agent.
        ssl_context: TLS settings; defaults to the system trust store with
            certificate and host name verification.

    Raises:
        ConfigError: ``allowed_networks`` holds something that is not a network.
    """

    def __init__(
        self, settings: ConnectorSettings, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.settings = settings
        self._ssl = ssl_context or ssl.create_default_context()
        try:
            self._allowed_networks = [
                ipaddress.ip_network(net, strict=False) for net in settings.allowed_networks
            ]
        except ValueError as exc:
            raise ConfigError(f"--allowed-networks: {exc}") from exc

    def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        """GET a feed, following at most ``max_redirects`` redirects.

        Args:
            url: The feed URL.
            etag: ETag of the last fetched version, sent as If-None-Match.
            last_modified: Last-Modified of the last fetched version, sent as If-Modified-Since.

        Raises:
            FetchError: A subclass that names what went wrong.
        """
        watchdog = _Watchdog(self.settings.fetch_deadline)
        try:
            current = url
            for redirects in range(self.settings.max_redirects + 1):
                status, location, result = self._request(current, etag, last_modified, watchdog)
                if location is None:
                    assert result is not None
                    return FetchResult(
                        url=current,
                        status=result.status,
                        body=result.body,
                        etag=result.etag,
                        last_modified=result.last_modified,
                        content_type=result.content_type,
                        redirects=redirects,
                    )
                target = urljoin(current, location)
                if status in (301, 308):
                    logger.info("feed %s moved permanently to %s", url, target)
                else:
                    logger.debug("feed %s redirects (%d) to %s", url, status, target)
                current = target
            raise TooManyRedirects(
                url, f"more than {self.settings.max_redirects} redirects (last to {current})"
            )
        finally:
            watchdog.cancel()

    def _request(
        self, url: str, etag: str | None, last_modified: str | None, watchdog: _Watchdog
    ) -> tuple[int, str | None, FetchResult | None]:
        """One hop: validate, resolve, connect, GET. Returns (status, redirect target, result)."""
        scheme, host, port, host_header, target = self._split(url)
        addresses = self._resolve(url, host, port)
        sock = self._connect(url, host, scheme, addresses, watchdog)
        conn = _PinnedConnection(host, port, sock, self.settings.read_timeout)
        try:
            conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
            headers = {
                "Host": host_header,
                "User-Agent": self.settings.user_agent,
                "Accept": _ACCEPT,
                "Accept-Encoding": "gzip",
                "Connection": "close",
            }
            if etag:
                headers["If-None-Match"] = etag
            if last_modified:
                headers["If-Modified-Since"] = last_modified
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            response = conn.getresponse()
            status = response.status
            if status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise BadResponse(url, f"HTTP {status} redirect without a Location header")
                return status, location.strip(), None
            if status == 304:
                body = b""
            elif status in (200, 203):
                body = self._read_body(url, response, watchdog)
            else:
                retry_after = retry_after_seconds(response.getheader("Retry-After"))
                raise UnexpectedStatus(url, status, response.reason, retry_after=retry_after)
            new_etag = response.getheader("ETag")
            new_last_modified = response.getheader("Last-Modified")
            if status == 304:
                # A 304 may omit the validators; the ones we sent still hold.
                new_etag = new_etag or etag
                new_last_modified = new_last_modified or last_modified
            result = FetchResult(
                url=url,
                status=status,
                body=body,
                etag=new_etag,
                last_modified=new_last_modified,
                content_type=response.getheader("Content-Type") or "",
            )
            return status, None, result
        except FetchError:
            raise
        except TimeoutError as exc:
            raise FetchTimeout(url, f"no data for {self.settings.read_timeout:g}s") from exc
        except http.client.HTTPException as exc:
            if watchdog.expired:
                raise self._deadline_passed(url) from exc
            message = f"malformed HTTP response ({type(exc).__name__}: {exc})"
            raise BadResponse(url, message) from exc
        except OSError as exc:
            if watchdog.expired:
                raise self._deadline_passed(url) from exc
            raise ConnectionFailed(url, f"connection failed ({exc})") from exc
        except ValueError as exc:  # http.client refuses e.g. a stored validator with a newline
            raise BadResponse(url, f"cannot send the request ({exc})") from exc
        finally:
            watchdog.watch(None)
            conn.close()

    def _deadline_passed(self, url: str) -> FetchTimeout:
        return FetchTimeout(url, f"fetch took longer than {self.settings.fetch_deadline:g}s")

    @staticmethod
    def _split(url: str) -> tuple[str, str, int, str, str]:
        """Check a URL and return (scheme, ASCII host, port, Host header, request target)."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise UnsupportedURL(url, f"not a valid URL ({exc})") from exc
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise UnsupportedURL(url, f"only http and https feeds are fetched, not {scheme!r}")
        if parts.username is not None or parts.password is not None:
            raise UnsupportedURL(url, "credentials in feed URLs are not supported")
        if not parts.hostname:
            raise UnsupportedURL(url, "no host name")
        try:
            host = parts.hostname.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise UnsupportedURL(url, f"host name is not valid IDNA ({exc})") from exc
        default_port = 443 if scheme == "https" else 80
        port = port or default_port
        host_header = f"[{host}]" if ":" in host else host
        if port != default_port:
            host_header = f"{host_header}:{port}"
        target = quote(parts.path or "/", safe="/%;:@&=+$,!~*'()")
        if parts.query:
            target += "?" + quote(parts.query, safe="/%;:@&=+$,!~*'()?")
        return scheme, host, port, host_header, target

    def _resolve(self, url: str, host: str, port: int) -> list[tuple[int, tuple]]:
        """Resolve once and check every answer; refuse the host if any answer is not allowed."""
        try:
            infos = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except socket.gaierror as exc:
            raise HostNotFound(url, f"cannot resolve {host} ({exc.strerror or exc})") from exc
        except UnicodeError as exc:
            raise UnsupportedURL(url, f"host name {host!r} is not valid ({exc})") from exc
        addresses: list[tuple[int, tuple]] = []
        refused: list[str] = []
        for family, _type, _proto, _name, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if not self.settings.allow_private_addresses and not address_allowed(
                ip, self._allowed_networks
            ):
                refused.append(str(ip))
            if (family, sockaddr) not in addresses:
                addresses.append((family, sockaddr))
        if refused:
            # One bad answer refuses the host: a name that mixes public and internal
            # addresses is either misconfigured or a rebinding attempt.
            raise PrivateAddressRefused(
                url,
                f"{host} resolves to non-public address {', '.join(sorted(set(refused)))} "
                "(set allow_private_addresses or allowed_networks to allow it)",
            )
        if not addresses:
            raise HostNotFound(url, f"no IPv4/IPv6 address for {host}")
        return addresses

    def _connect(
        self,
        url: str,
        host: str,
        scheme: str,
        addresses: list[tuple[int, tuple]],
        watchdog: _Watchdog,
    ) -> socket.socket:
        """Connect to the first reachable checked address; wrap in TLS for https."""
        failure: FetchError | None = None
        for family, sockaddr in addresses:
            if watchdog.expired:
                raise self._deadline_passed(url)
            sock = socket.socket(family, socket.SOCK_STREAM)
            watchdog.watch(sock)
            sock.settimeout(self.settings.connect_timeout)
            try:
                sock.connect(sockaddr)
            except TimeoutError:
                sock.close()
                seconds = self.settings.connect_timeout
                failure = FetchTimeout(url, f"connect to {sockaddr[0]} timed out ({seconds:g}s)")
                continue
            except OSError as exc:
                sock.close()
                failure = ConnectionFailed(url, f"cannot connect to {sockaddr[0]} ({exc})")
                continue
            sock.settimeout(self.settings.read_timeout)
            if scheme == "https":
                try:
                    sock = self._ssl.wrap_socket(sock, server_hostname=host)
                except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
                    sock.close()
                    if isinstance(exc, TimeoutError):
                        raise FetchTimeout(url, "TLS handshake timed out") from exc
                    message = f"TLS handshake with {host} failed ({exc})"
                    raise ConnectionFailed(url, message) from exc
                watchdog.watch(sock)
            return sock
        assert failure is not None
        raise failure

    def _read_body(
        self, url: str, response: http.client.HTTPResponse, watchdog: _Watchdog
    ) -> bytes:
        """Stream the body, decoding gzip, and stop as soon as it passes the size cap."""
        limit = self.settings.max_feed_bytes
        declared = response.getheader("Content-Length")
        if declared and declared.strip().isdigit() and int(declared) > limit:
            raise FeedTooLarge(url, f"Content-Length {int(declared)} exceeds {limit} bytes")
        encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "identity":
            decoder = None
        else:
            raise BadResponse(url, f"unsupported Content-Encoding {encoding!r}")
        parts: list[bytes] = []
        size = 0
        while True:
            # read1 does at most one socket read, so the read timeout applies per read.
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            if decoder is not None:
                try:
                    # max_length caps what one compressed chunk may expand to.
                    chunk = decoder.decompress(chunk, limit - size + 1)
                except zlib.error as exc:
                    raise BadResponse(url, f"corrupt gzip body ({exc})") from exc
            size += len(chunk)
            if size > limit:
                raise FeedTooLarge(url, f"body exceeds {limit} bytes")
            parts.append(chunk)
        if watchdog.expired:
            raise self._deadline_passed(url)
        if response.length:  # bytes promised by Content-Length that never came
            raise BadResponse(url, f"connection closed {response.length} bytes before the end")
        if decoder is not None:
            tail = decoder.flush()
            size += len(tail)
            if size > limit:
                raise FeedTooLarge(url, f"body exceeds {limit} bytes")
            parts.append(tail)
        return b"".join(parts)
