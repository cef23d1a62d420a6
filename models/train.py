"""Train the classifier on the labelled rows and write a versioned serving artefact.

Run as ``newswatch model train [--data PATH ...] [--recipe NAME] [--c C] ...``. Steps:

1. Rows: every labelled file under the sources (`models.data`), with their story
   labels; rows published from 2024 on are left out, with a message.
2. Features: each row becomes its model input exactly as serving builds it and
   is encoded once by the frozen MiniLM encoder (mean-pooled layers 4-6, cached
   by content hash, `models.featurize`), next to its lexical features.
3. Selection on rolling-origin folds (`models.rolling`): for each candidate L2
   strength C of the recipe (`--select`), the recipe is fitted on the rows
   before each test year 2021-2023 (thresholds and calibration by inner
   story-grouped cross-validation within those rows) and scored on that year;
   the candidate with the best mean escalation F1 wins (ties: signals macro-F1).
   The chosen recipe's fold table, next to the v2 recipe and the keyword
   baseline, goes into ``meta.json``.
4. The chosen recipe is fitted on all rows: linear heads (class-balanced
   logistic regressions, hard negatives weighted) for taiwan_related,
   escalation, the six signals and military severity; the escalation score is
   Platt-calibrated and the thresholds tuned on inner out-of-fold scores.
5. The heads join the encoder in one network, exported to ONNX (int8 when that
   keeps the decisions), with the tokenizer, the encoder in Hugging Face layout
   for the naive benchmark, and ``meta.json``; the artefact is loaded through
   the serving path and checked to decide the training rows as the fitted heads
   do. ``LATEST`` then points at the new version.

Why frozen: fine-tuning the encoder (all or the top two layers) took 10-15
minutes for four epochs on the shared two cores and scored lower on held-out
folds than linear heads on frozen features, which train in seconds.
Training is deterministic for given rows, recipe and seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from models.classifier import LATEST_FILE, MAX_TOKENS, EscalationClassifier
from models.data import TRAIN_CUTOFF, before_cutoff, load_labelled
from models.encoder import EscalationNet, encoder_dir
from models.evaluate import row_article
from models.features import n_lexical
from models.featurize import FeatureCache
from models.labels import ENCODER_NAME, MODEL_NAME, OUTPUT_SLICES, SIGNALS
from models.recipe import RECIPES, Heads, Recipe, features_of, fit, groups_of, predictor, targets_of
from models.rolling import ROLLING_YEARS, rolling_evaluate

__all__ = ["SELECT_C", "TrainConfig", "train"]

logger = logging.getLogger(__name__)

#: Bumped when the network, inputs or training recipe change incompatibly.
FORMAT = "v3"
#: Candidate L2 strengths tried on the rolling-origin folds with ``select``.
SELECT_C = (0.5, 1.0, 2.0)


@dataclass
class TrainConfig:
    """Everything that determines a training run."""

    data: list[Path]
    """Labelled files or directories (every ``*.jsonl`` in them)."""
    artifacts_dir: Path
    version: str | None = None
    """Artefact version; default ``<FORMAT>-<first 8 hex of the rows' sha256>``."""
    recipe: str = "v3"
    """Recipe name (`models.recipe.RECIPES`)."""
    c: float | None = None
    """Inverse L2 strength of the heads; None: the recipe's, or the selected one."""
    select: bool = True
    """Choose C among `SELECT_C` by mean escalation F1 on the rolling-origin folds."""
    inner_folds: int | None = None
    """Inner cross-validation folds for calibration and thresholds (0: defaults)."""
    seed: int = 13
    quantize: bool = True
    """Serve the int8 model if its decisions match the fp32 model's on the training rows."""
    max_tokens: int = MAX_TOKENS
    threads: int = 2
    years: list[int] = field(default_factory=lambda: list(ROLLING_YEARS))
    """Test years of the rolling-origin folds."""


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _progress(message: str, *args: Any) -> None:
    print(message % args if args else message, flush=True)


