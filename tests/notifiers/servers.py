"""A scriptable webhook receiver on 127.0.0.1, for notifier tests.

Each request gets the next `Answer` (the last one repeats). An answer can hold
the request open until an event is set, which lets a test kill the notifier in
the middle of a delivery.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    """How the receiver answers one request."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None
    """Keep the request open (no answer) until this is set."""


@dataclass
class Received:
    """A request as the receiver got it."""

    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes
    at: float
    """time.monotonic() at arrival."""


class WebhookServer:
    """A threaded HTTP server that records POSTs and answers them as scripted."""

    def __init__(self, *answers: Answer, port: int = 0) -> None:
        self.answers = list(answers) or [Answer()]
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/secret-path"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening: connections are refused from now on."""
        for answer in self.answers:
            if answer.hold is not None:
                answer.hold.set()
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The first ``count`` requests, once they arrived."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{count} requests expected in {timeout:.0f} s, got {len(self.received)}"
                    )
                self._changed.wait(left)
            return list(self.received[:count])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._changed:
                    index = len(server.received)
                    server.received.append(Received(headers, body, time.monotonic()))
                    server._changed.notify_all()
                answer = server.answers[min(index, len(server.answers) - 1)]
                if answer.hold is not None:
                    answer.hold.wait()
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the client went away (a test killed it)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
