"""Scoring predictions against labelled rows: the one code path for eval, training and backtests.

``evaluate(rows, predictions)`` takes labelled rows (dicts with the fields of
``labelled/dev.jsonl``: taiwan_related, escalation, signals, severity) and one
prediction per row: a `Classification`, a `Decision` (whose ``alert`` is the
escalation decision) or a mapping with the same fields. `format_reports` prints
several systems side by side on the same rows, and `bootstrap_intervals` says how
far those numbers could move on another sample of the same size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import bootstrap

from models.labels import SIGNALS
from models.text import join_title
from newswatch.schemas import Article, article_id

__all__ = [
    "INTERVAL_METRICS",
    "BinaryScores",
    "EvalReport",
    "bootstrap_intervals",
    "evaluate",
    "format_intervals",
    "format_reports",
    "load_rows",
    "resampled_metrics",
    "row_article",
    "row_text",
    "split_rows",
]

#: Rows published in this year or later form the test split; earlier rows train.
TEST_FROM_YEAR = 2023


@dataclass(frozen=True, slots=True)
class BinaryScores:
    """Counts and precision/recall/F1 of one yes/no decision."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def support(self) -> int:
        return self.tp + self.fn

    @classmethod
    def count(cls, gold: Iterable[bool], predicted: Iterable[bool]) -> BinaryScores:
        tp = fp = fn = tn = 0
        for g, p in zip(gold, predicted, strict=True):
            tp += g and p
            fp += p and not g
            fn += g and not p
            tn += not g and not p
        return cls(tp, fp, fn, tn)

    def summary(self) -> dict[str, float | int]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "support": self.support,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
        }


@dataclass(frozen=True, slots=True)
class EvalReport:
    """Every metric of one system on one set of rows."""

    n: int
    escalation: BinaryScores
    taiwan_related: BinaryScores
    signals: dict[str, BinaryScores]
    severity_confusion: list[list[int]]
    """Rows: gold severity 0-4; columns: predicted severity 0-4."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    """Rows whose escalation decision was wrong (id, title, gold, predicted)."""

    @property
    def signals_macro_f1(self) -> float:
        """Mean F1 over the signal types that occur in gold or predictions."""
        used = [s for s in self.signals.values() if s.tp + s.fp + s.fn]
        return sum(s.f1 for s in used) / len(used) if used else 0.0

    @property
    def severity_accuracy(self) -> float:
        correct = sum(self.severity_confusion[i][i] for i in range(5))
        return correct / self.n if self.n else 0.0

    @property
    def severity_mae(self) -> float:
        total = sum(abs(g - p) * self.severity_confusion[g][p] for g in range(5) for p in range(5))
        return total / self.n if self.n else 0.0

    @property
    def severity_accuracy_on_escalation(self) -> float:
        """Severity accuracy on the rows whose gold label escalates (severity >= 1)."""
        rows = self.severity_confusion[1:]
        total = sum(sum(r) for r in rows)
        return sum(rows[g - 1][g] for g in range(1, 5)) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Flat metrics for ``--json`` and meta.json."""
        out: dict[str, Any] = {"n": self.n}
        for name, scores in (("escalation", self.escalation), ("taiwan", self.taiwan_related)):
            out[f"{name}_precision"] = round(scores.precision, 4)
            out[f"{name}_recall"] = round(scores.recall, 4)
            out[f"{name}_f1"] = round(scores.f1, 4)
        out["signals_macro_f1"] = round(self.signals_macro_f1, 4)
        for name, scores in self.signals.items():
            out[f"signal_{name}_f1"] = round(scores.f1, 4)
        out["severity_accuracy"] = round(self.severity_accuracy, 4)
        out["severity_accuracy_on_escalation"] = round(self.severity_accuracy_on_escalation, 4)
        out["severity_mae"] = round(self.severity_mae, 4)
        out["escalation_confusion"] = asdict(self.escalation)
        out["severity_confusion"] = self.severity_confusion
        return out


def _get(prediction: Any, name: str) -> Any:
    if isinstance(prediction, Mapping):
        value = prediction.get(name)
        if value is None and name == "escalation":
            value = prediction.get("alert")
        return value
    if name == "escalation" and not hasattr(prediction, "escalation"):
        return prediction.alert
    return getattr(prediction, name)


