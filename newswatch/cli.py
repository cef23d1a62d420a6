"""The ``newswatch`` command: argument dispatch only.

Each package registers its own subcommands (``register(subparsers)``) and
does the work in its own modules; this file wires them together, sets up
logging and turns `NewswatchError` into a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import logging
import os
import sys
from typing import NoReturn

from newswatch.errors import NewswatchError
from newswatch.logs import configure_logging

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _drop_beam_gcp_notice(record: logging.LogRecord) -> bool:
    # apache_beam warns at import that Google Cloud clients are absent; we use none.
    return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_drop_beam_gcp_notice)

#: Modules that contribute subcommands, in --help order.
_COMMAND_MODULES = (
    "pipelines.commands",  # run, pipeline, alerts
    "pipelines.replay_commands",  # replay
    "connectors.commands",  # ingest
    "models.commands",  # model train|eval
    "pipelines.classify_commands",  # classify
    "newswatch.broker_commands",  # broker start|stop|status
    "web.commands",  # serve, status
    "notifiers.commands",  # notify
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="newswatch",
        description="Streaming detection of Taiwan-related escalation signals in the news.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # a package still without commands
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before the command modules are imported: Beam logs while it is imported, and
    # logging would then install its own default handler, which configure_logging
    # takes for a host app's set-up and leaves alone (no INFO lines at all).
    configure_logging(_verbosity(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except NewswatchError as exc:
        print(f"newswatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _exit_at_once(130)


def _verbosity(argv: list[str]) -> int:
    """The ``-v``/``--verbose`` count of a command line, read before argparse runs."""
    count = 0
    for arg in argv:
        if arg == "--verbose":
            count += 1
        elif arg.startswith("-") and not arg.startswith("--") and set(arg[1:]) == {"v"}:
            count += len(arg) - 1
    return count


def _exit_at_once(code: int) -> NoReturn:
    """Leave now: run the exit handlers, then skip interpreter finalisation.

    An interrupt can land while Beam's gRPC threads still run (a pipeline told to
    stop twice); finalising the interpreter under them aborts it (SIGABRT, "terminate
    called without an active exception"). The exit handlers stop the Prism runner.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
