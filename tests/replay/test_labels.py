"""A replay of labelled rows scores exactly as ``newswatch model eval`` scores them.

Rows are real labelled items (../shared/data/labelled/dev.jsonl, 2023 test split):
escalations, Taiwan items without escalation, and unrelated news.
"""

from __future__ import annotations

import json
from pathlib import Path

from newswatch.cli import main
from newswatch.config import Settings, replace
from pipelines.replay import ReplayOptions, replay

LABELLED = Path(__file__).resolve().parents[3] / "shared" / "data" / "labelled" / "dev.jsonl"


def labelled_subset(path: Path) -> list[dict]:
    """The first 2023 rows of each kind, written to ``path`` as JSON lines."""
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["published"].startswith("2023")]
    escalations = [r for r in rows if r["escalation"]][:12]
    taiwan = [r for r in rows if r["taiwan_related"] and not r["escalation"]][:10]
    others = [r for r in rows if not r["taiwan_related"]][:8]
    subset = escalations + taiwan + others
    path.write_text("".join(json.dumps(r) + "\n" for r in subset), encoding="utf-8")
    return subset


def model_eval_json(path: Path, capsys) -> dict:
    """What ``newswatch model eval --data PATH --json`` prints last."""
    capsys.readouterr()
    assert main(["model", "eval", "--data", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_replay_of_labelled_rows_scores_like_model_eval(kafka_broker, tmp_path, capsys):
    data = tmp_path / "labelled.jsonl"
    rows = labelled_subset(data)
    settings = Settings(home=tmp_path)
    settings.broker = replace(kafka_broker.settings)
    settings.kafka.bootstrap_servers = kafka_broker.bootstrap_servers

    result = replay(
        settings, ReplayOptions(sources=(data,), labels=data, report_dir=tmp_path / "report")
    )

    backtest = result.backtest
    assert backtest.labels_unmatched == 0 and backtest.metrics.n == len(rows)
    expected = model_eval_json(data, capsys)
    replayed = backtest.metrics.to_dict()
    assert {k: expected[k] for k in replayed} == replayed
    misses = {m["id"] for m in backtest.misses}
    assert misses == {e["id"] for e in backtest.metrics.errors if e["gold"]["escalation"]}
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert f"{len(rows):,} labelled rows matched" in page
    assert f"Misses: labelled escalations without an alert ({len(misses):,})" in page
