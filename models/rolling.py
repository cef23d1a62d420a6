"""Rolling-origin temporal validation: train on the years before Y, test on Y.

For each test year Y (2021, 2022, 2023 by default) every recipe is fitted on
the rows published before 1 January of Y (its thresholds and calibration tuned
by inner cross-validation within those rows only) and scored on the rows of Y,
next to the keyword baseline. A fold's training set never holds a row of year
Y or later. Besides the row metrics of `models.evaluate`, each fold reports
**episode recall**: the escalation rows of a test year grouped by story label,
an episode counting as caught when at least half of its escalation rows are
flagged (`EPISODE_SHARE`), because an analyst misses an episode, not a row.
Rows without a story label are episodes of one row.

Paired bootstrap intervals of the first system's lead over each other system
are computed per fold (rows resampled within the fold) and for the mean over
folds (every fold resampled at once, the lead averaged).

    from models.rolling import rolling_evaluate
    report = rolling_evaluate(rows, {"v3": RECIPES["v3"], "v2": RECIPES["v2"]}, cache)
    print(report.format())
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.baseline import KeywordBaseline
from models.data import row_year
from models.evaluate import (
    INTERVAL_METRICS,
    RESAMPLES,
    EvalReport,
    evaluate,
    resampled_metrics,
    row_article,
)
from models.labels import SIGNALS, could_be_taiwan_related

__all__ = [
    "BASELINE",
    "EPISODE_SHARE",
    "ROLLING_YEARS",
    "EpisodeRecall",
    "Fold",
    "RollingReport",
    "episode_recall",
    "rolling_evaluate",
    "rolling_folds",
]

#: Test years of the rolling-origin folds.
ROLLING_YEARS = (2021, 2022, 2023)
#: An episode is caught when at least this share of its escalation rows is flagged.
EPISODE_SHARE = 0.5
#: Name of the keyword baseline in reports.
BASELINE = "keyword baseline"
#: Metrics of the fold table, as in `EvalReport.to_dict`.
TABLE_METRICS = (
    "escalation_precision",
    "escalation_recall",
    "escalation_f1",
    "signals_macro_f1",
    "signal_rhetoric_f1",
)


_SHORT = {
    "escalation_precision": "esc P",
    "escalation_recall": "esc R",
    "escalation_f1": "esc F1",
    "signals_macro_f1": "signals macro-F1",
    "signal_rhetoric_f1": "rhetoric F1",
}


@dataclass(frozen=True)
class Fold:
    """Row indices of one rolling-origin fold."""

    year: int
    train: list[int]
    test: list[int]


def rolling_folds(
    rows: Sequence[Mapping[str, Any]], years: Sequence[int] = ROLLING_YEARS
) -> list[Fold]:
    """One fold per test year: train on rows published before that year, test on it.

    Raises:
        ValueError: a fold would have no training or no test rows.
    """
    published = [row_year(r) for r in rows]
    folds = []
    for year in years:
        train = [i for i, y in enumerate(published) if y < year]
        test = [i for i, y in enumerate(published) if y == year]
        if not train or not test:
            raise ValueError(
                f"fold {year}: {len(train)} training rows (before {year}) and "
                f"{len(test)} test rows (in {year}); each needs at least one"
            )
        folds.append(Fold(year, train, test))
    return folds


@dataclass(frozen=True)
class EpisodeRecall:
    """Escalation episodes of a set of rows, and those a system caught."""

    caught: int
    total: int
    missed: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.caught / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "caught": self.caught,
            "total": self.total,
            "recall": round(self.recall, 4),
            "missed": self.missed,
        }


def episode_recall(
    rows: Sequence[Mapping[str, Any]], flagged: Sequence[bool], share: float = EPISODE_SHARE
) -> EpisodeRecall:
    """Episodes caught: stories with at least ``share`` of their escalation rows flagged.

    Only escalation rows count (a story's routine coverage neither helps nor
    hurts). A row without a ``story`` is an episode of its own.
    """
    if len(rows) != len(flagged):
        raise ValueError(f"{len(rows)} rows but {len(flagged)} decisions")
    episodes: dict[str, list[bool]] = {}
    for index, (row, hit) in enumerate(zip(rows, flagged, strict=True)):
        if row["escalation"]:
            key = str(row.get("story") or f"row:{row.get('id', index)}")
            episodes.setdefault(key, []).append(bool(hit))
    caught = [k for k, hits in episodes.items() if sum(hits) >= math.ceil(share * len(hits))]
    missed = sorted(set(episodes) - set(caught))
    return EpisodeRecall(len(caught), len(episodes), missed)


@dataclass
class FoldResult:
    """Every system's scores on one fold."""

    year: int
    n_train: int
    n_test: int
    reports: dict[str, EvalReport]
    episodes: dict[str, EpisodeRecall]
    intervals: dict[str, dict[str, tuple[float, float]]]
    resamples: dict[str, dict[str, np.ndarray]]


