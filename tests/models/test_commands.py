"""`newswatch model eval` and `newswatch classify` as a user runs them."""

from __future__ import annotations

import json

from newswatch.cli import main

from .conftest import SEED


def test_model_eval_json_ends_with_the_metrics(classifier, capsys):
    assert main(["model", "eval", "--split", "test", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    metrics = json.loads(out[-1])
    for key in ("escalation_f1", "escalation_precision", "escalation_recall", "signals_macro_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["model_version"] == classifier.version
    assert metrics["prefilter_dropped_taiwan_rows"] == 0
    assert any("keyword baseline" in line for line in out)
    intervals = metrics["intervals"]
    assert set(intervals) == {"model", "baseline", "model_minus_baseline"}
    for key in ("escalation_f1", "signals_macro_f1"):
        low, high = intervals["model"][key]
        assert low <= metrics[key] <= high
        low, high = intervals["model_minus_baseline"][key]
        assert low <= metrics[key] - metrics["baseline"][key] <= high


def test_model_eval_compares_versions_with_paired_intervals(classifier, tmp_path, capsys):
    # A second version with the same weights: every paired difference must be zero.
    source = classifier.directory
    twin = tmp_path / "artifacts" / "twin"
    twin.mkdir(parents=True)
    for path in source.iterdir():
        if path.name != "meta.json":
            (twin / path.name).symlink_to(path)
    meta = json.loads((source / "meta.json").read_text(encoding="utf-8"))
    (twin / "meta.json").write_text(json.dumps(dict(meta, version="twin")), encoding="utf-8")
    (tmp_path / "artifacts" / classifier.version).symlink_to(source)

    args = ["--artifacts-dir", str(tmp_path / "artifacts"), "--version", classifier.version]
    assert main(["model", "eval", *args, "--compare", "twin", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    metrics = json.loads(out[-1])
    twin_metrics = metrics["compared"]["twin"]
    assert twin_metrics["signals_macro_f1"] == metrics["signals_macro_f1"]
    assert all(v == [0.0, 0.0] for v in twin_metrics["model_minus_it"].values())
    assert any("model twin" in line for line in out)


def test_model_eval_reads_any_labelled_file(classifier, labelled_rows, tmp_path, capsys):
    path = tmp_path / "few.jsonl"
    rows = [dict(r, text=r.pop("summary")) for r in (dict(x) for x in labelled_rows[:5])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert main(["model", "eval", "--data", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 5


def test_classify_prints_one_decision_per_document(classifier, capsys):
    assert main(["classify", str(SEED)]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    decision = json.loads(line)
    assert decision["escalation"] is True
    assert {"rhetoric", "economic", "diplomatic"} <= set(decision["signals"])
    assert decision["severity"] >= 1 and decision["evidence"]
    for key in ("id", "title", "escalation_score", "signal_scores"):
        assert key in decision
