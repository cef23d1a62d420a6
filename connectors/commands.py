"""``newswatch ingest``: run the connectors from the command line.

Examples::

    newswatch ingest --once                                  # the bundled seeds
    newswatch ingest --feeds seeds/feeds.txt --files ~/docs  # poll and watch until Ctrl-C
    newswatch ingest --files /work/shared/data/archive/feeds/bbc --once \\
        --bootstrap-servers kafka1:9092

Without ``--bootstrap-servers`` the embedded broker is started (it keeps
running afterwards; ``newswatch broker stop`` stops it) and the topics are
created. SIGINT/SIGTERM stop gracefully: the publish in flight is finished and
flushed and the checkpoints are saved; a second signal aborts.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

from connectors.service import run_connectors, sources
from newswatch.broker import LocalBroker
from newswatch.config import load_settings
from newswatch.flags import add_common_flags, add_flags
from newswatch.signals import stop_on_signals
from newswatch.topics import ensure_topics

__all__ = ["register"]

logger = logging.getLogger(__name__)

_CONNECTOR_FLAGS = [
    "feeds",
    "files",
    "poll_interval",
    "watch_interval",
    "state_dir",
    "allow_private_addresses",
    "allowed_networks",
    "max_feed_bytes",
    "max_entry_chars",
    "max_redirects",
    "connect_timeout",
    "read_timeout",
    "fetch_deadline",
    "max_backoff",
    "user_agent",
]


def register(subparsers: Any) -> None:
    """Add ``newswatch ingest``."""
    summary = "poll news feeds and read local documents into the articles topic"
    parser = subparsers.add_parser("ingest", help=summary, description=summary)
    add_common_flags(parser)
    add_flags(parser, "connectors", _CONNECTOR_FLAGS)
    add_flags(parser, "kafka", ["bootstrap_servers", "articles_topic", "dead_letter_topic"])
    parser.add_argument(
        "--once",
        action="store_true",
        help="one pass over all sources, then exit (status 1 if a feed is failing)",
    )
    parser.set_defaults(handler=_ingest)


def _ingest(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    sources(settings)  # a bad feed list or folder fails before any broker is started
    if settings.embedded_broker:
        LocalBroker(settings.broker).start()
    ensure_topics(settings)

    stop = threading.Event()
    restore = stop_on_signals(
        stop, "finishing the current publish, then stopping (repeat to exit now)", logger=logger
    )
    try:
        report = run_connectors(settings, stop, once=args.once)
    finally:
        restore()
    print(report.summary())
    failing = [url for url, health in report.feeds.items() if not health["healthy"]]
    for url in failing:
        print(f"failing feed: {url}: {report.feeds[url]['last_error']}")
    return 1 if args.once and failing else 0