@dataclass
class RollingReport:
    """Rolling-origin results: per fold, the mean over folds, and paired intervals."""

    systems: list[str]
    folds: list[FoldResult]
    mean_intervals: dict[str, dict[str, tuple[float, float]]]
    resamples: int = RESAMPLES

    def metric(self, system: str, name: str) -> list[float]:
        """A metric of a system on each fold."""
        return [float(f.reports[system].to_dict()[name]) for f in self.folds]

    def mean(self, system: str, name: str) -> float:
        values = self.metric(system, name)
        return sum(values) / len(values)

    def mean_episode_recall(self, system: str) -> float:
        return sum(f.episodes[system].recall for f in self.folds) / len(self.folds)

    def to_dict(self) -> dict[str, Any]:
        """Per fold and mean metrics of every system, with the intervals of the lead."""
        out: dict[str, Any] = {"systems": self.systems, "folds": [], "mean": {}}
        for fold in self.folds:
            out["folds"].append(
                {
                    "year": fold.year,
                    "train_rows": fold.n_train,
                    "test_rows": fold.n_test,
                    "systems": {
                        name: {
                            **{
                                k: v
                                for k, v in fold.reports[name].to_dict().items()
                                if "confusion" not in k
                            },
                            "episodes": fold.episodes[name].to_dict(),
                        }
                        for name in self.systems
                    },
                    "intervals": fold.intervals,
                }
            )
        names = [*TABLE_METRICS, *(f"signal_{s}_f1" for s in SIGNALS if s != "rhetoric")]
        for name in self.systems:
            mean = {metric: round(self.mean(name, metric), 4) for metric in names}
            mean["episode_recall"] = round(self.mean_episode_recall(name), 4)
            out["mean"][name] = mean
        out["mean_intervals"] = self.mean_intervals
        return out

    def format(self) -> str:
        """Fold-by-fold table of every system, the mean, and intervals of the lead."""
        width = max(14, *(len(s) + 2 for s in self.systems))
        lines = []
        labels = {
            "escalation_precision": "escalation P",
            "escalation_recall": "escalation R",
            "escalation_f1": "escalation F1",
            "signals_macro_f1": "signals macro-F1",
            "signal_rhetoric_f1": "rhetoric F1",
        }
        for fold in self.folds:
            esc = fold.reports[self.systems[0]].escalation.support
            lines.append(
                f"fold {fold.year}: train {fold.n_train} rows (before {fold.year}), "
                f"test {fold.n_test} rows ({esc} escalations)"
            )
            lines.append("".ljust(28) + "".join(s.rjust(width) for s in self.systems))
            for metric in TABLE_METRICS:
                values = [fold.reports[s].to_dict()[metric] for s in self.systems]
                lines.append(
                    labels[metric].ljust(28) + "".join(f"{v:.3f}".rjust(width) for v in values)
                )
            for signal in SIGNALS:
                if signal == "rhetoric":
                    continue
                support = fold.reports[self.systems[0]].signals[signal].support
                values = [fold.reports[s].signals[signal].f1 for s in self.systems]
                lines.append(
                    f"{signal} F1 (n={support})".ljust(28)
                    + "".join(f"{v:.3f}".rjust(width) for v in values)
                )
            cells = [f"{fold.episodes[s].caught}/{fold.episodes[s].total}" for s in self.systems]
            lines.append("episodes caught".ljust(28) + "".join(c.rjust(width) for c in cells))
            lines.extend(_format_leads(fold.intervals, self.systems))
            lines.append("")
        lines.append(f"mean over folds {', '.join(str(f.year) for f in self.folds)}")
        lines.append("".ljust(28) + "".join(s.rjust(width) for s in self.systems))
        for metric in TABLE_METRICS:
            values = [self.mean(s, metric) for s in self.systems]
            lines.append(
                labels[metric].ljust(28) + "".join(f"{v:.3f}".rjust(width) for v in values)
            )
        values = [self.mean_episode_recall(s) for s in self.systems]
        lines.append("episode recall".ljust(28) + "".join(f"{v:.3f}".rjust(width) for v in values))
        lines.extend(_format_leads(self.mean_intervals, self.systems))
        lines.append(
            f"(episode: a story's escalation rows in the test year, caught when at least "
            f"{EPISODE_SHARE:.0%} are flagged; intervals: 95% paired bootstrap, "
            f"{self.resamples} resamples of each fold's rows)"
        )
        return "\n".join(lines)


