"""Train the classifier on the labelled rows and write a versioned serving artefact.

Run as ``newswatch model train [--data FILE] [--c C] [--folds K] ...``. Steps:

1. Temporal split: rows published before 2023 train, 2023 and later test.
2. Every training row becomes its model input exactly as serving builds it and
   is encoded once by the frozen MiniLM encoder (mean-pooled layers 4-6), next
   to its lexical dictionary features (`models.features`).
3. Linear heads (class-balanced logistic regressions) learn taiwan_related,
   escalation, the six signals and military severity on those features.
   K-fold cross-validation inside the training rows gives out-of-fold scores,
   on which the escalation probability is calibrated (Platt scaling) and the
   decision thresholds are tuned. Test rows are never seen before step 5.
4. The heads fitted on all training rows join the encoder in one network,
   exported to ONNX (and int8-quantised when that keeps the decisions), with
   the tokenizer, the encoder in Hugging Face layout for the naive benchmark,
   and ``meta.json``.
5. The artefact is loaded through the serving path and scored on the test rows
   next to the keyword baseline; metrics go into ``meta.json``. ``LATEST`` then
   points at the new version.

Why frozen: fine-tuning the encoder (all or the top two layers) took 10-15
minutes for four epochs on the shared two cores and scored lower on held-out
folds than linear heads on frozen features, which train in seconds.
Training is deterministic for a given data file, configuration and seed.
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.classifier import (
    LATEST_FILE,
    MAX_TOKENS,
    EscalationClassifier,
    document_inputs,
    escalation_logit,
    load_tokenizer,
)
from models.evaluate import evaluate, load_rows, row_article, split_rows
from models.features import N_LEXICAL
from models.labels import ENCODER_NAME, MODEL_NAME, OUTPUT_SLICES, SIGNALS

__all__ = ["TrainConfig", "train"]

logger = logging.getLogger(__name__)

#: Bumped when the network, inputs or training recipe change incompatibly.
FORMAT = "v2"


@dataclass
class TrainConfig:
    """Everything that determines a training run."""

    data: Path
    artifacts_dir: Path
    version: str | None = None
    """Artefact version; default ``v2-<first 8 hex of the data file's sha256>``."""
    c: float = 1.0
    """Inverse L2 strength of the logistic-regression heads (chosen by cross-validation)."""
    folds: int = 5
    """Cross-validation folds for calibration and thresholds (0: skip, use defaults)."""
    seed: int = 13
    quantize: bool = True
    """Serve the int8 model if its decisions match the fp32 model's on the training rows."""
    max_tokens: int = MAX_TOKENS
    threads: int = 2


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _progress(message: str, *args: Any) -> None:
    print(message % args if args else message, flush=True)


