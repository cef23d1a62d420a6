"""``newswatch serve`` (the live web page) and ``newswatch status`` (one screen in a terminal).

``serve`` reads the output topics of a running pipeline; it starts no broker and
creates no topic (it waits for them). It binds to 127.0.0.1 unless told
otherwise; any other address needs NEWSWATCH_SERVE_TOKEN, or NEWSWATCH_SERVE_USER
and NEWSWATCH_SERVE_PASSWORD, in the environment, or it refuses to start.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import Any

import uvicorn

from newswatch.access import Credentials, require_credentials
from newswatch.config import Settings, load_settings
from newswatch.errors import ConfigError
from newswatch.flags import add_common_flags, add_flags
from web.app import Services, close_streams, create_app
from web.status import broker_ok, collect_status, format_status, status_json

__all__ = ["register", "serve"]

logger = logging.getLogger(__name__)

_KAFKA_FLAGS = [
    "bootstrap_servers",
    "stories_topic",
    "story_alerts_topic",
    "alerts_topic",
    "decisions_topic",
    "dead_letter_topic",
    "articles_topic",
    "group_id",
]
_SERVE_FLAGS = ["host", "port", "reports_dir", "refresh", "history_hours", "max_lag"]


def register(subparsers: Any) -> None:
    """Add the ``serve`` and ``status`` subcommands."""
    serve_parser = subparsers.add_parser(
        "serve",
        help="the live web page: stories, alerts, index, feeds, dead letters, reports, /metrics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_flags(serve_parser)
    add_flags(serve_parser, "serve", _SERVE_FLAGS)
    add_flags(serve_parser, "kafka", _KAFKA_FLAGS)
    serve_parser.set_defaults(handler=_serve_command)

    status_parser = subparsers.add_parser(
        "status", help="broker, topics, consumer lag, feeds, stories and dead letters on one screen"
    )
    add_common_flags(status_parser)
    add_flags(status_parser, "kafka", _KAFKA_FLAGS)
    add_flags(status_parser, "serve", ["history_hours"])
    status_parser.add_argument(
        "--json", action="store_true", help="print the status as JSON instead of text"
    )
    status_parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds to spend reading the topics (default: 30)",
    )
    status_parser.set_defaults(handler=_status_command)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a clear error (port taken, address not on this machine)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def serve(settings: Settings) -> int:
    """Run the web page until SIGINT/SIGTERM."""
    serve_settings = settings.serve
    credentials = Credentials.from_settings(serve_settings)
    require_credentials(serve_settings.host, credentials, "newswatch serve")
    if serve_settings.refresh <= 0:
        raise ConfigError("--refresh must be positive")
    sock = _listen(serve_settings.host, serve_settings.port)
    services = Services.from_settings(settings)
    app = create_app(services, credentials)
    end_streams = close_streams(app)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            end_streams()  # live streams end, so the shutdown need not wait for them
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    print(
        f"newswatch: serving http://{where}:{port}/ "
        f"({'credentials required' if credentials.required else 'no credentials'}; "
        f"broker {settings.bootstrap_servers})",
        file=sys.stderr,
        flush=True,
    )
    _Server(config).run(sockets=[sock])
    return 0


def _serve_command(args: argparse.Namespace) -> int:
    return serve(load_settings(args))


def _status_command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    status = collect_status(settings, timeout=args.timeout)
    print(status_json(status) if args.json else format_status(status, settings))
    return 0 if broker_ok(status) else 1
