"""Broker checks, consumer lag and readiness; the worker's metrics endpoint.

`check_broker` takes one look at the broker: can it be reached, which newswatch
topics exist with their beginning and end offsets, and how far the pipeline's
consumer group is behind on the articles topic (end offset minus committed
offset, per partition). `BrokerMonitor` repeats that in a background thread,
keeps the last result for ``/readyz`` and ``newswatch status``, and sets the
``newswatch_broker_up`` and ``newswatch_consumer_lag`` gauges.

Readiness (``/readyz``) means: the last broker check succeeded recently, the
process's consumers are running (the host says what that means), and the
pipeline's lag is at most ``serve.max_lag``.

`worker_endpoint` serves ``/metrics``, ``/healthz`` and ``/readyz`` for the worker
(``newswatch run|pipeline --metrics-port``) on a small threaded HTTP server from
the standard library: three fixed paths need no web framework in the worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kafka import TopicPartition
from kafka import errors as kafka_errors

from newswatch import metrics
from newswatch.access import OPEN_PATHS, Credentials, require_credentials
from newswatch.config import Settings
from newswatch.errors import ConfigError
from newswatch.flags import add_flags
from newswatch.topics import make_consumer, topic_specs

__all__ = [
    "BrokerCheck",
    "BrokerMonitor",
    "Readiness",
    "add_metrics_flags",
    "check_broker",
    "monitor_consumer",
    "worker_endpoint",
]

logger = logging.getLogger(__name__)

#: Milliseconds one broker request of a check may take.
CHECK_TIMEOUT_MS = 5000

#: What a host reports about its own consumers: (running, detail).
RunningCheck = Callable[[], tuple[bool, str]]


@dataclass
class BrokerCheck:
    """One look at the broker."""

    servers: str
    reachable: bool
    error: str | None = None
    checked_at: float = field(default_factory=time.time)
    """Unix time of the check."""
    seconds: float = 0.0
    """How long the check took."""
    topics: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)
    """Present newswatch topics: partition → (beginning offset, end offset)."""
    missing: list[str] = field(default_factory=list)
    """Configured topics the broker does not have."""
    group: str = ""
    lag: dict[int, int] | None = None
    """Uncommitted records of the pipeline group per articles partition (None: no topic)."""

    @property
    def total_lag(self) -> int | None:
        return None if self.lag is None else sum(self.lag.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "servers": self.servers,
            "reachable": self.reachable,
            "error": self.error,
            "checked_at": self.checked_at,
            "seconds": round(self.seconds, 3),
            "topics": {
                name: {str(p): {"beginning": b, "end": e} for p, (b, e) in parts.items()}
                for name, parts in self.topics.items()
            },
            "missing": self.missing,
            "group": self.group,
            "lag": None if self.lag is None else {str(p): n for p, n in self.lag.items()},
        }


def monitor_consumer(settings: Settings) -> Any:
    """A consumer for checks: the pipeline's group (to read its commits), short timeouts.

    It never subscribes, so it never joins the group nor commits.
    """
    return make_consumer(
        settings.bootstrap_servers,
        group_id=settings.kafka.group_id,
        client_id="newswatch-monitor",
        request_timeout_ms=CHECK_TIMEOUT_MS,
        bootstrap_timeout_ms=CHECK_TIMEOUT_MS,
    )


def check_broker(settings: Settings, consumer: Any | None = None) -> BrokerCheck:
    """Check the broker, the topics' offsets and the pipeline's lag once.

    Args:
        consumer: A `monitor_consumer` to reuse; one is made (and closed) if None.
    """
    servers = settings.bootstrap_servers
    began = time.monotonic()
    own = consumer is None
    try:
        if own:
            consumer = monitor_consumer(settings)
        present = consumer.topics()
        check = BrokerCheck(servers=servers, reachable=True, group=settings.kafka.group_id)
        for spec in topic_specs(settings):
            if spec.name not in present:
                check.missing.append(spec.name)
                continue
            partitions = consumer.partitions_for_topic(spec.name) or ()
            tps = [TopicPartition(spec.name, p) for p in sorted(partitions)]
            beginning = consumer.beginning_offsets(tps, timeout_ms=CHECK_TIMEOUT_MS)
            end = consumer.end_offsets(tps, timeout_ms=CHECK_TIMEOUT_MS)
            check.topics[spec.name] = {tp.partition: (beginning[tp], end[tp]) for tp in sorted(tps)}
        articles = check.topics.get(settings.kafka.articles_topic)
        if articles is not None:
            check.lag = {}
            for partition, (first, last) in articles.items():
                tp = TopicPartition(settings.kafka.articles_topic, partition)
                committed = consumer.committed(tp, timeout_ms=CHECK_TIMEOUT_MS)
                check.lag[partition] = max(0, last - max(committed or 0, first))
    except (kafka_errors.KafkaError, OSError) as exc:
        check = BrokerCheck(servers=servers, reachable=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        if own and consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()
    check.seconds = time.monotonic() - began
    return check


@dataclass(frozen=True)
class Readiness:
    """The answer of ``/readyz``: ready, and each check with its detail."""

    ready: bool
    checks: dict[str, dict[str, Any]]

    def to_json(self) -> bytes:
        return json.dumps({"ready": self.ready, "checks": self.checks}, indent=1).encode()


class BrokerMonitor:
    """Checks the broker every ``interval`` seconds in a daemon thread.

    Args:
        running: Reports whether the host's consumers run, for readiness.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        running: RunningCheck,
        interval: float | None = None,
        max_lag: int | None = None,
    ) -> None:
        self._settings = settings
        self._running = running
        self._interval = settings.serve.refresh if interval is None else interval
        self._max_lag = settings.serve.max_lag if max_lag is None else max_lag
        self._stop = threading.Event()
        self._checked = threading.Event()
        self._latest: BrokerCheck | None = None
        self._thread = threading.Thread(target=self._loop, name="broker-monitor", daemon=True)

    @property
    def latest(self) -> BrokerCheck | None:
        return self._latest

    def start(self) -> BrokerMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * CHECK_TIMEOUT_MS / 1000)

    def wait_checked(self, timeout: float) -> bool:
        """Wait for the first check to finish; True if it did."""
        return self._checked.wait(timeout)

    def _loop(self) -> None:
        consumer = None
        while not self._stop.is_set():
            if consumer is None:
                try:
                    consumer = monitor_consumer(self._settings)
                except (kafka_errors.KafkaError, OSError) as exc:
                    self._record(
                        BrokerCheck(
                            servers=self._settings.bootstrap_servers,
                            reachable=False,
                            error=f"{type(exc).__name__}: {exc}",
                        )
                    )
                    self._stop.wait(self._interval)
                    continue
            self._record(check_broker(self._settings, consumer))
            self._stop.wait(self._interval)
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()

    def _record(self, check: BrokerCheck) -> None:
        if check.reachable != (self._latest.reachable if self._latest else True):
            if check.reachable:
                logger.info("broker %s reachable again", check.servers)
            else:
                logger.warning("broker %s unreachable: %s", check.servers, check.error)
        self._latest = check
        metrics.BROKER_UP.set(1 if check.reachable else 0)
        if check.lag is not None:
            topic = self._settings.kafka.articles_topic
            for partition, lag in check.lag.items():
                metrics.CONSUMER_LAG.labels(check.group, topic, str(partition)).set(lag)
        self._checked.set()

    def readiness(self) -> Readiness:
        """Ready when the broker answered recently, consumers run and the lag is small."""
        check = self._latest
        checks: dict[str, dict[str, Any]] = {}
        stale_after = 3 * self._interval + 2 * CHECK_TIMEOUT_MS / 1000
        if check is None:
            checks["broker"] = {"ok": False, "detail": "not checked yet"}
        elif not check.reachable:
            checks["broker"] = {"ok": False, "detail": f"unreachable: {check.error}"}
        elif time.time() - check.checked_at > stale_after:
            checks["broker"] = {
                "ok": False,
                "detail": f"no answer for {time.time() - check.checked_at:.0f} s",
            }
        else:
            checks["broker"] = {"ok": True, "detail": f"{check.servers} in {check.seconds:.3f} s"}
        running, detail = self._running()
        checks["consumers"] = {"ok": running, "detail": detail}
        if check is None or not check.reachable:
            checks["lag"] = {"ok": False, "detail": "unknown (broker not reachable)"}
        elif check.lag is None:
            checks["lag"] = {"ok": True, "detail": "no articles topic yet"}
        else:
            total = check.total_lag or 0
            checks["lag"] = {
                "ok": total <= self._max_lag,
                "detail": f"{total} records behind (limit {self._max_lag})",
            }
        return Readiness(all(c["ok"] for c in checks.values()), checks)


