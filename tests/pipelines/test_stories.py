"""Story clustering as a specification: who joins which story, when it alerts, what survives.

The articles are real labelled items (../shared/data/labelled/dev.jsonl with the
story labels of dev-stories.jsonl); the labels stand in for the classifier.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from pathlib import Path

import pytest

from newswatch.config import PROJECT_ROOT, StorySettings
from newswatch.schemas import Story, StoryAlert
from pipelines.story_eval import (
    _article,
    _classification,
    bcubed,
    cluster_rows,
    load_story_labels,
    trivial_groupings,
)
from pipelines.storybook import IDF_FILE, StoryBook, Vectorizer, story_id

LABELLED = PROJECT_ROOT.parent / "shared" / "data" / "labelled"


@pytest.fixture(scope="module")
def labelled() -> list[dict]:
    return load_story_labels([LABELLED / "dev.jsonl"], [LABELLED / "dev-stories.jsonl"])


def episode(rows: list[dict], story: str) -> list[dict]:
    return sorted((r for r in rows if r["story"] == story), key=lambda r: r["published"])


def feed(book: StoryBook, rows: list[dict]) -> tuple[dict[str, Story], list[StoryAlert]]:
    """Every row into ``book``; the latest state of each story and every alert raised."""
    stories: dict[str, Story] = {}
    alerts: list[StoryAlert] = []
    for row in rows:
        for change in book.add(_article(row), _classification(row)):
            stories[change.story.story_id] = change.story
            if change.alert is not None:
                alerts.append(change.alert)
    return stories, alerts


def test_one_episode_across_outlets_is_one_story(labelled):
    drills = episode(labelled, "pla-joint-sword-drills-2023-04")
    stories, _ = feed(StoryBook(StorySettings()), drills)
    (story,) = stories.values()
    assert [a.article_id for a in story.articles] == [r["id"] for r in drills]
    assert story.outlets == len({r["source"] for r in drills}) > 3
    assert story.story_id == story_id(drills[0]["id"])
    assert story.headline in {r["title"] for r in drills}
    assert story.escalation and story.severity == max(r["severity"] for r in drills)
    assert story.signals["military"] == sum("military" in r["signals"] for r in drills)


def test_two_episodes_of_the_same_days_end_in_different_stories(labelled):
    drills = episode(labelled, "pla-strike-drills-after-us-ndaa-2022-12")
    conscription = episode(labelled, "taiwan-conscription-extension-2022-12")
    rows = sorted(drills + conscription, key=lambda r: r["published"])
    assigned = cluster_rows(rows, StorySettings())

    def main_story(rows: list[dict]) -> tuple[str, int]:
        counts = Counter(assigned[r["id"]] for r in rows)
        return counts.most_common(1)[0]

    (drill_story, drill_count), (draft_story, draft_count) = map(main_story, (drills, conscription))
    assert drill_story != draft_story
    assert drill_count >= len(drills) / 2 and draft_count >= len(conscription) / 2


def test_clustering_beats_the_trivial_groupings_on_labelled_stories(labelled):
    gold = {r["id"]: r["story"] for r in labelled}
    ours = bcubed(gold, cluster_rows(labelled, StorySettings()))
    for name, grouping in trivial_groupings(labelled).items():
        assert ours.f1 > bcubed(gold, grouping).f1 + 0.05, name
    assert ours.precision > 0.8 and ours.recall > 0.8


def test_bcubed_scores_a_perfect_grouping_one_and_counts_unassigned_articles_alone():
    gold = {"a": "x", "b": "x", "c": "y"}
    assert bcubed(gold, {"a": "1", "b": "1", "c": "2"}).f1 == 1.0
    alone = bcubed(gold, {"a": "1"})
    assert alone.precision == 1.0 and alone.recall == pytest.approx((0.5 + 0.5 + 1) / 3)


def test_a_story_alerts_once_when_it_escalates_then_only_on_material_change(labelled):
    drills = episode(labelled, "pla-joint-sword-drills-2023-04")
    settings = StorySettings(outlet_steps=[3, 5])
    stories, alerts = feed(StoryBook(settings), drills)
    (story,) = stories.values()
    assert alerts[0].update == 0 and alerts[0].reasons[0] == "escalated"
    assert [a.update for a in alerts] == list(range(len(alerts)))
    assert len({a.alert_id for a in alerts}) == len(alerts)
    for before, after in itertools.pairwise(alerts):
        assert after.reasons, "an update says why"
        grew = after.story.severity > before.story.severity
        new_signal = set(after.story.signals) - set(before.story.signals)
        stepped = any(before.story.outlets < s <= after.story.outlets for s in [3, 5])
        broke = after.story.status == "breaking" and before.story.status != "breaking"
        assert grew or new_signal or stepped or broke
    # Articles joining without a material change raise nothing.
    assert len(alerts) < len(drills)
    assert story.escalation


def test_an_article_seen_again_changes_nothing_and_repeats_its_story(labelled):
    drills = episode(labelled, "pla-joint-sword-drills-2023-04")
    book = StoryBook(StorySettings())
    stories, alerts = feed(book, drills)
    (again,) = book.add(_article(drills[3]), _classification(drills[3]))
    (story,) = stories.values()
    assert again.story == story
    assert again.alert == alerts[-1], "the last alert is offered again, with the same id"


def test_a_restarted_worker_recovers_its_stories_and_neither_splits_nor_realerts(labelled):
    drills = episode(labelled, "pla-joint-sword-drills-2023-04")
    half = len(drills) // 2
    whole, whole_alerts = feed(StoryBook(StorySettings()), drills)

    first = StoryBook(StorySettings())
    written, alerts = feed(first, drills[:half])
    restarted = StoryBook(StorySettings())
    assert restarted.recover(written.values(), alerts) == 1
    after, later_alerts = feed(restarted, drills[half:])
    assert {k: v.articles for k, v in after.items()} == {k: v.articles for k, v in whole.items()}
    assert [a.alert_id for a in alerts + later_alerts] == [a.alert_id for a in whole_alerts]


def test_an_idle_story_goes_dormant_and_a_later_flare_up_is_a_new_story(labelled):
    drills = episode(labelled, "pla-joint-sword-drills-2023-04")
    book = StoryBook(StorySettings(idle_days=3))
    stories, _ = feed(book, drills[:3])
    (first,) = stories
    later = dict(drills[3], published="2023-06-01T00:00:00+00:00", id="later")
    changes = book.add(_article(later), _classification(later))
    assert [(c.story.story_id, c.story.status) for c in changes] == [
        (first, "dormant"),
        (story_id("later"), changes[-1].story.status),
    ]
    assert len(book) == 1


def test_thousands_of_open_stories_are_matched_through_the_index_not_a_scan(labelled):
    extra = load_story_labels(
        [LABELLED / "extra-2022-23.jsonl"],
        [PROJECT_ROOT / "data" / "labelled" / "extra-2022-23-stories.jsonl"],
    )
    book = StoryBook(StorySettings(idle_days=10_000))
    feed(book, sorted(labelled + extra, key=lambda r: r["published"]))
    assert len(book) > 1000
    probe = labelled[0]
    candidates = book._candidates(book._vectorizer.weights(probe["title"], probe["summary"]))
    assert 0 < len(candidates) < len(book) / 2


def test_story_records_round_trip_through_json(labelled):
    stories, alerts = feed(
        StoryBook(StorySettings()), episode(labelled, "pla-joint-sword-drills-2023-04")
    )
    (story,) = stories.values()
    assert Story.from_bytes(story.to_bytes()) == story
    assert StoryAlert.from_bytes(alerts[0].to_bytes()) == alerts[0]
    assert dataclasses.asdict(Story.from_bytes(story.to_bytes()))["articles"][0]["url"]


def test_the_shipped_idf_table_is_read(tmp_path: Path):
    assert IDF_FILE.is_file()
    weights = Vectorizer(StorySettings()).weights("Taiwan drills", "")
    assert weights["drill"] > 0 and weights["taiwan"] > 0