def evaluate(rows: Sequence[Mapping[str, Any]], predictions: Sequence[Any]) -> EvalReport:
    """Compare predictions with the labels of the same rows, in the same order."""
    if len(rows) != len(predictions):
        raise ValueError(f"{len(rows)} rows but {len(predictions)} predictions")
    gold_esc = [bool(r["escalation"]) for r in rows]
    pred_esc = [bool(_get(p, "escalation")) for p in predictions]
    gold_tw = [bool(r["taiwan_related"]) for r in rows]
    pred_tw = [bool(_get(p, "taiwan_related")) for p in predictions]
    pred_signals = [set(_get(p, "signals") or ()) for p in predictions]
    signals = {
        name: BinaryScores.count(
            (name in r["signals"] for r in rows), (name in s for s in pred_signals)
        )
        for name in SIGNALS
    }
    confusion = [[0] * 5 for _ in range(5)]
    for r, p in zip(rows, predictions, strict=True):
        confusion[min(4, max(0, int(r["severity"])))][min(4, max(0, int(_get(p, "severity"))))] += 1
    errors = [
        {
            "id": r.get("id"),
            "title": r.get("title"),
            "gold": {"escalation": g, "signals": list(r["signals"])},
            "predicted": {"escalation": p, "signals": sorted(s)},
        }
        for r, g, p, s in zip(rows, gold_esc, pred_esc, pred_signals, strict=True)
        if g != p
    ]
    return EvalReport(
        n=len(rows),
        escalation=BinaryScores.count(gold_esc, pred_esc),
        taiwan_related=BinaryScores.count(gold_tw, pred_tw),
        signals=signals,
        severity_confusion=confusion,
        errors=errors,
    )


#: Metrics that `bootstrap_intervals` covers, as named in `EvalReport.to_dict`.
INTERVAL_METRICS = (
    "escalation_precision",
    "escalation_recall",
    "escalation_f1",
    "signals_macro_f1",
)
#: Default number of bootstrap resamples.
RESAMPLES = 2000


def resampled_metrics(
    rows: Sequence[Mapping[str, Any]], predictions: Sequence[Any], samples: np.ndarray
) -> dict[str, np.ndarray]:
    """`INTERVAL_METRICS` and each signal's F1 on each resample (a row of indices) of the
    rows: ``[resamples]`` per metric."""
    gold = np.array([bool(r["escalation"]) for r in rows])
    pred = np.array([bool(_get(p, "escalation")) for p in predictions])
    gold_signals = np.array([[s in r["signals"] for s in SIGNALS] for r in rows], dtype=bool)
    chosen = [set(_get(p, "signals") or ()) for p in predictions]
    pred_signals = np.array([[s in c for s in SIGNALS] for c in chosen], dtype=bool)

    def counts(g: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Sums over the resampled rows; for [rows, k] arrays the result is [resamples, k].
        return (g & p)[samples].sum(1), (~g & p)[samples].sum(1), (g & ~p)[samples].sum(1)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)

    tp, fp, fn = counts(gold, pred)
    stp, sfp, sfn = counts(gold_signals, pred_signals)
    used = (stp + sfp + sfn) > 0
    signal_f1 = ratio(2.0 * stp, 2.0 * stp + sfp + sfn)
    return {
        "escalation_precision": ratio(tp, tp + fp),
        "escalation_recall": ratio(tp, tp + fn),
        "escalation_f1": ratio(2.0 * tp, 2.0 * tp + fp + fn),
        "signals_macro_f1": ratio((signal_f1 * used).sum(1), used.sum(1)),
        **{f"signal_{name}_f1": signal_f1[:, i] for i, name in enumerate(SIGNALS)},
    }


