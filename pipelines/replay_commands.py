"""``newswatch replay``: its flags, and the command that runs `pipelines.replay.replay`.

The command's help is the docstring of `pipelines.replay`, read from its source:
importing that module loads the pipeline (Beam's RunInference imports torch), which
``newswatch --help`` need not wait for.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from newswatch.config import load_settings
from newswatch.flags import add_common_flags, add_flags
from newswatch.schemas import parse_time
from pipelines.commands import embedded_broker

__all__ = ["register"]

_KAFKA_FLAGS = ["bootstrap_servers", "partitions"]
_MODEL_FLAGS = ["version", "artifacts_dir", "batch_size"]
_RUNNER_FLAGS = ["runner", "prism_location", "dask_scheduler", "dask_workers"]


def register(subparsers: Any) -> None:
    """Add the ``replay`` subcommand."""
    parser = subparsers.add_parser(
        "replay",
        help="replay archived feeds or entry files through the pipeline (backtest)",
        description=_replay_doc(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_flags(parser)
    add_flags(parser, "kafka", _KAFKA_FLAGS)
    add_flags(parser, "model", _MODEL_FLAGS)
    add_flags(parser, "runner", _RUNNER_FLAGS)
    parser.add_argument(
        "sources",
        nargs="+",
        type=Path,
        metavar="SOURCE",
        help="snapshot directory, JSON-lines file (.jsonl, .jsonl.gz) or documents",
    )
    parser.add_argument(
        "--from", dest="start", type=_date, help="only entries published at or after DATE"
    )
    parser.add_argument("--to", dest="end", type=_date, help="only entries published before DATE")
    parser.add_argument(
        "--speed",
        type=_speed,
        default=None,
        metavar="N|max",
        help="pace as a multiple of real time (3600: an hour of archive per second); "
        "default max: publish everything, then process the backlog",
    )
    parser.add_argument(
        "--labels", type=Path, help="labelled JSON-lines rows (by id or url) to score against"
    )
    parser.add_argument(
        "--report", type=Path, metavar="DIR", help="write an HTML report with plots to DIR"
    )
    parser.add_argument(
        "--keep-topics", action="store_true", help="keep the replay's topics afterwards"
    )
    parser.add_argument("--run-id", help="name of the replay's topics (default: time + random)")
    parser.set_defaults(handler=_replay_command)


def _replay_doc() -> str | None:
    """The docstring of `pipelines.replay`, parsed from its source without running it."""
    spec = importlib.util.find_spec("pipelines.replay")
    return ast.get_docstring(ast.parse(spec.loader.get_source(spec.name)), clean=False)


def _date(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None


def _speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed takes a number or 'max', not {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError("--speed must be a positive number")
    return value


def _replay_command(args: argparse.Namespace) -> int:
    from pipelines import replay  # lazy: loads Beam and torch, ~3.5 s on --help

    settings = load_settings(args)
    options = replay.ReplayOptions(
        sources=tuple(args.sources),
        start=args.start,
        end=args.end,
        speed=args.speed,
        labels=args.labels,
        report_dir=args.report,
        keep_topics=args.keep_topics,
        run_id=args.run_id,
    )
    bounded = settings.runner.runner == "dask"  # no broker: the archive goes straight to Dask
    with contextlib.nullcontext() if bounded else embedded_broker(settings, keep=False):
        result = replay.replay(settings, options, install_signal_handlers=True)
    print(result.summary())
    return 0
