"""Real news as `Article`s for the tests: the seed, labelled items, archived entries.

- `seed_article`: the bundled seed (the Nov 2025 China-Japan row over Taiwan).
- `non_taiwan_articles`: 2023 items of the labelled set that are not about Taiwan
  (real outlets' RSS items, ../shared/data/labelled/dev.jsonl).
- `model_bound_articles`: archived entries that name China or Taiwan, so each one
  goes through the model (none is skipped by the prefilter).
"""

from __future__ import annotations

import gzip
import json

from models.labels import could_be_taiwan_related
from newswatch.config import PROJECT_ROOT
from newswatch.schemas import Article, article_id, utc_now

__all__ = ["model_bound_articles", "non_taiwan_articles", "seed_article"]

SEED = PROJECT_ROOT / "seeds" / "000_926da616d7d9c5df.txt"
LABELLED = PROJECT_ROOT.parent / "shared" / "data" / "labelled" / "dev.jsonl"
ARCHIVE = PROJECT_ROOT.parent / "shared" / "data" / "archive" / "entries.jsonl.gz"


def seed_article() -> Article:
    lines = [line.strip() for line in SEED.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    return Article(
        id=article_id("file:" + SEED.name),
        url="",
        title=lines[0],
        text="\n".join(lines[1:]),
        published="2025-11-25T00:00:00Z",
        source="seed",
        feed=str(SEED),
        ingested_at=utc_now(),
    )


def non_taiwan_articles(count: int) -> list[Article]:
    """The first ``count`` 2023 items of the labelled set that are not about Taiwan."""
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]
    picked = [r for r in rows if r["published"].startswith("2023") and not r["taiwan_related"]]
    return [
        Article(
            id=article_id(r["url"]),
            url=r["url"],
            title=r["title"],
            text=r["summary"],
            published=r["published"],
            source=r["source"],
            feed=r["feed_url"],
            ingested_at=utc_now(),
        )
        for r in picked[:count]
    ]


def model_bound_articles(count: int) -> list[Article]:
    """The first ``count`` archived entries that the model must classify (no prefilter skip)."""
    articles: dict[str, Article] = {}
    with gzip.open(ARCHIVE, "rt", encoding="utf-8") as rows:
        for line in rows:
            row = json.loads(line)
            text = f"{row.get('title') or ''}\n{row.get('summary') or ''}"
            if not row.get("url") or not row.get("title") or not could_be_taiwan_related(text):
                continue
            key = article_id(row["url"])
            articles[key] = Article(
                id=key,
                url=row["url"],
                title=row["title"],
                text=row.get("summary") or "",
                published=row.get("published"),
                source=row.get("source") or "",
                feed=row.get("feed_url") or "",
                ingested_at=utc_now(),
            )
            if len(articles) == count:
                break
    return list(articles.values())
