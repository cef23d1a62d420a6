"""``newswatch notify``: deliver story alerts to webhooks, e-mail, commands and files.

Routes come from the config file (``[[notify.routes]]``, see
docs/notifications.md); ``--notify-webhook URL`` adds one webhook route with the
default timing. The notifier reads the story-alerts topic in its own consumer
group and commits an alert only once it was delivered (or dead-lettered), so a
crash or a stop re-delivers, with the same idempotency key, and drops nothing.

Examples::

    newswatch notify --config newswatch.toml
    newswatch notify --notify-webhook https://hooks.example.org/newswatch --until-idle

SIGINT/SIGTERM stop: attempts in flight finish, retry waits are cut short, and
whatever is not delivered is left for the next start; a second signal exits at
once. Without ``--bootstrap-servers`` the embedded broker is started (and kept).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import Any

from newswatch.broker import LocalBroker
from newswatch.config import load_settings
from newswatch.flags import add_common_flags, add_flags
from newswatch.signals import stop_on_signals
from newswatch.topics import ensure_topics
from notifiers.service import NotifierService

__all__ = ["NOTIFY_FLAGS", "STOPPING", "register"]

logger = logging.getLogger(__name__)

#: The notify settings offered as flags, as ``--notify-<field>``.
NOTIFY_FLAGS = ["webhook", "follow", "group_id", "give_up_after", "max_backoff"]

#: What a SIGINT/SIGTERM does to a notifier (logged after the signal's name).
STOPPING = "stopping notifier (undelivered alerts stay for the next start; repeat to exit now)"


def register(subparsers: Any) -> None:
    """Add ``newswatch notify``."""
    parser = subparsers.add_parser(
        "notify",
        help="deliver story alerts to webhooks, e-mail, commands or files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_flags(parser)
    add_flags(
        parser,
        "kafka",
        ["bootstrap_servers", "story_alerts_topic", "alerts_topic", "dead_letter_topic"],
    )
    add_flags(parser, "notify", NOTIFY_FLAGS, prefix="notify-")
    parser.add_argument(
        "--until-idle",
        action="store_true",
        help="deliver what the topics hold now (groups are sent at once), then exit 0 "
        "(default: run until stopped)",
    )
    parser.set_defaults(handler=_notify_command)


def _notify_command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    service = NotifierService(settings)  # a bad route fails before any broker is touched
    if settings.embedded_broker:
        LocalBroker(settings.broker).start()
    ensure_topics(settings)
    stop, finish = threading.Event(), threading.Event()
    if args.until_idle:
        finish.set()
    restore = stop_on_signals(stop, STOPPING, logger=logger)
    try:
        report = service.run(stop, finish)
    finally:
        restore()
    print(f"newswatch: {report.summary()}", file=sys.stderr)
    return 0
