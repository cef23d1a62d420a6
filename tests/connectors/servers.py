"""A scriptable feed server on a loopback address, for connector tests.

Each path answers with a list of `Reply`s, one per request (the last one
repeats). A `Reply` can also honour conditional GETs, stall, drip, stream
forever or send bytes that are not HTTP at all.
"""

from __future__ import annotations

import contextlib
import email.utils
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Reply:
    """One answer of the feed server."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    """Send this ETag, and answer 304 to a request that presents it."""
    last_modified: float | None = None
    """Send this Last-Modified (Unix time), and answer 304 to If-Modified-Since it."""
    delay: float = 0.0
    """Seconds to wait before answering."""
    drip: float = 0.0
    """Send the body one byte per this many seconds."""
    endless: bool = False
    """Stream 64 KiB chunks until the client goes away (no Content-Length)."""
    raw: bytes | None = None
    """Send these bytes instead of an HTTP response."""


@dataclass
class Request:
    path: str
    headers: dict[str, str]


class FeedServer:
    """A threaded HTTP(S) server on ``host`` (127.0.0.1 by default) and a free port."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.routes: dict[str, list[Reply]] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, 0), self._handler())
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def route(self, path: str, *replies: Reply) -> str:
        """Answer ``path`` with ``replies`` in turn; returns its URL."""
        self.routes[path] = list(replies)
        return self.url(path)

    def hits(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    def last_request(self, path: str) -> Request:
        return [r for r in self.requests if r.path == path][-1]

    def _next(self, path: str) -> Reply:
        with self._lock:
            replies = self.routes.get(path)
            if not replies:
                return Reply(status=404, body=b"not found")
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    server.requests.append(Request(self.path, headers))
                reply = server._next(self.path)
                with contextlib.suppress(OSError):
                    self._answer(reply, headers)

            def _answer(self, reply: Reply, headers: dict[str, str]) -> None:
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.raw is not None:
                    self.wfile.write(reply.raw)
                    return
                modified = (
                    email.utils.formatdate(reply.last_modified, usegmt=True)
                    if reply.last_modified is not None
                    else None
                )
                fresh = (reply.etag and headers.get("if-none-match") == reply.etag) or (
                    modified and headers.get("if-modified-since") == modified
                )
                self.send_response(304 if fresh else reply.status)
                if reply.etag:
                    self.send_header("ETag", reply.etag)
                if modified:
                    self.send_header("Last-Modified", modified)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if fresh:
                    self.end_headers()
                    return
                if reply.endless:
                    self.end_headers()
                    chunk = b"<item>" + b"x" * 65_530
                    for _ in range(100_000):  # bounded: ~6 GB, never reached
                        self.wfile.write(chunk)
                    return
                if "Content-Length" not in reply.headers:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if reply.drip:
                    for byte in reply.body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(reply.drip)
                else:
                    self.wfile.write(reply.body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@contextlib.contextmanager
def tls_certificate(directory: Path, host: str) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for ``host`` made with the openssl CLI: (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={host}",
            "-addext", f"subjectAltName=DNS:{host}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    yield cert, key
