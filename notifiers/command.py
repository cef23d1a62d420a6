"""The command and file sinks, for anything the webhook and e-mail sinks do not reach.

`CommandSink` runs a program (no shell) with the notification JSON on its
standard input and ``NEWSWATCH_ALERT_ID`` (the idempotency key) in its
environment. Exit 0 delivers; 75 (``EX_TEMPFAIL``) and a timeout are retried;
any other status is a permanent failure, with the end of its standard error.

`FileSink` appends the notification JSON as one line to a file and syncs it
to disk before the notification counts as delivered.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from newswatch.config import CommandSettings, FileSettings
from notifiers.errors import PermanentFailure, TransientFailure
from notifiers.messages import Notification

__all__ = ["EX_TEMPFAIL", "CommandSink", "FileSink"]

#: sysexits.h: a temporary failure, try again later.
EX_TEMPFAIL = 75


class CommandSink:
    """Runs one program per notification."""

    kind = "command"

    def __init__(self, settings: CommandSettings) -> None:
        self.settings = settings

    def __str__(self) -> str:
        return f"command {Path(self.settings.argv[0]).name}"

    def deliver(self, notification: Notification) -> None:
        env = {**os.environ, "NEWSWATCH_ALERT_ID": notification.alert_id}
        try:
            done = subprocess.run(
                self.settings.argv,
                input=notification.body + b"\n",
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                timeout=self.settings.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TransientFailure(f"{self}: still running after {exc.timeout:.0f} s") from exc
        except OSError as exc:
            raise PermanentFailure(f"{self}: cannot run it: {exc.strerror}") from exc
        if done.returncode == 0:
            return
        stderr = " ".join(done.stderr[-500:].decode("utf-8", "replace").split())
        reason = f"{self} exited with status {done.returncode}" + (f": {stderr}" if stderr else "")
        if done.returncode == EX_TEMPFAIL:
            raise TransientFailure(reason)
        raise PermanentFailure(reason)


class FileSink:
    """Appends one JSON line per notification to a file."""

    kind = "file"

    def __init__(self, settings: FileSettings) -> None:
        self.path = Path(settings.path).expanduser()

    def __str__(self) -> str:
        return f"file {self.path}"

    def deliver(self, notification: Notification) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as out:
                out.write(notification.body + b"\n")
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise TransientFailure(f"{self}: {exc.strerror or exc}") from exc
