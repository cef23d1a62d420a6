"""The labelled rows, from every file, with their story labels and the training cut-off.

Rows come from JSON-lines files with the fields of ``labelled/dev.jsonl``
(id, title, summary, published, taiwan_related, escalation, signals, severity).
Story labels come from the rows' own ``story`` field or from ``*-stories.jsonl``
files beside them (id, story). A directory stands for every ``*.jsonl`` file in
it, read afresh on each call, since labelling goes on while models train.

Training and model selection only ever see rows published before
`TRAIN_CUTOFF`: `before_cutoff` drops later ones and says how many it dropped.

    from models.data import before_cutoff, load_labelled
    rows = before_cutoff(load_labelled([Path("../shared/data/labelled")])).rows
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.labels import SIGNALS
from newswatch.schemas import parse_time

__all__ = [
    "STORY_SUFFIX",
    "TRAIN_CUTOFF",
    "CutoffResult",
    "before_cutoff",
    "labelled_files",
    "load_labelled",
    "published_at",
    "row_year",
]

logger = logging.getLogger(__name__)

#: Rows published at or after this instant are never used to train or tune a model.
TRAIN_CUTOFF = datetime(2024, 1, 1, tzinfo=UTC)
#: Files whose name ends so hold story labels (id -> story), not labelled rows.
STORY_SUFFIX = "-stories.jsonl"

_REQUIRED = ("title", "published", "taiwan_related", "escalation", "signals", "severity")


def published_at(row: Mapping[str, Any]) -> datetime:
    """The row's publication time (UTC); naive times are taken as UTC.

    Raises:
        ValueError: missing or unparseable ``published``.
    """
    value = str(row.get("published") or "").strip()
    if not value:
        raise ValueError("no 'published' date")
    try:
        return parse_time(value)
    except ValueError:
        raise ValueError(f"'published' is not an ISO date: {value!r}") from None


def row_year(row: Mapping[str, Any]) -> int:
    """The year the row was published (UTC)."""
    return published_at(row).astimezone(UTC).year


def labelled_files(sources: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Row files and story-label files of the given files and directories, sorted."""
    rows: list[Path] = []
    stories: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            found = sorted(source.glob("*.jsonl"))
        elif source.is_file():
            found = [source]
        else:
            raise FileNotFoundError(f"no such labelled file or directory: {source}")
        for path in found:
            (stories if path.name.endswith(STORY_SUFFIX) else rows).append(path)
            if source.is_file() and not path.name.endswith(STORY_SUFFIX):
                # A named row file brings its own story labels when they sit beside it.
                beside = path.with_name(path.name.removesuffix(".jsonl") + STORY_SUFFIX)
                if beside.is_file():
                    stories.append(beside)
    return list(dict.fromkeys(rows)), list(dict.fromkeys(stories))


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and not line.endswith("}"):
                # A line still being written by a labeller: read it next time.
                logger.warning("%s:%d: incomplete last line skipped", path, number)
                continue
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(value, dict):
            raise ValueError(f"{path}:{number}: not a JSON object")
        yield number, value


def _check(row: dict[str, Any], where: str) -> None:
    missing = [name for name in _REQUIRED if name not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = set(row["signals"]) - set(SIGNALS)
    if unknown:
        raise ValueError(f"{where}: unknown signal(s) {sorted(unknown)}")
    try:
        published_at(row)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def load_labelled(sources: Iterable[Path]) -> list[dict[str, Any]]:
    """Labelled rows of every file under ``sources``, each with its ``story`` (or None).

    A row id seen in an earlier file wins over later copies. Rows are returned
    in publication order (ties by id), so the result does not depend on file order.

    Raises:
        FileNotFoundError: a source does not exist.
        ValueError: a row is not JSON or lacks a field (file and line named).
    """
    row_files, story_files = labelled_files(sources)
    stories: dict[str, str] = {}
    for path in story_files:
        for _, entry in _read_jsonl(path):
            if entry.get("id") and entry.get("story"):
                stories.setdefault(str(entry["id"]), str(entry["story"]))
    rows: dict[str, dict[str, Any]] = {}
    for path in row_files:
        for number, row in _read_jsonl(path):
            where = f"{path}:{number}"
            _check(row, where)
            key = str(row.get("id") or row.get("url") or row["title"])
            if key in rows:
                continue
            row = dict(row)
            row["story"] = row.get("story") or stories.get(key)
            row["source_file"] = path.name
            rows[key] = row
    return sorted(rows.values(), key=lambda r: (published_at(r), str(r.get("id"))))


@dataclass(frozen=True)
class CutoffResult:
    """Rows kept for training (published before `TRAIN_CUTOFF`) and how many were not."""

    rows: list[dict[str, Any]]
    excluded: int
    excluded_files: dict[str, int] = field(default_factory=dict)

    def message(self) -> str:
        """One line saying what was left out, or an empty string."""
        if not self.excluded:
            return ""
        where = ", ".join(f"{name}: {n}" for name, n in sorted(self.excluded_files.items()))
        return (
            f"{self.excluded} row(s) published on or after {TRAIN_CUTOFF:%Y-%m-%d} excluded "
            f"from training and selection ({where})"
        )


def before_cutoff(rows: Sequence[Mapping[str, Any]]) -> CutoffResult:
    """The rows published before `TRAIN_CUTOFF`; later rows are counted and dropped."""
    kept: list[dict[str, Any]] = []
    excluded: dict[str, int] = {}
    for row in rows:
        if published_at(row) < TRAIN_CUTOFF:
            kept.append(dict(row))
        else:
            name = str(row.get("source_file") or "rows")
            excluded[name] = excluded.get(name, 0) + 1
    result = CutoffResult(kept, sum(excluded.values()), excluded)
    if result.excluded:
        logger.warning("%s", result.message())
    return result