def _targets(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {
        "taiwan_related": np.array([float(r["taiwan_related"]) for r in rows], dtype=np.float32),
        "escalation": np.array([float(r["escalation"]) for r in rows], dtype=np.float32),
        "signals": np.array(
            [[float(s in r["signals"]) for s in SIGNALS] for r in rows], dtype=np.float32
        ),
        "severity": np.array([min(4, int(r["severity"])) for r in rows], dtype=np.int64),
    }


def _encode(rows: Sequence[dict[str, Any]], config: TrainConfig) -> tuple[Any, np.ndarray]:
    """The frozen network and the features ``[rows, n_features]`` of every row.

    Each row becomes its model input exactly as serving builds it
    (`document_inputs`); a labelled row is short, so it is one window.
    """
    import torch

    from models.encoder import EscalationNet, encoder_dir

    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    _seed_everything(config.seed)
    net = EscalationNet.from_pretrained()
    tokenizer = load_tokenizer(encoder_dir() / "tokenizer.json", config.max_tokens)
    texts: list[str] = []
    lexical: list[np.ndarray] = []
    for row in rows:
        article = row_article(row)
        inputs = document_inputs(article.title, article.text)
        # Labelled rows are short; should one be long, the headline window stands for it.
        texts.append(inputs.texts[0])
        lexical.append(inputs.lexical[0])
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    pooled = np.zeros((len(rows), net.n_features - len(lexical[0])), dtype=np.float32)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    started = time.monotonic()
    with torch.inference_mode():
        for begin in range(0, len(order), 64):
            chunk = order[begin : begin + 64]
            width = max(len(ids[i]) for i in chunk)
            input_ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            pooled[chunk] = net.pooled(input_ids, mask).numpy()
            if begin // 64 % 5 == 0:
                _progress(
                    "encoded %d/%d texts, elapsed %.1fs",
                    min(begin + 64, len(order)),
                    len(order),
                    time.monotonic() - started,
                )
    _progress("encoded %d texts in %.1fs", len(order), time.monotonic() - started)
    return net, np.hstack([pooled, np.stack(lexical)])


class _Heads:
    """Linear heads (class-balanced, L2-regularised logistic regressions) on fixed features."""

    def __init__(self, c: float) -> None:
        self.c = c

    def _binary(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        from sklearn.linear_model import LogisticRegression

        positives = int(y.sum())
        if positives < 2 or positives > len(y) - 2:
            # Too few examples of one class to fit: a constant at the base rate.
            rate = (positives + 0.5) / (len(y) + 1.0)
            return np.zeros(x.shape[1]), float(np.log(rate / (1 - rate)))
        model = LogisticRegression(C=self.c, class_weight="balanced", max_iter=5000)
        model.fit(x, y.astype(int))
        return model.coef_[0], float(model.intercept_[0])

    def fit(self, x: np.ndarray, targets: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Weights ``[N_OUTPUTS, features]`` and biases ``[N_OUTPUTS]``."""
        weight = np.zeros((OUTPUT_SLICES["severity"][1], x.shape[1]))
        bias = np.zeros(OUTPUT_SLICES["severity"][1])
        columns = [
            (OUTPUT_SLICES["taiwan_related"][0], targets["taiwan_related"]),
            (OUTPUT_SLICES["escalation"][0], targets["escalation"]),
        ] + [
            (OUTPUT_SLICES["signals"][0] + i, targets["signals"][:, i]) for i in range(len(SIGNALS))
        ]
        for column, y in columns:
            weight[column], bias[column] = self._binary(x, y > 0.5)
        # Severity only matters for military signals (2: routine, 3+: major activity):
        # logit(3) - logit(2) is fitted on the military rows, the other classes are off.
        first = OUTPUT_SLICES["severity"][0]
        bias[first : first + 5] = [-30.0, -30.0, 0.0, 0.0, -30.0]
        military = targets["signals"][:, SIGNALS.index("military")] > 0.5
        if military.any():
            w, b = self._binary(x[military], targets["severity"][military] >= 3)
            weight[first + 3], bias[first + 3] = w, b
        return weight, bias

    @staticmethod
    def apply(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        return x @ weight.T + bias


def _platt(logits: np.ndarray, labels: np.ndarray, l2: float = 1e-3) -> tuple[float, float]:
    """Fit ``sigmoid(a * logit + b)`` to the labels by Newton's method (log loss)."""
    a, b = 1.0, 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(a * logits + b)))
        w = p * (1 - p)
        grad = np.array([((p - labels) * logits).sum() + l2 * (a - 1), (p - labels).sum()])
        hess = np.array(
            [[(w * logits * logits).sum() + l2, (w * logits).sum()], [(w * logits).sum(), w.sum()]]
        )
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return float(a), float(b)


def _best_threshold(
    f1_at: Callable[[float], float], grid: np.ndarray, default: float = 0.5
) -> tuple[float, float]:
    """The grid value with the best F1; ties go to the value nearest ``default``."""
    scored = [(round(f1_at(t), 6), -abs(t - default), t) for t in grid]
    f1, _, best = max(scored)
    return float(best), float(f1)


def _f1(gold: np.ndarray, pred: np.ndarray) -> float:
    tp = float((gold & pred).sum())
    denominator = float(gold.sum() + pred.sum())
    return 2 * tp / denominator if denominator else 1.0


def _tune(oof: np.ndarray, targets: dict[str, np.ndarray]) -> dict[str, Any]:
    """Calibration and thresholds from out-of-fold logits."""
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
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


def _folds(rows: Sequence[dict[str, Any]], k: int) -> list[int]:
    """Deterministic fold of each row from a hash of its id."""
    return [
        int(hashlib.sha256(str(r.get("id", i)).encode()).hexdigest(), 16) % k
        for i, r in enumerate(rows)
    ]


def _export(net: Any, directory: Path) -> None:
    """ONNX export of the whole network (dynamic batch and length)."""
    import torch

    ids = torch.tensor([[101, 2000, 2001, 102], [101, 2000, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    lexical = torch.zeros((2, N_LEXICAL), dtype=torch.float32)
    torch.onnx.export(
        net,
        (ids, mask, lexical),
        str(directory / "model.fp32.onnx"),
        dynamo=False,
        input_names=["input_ids", "attention_mask", "lexical"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "length"},
            "attention_mask": {0: "batch", 1: "length"},
            "lexical": {0: "batch"},
            "logits": {0: "batch"},
        },
        opset_version=17,
    )


def _save_hf(directory: Path) -> None:
    """The encoder in Hugging Face layout, for the naive benchmark only.

    The benchmark's ``pipeline("text-classification")`` runs this encoder with a
    placeholder classification layer: the same transformer work per article as
    the served model, but not its head, so its scores mean nothing.
    """
    from models.encoder import encoder_dir

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
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = directory / "model.int8.onnx"
    quantize_dynamic(str(directory / "model.fp32.onnx"), str(target), weight_type=QuantType.QInt8)
    return target


def _data_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train(config: TrainConfig) -> dict[str, Any]:
    """Run the whole recipe; returns the artefact's meta.json content."""
    started = time.monotonic()
    rows = load_rows(config.data)
    train_rows = split_rows(rows, "train")
    test_rows = split_rows(rows, "test")
    if not train_rows:
        raise ValueError(f"{config.data}: no rows published before the test year")
    data_sha = _data_sha256(config.data)
    version = config.version or f"{FORMAT}-{data_sha[:8]}"
    _progress(
        "training %s on %d rows (test: %d rows) from %s",
        version,
        len(train_rows),
        len(test_rows),
        config.data,
    )
    net, features = _encode(train_rows, config)
    targets = _targets(train_rows)

    tuned: dict[str, Any] = {"calibration": {}, "thresholds": {}, "oof_f1": {}}
    if config.folds > 1:
        fold_of = np.array(_folds(train_rows, config.folds))
        oof = np.zeros((len(train_rows), OUTPUT_SLICES["severity"][1]))
        heads = _Heads(config.c)
        for k in range(config.folds):
            kept, held = fold_of != k, fold_of == k
            weight, bias = heads.fit(features[kept], {n: v[kept] for n, v in targets.items()})
            oof[held] = heads.apply(features[held], weight, bias)
            _progress(
                "fold %d/%d fitted, elapsed %.1fs", k + 1, config.folds, time.monotonic() - started
            )
        tuned = _tune(oof, targets)
        _progress("cross-validated thresholds %s", json.dumps(tuned["thresholds"]))
        _progress("out-of-fold F1 %s", json.dumps(tuned["oof_f1"]))

    weight, bias = _Heads(config.c).fit(features, targets)
    _set_head(net, weight, bias)
    train_seconds = time.monotonic() - started
    _progress("heads fitted on %d rows, elapsed %.1fs", len(train_rows), train_seconds)

    config.artifacts_dir.mkdir(parents=True, exist_ok=True)
    directory = config.artifacts_dir / version
    staging = config.artifacts_dir / f".{version}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    _export(net, staging)
    shutil.copy2(_encoder_file("tokenizer.json"), staging / "tokenizer.json")
    _save_hf(staging)
    meta: dict[str, Any] = {
        "model": MODEL_NAME,
        "version": version,
        "format": FORMAT,
        "encoder": ENCODER_NAME,
        "architecture": (
            "frozen all-MiniLM-L6-v2; L2-normalised mean-pooled states of layers 4-6 "
            "+ lexical dictionary features; linear heads (logistic regressions)"
        ),
        "onnx": "model.fp32.onnx",
        "max_tokens": config.max_tokens,
        "labels": {
            "taiwan_related": "binary",
            "escalation": (
                "binary: geometric mean of P(escalation), P(taiwan_related) and the top "
                "signal probability, Platt-calibrated on out-of-fold scores"
            ),
            "signals": list(SIGNALS),
            "severity": [0, 1, 2, 3, 4],
        },
        "outputs": {k: list(v) for k, v in OUTPUT_SLICES.items()},
        "escalation_rule": "combined",
        "thresholds": tuned["thresholds"],
        "calibration": tuned["calibration"],
        "cross_validation": {"folds": config.folds, "oof_f1": tuned["oof_f1"]},
        "training_data": {
            "path": str(config.data),
            "sha256": data_sha,
            "rows": len(rows),
            "train_rows": len(train_rows),
            "test_rows": len(test_rows),
            "split": "train: published before 2023; test: 2023 and later",
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

    if config.quantize:
        int8 = _quantize(staging)
        agreement = _agreement(staging, int8, train_rows)
        meta["quantization"] = {"file": int8.name, "train_decision_agreement": agreement}
        if agreement["escalation"] >= 0.995 and agreement["signals"] >= 0.99:
            meta["onnx"] = int8.name
        _progress("int8 decision agreement with fp32 on training rows: %s", json.dumps(agreement))
    _write_meta(staging, meta)

    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    if test_rows:
        meta["metrics"] = _test_metrics(directory, test_rows)
    meta["train_seconds"] = round(train_seconds, 1)
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    _write_meta(directory, meta)
    (config.artifacts_dir / LATEST_FILE).write_text(version + "\n", encoding="utf-8")
    _progress("wrote %s (LATEST -> %s) in %.1fs", directory, version, meta["total_seconds"])
    return meta


def _set_head(net: Any, weight: np.ndarray, bias: np.ndarray) -> None:
    import torch

    with torch.no_grad():
        net.head.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        net.head.bias.copy_(torch.from_numpy(bias.astype(np.float32)))


def _encoder_file(name: str) -> Path:
    from models.encoder import encoder_dir

    return encoder_dir() / name


def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _environment() -> dict[str, str]:
    import onnxruntime
    import torch

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


def _test_metrics(directory: Path, test_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Test-split metrics of the artefact through the serving path, and of the baseline."""
    from models.baseline import KeywordBaseline

    articles = [row_article(r) for r in test_rows]
    model = evaluate(test_rows, EscalationClassifier(directory).classify(articles))
    baseline = evaluate(test_rows, KeywordBaseline().classify(articles))
    out = {"test": model.to_dict(), "baseline_test": baseline.to_dict()}
    _progress(
        "test (%d rows): escalation P %.3f R %.3f F1 %.3f, signals macro-F1 %.3f "
        "(baseline F1 %.3f, macro-F1 %.3f)",
        model.n,
        model.escalation.precision,
        model.escalation.recall,
        model.escalation.f1,
        model.signals_macro_f1,
        baseline.escalation.f1,
        baseline.signals_macro_f1,
    )
    return out
