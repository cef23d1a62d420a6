"""Training recipes: which features, which heads, how they are tuned.

A `Recipe` names everything that turns labelled rows into a classifier besides
the rows themselves: the lexical feature set, whether the headline is encoded on
its own as a second view, the L2 strength ``c`` of the linear heads, the weight
of the hard negatives (Taiwan-related rows that report no new signal) and the
inner cross-validation that calibrates the escalation score and sets the
decision thresholds. `fit` runs a recipe on feature rows and returns `Heads`
that decide on new feature rows with `models.classifier.decide`, exactly as
the served network does; `models.rolling` scores recipes on rolling-origin folds
and `models.train` exports the chosen one. Training-time only (imports torch and
scikit-learn).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from models.classifier import decide, escalation_logit, probabilities
from models.features import MEASURE_SIGNAL, measure_in_taiwan_columns, n_lexical
from models.featurize import FeatureCache, row_inputs
from models.labels import DEFAULT_THRESHOLDS, OUTPUT_SLICES, SIGNALS

__all__ = [
    "RECIPES",
    "Heads",
    "Recipe",
    "features_of",
    "fit",
    "groups_of",
    "predictor",
    "recipe_from_meta",
    "targets_of",
    "tune",
]

N_OUT = OUTPUT_SLICES["severity"][1]


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a classifier besides the training rows."""

    name: str
    lexical: str = "v2"
    """Lexical feature set (`models.features`)."""
    headline_view: bool = False
    """Also encode the headline alone and feed its pooled states to the heads."""
    c: float = 1.0
    """Inverse L2 strength of the logistic-regression heads."""
    hard_negative_weight: float = 1.0
    """Weight, in the escalation and signal heads, of Taiwan-related rows without a signal."""
    prior: float = 0.0
    """Strength (logits) of the measure prior the signal heads are pulled towards
    (`_prior`); 0: towards zero, as plain L2."""
    lexical_scale: float = 1.0
    """Lexical features are multiplied by this before the heads see them: under the same
    L2 penalty, a larger scale lets the heads lean on them more. Folded into the
    exported head's weights, so serving feeds the features unscaled."""
    inner_folds: int = 5
    """Folds (grouped by story) for out-of-fold calibration and thresholds; 0: defaults."""
    seed: int = 13

    def describe(self) -> str:
        view = "text+headline" if self.headline_view else "text"
        return (
            f"{self.name}: {view} views, lexical {self.lexical} (x{self.lexical_scale:g}), "
            f"C={self.c:g}, hard negatives x{self.hard_negative_weight:g}, "
            f"{self.inner_folds}-fold inner CV"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_(self, **changes: Any) -> Recipe:
        return replace(self, **changes)


#: Named recipes. ``v2`` is the recipe of the v2 artefacts (trained on 2020-22 dev rows);
#: ``v3`` adds the headline view, the measure lexicon and hard-negative weighting, each
#: kept because it raised mean escalation F1 on the rolling-origin folds, and the
#: measure prior, which kept it level there and lets a measure against a third country
#: in a Taiwan story code its signal.
RECIPES: dict[str, Recipe] = {
    "v2": Recipe("v2"),
    "v3": Recipe(
        "v3", lexical="v3", headline_view=True, c=1.0, hard_negative_weight=8.0, prior=2.0
    ),
}


def recipe_from_meta(meta: Mapping[str, Any]) -> Recipe:
    """The recipe an artefact was trained with (v2 artefacts carry none: the v2 recipe)."""
    saved = meta.get("recipe")
    if isinstance(saved, Mapping):
        known = set(Recipe.__dataclass_fields__)
        return Recipe(**{k: v for k, v in saved.items() if k in known})
    c = float(meta.get("config", {}).get("c", 1.0))
    return RECIPES["v2"].with_(c=c)


def targets_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Training targets of labelled rows."""
    return {
        "taiwan_related": np.array([float(r["taiwan_related"]) for r in rows], dtype=np.float32),
        "escalation": np.array([float(r["escalation"]) for r in rows], dtype=np.float32),
        "signals": np.array(
            [[float(s in r["signals"]) for s in SIGNALS] for r in rows], dtype=np.float32
        ).reshape(len(rows), len(SIGNALS)),
        "severity": np.array([min(4, int(r["severity"])) for r in rows], dtype=np.int64),
    }


def groups_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Cross-validation group of each row: its story, else its publication day.

    Rows of one story (or, unlabelled, of one day's news) share wording; keeping
    them in one fold keeps out-of-fold scores honest about new events.
    """
    return [str(r.get("story") or f"day:{str(r.get('published') or '')[:10]}") for r in rows]


def _fold_of(groups: Sequence[str], k: int, seed: int) -> np.ndarray:
    return np.array(
        [int(hashlib.sha256(f"{seed}:{g}".encode()).hexdigest(), 16) % k for g in groups]
    )


def _columns(
    targets: Mapping[str, np.ndarray], hard_negative_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Targets ``[n, N_OUT]`` and per-row weights (0: not fitted) of each output column.

    Each binary head is class-balanced; severity is fitted on military rows only,
    as logit(3) against the fixed logit(2) (the other classes are off).
    """
    n = len(targets["escalation"])
    y = np.zeros((n, N_OUT), dtype=np.float32)
    w = np.zeros((n, N_OUT), dtype=np.float32)
    hard = (targets["taiwan_related"] > 0.5) & (targets["escalation"] < 0.5)
    binaries = [
        (OUTPUT_SLICES["taiwan_related"][0], targets["taiwan_related"], None),
        (OUTPUT_SLICES["escalation"][0], targets["escalation"], hard),
    ] + [
        (OUTPUT_SLICES["signals"][0] + i, targets["signals"][:, i], hard)
        for i in range(len(SIGNALS))
    ]
    military = targets["signals"][:, SIGNALS.index("military")] > 0.5
    severity = OUTPUT_SLICES["severity"][0] + 3
    binaries.append((severity, (targets["severity"] >= 3).astype(np.float32), None))
    for column, target, emphasis in binaries:
        mask = military if column == severity else np.ones(n, dtype=bool)
        y[:, column] = target
        positives = float((target[mask] > 0.5).sum())
        negatives = float(mask.sum()) - positives
        if positives < 2 or negatives < 2:
            continue
        balanced = np.where(
            target > 0.5, mask.sum() / (2 * positives), mask.sum() / (2 * negatives)
        )
        weight = balanced * mask
        if emphasis is not None and hard_negative_weight != 1.0:
            # Hard negatives weigh more among the negatives; the classes stay balanced.
            negative = mask & (target < 0.5)
            boosted = weight * np.where(emphasis & negative, hard_negative_weight, 1.0)
            total = boosted[negative].sum()
            if total > 0:
                boosted[negative] *= weight[negative].sum() / total
            weight = boosted
        w[:, column] = weight
    return y, w


def _fit_linear(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float, prior: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """L2-regularised weighted logistic regressions, one per output column, jointly.

    Minimises ``c * sum(w * logloss) + |W - prior|^2 / 2`` per column by L-BFGS.
    With a zero prior this is scikit-learn's ``LogisticRegression(C=c)`` with
    sample weights; it is fitted here because the penalty pulls the weights
    towards a non-zero ``prior`` (`_prior`), which scikit-learn's penalty (towards
    zero) cannot express. A column without weights is a constant at its base rate.
    """
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).double()
    yt = torch.from_numpy(y).double()
    wt = torch.from_numpy(w).double()
    weight = torch.zeros((x.shape[1], y.shape[1]), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(y.shape[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    fitted = (wt.sum(0) > 0).double()
    centre = torch.zeros_like(weight) if prior is None else torch.from_numpy(prior.T).double()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = xt @ weight + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, yt, weight=wt, reduction="sum"
        )
        shift = weight - centre
        penalty = 0.5 * ((shift * shift).sum(0) * fitted).sum()
        total = c * loss + penalty
        total.backward()
        return total

    optimiser.step(closure)
    out_w = weight.detach().numpy().T.copy()
    out_b = bias.detach().numpy().copy()
    for column in np.flatnonzero(fitted.numpy() == 0):
        rate = (float(y[:, column].sum()) + 0.5) / (len(y) + 1.0)
        out_w[column] = 0.0
        out_b[column] = float(np.log(rate / (1 - rate)))
    return out_w, out_b


def _head(
    x: np.ndarray, targets: Mapping[str, np.ndarray], recipe: Recipe
) -> tuple[np.ndarray, np.ndarray]:
    y, w = _columns(targets, recipe.hard_negative_weight)
    prior = _prior(x.shape[1], recipe) if recipe.prior else None
    weight, bias = _fit_linear(x, y, w, recipe.c, prior)
    first = OUTPUT_SLICES["severity"][0]
    # Severity: only logit(3) - logit(2) is learned; classes 0, 1 and 4 are off.
    keep_w, keep_b = weight[first + 3].copy(), bias[first + 3]
    weight[first : first + 5] = 0.0
    bias[first : first + 5] = [-30.0, -30.0, 0.0, 0.0, -30.0]
    weight[first + 3], bias[first + 3] = keep_w, keep_b
    return weight, bias


def _prior(width: int, recipe: Recipe) -> np.ndarray:
    """Head weights the L2 penalty pulls towards: the guide's reading of the measures.

    A coercive measure reported in an input that names Taiwan (lexical set v3,
    `models.features.measure_in_taiwan_columns`) codes the signal type the guide
    gives it, whoever its target: advisories, cancelled exchanges, sanctions and
    trade curbs economic; summoned envoys diplomatic; threats rhetoric. The rows
    teach Taiwan's own episodes; the prior keeps a measure against a third country
    from reading as no signal only because no row showed one. Everything else is
    pulled towards zero, as plain L2.
    """
    prior = np.zeros((N_OUT, width))
    lexical = width - n_lexical(recipe.lexical)
    strength = recipe.prior / recipe.lexical_scale
    for family, column in measure_in_taiwan_columns(recipe.lexical).items():
        signal = SIGNALS.index(MEASURE_SIGNAL[family])
        prior[OUTPUT_SLICES["signals"][0] + signal, lexical + column] = strength
    return prior


def _platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling: ``sigmoid(a * logit + b)`` fitted to the labels (log loss).

    A logistic regression on the one logit feature, by Newton steps; the L2 of
    ``C=1e3`` is negligible next to the rows' log loss and keeps ``a`` finite
    should the scores separate the classes. Labels of one class: ``(1, 0)``.
    """
    y = labels > 0.5
    if y.all() or not y.any():
        return 1.0, 0.0
    model = LogisticRegression(C=1e3, solver="newton-cholesky", tol=1e-10)
    model.fit(logits.reshape(-1, 1), y)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def _best_threshold(
    f1_at: Callable[[float], float], grid: np.ndarray, default: float = 0.5
) -> tuple[float, float]:
    """The grid value with the best F1; ties go to the value nearest ``default``."""
    scored = [(round(f1_at(t), 6), -abs(t - default), t) for t in grid]
    f1, _, best = max(scored)
    return float(best), float(f1)


def _f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """F1 of boolean decisions; 1.0 when there are neither gold nor predicted positives."""
    return float(f1_score(gold, pred, zero_division=1.0))


def tune(oof: np.ndarray, targets: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Escalation calibration and decision thresholds from out-of-fold logits."""
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    esc_logit = escalation_logit(oof)
    a, b = _platt(esc_logit, targets["escalation"])
    esc = sig(a * esc_logit + b)
    tw = sig(oof[:, OUTPUT_SLICES["taiwan_related"][0]])
    signals = sig(oof[:, slice(*OUTPUT_SLICES["signals"])])
    gold_esc = targets["escalation"] > 0.5
    gold_tw = targets["taiwan_related"] > 0.5
    grid = np.round(np.arange(0.2, 0.81, 0.01), 2)
    t_esc, f1_esc = _best_threshold(lambda t: _f1(gold_esc, esc >= t), grid)
    pred_esc = esc >= t_esc
    t_tw, f1_tw = _best_threshold(lambda t: _f1(gold_tw, (tw >= t) | pred_esc), grid)
    thresholds = {"taiwan_related": t_tw, "escalation": t_esc}
    oof_f1 = {"escalation": f1_esc, "taiwan_related": f1_tw}
    argmax = signals.argmax(1)
    for i, name in enumerate(SIGNALS):
        gold = targets["signals"][:, i] > 0.5

        def f1_at(t: float, i: int = i, gold: np.ndarray = gold) -> float:
            chosen = signals >= t
            own = (signals[:, i] >= t) | (~chosen.any(1) & (argmax == i))
            return _f1(gold, pred_esc & own)

        thresholds[name], oof_f1[name] = _best_threshold(f1_at, grid)
    return {
        "calibration": {"escalation": [a, b]},
        "thresholds": thresholds,
        "oof_f1": {k: round(v, 4) for k, v in oof_f1.items()},
    }


@dataclass
class Heads:
    """A fitted recipe: linear heads, calibration and thresholds."""

    recipe: Recipe
    weight: np.ndarray
    bias: np.ndarray
    thresholds: dict[str, float]
    calibration: tuple[float, float]
    oof_f1: dict[str, float] = field(default_factory=dict)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias

    def network_weight(self) -> np.ndarray:
        """Head weights for the served network, which feeds lexical features unscaled."""
        weight = self.weight.copy()
        weight[:, -n_lexical(self.recipe.lexical) :] *= self.recipe.lexical_scale
        return weight

    def decisions(self, x: np.ndarray) -> list[dict[str, Any]]:
        """One decision per feature row, as the served network would decide it."""
        scores = probabilities(self.logits(x), self.calibration)
        return [decide(scores, slice(i, i + 1), self.thresholds) for i in range(len(x))]


def fit(
    x: np.ndarray,
    targets: Mapping[str, np.ndarray],
    groups: Sequence[str],
    recipe: Recipe,
) -> Heads:
    """Fit a recipe's heads on feature rows; calibrate and tune on inner folds.

    The inner folds split ``groups`` (stories), so thresholds are set on scores
    of stories the heads did not see. Nothing outside ``x`` is looked at.
    """
    tuned: dict[str, Any] = {"calibration": {}, "thresholds": {}, "oof_f1": {}}
    if recipe.inner_folds > 1:
        fold_of = _fold_of(groups, recipe.inner_folds, recipe.seed)
        oof = np.zeros((len(x), N_OUT))
        for k in range(recipe.inner_folds):
            kept, held = fold_of != k, fold_of == k
            if not held.any() or not kept.any():
                continue
            weight, bias = _head(x[kept], {n: v[kept] for n, v in targets.items()}, recipe)
            oof[held] = x[held] @ weight.T + bias
        tuned = tune(oof, targets)
    weight, bias = _head(x, targets, recipe)
    calibration = tuple(tuned["calibration"].get("escalation", (1.0, 0.0)))
    return Heads(
        recipe=recipe,
        weight=weight,
        bias=bias,
        thresholds={**DEFAULT_THRESHOLDS, **tuned["thresholds"]},
        calibration=(float(calibration[0]), float(calibration[1])),
        oof_f1=tuned["oof_f1"],
    )


def n_features(recipe: Recipe, pooled: int) -> int:
    """Width of a recipe's feature rows for an encoder of ``pooled`` dimensions."""
    return pooled * (2 if recipe.headline_view else 1) + n_lexical(recipe.lexical)


def features_of(
    rows: Sequence[Mapping[str, Any]], recipe: Recipe, cache: FeatureCache
) -> np.ndarray:
    """Feature rows of labelled rows for a recipe: pooled text [, pooled headline], lexical.

    ``cache`` encodes only the texts it has not seen.
    """
    inputs = row_inputs(rows, recipe.lexical)
    parts = [cache.features(inputs.texts)]
    if recipe.headline_view:
        parts.append(cache.features(inputs.titles))
    parts.append(inputs.lexical * recipe.lexical_scale)
    return np.hstack(parts).astype(np.float32)


def predictor(
    rows: Sequence[Mapping[str, Any]], recipe: Recipe, cache: FeatureCache
) -> Callable[[Sequence[int], Sequence[int]], list[dict[str, Any]]]:
    """``(train, test) -> decisions``: the recipe fitted on rows ``train``, deciding ``test``.

    For `models.rolling.rolling_evaluate`; features are computed once for all rows.
    """
    x = features_of(rows, recipe, cache)
    targets = targets_of(rows)
    groups = groups_of(rows)

    def predict(train: Sequence[int], test: Sequence[int]) -> list[dict[str, Any]]:
        index = np.asarray(train)
        heads = fit(
            x[index],
            {name: value[index] for name, value in targets.items()},
            [groups[i] for i in train],
            recipe,
        )
        return heads.decisions(x[np.asarray(test)])

    return predict
