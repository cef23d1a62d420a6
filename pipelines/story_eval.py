"""Scoring story clustering against stories labelled by hand: BCubed precision, recall, F1.

BCubed (Bagga and Baldwin 1998; Amigó et al. 2009) averages, over the labelled
articles, how much of the article's predicted story shares its true story
(precision) and how much of its true story shares its predicted story (recall).
An article the system put in no story counts as a story of its own. Trivial
groupings are scored beside the system: one story per article, per day, per
calendar month.

`cluster_rows` runs the pipeline's own `StoryBook` over labelled rows in
publication order (the labels stand in for the classifier), so parameters can
be chosen on one period and reported on another without a broker.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from newswatch.config import StorySettings
from newswatch.schemas import Article, Classification
from pipelines.storybook import StoryBook, Vectorizer

__all__ = [
    "BCubed",
    "bcubed",
    "cluster_rows",
    "load_story_labels",
    "trivial_groupings",
]


@dataclass(frozen=True, slots=True)
class BCubed:
    precision: float
    recall: float
    f1: float
    n: int

    def line(self, name: str) -> str:
        return f"{name:<22} P {self.precision:.3f}  R {self.recall:.3f}  F1 {self.f1:.3f}"


def bcubed(gold: Mapping[str, str], predicted: Mapping[str, str]) -> BCubed:
    """BCubed scores of ``predicted`` (article id → story) against ``gold``, over gold's ids."""
    if not gold:
        return BCubed(0.0, 0.0, 0.0, 0)
    true_members: dict[str, set[str]] = defaultdict(set)
    predicted_members: dict[str, set[str]] = defaultdict(set)

    def cluster(item: str) -> str:
        found = predicted.get(item)
        return f"only:{item}" if found is None else f"story:{found}"

    for item, story in gold.items():
        true_members[story].add(item)
        predicted_members[cluster(item)].add(item)
    precision = recall = 0.0
    for item, story in gold.items():
        mine, truth = predicted_members[cluster(item)], true_members[story]
        shared = len(mine & truth)
        precision += shared / len(mine)
        recall += shared / len(truth)
    n = len(gold)
    p, r = precision / n, recall / n
    return BCubed(p, r, 2 * p * r / (p + r) if p + r else 0.0, n)


def trivial_groupings(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """The baselines: one story per article, per day, per calendar month."""
    return {
        "one per article": {r["id"]: r["id"] for r in rows},
        "one per day": {r["id"]: str(r["published"])[:10] for r in rows},
        "one per month": {r["id"]: str(r["published"])[:7] for r in rows},
    }


def load_story_labels(
    rows_paths: Iterable[Path], story_paths: Iterable[Path] = ()
) -> list[dict[str, Any]]:
    """Labelled rows that carry a story: a ``story`` field, or one from a story file by id."""
    stories: dict[str, str] = {}
    for path in story_paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                stories[item["id"]] = item["story"]
    out, seen = [], set()
    for path in rows_paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            story = row.get("story") or stories.get(row["id"])
            if story and row["id"] not in seen:
                seen.add(row["id"])
                out.append({**row, "story": story})
    return out


def _article(row: Mapping[str, Any]) -> Article:
    return Article(
        id=row["id"],
        url=row.get("url", ""),
        title=row["title"],
        text=row.get("summary", "") or row.get("text", ""),
        published=row.get("published"),
        source=row.get("source", ""),
        feed=row.get("feed_url", ""),
        ingested_at=row.get("published") or "",
    )


def _classification(row: Mapping[str, Any]) -> Classification:
    escalation = bool(row.get("escalation"))
    return Classification(
        taiwan_related=True,
        taiwan_score=1.0,
        escalation=escalation,
        escalation_score=1.0 if escalation else 0.0,
        signals=list(row.get("signals", [])),
        signal_scores={},
        severity=int(row.get("severity", 0)),
        evidence=[],
        model="labels",
        model_version="labels",
    )


def cluster_rows(
    rows: Sequence[Mapping[str, Any]],
    settings: StorySettings,
    vectorizer: Vectorizer | None = None,
) -> dict[str, str]:
    """Article id → story id from a `StoryBook` fed ``rows`` in publication order."""
    book = StoryBook(settings, vectorizer)
    assigned: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: (str(r["published"]), r["id"])):
        for change in book.add(_article(row), _classification(row)):
            for member in change.story.articles:
                assigned[member.article_id] = change.story.story_id
    return assigned
