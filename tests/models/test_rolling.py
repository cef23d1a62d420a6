"""Rolling-origin validation, episode recall and the training cut-off, as specified."""

from __future__ import annotations

import json

import pytest

from models.data import TRAIN_CUTOFF, before_cutoff, load_labelled, row_year
from models.rolling import BASELINE, episode_recall, rolling_evaluate, rolling_folds
from models.train import TrainConfig, train


def _row(identity: str, published: str, esc: bool = False, story: str | None = None) -> dict:
    return {
        "id": identity,
        "title": f"Taiwan item {identity}"
        + (" as China holds drills around Taiwan" if esc else ""),
        "summary": "",
        "published": published,
        "taiwan_related": True,
        "escalation": esc,
        "signals": ["military"] if esc else [],
        "severity": 3 if esc else 0,
        "story": story,
    }


ROWS = [
    _row("a", "2020-03-01T00:00:00+00:00", esc=True, story="s20"),
    _row("b", "2020-12-31T23:59:59+00:00"),
    _row("c", "2021-01-01T00:00:00+00:00", esc=True, story="s21"),
    _row("d", "2021-06-01T00:00:00Z"),
    _row("e", "2022-02-01T00:00:00+00:00", esc=True, story="s22"),
    _row("f", "2022-12-31T12:00:00+00:00"),
    _row("g", "2023-05-01T00:00:00+00:00", esc=True, story="s23"),
    _row("h", "2023-07-01T00:00:00+00:00"),
]


def test_each_fold_trains_only_on_rows_published_before_its_test_year():
    folds = rolling_folds(ROWS)
    assert [f.year for f in folds] == [2021, 2022, 2023]
    for fold in folds:
        assert fold.train, fold.year
        assert all(row_year(ROWS[i]) < fold.year for i in fold.train)
        assert all(row_year(ROWS[i]) == fold.year for i in fold.test)
    # The first instant of a year belongs to that year's test set, not its training set.
    assert [ROWS[i]["id"] for i in folds[0].train] == ["a", "b"]
    assert [ROWS[i]["id"] for i in folds[0].test] == ["c", "d"]
    assert [ROWS[i]["id"] for i in folds[2].train] == list("abcdef")


def test_a_fold_without_training_rows_is_refused():
    with pytest.raises(ValueError, match="fold 2020: 0 training rows"):
        rolling_folds(ROWS, years=[2020])


def test_rolling_evaluate_reports_each_fold_and_the_mean_with_the_baseline():
    seen: list[tuple[list[str], list[str]]] = []

    def predict(train: list[int], test: list[int]) -> list[dict]:
        seen.append(([ROWS[i]["id"] for i in train], [ROWS[i]["id"] for i in test]))
        # Flags exactly the test rows that escalate: a perfect system.
        return [
            {
                "taiwan_related": True,
                "escalation": ROWS[i]["escalation"],
                "signals": list(ROWS[i]["signals"]),
                "severity": ROWS[i]["severity"],
            }
            for i in test
        ]

    report = rolling_evaluate(ROWS, {"perfect": predict}, resamples=50)
    assert [s[1] for s in seen] == [["c", "d"], ["e", "f"], ["g", "h"]]
    by_id = {r["id"]: r for r in ROWS}
    for (trained, _), year in zip(seen, (2021, 2022, 2023), strict=True):
        assert trained == [r["id"] for r in ROWS if row_year(r) < year]
        assert max(row_year(by_id[i]) for i in trained) < year
    assert report.systems == ["perfect", BASELINE]
    assert report.metric("perfect", "escalation_f1") == [1.0, 1.0, 1.0]
    assert report.mean("perfect", "escalation_f1") == 1.0
    summary = report.to_dict()
    assert [f["year"] for f in summary["folds"]] == [2021, 2022, 2023]
    assert summary["mean"]["perfect"]["episode_recall"] == 1.0
    assert summary["folds"][0]["systems"]["perfect"]["episodes"] == {
        "caught": 1,
        "total": 1,
        "recall": 1.0,
        "missed": [],
    }
    assert "perfect - keyword baseline" in summary["mean_intervals"]
    text = report.format()
    for heading in ("fold 2021", "fold 2022", "fold 2023", "mean over folds", "episodes caught"):
        assert heading in text
    json.dumps(summary)  # the report is plain JSON


def test_an_episode_is_caught_when_at_least_half_its_escalation_rows_are_flagged():
    rows = [
        *(dict(_row(f"x{i}", "2023-01-01", esc=True, story="four")) for i in range(4)),
        *(dict(_row(f"y{i}", "2023-01-01", esc=True, story="three")) for i in range(3)),
        dict(_row("z", "2023-01-01", esc=True, story=None)),
        dict(_row("n", "2023-01-01", esc=False, story="four")),
    ]
    # "four": 2 of 4 flagged (caught); "three": 1 of 3 (missed, half is 1.5);
    # the unlabelled row is an episode of its own (missed); the non-escalation row of
    # "four" is flagged but does not count.
    flagged = [True, True, False, False, True, False, False, False, True]
    result = episode_recall(rows, flagged)
    assert (result.caught, result.total) == (1, 3)
    assert result.missed == ["row:z", "three"]
    assert episode_recall(rows, [True] * 9).recall == 1.0
    with pytest.raises(ValueError):
        episode_recall(rows, flagged[:-1])


def test_rows_published_from_2024_on_are_excluded_from_training_with_a_message(tmp_path):
    rows = [
        _row("old", "2023-12-31T23:59:59+00:00", esc=True, story="s"),
        _row("new", "2024-01-01T00:00:00+00:00", esc=True, story="s"),
        _row("later", "2025-11-20T08:00:00+08:00"),
        # 2023-12-31 20:00 in New York is 2024-01-01 01:00 UTC: after the cut-off.
        _row("edge", "2023-12-31T20:00:00-05:00"),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = before_cutoff(load_labelled([path]))
    assert [r["id"] for r in result.rows] == ["old"]
    assert result.excluded == 3
    assert "3 row(s) published on or after 2024-01-01" in result.message()
    assert "mixed.jsonl: 3" in result.message()
    assert TRAIN_CUTOFF.year == 2024


def test_training_refuses_when_every_row_is_after_the_cutoff(tmp_path):
    path = tmp_path / "late.jsonl"
    path.write_text(json.dumps(_row("late", "2024-03-01T00:00:00Z")) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no labelled rows published before 2024-01-01"):
        train(TrainConfig(data=[path], artifacts_dir=tmp_path / "artifacts"))
    assert not (tmp_path / "artifacts" / "LATEST").exists()


def test_labelled_directories_bring_story_labels_and_refuse_broken_rows(tmp_path):
    rows = [_row("a", "2022-01-01T00:00:00Z", esc=True), _row("b", "2022-01-02T00:00:00Z")]
    for row in rows:
        row.pop("story")
    (tmp_path / "part.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    (tmp_path / "part-stories.jsonl").write_text(
        json.dumps({"id": "a", "story": "drills-2022-01"}) + "\n", encoding="utf-8"
    )
    loaded = load_labelled([tmp_path])
    assert [(r["id"], r["story"]) for r in loaded] == [("a", "drills-2022-01"), ("b", None)]

    (tmp_path / "broken.jsonl").write_text('{"id": "c", "title": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.jsonl:1: missing field"):
        load_labelled([tmp_path])
