"""Subcommands of the classifier: ``newswatch model train|eval`` and ``newswatch classify``.

    newswatch model train [--data FILE] [--version V] [--c C] [--folds K]
    newswatch model eval [--data FILE.jsonl] [--split test|train|all] [--compare V] [--json]
    newswatch classify PATH... [--jsonl]

``model eval`` scores the model, any ``--compare`` versions and the keyword
baseline on the same rows with `models.evaluate`, with paired bootstrap intervals
of the model's lead over each; with ``--json`` its last output line is one JSON object.
``classify`` reads local documents (.txt, .html, .json, .jsonl, .xml) and
prints one JSON decision per document, without a broker.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from newswatch.config import add_common_flags, add_flags, load_settings, replace
from newswatch.errors import ConfigError

__all__ = ["register"]

logger = logging.getLogger(__name__)

_SERVING_FLAGS = ["artifacts_dir", "version", "batch_size", "threads", "prefilter"]


def register(subparsers: Any) -> None:
    """Add ``model`` (train, eval) and ``classify`` to the ``newswatch`` command."""
    model = subparsers.add_parser("model", help="train or evaluate the classifier")
    actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    train = actions.add_parser("train", help="fine-tune the classifier and write an artefact")
    add_common_flags(train)
    add_flags(train, "model", ["artifacts_dir"])
    train.add_argument("--data", type=Path, default=None, help="labelled JSON-lines rows")
    train.add_argument("--version", dest="train_version", default=None, help="artefact version")
    train.add_argument("--c", type=float, default=None, help="inverse L2 strength of the heads")
    train.add_argument("--folds", type=int, default=None, help="cross-validation folds")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument(
        "--quantize", action=argparse.BooleanOptionalAction, default=None, help="try int8"
    )
    train.set_defaults(handler=_train)

    evaluate = actions.add_parser("eval", help="score the model and the baseline on labelled rows")
    add_common_flags(evaluate)
    add_flags(evaluate, "model", _SERVING_FLAGS)
    evaluate.add_argument(
        "--data", type=Path, default=None, help="labelled JSON-lines rows (default: the dev set)"
    )
    evaluate.add_argument(
        "--split",
        choices=("test", "train", "all"),
        default=None,
        help="rows to score (default: test for the dev set, all for --data)",
    )
    evaluate.add_argument(
        "--compare",
        metavar="VERSION",
        action="append",
        default=[],
        help="also score this model version (repeatable), paired with the model",
    )
    evaluate.add_argument("--json", action="store_true", help="end with one JSON line")
    evaluate.add_argument("--errors", action="store_true", help="list wrong escalation decisions")
    evaluate.set_defaults(handler=_eval)

    classify = subparsers.add_parser("classify", help="classify local documents offline")
    add_common_flags(classify)
    add_flags(classify, "model", _SERVING_FLAGS)
    classify.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    classify.set_defaults(handler=_classify)


def _train(args: argparse.Namespace) -> int:
    from models.train import TrainConfig, train

    settings = load_settings(args).model
    overrides = {
        "version": args.train_version,
        "c": args.c,
        "folds": args.folds,
        "seed": args.seed,
        "quantize": args.quantize,
    }
    data = args.data or settings.labelled_data
    if not Path(data).is_file():
        raise ConfigError(f"--data: no such file {data}")
    config = TrainConfig(
        data=Path(data),
        artifacts_dir=settings.artifacts_dir,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    started = time.monotonic()
    meta = train(config)
    print(json.dumps(meta.get("metrics", {}).get("test", {}), sort_keys=True))
    print(f"trained {meta['version']} in {time.monotonic() - started:.0f}s")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from models.baseline import KeywordBaseline
    from models.classifier import EscalationClassifier
    from models.evaluate import (
        RESAMPLES,
        bootstrap_intervals,
        evaluate,
        format_intervals,
        format_reports,
        load_rows,
        row_article,
        split_rows,
    )
    from models.labels import could_be_taiwan_related

    settings = load_settings(args).model
    path = args.data or settings.labelled_data
    split = args.split or ("all" if args.data else "test")
    try:
        rows = split_rows(load_rows(path), split)
    except FileNotFoundError:
        raise ConfigError(f"--data: no such file {path}") from None
    except ValueError as exc:
        raise ConfigError(f"--data: {exc}") from None
    if not rows:
        raise ConfigError(f"--data: no rows in the {split!r} split of {path}")
    classifier = EscalationClassifier.load(settings)
    others = [EscalationClassifier.load(replace(settings, version=v)) for v in args.compare]
    articles = [row_article(r) for r in rows]
    started = time.monotonic()
    predictions = classifier.classify(articles)
    seconds = time.monotonic() - started
    systems = {f"model {classifier.version}": predictions}
    for other in others:
        if f"model {other.version}" in systems:
            raise ConfigError(f"--compare {other.version}: that version is already scored")
        systems[f"model {other.version}"] = other.classify(articles)
    systems["keyword baseline"] = KeywordBaseline().classify(articles)
    reports = {name: evaluate(rows, chosen) for name, chosen in systems.items()}
    intervals = bootstrap_intervals(rows, systems)
    model_report = next(iter(reports.values()))
    passed = [could_be_taiwan_related(a.content) for a in articles]
    dropped = sum(1 for r, p in zip(rows, passed, strict=True) if r["taiwan_related"] and not p)
    print(f"{len(rows)} rows from {path} (split: {split}), classified in {seconds:.1f}s")
    print(format_reports(reports))
    print(f"\n{format_intervals(intervals)}\n(rows resampled {RESAMPLES} times)")
    print(
        f"\npre-filter: {sum(passed)}/{len(rows)} rows reach the model; "
        f"Taiwan-related rows it drops: {dropped}"
        + ("" if classifier.prefilter else " (pre-filter off)")
    )
    if args.errors:
        print("\nwrong escalation decisions (model):")
        for error in model_report.errors:
            print(f"  {json.dumps(error, ensure_ascii=False)}")
    if args.json:
        summary = model_report.to_dict()
        summary["model_version"] = classifier.version
        summary["baseline"] = {
            k: v for k, v in reports["keyword baseline"].to_dict().items() if "confusion" not in k
        }
        summary["prefilter_dropped_taiwan_rows"] = dropped
        model_name, *compared, baseline_name = systems
        summary["intervals"] = {
            "model": intervals[model_name],
            "baseline": intervals[baseline_name],
            "model_minus_baseline": intervals[f"{model_name} - {baseline_name}"],
        }
        summary["compared"] = {
            name.removeprefix("model "): {
                **{k: v for k, v in reports[name].to_dict().items() if "confusion" not in k},
                "intervals": intervals[name],
                "model_minus_it": intervals[f"{model_name} - {name}"],
            }
            for name in compared
        }
        print(json.dumps(summary, sort_keys=True))
    return 0


def _classify(args: argparse.Namespace) -> int:
    from models.classifier import EscalationClassifier

    settings = load_settings(args).model
    articles = []
    failed = 0
    for path in _expand(args.paths):
        try:
            found, problems = _read(path)
        except OSError as exc:
            print(f"newswatch: cannot read {path}: {exc.strerror}", file=sys.stderr)
            failed += 1
            continue
        for problem in problems:
            print(f"newswatch: {path}: {problem}", file=sys.stderr)
        failed += len(problems)
        articles.extend((path, a) for a in found)
    classifier = EscalationClassifier.load(settings)
    results = classifier.classify([a for _, a in articles])
    for (path, article), result in zip(articles, results, strict=True):
        decision = {"path": str(path), "id": article.id, "title": article.title}
        decision.update(result.to_dict())
        print(json.dumps(decision, ensure_ascii=False))
    return 1 if failed else 0


def _expand(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and p.suffix.lower() in {".txt", ".html", ".htm", ".json", ".jsonl", ".xml"}
            )
        else:
            out.append(path)
    return out


def _read(path: Path) -> tuple[list[Any], list[str]]:
    """Articles of one file, read as the file connector reads them, and problems as text."""
    # The CLI reuses the connector's reader so `classify` sees a file exactly as
    # the pipeline would (title = first line of a .txt, HTML stripped, ...).
    from connectors.files import read_document

    document = read_document(path)
    problems = [f"{d.error}: {d.message}" for d in document.bad]
    return list(document.good), problems
