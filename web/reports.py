"""The backtest reports under ``serve.reports_dir``.

``newswatch replay ... --report DIR`` writes ``report.html``, ``summary.json`` and
PNG plots into DIR. With DIR a subdirectory of ``reports_dir``, the page lists it
(newest first, with the summary's counts) and serves its files. A report written
straight into ``reports_dir`` is listed under the name ``_``. Only files that are
in the report's directory, by name, with a known suffix, are served.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ROOT_NAME", "Report", "list_reports", "report_file"]

logger = logging.getLogger(__name__)

#: Name of a report written into the reports directory itself.
ROOT_NAME = "_"

#: Suffixes of the files a report consists of, and their media types.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json",
}


@dataclass(frozen=True)
class Report:
    """One backtest report directory."""

    name: str
    directory: Path
    modified: float
    """Unix time report.html was written."""
    summary: dict[str, Any] = field(default_factory=dict)
    """summary.json, or {} if absent or unreadable."""


def _report(name: str, directory: Path) -> Report | None:
    page = directory / "report.html"
    try:
        modified = page.stat().st_mtime
    except OSError:
        return None
    summary: dict[str, Any] = {}
    try:
        data = json.loads((directory / "summary.json").read_text(encoding="utf-8"))
        if isinstance(data, dict):
            summary = data
    except (OSError, ValueError) as exc:
        logger.debug("report %s: no readable summary.json (%s)", directory, exc)
    return Report(name, directory, modified, summary)


def list_reports(root: Path) -> list[Report]:
    """Reports in ``root`` and its direct subdirectories, newest first."""
    found: list[Report] = []
    root = Path(root)
    if not root.is_dir():
        return found
    own = _report(ROOT_NAME, root)
    if own is not None:
        found.append(own)
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            report = _report(child.name, child)
            if report is not None:
                found.append(report)
    return sorted(found, key=lambda r: r.modified, reverse=True)


def report_file(root: Path, name: str, filename: str) -> tuple[Path, str] | None:
    """The path and media type of one file of a report, or None if it is not one."""
    root = Path(root)
    if name == ROOT_NAME:
        directory = root
    elif name and "/" not in name and "\\" not in name and not name.startswith("."):
        directory = root / name
    else:
        return None
    media_type = MEDIA_TYPES.get(Path(filename).suffix.lower())
    if media_type is None or "/" in filename or "\\" in filename or filename.startswith("."):
        return None
    try:
        names = {p.name for p in directory.iterdir() if p.is_file()}
    except OSError:
        return None
    if filename not in names or "report.html" not in names:
        return None
    path = directory / filename
    # A symlink out of the directory is not part of the report.
    if not path.resolve().is_relative_to(root.resolve()):
        return None
    return path, media_type