def _worker_running(max_age: float) -> RunningCheck:
    def running() -> tuple[bool, str]:
        last = metrics.last_reader_poll()
        if last is None:
            return False, "the pipeline has not polled the articles topic yet"
        age = time.time() - last
        if age > max_age:
            return False, f"the pipeline last polled the articles topic {age:.0f} s ago"
        return True, f"the pipeline polled the articles topic {age:.1f} s ago"

    return running


class _ProbeHandler(BaseHTTPRequestHandler):
    server: _ProbeServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in OPEN_PATHS and not self.server.credentials.allows(
            self.headers.get("Authorization")
        ):
            self._send(401, b"credentials required\n", "text/plain", {"WWW-Authenticate": "Basic"})
        elif path == "/metrics":
            self._send(200, metrics.exposition(), metrics.CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/readyz":
            readiness = self.server.monitor.readiness()
            self._send(200 if readiness.ready else 503, readiness.to_json(), "application/json")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics endpoint: " + format, *args)


class _ProbeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], credentials: Credentials, monitor: BrokerMonitor):
        self.credentials = credentials
        self.monitor = monitor
        super().__init__(address, _ProbeHandler)


@contextlib.contextmanager
def worker_endpoint(settings: Settings) -> Iterator[int | None]:
    """Serve the worker's /metrics, /healthz and /readyz while the block runs.

    Off (yields None) when ``serve.metrics_port`` is 0; else yields the bound port.

    Raises:
        ConfigError: A non-loopback ``metrics_host`` without credentials.
    """
    serve = settings.serve
    if not serve.metrics_port:
        yield None
        return
    credentials = Credentials.from_settings(serve)
    require_credentials(serve.metrics_host, credentials, "the metrics endpoint")
    monitor = BrokerMonitor(settings, running=_worker_running(max(30.0, 3 * serve.refresh)))
    try:
        server = _ProbeServer((serve.metrics_host, serve.metrics_port), credentials, monitor)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {serve.metrics_host}:{serve.metrics_port} for metrics: {exc}"
        ) from exc
    monitor.start()
    thread = threading.Thread(target=server.serve_forever, name="metrics-endpoint", daemon=True)
    thread.start()
    port = server.server_address[1]
    logger.info("metrics, health and readiness on http://%s:%d/metrics", serve.metrics_host, port)
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
        monitor.stop()


def add_metrics_flags(parser: Any) -> None:
    """``--metrics-port`` and ``--metrics-host`` for a worker command (see `worker_endpoint`)."""
    add_flags(parser, "serve", ["metrics_port", "metrics_host"])