def _format_leads(
    intervals: Mapping[str, Mapping[str, tuple[float, float]]], systems: list[str]
) -> list[str]:
    first = systems[0]
    lines = []
    for other in systems[1:]:
        lead = intervals.get(f"{first} - {other}")
        if not lead:
            continue
        cells = ", ".join(
            f"{_SHORT.get(m, m)} [{lead[m][0]:+.3f}, {lead[m][1]:+.3f}]"
            for m in (*INTERVAL_METRICS, "signal_rhetoric_f1")
            if m in lead
        )
        lines.append(f"  lead of {first} over {other}: {cells}")
    return lines


def _interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return round(float(low), 4), round(float(high), 4)


def _lead_intervals(
    resamples: Mapping[str, Mapping[str, np.ndarray]], systems: list[str]
) -> dict[str, dict[str, tuple[float, float]]]:
    out = {name: {k: _interval(v) for k, v in resamples[name].items()} for name in systems}
    first = systems[0]
    for other in systems[1:]:
        out[f"{first} - {other}"] = {
            k: _interval(resamples[first][k] - resamples[other][k])
            for k in (*INTERVAL_METRICS, "signal_rhetoric_f1")
        }
    return out


def rolling_evaluate(
    rows: Sequence[Mapping[str, Any]],
    predictors: Mapping[str, Callable[[Sequence[int], Sequence[int]], Sequence[Any]]],
    *,
    years: Sequence[int] = ROLLING_YEARS,
    prefilter: bool = True,
    resamples: int = RESAMPLES,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> RollingReport:
    """Score systems on rolling-origin folds of ``rows``, with the keyword baseline.

    ``predictors`` maps a system's name to a function ``(train, test) ->
    decisions`` that fits on the rows at the ``train`` indices and decides the
    rows at the ``test`` indices (one mapping or `Classification` per test row).
    The first system is the one whose lead the intervals measure. With
    ``prefilter``, test rows that `could_be_taiwan_related` rules out are
    negative for every model, as in serving.
    """
    folds = rolling_folds(rows, years)
    systems = [*predictors, BASELINE]
    baseline = KeywordBaseline()
    results = []
    for fold in folds:
        test_rows = [rows[i] for i in fold.test]
        articles = [row_article(r) for r in test_rows]
        passed = [
            could_be_taiwan_related(f"{a.title}\n{a.text}") or not prefilter for a in articles
        ]
        decisions: dict[str, Sequence[Any]] = {}
        for name, predict in predictors.items():
            chosen = list(predict(fold.train, fold.test))
            decisions[name] = [d if ok else _NEGATIVE for d, ok in zip(chosen, passed, strict=True)]
            if progress:
                progress(f"fold {fold.year}: {name} fitted on {len(fold.train)} rows")
        decisions[BASELINE] = baseline.classify(articles)
        reports = {name: evaluate(test_rows, decisions[name]) for name in systems}
        episodes = {
            name: episode_recall(test_rows, [bool(_flag(d)) for d in decisions[name]])
            for name in systems
        }
        samples = np.random.default_rng(seed + fold.year).integers(
            0, len(test_rows), size=(resamples, len(test_rows))
        )
        resampled = {
            name: resampled_metrics(test_rows, decisions[name], samples) for name in systems
        }
        results.append(
            FoldResult(
                year=fold.year,
                n_train=len(fold.train),
                n_test=len(fold.test),
                reports=reports,
                episodes=episodes,
                intervals=_lead_intervals(resampled, systems),
                resamples=resampled,
            )
        )
    mean = {
        name: {
            k: np.mean([r.resamples[name][k] for r in results], axis=0)
            for k in results[0].resamples[name]
        }
        for name in systems
    }
    return RollingReport(systems, results, _lead_intervals(mean, systems), resamples)


_NEGATIVE = {"taiwan_related": False, "escalation": False, "signals": [], "severity": 0}


def _flag(decision: Any) -> bool:
    if isinstance(decision, Mapping):
        return bool(decision.get("escalation"))
    return bool(decision.escalation)
