"""Two real escalation episodes from ../shared/data/labelled/dev.jsonl and its story labels.

The coverage from several outlets of the China "Joint Sword" drills around Taiwan
(Apr 2023) and of the US sale of Volcano anti-tank mine systems to Taiwan (Dec 2022),
mixed with unrelated news of the same months.
"""

from __future__ import annotations

import json

from newswatch.config import PROJECT_ROOT
from newswatch.schemas import Article

__all__ = ["EPISODES", "as_article", "episode_rows"]

LABELLED = PROJECT_ROOT.parent / "shared" / "data" / "labelled"
EPISODES = ("pla-joint-sword-drills-2023-04", "us-volcano-antitank-sale-2022-12")


def episode_rows() -> list[dict]:
    """Both episodes' rows and 20 unrelated rows of the same months, in publication order."""
    lines = (LABELLED / "dev.jsonl").read_text(encoding="utf-8").splitlines()
    rows = {json.loads(line)["id"]: json.loads(line) for line in lines}
    labels = (LABELLED / "dev-stories.jsonl").read_text(encoding="utf-8").splitlines()
    stories = [json.loads(line) for line in labels]
    chosen = [dict(rows[s["id"]], story=s["story"]) for s in stories if s["story"] in EPISODES]
    others = [
        r
        for r in rows.values()
        if not r["taiwan_related"] and r["published"][:7] in ("2022-12", "2023-04")
    ]
    return sorted(chosen + others[:20], key=lambda r: r["published"])


def as_article(row: dict) -> Article:
    return Article(
        id=row["id"],
        url=row["url"],
        title=row["title"],
        text=row["summary"],
        published=row["published"],
        source=row["source"],
        feed=row["feed_url"],
        ingested_at=row["published"],
    )
