"""The embedded Kafka broker: one KRaft node (combined broker and controller) on loopback.

``newswatch`` runs against any Kafka cluster; without ``kafka.bootstrap_servers``
it starts this one: the jars fetched by ``deploy/setup.sh`` into
``deploy/kafka/lib``, run with ``java -cp 'lib/*' kafka.Kafka``, detached, on
127.0.0.1. Everything it owns lives under ``BrokerSettings.data_dir``::

    cluster.id          fixed cluster id, so restarts reuse the log dir
    server.properties   rendered on every start
    log4j2.properties
    broker.pid
    broker.log          this run's output (broker.log.1: the previous run's)
    data/               Kafka's log dir

Usage::

    broker = LocalBroker(settings.broker)
    broker.start()          # a no-op when it already runs and answers
    print(broker.bootstrap_servers)
    broker.stop()

or ``newswatch broker start|stop|status`` (`newswatch.broker_commands`).
`newswatch.cluster.LocalCluster` runs several such nodes as one replicated
cluster on loopback.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kafka import errors as kafka_errors

from newswatch.config import BrokerSettings
from newswatch.errors import BrokerError
from newswatch.topics import MAX_MESSAGE_BYTES, make_admin

__all__ = ["BrokerStatus", "LocalBroker", "new_cluster_id"]

logger = logging.getLogger(__name__)

SETUP_COMMAND = "mvn -B -q -f deploy/kafka/pom.xml dependency:copy-dependencies"

#: Logged by ``kafka.server.KafkaRaftServer`` once the node serves requests.
READY_LINE = "Kafka Server started"

#: Linux: process state and command lines are read from /proc.
_PROCFS = Path("/proc/self/cmdline").exists()

# Replication factors follow the number of nodes (on a single node every factor is 1,
# else the internal topics are never created and groups hang; on three or more,
# min.insync.replicas=2, so acks=all survives one node down and loses nothing);
# internal topics get one partition and groups no join delay, so tests start fast;
# the cleaner's dedupe buffer is allocated on the heap at start-up, so it is sized for
# a small heap rather than the 128 MiB default.
_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={log_dir}

num.partitions=1
default.replication.factor={replicas}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=1
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
auto.create.topics.enable=false
unclean.leader.election.enable=false

# A node restarted after a crash waits out its old registration's session before
# it may serve; 9 s by default. In one JVM, heartbeats are never slow for long.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000

group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
# Offsets outlive a few weeks of the laptop being off.
offsets.retention.minutes=43200

message.max.bytes={max_message_bytes}
log.cleaner.dedupe.buffer.size=16777216
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
"""

_LOG4J2_PROPERTIES = """\
status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.ready.name = kafka.server.KafkaRaftServer
logger.ready.level = INFO
"""


@dataclass(frozen=True)
class BrokerStatus:
    """What `LocalBroker.status` reports."""

    running: bool
    pid: int | None
    port: int
    data_dir: Path

    def __str__(self) -> str:
        if self.running:
            return f"running: pid {self.pid}, 127.0.0.1:{self.port}, data in {self.data_dir}"
        return f"not running (data in {self.data_dir})"


