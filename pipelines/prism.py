"""The Prism runner as a child process that a Ctrl-C or a service stop does not stop.

Beam's PrismRunner starts Prism itself. A Ctrl-C in the terminal signals the
whole foreground process group, Prism included, which died at once (Go's
default for SIGINT) and took the job with it: the pipeline could not drain, and
Beam's gRPC threads printed tracebacks; a SIGTERM to the process group did the
same. `PrismJobService` starts Prism in a session of its own with SIGINT
ignored, so only newswatch acts on a signal to its group: it drains the job,
then stops Prism with SIGKILL (the job is finished: Prism holds nothing worth
flushing). The kernel kills Prism when newswatch dies (``PR_SET_PDEATHSIG``),
so even a ``kill -9`` of newswatch leaves no runner behind. (Go keeps only an
ignored SIGINT or SIGHUP ignored, not SIGTERM: hence the session. The systemd
unit sends SIGTERM to the main process only, ``KillMode=mixed``.) The pipeline is
submitted to it with ``--job_endpoint``::

    with PrismJobService(settings.runner.prism_location) as endpoint:
        options = pipeline_options(settings, job_endpoint=endpoint)
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from newswatch.errors import NewswatchError

__all__ = ["PrismJobService"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _detach_from_ctrl_c() -> None:
    """In the child, before exec: ignore SIGINT; SIGKILL when the parent (thread) ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Not Linux: no parent-death signal, the explicit stop still applies.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrismJobService:
    """Prism's job service on a free loopback port, for one pipeline run.

    The kernel's parent-death signal follows the thread that starts Prism: enter
    and leave the context in a thread that outlives the job (``run`` does).
    """

    def __init__(self, binary: Path, start_timeout: float = 60.0, attempts: int = 3) -> None:
        self.binary = binary
        self.start_timeout = start_timeout
        self.attempts = attempts
        self.endpoint = ""
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        for _ in range(self.attempts):
            port = _free_port()
            self._process = subprocess.Popen(
                [
                    str(self.binary),
                    f"--job_port={port}",
                    "--log_level=warn",
                    "--log_kind=text",
                    "--serve_http=false",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=_detach_from_ctrl_c,
                # Its own session: a signal to newswatch's process group (a terminal's
                # Ctrl-C, `kill -- -PGID`) reaches newswatch alone, which drains first.
                start_new_session=True,
            )
            threading.Thread(
                target=_forward_output, args=(self._process.stdout,), name="prism-log", daemon=True
            ).start()
            if self._wait_until_serving(port):
                self.endpoint = f"localhost:{port}"
                logger.debug("Prism (pid %d) serving at %s", self._process.pid, self.endpoint)
                return self.endpoint
            self._stop()  # most likely the port was taken meanwhile: another one
        raise NewswatchError(
            f"the Prism runner ({self.binary}) did not start serving within "
            f"{self.start_timeout:.0f} s in {self.attempts} attempts"
        )

    def _wait_until_serving(self, port: int) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("Prism (pid %d) still up %.0f s after SIGKILL", process.pid, timeout)


def _forward_output(stream: IO[bytes]) -> None:
    """Prism logs only warnings and errors (``--log_level=warn``): pass them on."""
    for line in stream:
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            logger.warning("prism: %s", text)
