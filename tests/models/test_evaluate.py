"""evaluate(): metrics on a tiny set that can be checked by hand."""

from __future__ import annotations

import pytest

from models.evaluate import (
    bootstrap_intervals,
    evaluate,
    format_intervals,
    format_reports,
    split_rows,
)
from newswatch.schemas import Decision


def _row(esc: bool, signals: list[str], severity: int, taiwan: bool = True) -> dict:
    return {"taiwan_related": taiwan, "escalation": esc, "signals": signals, "severity": severity}


def _pred(esc: bool, signals: list[str], severity: int, taiwan: bool = True) -> dict:
    return {"taiwan_related": taiwan, "escalation": esc, "signals": signals, "severity": severity}


ROWS = [
    _row(True, ["military"], 3),
    _row(True, ["rhetoric", "economic"], 2),
    _row(False, [], 0),
    _row(False, [], 0, taiwan=False),
]
PREDICTIONS = [
    _pred(True, ["military"], 2),  # TP, severity off by one
    _pred(False, [], 0),  # FN
    _pred(True, ["rhetoric"], 1),  # FP
    _pred(False, [], 0, taiwan=False),  # TN
]


def test_escalation_precision_recall_f1():
    report = evaluate(ROWS, PREDICTIONS)
    assert (report.escalation.tp, report.escalation.fp) == (1, 1)
    assert (report.escalation.fn, report.escalation.tn) == (1, 1)
    assert report.escalation.precision == 0.5
    assert report.escalation.recall == 0.5
    assert report.escalation.f1 == 0.5


def test_signal_f1_and_macro_over_used_signals():
    report = evaluate(ROWS, PREDICTIONS)
    assert report.signals["military"].f1 == 1.0
    assert report.signals["rhetoric"].f1 == 0.0  # one FN and one FP
    assert report.signals["economic"].f1 == 0.0
    # military, rhetoric, economic occur; the other three are left out of the mean.
    assert report.signals_macro_f1 == pytest.approx(1 / 3)


def test_severity_accuracy_mae_and_confusion():
    report = evaluate(ROWS, PREDICTIONS)
    assert report.severity_accuracy == 0.25  # only the TN row is exact
    assert report.severity_mae == pytest.approx((1 + 2 + 1 + 0) / 4)
    assert report.severity_confusion[3][2] == 1
    assert report.severity_confusion[0][1] == 1


def test_decisions_from_the_pipeline_score_like_classifications():
    decisions = [
        Decision(
            article_id=str(i),
            alert=p["escalation"],
            escalation_score=0.9,
            taiwan_related=p["taiwan_related"],
            signals=p["signals"],
            severity=p["severity"],
            model_version="v",
            published=None,
            source="s",
            decided_at="t",
        )
        for i, p in enumerate(PREDICTIONS)
    ]
    assert evaluate(ROWS, decisions).to_dict() == evaluate(ROWS, PREDICTIONS).to_dict()


def test_report_prints_systems_side_by_side():
    text = format_reports({"model": evaluate(ROWS, PREDICTIONS), "other": evaluate(ROWS, ROWS)})
    assert "escalation F1" in text and "signals macro-F1" in text
    header = text.splitlines()[0]
    assert "model" in header and "other" in header


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        evaluate(ROWS, PREDICTIONS[:2])


def test_temporal_split_by_publication_year():
    rows = [{"published": "2022-12-31T23:00:00Z"}, {"published": "2023-01-01T00:00:00Z"}]
    assert split_rows(rows, "train") == rows[:1]
    assert split_rows(rows, "test") == rows[1:]


def test_bootstrap_intervals_hold_the_point_estimate_and_widen_on_fewer_rows():
    many_rows, many_predictions = ROWS * 25, PREDICTIONS * 25
    few = bootstrap_intervals(ROWS, {"model": PREDICTIONS})["model"]
    many = bootstrap_intervals(many_rows, {"model": many_predictions})["model"]
    point = evaluate(many_rows, many_predictions).to_dict()
    for metric, (low, high) in many.items():
        assert low <= point[metric] <= high
        assert high - low < few[metric][1] - few[metric][0]


def test_a_perfect_system_has_no_spread_and_beats_a_worse_one_on_every_resample():
    rows, predictions = ROWS * 10, PREDICTIONS * 10
    intervals = bootstrap_intervals(rows, {"gold": rows, "model": predictions})
    assert intervals["gold"]["escalation_f1"] == (1.0, 1.0)
    assert intervals["gold"]["signals_macro_f1"] == (1.0, 1.0)
    low, high = intervals["gold - model"]["escalation_f1"]
    assert 0.0 < low <= high
    same = bootstrap_intervals(rows, {"a": predictions, "b": predictions})["a - b"]
    assert set(same.values()) == {(0.0, 0.0)}


def test_bootstrap_intervals_are_the_same_for_the_same_seed():
    def run(seed: int) -> dict:
        return bootstrap_intervals(ROWS * 5, {"model": PREDICTIONS * 5}, resamples=200, seed=seed)

    assert run(1) == run(1)
    assert "escalation f1" in format_intervals(run(1))
