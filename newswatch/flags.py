"""Settings as command-line flags: ``--field-name`` options with their help text.

Each flag's help is the field's docstring (`newswatch.config.field_help`), then
its default and its environment variable; `newswatch.config.load_settings`
reads the parsed flags back (destinations ``<section>__<field>``).
"""

from __future__ import annotations

import argparse
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from newswatch.config import Settings, env_name, field_help

__all__ = ["add_common_flags", "add_flags"]


#: Metavars of fields whose type alone says too little.
_METAVARS = {
    "bootstrap_servers": "HOST:PORT,...",
    "feeds": "URL_OR_FILE",
    "allowed_networks": "CIDR",
    "dask_scheduler": "ADDRESS",
    "webhook": "URL",
    "follow": "KIND",
    "heap": "SIZE",
    "user_agent": "TEXT",
    "version": "VERSION",
    "group_id": "GROUP",
}


def _metavar(name: str, annotation: Any) -> str:
    if name in _METAVARS:
        return _METAVARS[name]
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation)
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if name.endswith("_topic"):
        return "TOPIC"
    if annotation is Path or name.endswith(("_file", "_jar", "_dir", "_location")):
        return "PATH"
    if annotation is int:
        return "N"
    if annotation is float:
        if name.endswith("_hours"):
            return "HOURS"
        if name.endswith("_days"):
            return "DAYS"
        timed = ("interval", "timeout", "wait", "deadline", "backoff", "after", "refresh")
        return "SECONDS" if any(word in name for word in timed) else "NUMBER"
    return name.rsplit("_", 1)[-1].upper()


def _shown(value: Any) -> str:
    """A default as the help text shows it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return "~" + text[len(home) :] if text.startswith(home + os.sep) else text
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value) if value else "none"
    return str(value) if value != "" else "none"


def add_flags(
    parser: argparse.ArgumentParser, section: str, names: Sequence[str], prefix: str = ""
) -> None:
    """Expose settings fields as ``--field-name`` flags on a subcommand parser.

    Each flag's help is the field's docstring (its first paragraph), then its
    default and its environment variable. ``prefix`` goes before the flag name,
    e.g. ``prefix="notify-"`` gives ``--notify-webhook``.
    """
    cls = Settings.model_fields[section].annotation
    defaults = cls()
    for name in names:
        info = cls.model_fields[name]
        flag = f"--{prefix}{name.replace('_', '-')}"
        help_text = (
            f"{field_help(cls, name)} (default: {_shown(getattr(defaults, name))}; "
            f"env {env_name(section, name)})"
        ).replace("%", "%%")
        dest = f"{section}__{name}"
        if info.annotation is bool:
            parser.add_argument(
                flag,
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        elif typing.get_origin(info.annotation) is list:
            parser.add_argument(
                flag,
                dest=dest,
                nargs="+",
                default=None,
                metavar=_metavar(name, info.annotation),
                help=help_text,
            )
        else:
            parser.add_argument(
                flag,
                dest=dest,
                default=None,
                metavar=_metavar(name, info.annotation),
                help=help_text,
            )


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every subcommand takes."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML config file with a table per settings section (default: none; env "
        "NEWSWATCH_CONFIG)",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        metavar="DIR",
        help="state directory: the embedded broker's data, connector checkpoints "
        "(default: ~/.newswatch; env NEWSWATCH_HOME)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging: -v logs every message at debug level (default: info and above)",
    )