class LocalBroker:
    """A KRaft node run from the jars in ``settings.lib_dir``: alone, or one of a `LocalCluster`.

    The JVM runs in its own session, so it outlives the Python process that
    started it; any `LocalBroker` with the same ``data_dir`` can stop it.
    ``voters`` is the controller quorum (``id@host:port,...``) when the node
    is one of several; by default the node is its own quorum.
    """

    def __init__(self, settings: BrokerSettings, node_id: int = 1, voters: str = "") -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir).expanduser().resolve()
        self.node_id = node_id
        self.voters = voters or f"{node_id}@127.0.0.1:{settings.controller_port}"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.settings.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def _pid_path(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def _properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> bool:
        """Start the broker and wait until it serves metadata.

        Returns:
            True if this call launched the JVM, False if a broker from the same
            data dir was already running (then it only waits for it to answer).

        Raises:
            BrokerError: jars or java are missing, a port is taken, the JVM
                exits, or it is not ready within ``start_timeout`` (the message
                ends with the tail of broker.log).
        """
        with self._locked():
            pid = self._running_pid()
            if pid is not None:
                self._check_same_port(pid)
                self._wait_ready(pid, time.monotonic() + self.settings.start_timeout)
                logger.info(
                    "Kafka broker already running (pid %d) at %s", pid, self.bootstrap_servers
                )
                return False
            java = self._preflight()
            began = time.monotonic()
            self._write_config()
            self._format(java)
            pid = self._spawn(java)
            try:
                self._wait_ready(pid, began + self.settings.start_timeout)
            except BrokerError:
                self._signal(pid, signal.SIGKILL, timeout=10)
                self._pid_path.unlink(missing_ok=True)
                raise
            logger.info(
                "Kafka broker (pid %d) ready at %s after %.1f s",
                pid,
                self.bootstrap_servers,
                time.monotonic() - began,
            )
            return True

    def stop(self, timeout: float = 30) -> bool:
        """Shut the broker down cleanly (SIGTERM), or kill it after ``timeout`` seconds.

        Returns:
            True if a running broker was stopped.
        """
        if not self._pid_path.exists():
            return False
        with self._locked():
            pid = self._running_pid()
            if pid is None:
                return False
            if not self._signal(pid, signal.SIGTERM, timeout):
                logger.warning(
                    "Kafka broker (pid %d) did not stop within %.0f s; killing it", pid, timeout
                )
                self._signal(pid, signal.SIGKILL, timeout=10)
            self._pid_path.unlink(missing_ok=True)
            logger.info("Kafka broker (pid %d) stopped", pid)
            return True

    def kill(self) -> bool:
        """Kill the broker with SIGKILL, as a crash would; returns True if one was running."""
        if not self._pid_path.exists():
            return False
        with self._locked():
            pid = self._running_pid()
            if pid is None:
                return False
            self._signal(pid, signal.SIGKILL, timeout=10)
            self._pid_path.unlink(missing_ok=True)
            logger.info("Kafka broker (pid %d) killed", pid)
            return True

    def is_running(self) -> bool:
        """True if a broker JVM from this data dir is alive (not necessarily ready)."""
        return self._running_pid() is not None

    def status(self) -> BrokerStatus:
        """Whether the broker runs, its pid and the port it listens on."""
        pid = self._running_pid()
        port = self._configured_port() if pid is not None else None
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            port=port or self.settings.port,
            data_dir=self.data_dir,
        )

    # -- start-up steps ---------------------------------------------------

    def _preflight(self) -> str:
        lib_dir = Path(self.settings.lib_dir)
        if not any(lib_dir.glob("*.jar")):
            raise BrokerError(
                f"no Kafka jars in {lib_dir}; run deploy/setup.sh (it runs: {SETUP_COMMAND})"
            )
        java = shutil.which("java")
        if java is None:
            raise BrokerError("java not found on PATH; the Kafka broker needs Java 17 or newer")
        deadline = time.monotonic() + self.settings.start_timeout
        for name in ("port", "controller_port"):
            _wait_for_port(getattr(self.settings, name), f"--{name.replace('_', '-')}", deadline)
        return java

    def _write_config(self) -> None:
        log_dir = self.data_dir / "data"
        log_dir.mkdir(exist_ok=True)
        nodes = len(self.voters.split(","))
        self._properties_path.write_text(
            _SERVER_PROPERTIES.format(
                node_id=self.node_id,
                voters=self.voters,
                replicas=min(nodes, 3),
                min_isr=2 if nodes >= 3 else 1,
                port=self.settings.port,
                controller_port=self.settings.controller_port,
                log_dir=log_dir,
                max_message_bytes=MAX_MESSAGE_BYTES,
            ),
            encoding="utf-8",
        )
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES, encoding="utf-8")

    def _cluster_id(self) -> str:
        path = self.data_dir / "cluster.id"
        if path.exists():
            return path.read_text(encoding="ascii").strip()
        cluster_id = new_cluster_id()
        path.write_text(cluster_id + "\n", encoding="ascii")
        return cluster_id

    def _java_command(self, java: str, main: str, *args: str) -> list[str]:
        # C1 only: halves the CPU time and wall time of a start (measured ~6-8 s ->
        # ~4.5 s on two busy cores) and trims RSS; a news pipeline's traffic is far
        # below what C1-compiled Kafka serves.
        return [
            java,
            f"-Xmx{self.settings.heap}",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{Path(self.settings.lib_dir).resolve()}/*",
            main,
            *args,
        ]

    def _format(self, java: str) -> None:
        """Format the log dir once; later starts find meta.properties and skip this."""
        if (self.data_dir / "data" / "meta.properties").exists():
            return
        command = self._java_command(
            java,
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            self._cluster_id(),
            "-c",
            str(self._properties_path),
        )
        began = time.monotonic()
        try:
            done = subprocess.run(
                command, cwd=self.data_dir, capture_output=True, timeout=120, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting {self.data_dir / 'data'} timed out") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode("utf-8", "replace")
            raise BrokerError(
                f"formatting {self.data_dir / 'data'} failed (exit {done.returncode}):\n"
                + _tail(output)
            )
        logger.info("formatted %s in %.1f s", self.data_dir / "data", time.monotonic() - began)

    def _spawn(self, java: str) -> int:
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_name("broker.log.1"))
        command = self._java_command(java, "kafka.Kafka", str(self._properties_path))
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pid_path.write_text(f"{self._process.pid}\n", encoding="ascii")
        return self._process.pid

    def _wait_ready(self, pid: int, deadline: float) -> None:
        """Wait for the ready line and a successful metadata request."""
        while True:
            if not self._alive(pid):
                raise BrokerError(
                    f"Kafka broker (pid {pid}) exited during start-up; "
                    f"end of {self.log_path}:\n{self._log_tail()}"
                )
            if READY_LINE in self._log_text() and self._answers():
                return
            if time.monotonic() >= deadline:
                waited = self.settings.start_timeout
                raise BrokerError(
                    f"Kafka broker (pid {pid}) not ready after {waited:.0f} s; "
                    f"end of {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.2)

    def _answers(self) -> bool:
        """True if the broker returns metadata that lists itself (i.e. it is unfenced)."""
        try:
            admin = make_admin(
                self.bootstrap_servers, bootstrap_timeout_ms=2000, request_timeout_ms=5000
            )
        except kafka_errors.KafkaError:
            return False
        try:
            return bool(admin.describe_cluster().get("brokers"))
        except kafka_errors.KafkaError:
            return False
        finally:
            admin.close()

    # -- process bookkeeping ------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop of the broker of one data dir across processes."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / ".broker.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _running_pid(self) -> int | None:
        """The pid of our broker JVM if it is alive; forgets a stale pid file."""
        try:
            pid = int(self._pid_path.read_text(encoding="ascii").strip())
        except (FileNotFoundError, ValueError):
            return None
        if self._is_our_jvm(pid) and self._alive(pid):
            return pid
        self._pid_path.unlink(missing_ok=True)
        return None

    def _alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        if not _PROCFS:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        state = stat.rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X")  # a zombie has exited; its parent has not reaped it

    def _is_our_jvm(self, pid: int) -> bool:
        """Guard against pid reuse: the process must be kafka.Kafka with our properties."""
        if not _PROCFS:
            return True
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"kafka.Kafka" in argv and str(self._properties_path).encode() in argv

    def _signal(self, pid: int, sig: signal.Signals, timeout: float) -> bool:
        """Send ``sig`` and wait up to ``timeout`` s for the exit; True if it exited."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def _configured_port(self) -> int | None:
        """The client port in the rendered server.properties (that of the running broker)."""
        try:
            text = self._properties_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            if line.startswith("listeners="):
                return int(line.split(",")[0].rsplit(":", 1)[1])
        return None

    def _check_same_port(self, pid: int) -> None:
        port = self._configured_port()
        if port is not None and port != self.settings.port:
            raise BrokerError(
                f"a broker from {self.data_dir} is already running on port {port} (pid {pid}); "
                f"stop it first or use --port {port}"
            )

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self) -> str:
        return _tail(self._log_text()) or "(empty)"


def new_cluster_id() -> str:
    """A Kafka cluster id: URL-safe base64 of a random UUID, as ``StorageTool random-uuid``."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):  # would read as a command-line option
            return text


def _wait_for_port(port: int, flag: str, deadline: float) -> None:
    """Fail if something listens on ``port``; wait while it is only briefly unbindable.

    Ports in the ephemeral range can be held for a minute by a closed client
    connection (TIME_WAIT) that happened to use them as its local port.
    """
    while not _bindable(port):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            listening = probe.connect_ex(("127.0.0.1", port)) == 0
        if listening or time.monotonic() >= deadline:
            raise BrokerError(f"port {port} on 127.0.0.1 is in use; choose another with {flag}")
        logger.info("port %d is not free yet (a closing connection?); waiting", port)
        time.sleep(1.0)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the JVM does, so our own listener's TIME_WAIT after a restart does not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