def bootstrap_intervals(
    rows: Sequence[Mapping[str, Any]],
    systems: Mapping[str, Sequence[Any]],
    *,
    resamples: int = RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Percentile bootstrap intervals of `INTERVAL_METRICS` for each system.

    The rows are resampled with replacement (`scipy.stats.bootstrap`), the same
    resamples for every system, so besides each system's own intervals the result
    holds, under ``"<first> - <other>"``, the interval of the paired difference
    between the first system and each other one: a difference whose interval
    excludes 0 is more than the luck of which rows were labelled. Deterministic
    for a seed.
    """
    if not rows:
        raise ValueError("no rows to resample")
    first, *others = systems
    keys = [(name, metric) for name in systems for metric in INTERVAL_METRICS]
    keys += [(f"{first} - {other}", metric) for other in others for metric in INTERVAL_METRICS]

    def statistic(index: np.ndarray, axis: int = -1) -> np.ndarray:
        # One value per key and resample; ``index`` holds each resample's row numbers.
        samples = np.atleast_2d(index)
        metrics = {name: resampled_metrics(rows, p, samples) for name, p in systems.items()}
        for other in others:
            metrics[f"{first} - {other}"] = {
                k: metrics[first][k] - metrics[other][k] for k in INTERVAL_METRICS
            }
        values = np.array([metrics[name][metric] for name, metric in keys])
        return values if index.ndim > 1 else values[:, 0]

    result = bootstrap(
        (np.arange(len(rows)),),
        statistic,
        n_resamples=resamples,
        vectorized=True,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for (name, metric), a, b in zip(keys, low, high, strict=True):
        out.setdefault(name, {})[metric] = (round(float(a), 4), round(float(b), 4))
    return out


def format_reports(reports: Mapping[str, EvalReport]) -> str:
    """A side-by-side table of several systems' metrics on the same rows."""
    names = list(reports)
    width = max(12, *(len(n) + 2 for n in names))
    lines = ["metric".ljust(30) + "".join(n.rjust(width) for n in names)]

    def line(label: str, values: Iterable[str]) -> None:
        lines.append(label.ljust(30) + "".join(v.rjust(width) for v in values))

    def num(get: Any) -> list[str]:
        return [f"{get(r):.3f}" for r in reports.values()]

    any_report = next(iter(reports.values()))
    line("rows", [str(r.n) for r in reports.values()])
    for label, attr in (("escalation", "escalation"), ("taiwan_related", "taiwan_related")):
        support = getattr(any_report, attr).support
        line(f"{label} precision", num(lambda r, a=attr: getattr(r, a).precision))
        line(f"{label} recall", num(lambda r, a=attr: getattr(r, a).recall))
        line(f"{label} F1  (n={support})", num(lambda r, a=attr: getattr(r, a).f1))
    for name in SIGNALS:
        support = any_report.signals[name].support
        line(f"signal {name} F1 (n={support})", num(lambda r, s=name: r.signals[s].f1))
    line("signals macro-F1", num(lambda r: r.signals_macro_f1))
    line("severity accuracy", num(lambda r: r.severity_accuracy))
    line("severity accuracy (gold esc.)", num(lambda r: r.severity_accuracy_on_escalation))
    line("severity MAE", num(lambda r: r.severity_mae))
    line(
        "escalation TP/FP/FN/TN",
        [
            f"{r.escalation.tp}/{r.escalation.fp}/{r.escalation.fn}/{r.escalation.tn}"
            for r in reports.values()
        ],
    )
    for name, report in reports.items():
        lines.append("")
        lines.append(f"{name}: severity confusion (rows gold 0-4, columns predicted 0-4)")
        for g, row in enumerate(report.severity_confusion):
            lines.append(f"  {g} " + " ".join(f"{v:5d}" for v in row))
    return "\n".join(lines)


def format_intervals(
    intervals: Mapping[str, Mapping[str, tuple[float, float]]], level: float = 0.95
) -> str:
    """`bootstrap_intervals` as a table: one column per system or paired difference."""
    names = list(intervals)
    width = max(18, *(len(n) + 2 for n in names))
    lines = [f"{level:.0%} bootstrap interval".ljust(30) + "".join(n.rjust(width) for n in names)]
    for metric in INTERVAL_METRICS:
        cells = [
            f"[{v[metric][0]:+.3f}, {v[metric][1]:+.3f}]"
            if " - " in n
            else f"[{v[metric][0]:.3f}, {v[metric][1]:.3f}]"
            for n, v in intervals.items()
        ]
        lines.append(metric.replace("_", " ").ljust(30) + "".join(c.rjust(width) for c in cells))
    return "\n".join(lines)


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Labelled rows from a JSON-lines file (blank lines skipped)."""
    rows = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
    return rows


def split_rows(rows: Sequence[Mapping[str, Any]], split: str) -> list[Mapping[str, Any]]:
    """The 'train' (published before `TEST_FROM_YEAR`), 'test' or 'all' rows."""
    if split == "all":
        return list(rows)

    def year(row: Mapping[str, Any]) -> int:
        return int(str(row.get("published") or "0000")[:4])

    if split == "train":
        return [r for r in rows if year(r) < TEST_FROM_YEAR]
    if split == "test":
        return [r for r in rows if year(r) >= TEST_FROM_YEAR]
    raise ValueError(f"unknown split {split!r} (train, test, all)")


def row_text(row: Mapping[str, Any]) -> str:
    """A labelled row as one model input: headline and summary (or text)."""
    return join_title(row.get("title") or "", row.get("summary") or row.get("text") or "")


def row_article(row: Mapping[str, Any]) -> Article:
    """A labelled row as the `Article` the pipeline would see."""
    identity = str(row.get("id") or row.get("url") or row.get("title") or "")
    return Article(
        id=str(row.get("id") or article_id(identity)),
        url=str(row.get("url") or ""),
        title=str(row.get("title") or ""),
        text=str(row.get("summary") or row.get("text") or ""),
        published=row.get("published"),
        source=str(row.get("source") or ""),
        feed=str(row.get("feed_url") or ""),
        ingested_at=str(row.get("published") or ""),
    )
