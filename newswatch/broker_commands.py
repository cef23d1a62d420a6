"""``newswatch broker start|stop|status``: the embedded broker from the command line."""

from __future__ import annotations

import argparse
import time
from typing import Any

from newswatch.broker import LocalBroker
from newswatch.config import BrokerSettings, load_settings
from newswatch.flags import add_common_flags, add_flags

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``newswatch broker start|stop|status``."""
    parser = subparsers.add_parser("broker", help="run the embedded single-node Kafka broker")
    actions = parser.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    for name, handler, summary in (
        ("start", _start_command, "start the broker (no-op if it runs) and wait until ready"),
        ("stop", _stop_command, "stop the broker cleanly"),
        ("status", _status_command, "show whether the broker runs; exit 1 if not"),
    ):
        action = actions.add_parser(name, help=summary, description=summary)
        add_common_flags(action)
        add_flags(action, "broker", list(BrokerSettings.model_fields))
        action.set_defaults(handler=handler)


def _start_command(args: argparse.Namespace) -> int:
    broker = LocalBroker(load_settings(args).broker)
    began = time.monotonic()
    if broker.start():
        print(
            f"Kafka broker ready at {broker.bootstrap_servers} "
            f"in {time.monotonic() - began:.1f} s (data in {broker.data_dir})"
        )
    else:
        print(f"Kafka broker already running at {broker.bootstrap_servers}")
    return 0


def _stop_command(args: argparse.Namespace) -> int:
    broker = LocalBroker(load_settings(args).broker)
    if broker.stop():
        print(f"Kafka broker stopped (data in {broker.data_dir})")
    else:
        print(f"no Kafka broker running from {broker.data_dir}")
    return 0


def _status_command(args: argparse.Namespace) -> int:
    status = LocalBroker(load_settings(args).broker).status()
    print(f"Kafka broker {status}")
    return 0 if status.running else 1