def _rows_sha256(rows: Sequence[dict[str, Any]]) -> str:
    """Digest of the training rows' content (order-independent of files)."""
    digest = hashlib.sha256()
    for row in rows:
        clean = {k: v for k, v in row.items() if k != "source_file"}
        digest.update(json.dumps(clean, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def select_recipe(
    rows: Sequence[dict[str, Any]], base: Recipe, cache: FeatureCache, config: TrainConfig
) -> tuple[Recipe, dict[str, Any]]:
    """The candidate C with the best mean rolling-origin escalation F1 (ties: macro-F1)."""
    scored = []
    for c in SELECT_C:
        candidate = base.with_(c=c)
        report = rolling_evaluate(
            rows,
            {candidate.name: predictor(rows, candidate, cache)},
            years=config.years,
            resamples=10,
        )
        f1 = report.mean(candidate.name, "escalation_f1")
        macro = report.mean(candidate.name, "signals_macro_f1")
        scored.append((round(f1, 4), round(macro, 4), -abs(np.log(c / base.c)), c))
        _progress("selection: C=%g mean escalation F1 %.4f, signals macro-F1 %.4f", c, f1, macro)
    best = max(scored)
    table = {f"C={c:g}": {"escalation_f1": f1, "signals_macro_f1": m} for f1, m, _, c in scored}
    return base.with_(c=best[3]), {"by": "mean rolling-origin escalation F1", "candidates": table}


def train(config: TrainConfig) -> dict[str, Any]:
    """Run the whole recipe; returns the artefact's meta.json content.

    Raises:
        ValueError: an unknown recipe, or no labelled row before the cut-off.
    """
    started = time.monotonic()
    if config.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {config.recipe!r} ({', '.join(RECIPES)})")
    cut = before_cutoff(load_labelled(config.data))
    if cut.excluded:
        _progress(cut.message())
    rows = cut.rows
    if not rows:
        raise ValueError(f"no labelled rows published before {TRAIN_CUTOFF:%Y-%m-%d}")
    recipe = RECIPES[config.recipe].with_(seed=config.seed)
    if config.c is not None:
        recipe = recipe.with_(c=config.c)
    if config.inner_folds is not None:
        recipe = recipe.with_(inner_folds=config.inner_folds)
    data_sha = _rows_sha256(rows)
    version = config.version or f"{FORMAT}-{data_sha[:8]}"
    files: dict[str, int] = {}
    for row in rows:
        files[row["source_file"]] = files.get(row["source_file"], 0) + 1
    _progress(
        "training %s on %d rows (%d escalations, %d with a story label) from %d files",
        version,
        len(rows),
        sum(bool(r["escalation"]) for r in rows),
        sum(bool(r.get("story")) for r in rows),
        len(files),
    )
    _seed_everything(config.seed)
    cache = FeatureCache(
        config.artifacts_dir / ".cache",
        max_tokens=config.max_tokens,
        threads=config.threads,
        seed=config.seed,
        progress=_progress,
    )
    features = features_of(rows, recipe, cache)
    _progress("features of %d rows ready, elapsed %.1fs", len(rows), time.monotonic() - started)

    selection: dict[str, Any] | None = None
    if config.select and config.c is None:
        recipe, selection = select_recipe(rows, recipe, cache, config)
    _progress("recipe %s", recipe.describe())
    rolling = rolling_evaluate(
        rows,
        {
            f"recipe {recipe.name}": predictor(rows, recipe, cache),
            "recipe v2": predictor(rows, RECIPES["v2"], cache),
        },
        years=config.years,
    )
    _progress("rolling-origin folds (train before Y, test on Y):\n%s", rolling.format())

    heads = fit(features, targets_of(rows), groups_of(rows), recipe)
    _progress("cross-validated thresholds %s", json.dumps(heads.thresholds))
    _progress("inner out-of-fold F1 %s", json.dumps(heads.oof_f1))
    net = EscalationNet.from_pretrained(
        n_lexical=n_lexical(recipe.lexical), headline_view=recipe.headline_view
    )
    _set_head(net, heads.network_weight(), heads.bias)
    train_seconds = time.monotonic() - started
    _progress("heads fitted on %d rows, elapsed %.1fs", len(rows), train_seconds)

    config.artifacts_dir.mkdir(parents=True, exist_ok=True)
    directory = config.artifacts_dir / version
    staging = config.artifacts_dir / f".{version}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    _export(net, staging, n_lexical(recipe.lexical), recipe.headline_view)
    shutil.copy2(encoder_dir() / "tokenizer.json", staging / "tokenizer.json")
    _save_hf(staging)
    views = "input and headline" if recipe.headline_view else "input"
    meta: dict[str, Any] = {
        "model": MODEL_NAME,
        "version": version,
        "format": FORMAT,
        "encoder": ENCODER_NAME,
        "architecture": (
            f"frozen all-MiniLM-L6-v2; L2-normalised mean-pooled states of layers 4-6 of the "
            f"{views} + lexical features ({recipe.lexical}); linear heads (logistic regressions)"
        ),
        "onnx": "model.fp32.onnx",
        "max_tokens": config.max_tokens,
        "lexical": recipe.lexical,
        "headline_view": recipe.headline_view,
        "recipe": recipe.to_dict(),
        "labels": {
            "taiwan_related": "binary",
            "escalation": (
                "binary: geometric mean of P(escalation), P(taiwan_related) and the top "
                "signal probability, Platt-calibrated on inner out-of-fold scores"
            ),
            "signals": list(SIGNALS),
            "severity": [0, 1, 2, 3, 4],
        },
        "outputs": {k: list(v) for k, v in OUTPUT_SLICES.items()},
        "escalation_rule": "combined",
        "thresholds": heads.thresholds,
        "calibration": {"escalation": list(heads.calibration)},
        "cross_validation": {
            "folds": recipe.inner_folds,
            "grouped_by": "story label (else publication day)",
            "oof_f1": heads.oof_f1,
        },
        "selection": selection,
        "training_data": {
            "sources": [str(p) for p in config.data],
            "files": dict(sorted(files.items())),
            "sha256": data_sha,
            "rows": len(rows),
            "escalations": sum(bool(r["escalation"]) for r in rows),
            "excluded_from_cutoff": cut.excluded,
            "cutoff": f"published before {TRAIN_CUTOFF:%Y-%m-%d}",
        },
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(config).items()
            if k not in ("data", "artifacts_dir")
        },
        "seed": config.seed,
        "environment": _environment(),
    }
    _write_meta(staging, meta)
    meta["serving_agreement"] = _serving_agreement(staging, rows, heads, features)
    _progress("serving path vs fitted heads on the training rows: %s", meta["serving_agreement"])

    if config.quantize:
        int8 = _quantize(staging)
        agreement = _agreement(staging, int8, rows)
        meta["quantization"] = {"file": int8.name, "train_decision_agreement": agreement}
        if agreement["escalation"] >= 0.995 and agreement["signals"] >= 0.99:
            meta["onnx"] = int8.name
        _progress("int8 decision agreement with fp32 on training rows: %s", json.dumps(agreement))
    meta["rolling"] = rolling.to_dict()
    meta["train_seconds"] = round(train_seconds, 1)
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    _write_meta(staging, meta)

    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    (config.artifacts_dir / LATEST_FILE).write_text(version + "\n", encoding="utf-8")
    _progress("wrote %s (LATEST -> %s) in %.1fs", directory, version, meta["total_seconds"])
    return meta


def _serving_agreement(
    directory: Path, rows: Sequence[dict[str, Any]], heads: Heads, features: np.ndarray
) -> dict[str, float]:
    """Share of training rows the exported network decides as the fitted heads do."""
    served = EscalationClassifier(directory, prefilter=False).classify(
        [row_article(r) for r in rows]
    )
    fitted = heads.decisions(features)
    n = max(1, len(rows))
    return {
        "escalation": round(
            sum(a.escalation == b["escalation"] for a, b in zip(served, fitted, strict=True)) / n,
            4,
        ),
        "signals": round(
            sum(a.signals == b["signals"] for a, b in zip(served, fitted, strict=True)) / n, 4
        ),
    }


def _export(net: EscalationNet, directory: Path, lexical_width: int, headline_view: bool) -> None:
    """ONNX export of the whole network (dynamic batch and length)."""
    ids = torch.tensor([[101, 2000, 2001, 102], [101, 2000, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    lexical = torch.zeros((2, lexical_width), dtype=torch.float32)
    args: tuple[Any, ...] = (ids, mask, lexical)
    names = ["input_ids", "attention_mask", "lexical"]
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "length"},
        "attention_mask": {0: "batch", 1: "length"},
        "lexical": {0: "batch"},
        "logits": {0: "batch"},
    }
    if headline_view:
        title = torch.tensor([[101, 2000, 102], [101, 2001, 102]], dtype=torch.long)
        args = (*args, title, (title != 0).long())
        names += ["title_ids", "title_mask"]
        axes["title_ids"] = {0: "batch", 1: "title_length"}
        axes["title_mask"] = {0: "batch", 1: "title_length"}
    torch.onnx.export(
        net,
        args,
        str(directory / "model.fp32.onnx"),
        dynamo=False,
        input_names=names,
        output_names=["logits"],
        dynamic_axes=axes,
        opset_version=17,
    )


def _save_hf(directory: Path) -> None:
    """The encoder in Hugging Face layout, for the naive benchmark only.

    The benchmark's ``pipeline("text-classification")`` runs this encoder with a
    placeholder classification layer: the same transformer work per article as
    the served model, but not its head, so its scores mean nothing.
    """
    hf = directory / "hf"
    hf.mkdir()
    cfg = json.loads((encoder_dir() / "config.json").read_text(encoding="utf-8"))
    n = OUTPUT_SLICES["severity"][1]
    cfg.update(
        architectures=["BertForSequenceClassification"],
        problem_type="multi_label_classification",
        id2label={str(i): f"LABEL_{i}" for i in range(n)},
        label2id={f"LABEL_{i}": i for i in range(n)},
    )
    (hf / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    names = ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")
    for name in (*names, "special_tokens_map.json"):
        shutil.copy2(encoder_dir() / name, hf / name)


def _quantize(directory: Path) -> Path:
    target = directory / "model.int8.onnx"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the quantizer logs a line per tensor at INFO
    try:
        quantize_dynamic(
            str(directory / "model.fp32.onnx"), str(target), weight_type=QuantType.QInt8
        )
    finally:
        root.setLevel(level)
    return target


def _set_head(net: EscalationNet, weight: np.ndarray, bias: np.ndarray) -> None:
    with torch.no_grad():
        net.head.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        net.head.bias.copy_(torch.from_numpy(bias.astype(np.float32)))


def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cpu_count": str(os.cpu_count()),
    }


def _agreement(directory: Path, int8: Path, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Share of training rows on which the int8 model decides as the fp32 model does."""
    fp32 = EscalationClassifier(directory, prefilter=False).classify([row_article(r) for r in rows])
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    meta["onnx"] = int8.name
    probe = directory / ".int8-probe"
    probe.mkdir(exist_ok=True)
    for name in ("tokenizer.json",):
        shutil.copy2(directory / name, probe / name)
    shutil.copy2(int8, probe / int8.name)
    _write_meta(probe, meta)
    try:
        quant = EscalationClassifier(probe, prefilter=False).classify(
            [row_article(r) for r in rows]
        )
    finally:
        shutil.rmtree(probe)
    n = max(1, len(rows))
    return {
        "escalation": round(
            sum(a.escalation == b.escalation for a, b in zip(fp32, quant, strict=True)) / n, 4
        ),
        "signals": round(
            sum(a.signals == b.signals for a, b in zip(fp32, quant, strict=True)) / n, 4
        ),
        "severity": round(
            sum(a.severity == b.severity for a, b in zip(fp32, quant, strict=True)) / n, 4
        ),
    }
