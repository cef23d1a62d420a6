"""Subcommands of the classifier: ``newswatch model train|eval``.

    newswatch model train [--data PATH...] [--recipe NAME] [--c C] [--no-select]
    newswatch model eval [--data FILE.jsonl...] [--split test|train|all] [--compare V] [--json]
    newswatch model eval --rolling [--data PATH...] [--recipe NAME] [--compare V] [--json]

``model eval`` scores the model, any ``--compare`` versions and the keyword
baseline on the same rows with `models.evaluate`, with paired bootstrap intervals
of the model's lead over each; with ``--json`` its last output line is one JSON object.
``model eval --rolling`` refits recipes on rolling-origin folds (`models.rolling`).
``newswatch classify``, which reads local documents with the file connector's
reader, is registered by `pipelines.classify_commands`.

The heavy modules load inside the handlers, so ``newswatch --help`` stays fast:
`models.train` and `models.recipe` need the train extra (torch, scikit-learn),
`models.evaluate` and `models.rolling` import scipy.stats (~0.6 s) and
`models.classifier` onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from models.baseline import KeywordBaseline
from models.data import before_cutoff, load_labelled
from models.labels import could_be_taiwan_related
from newswatch.config import load_settings, replace
from newswatch.errors import ConfigError
from newswatch.flags import add_common_flags, add_flags

__all__ = ["SERVING_FLAGS", "register"]

logger = logging.getLogger(__name__)

#: Model settings that the commands loading a trained artefact take as flags.
SERVING_FLAGS = ["artifacts_dir", "version", "batch_size", "threads", "prefilter"]


def register(subparsers: Any) -> None:
    """Add ``model`` (train, eval) to the ``newswatch`` command."""
    model = subparsers.add_parser("model", help="train or evaluate the classifier")
    actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    train = actions.add_parser(
        "train", help="fit the classifier on the labelled rows and write an artefact"
    )
    add_common_flags(train)
    add_flags(train, "model", ["artifacts_dir"])
    train.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=None,
        metavar="PATH",
        help="labelled JSON-lines files or directories (every *.jsonl in them); rows "
        "published from 2024 on are left out (default: the labelled_sources setting, "
        "$NEWSWATCH_MODEL_LABELLED_SOURCES)",
    )
    train.add_argument(
        "--version",
        dest="train_version",
        default=None,
        help="artefact version to write (default: <format>-<hash of the rows>; no env variable)",
    )
    train.add_argument(
        "--recipe",
        default=None,
        help="training recipe: v3 (default) or v2, the previous one (no env variable)",
    )
    train.add_argument(
        "--c",
        type=float,
        default=None,
        help="inverse L2 strength of the heads; skips the selection of C "
        "(default: chosen on the rolling-origin folds; no env variable)",
    )
    train.add_argument(
        "--select",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="choose C by mean escalation F1 on the rolling-origin folds (default: on; "
        "no env variable)",
    )
    train.add_argument(
        "--inner-folds",
        type=int,
        default=None,
        help="story-grouped folds that calibrate and set thresholds, 0 for none "
        "(default: 5; no env variable)",
    )
    train.add_argument(
        "--seed", type=int, default=None, help="random seed (default: 13; no env variable)"
    )
    train.add_argument(
        "--quantize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve the int8 model when it decides as fp32 does (default: on; no env variable)",
    )
    train.set_defaults(handler=_train)

    evaluate = actions.add_parser("eval", help="score the model and the baseline on labelled rows")
    add_common_flags(evaluate)
    add_flags(evaluate, "model", SERVING_FLAGS)
    evaluate.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=None,
        metavar="PATH",
        help="labelled JSON-lines files (or, with --rolling, directories) to score "
        "(default: the dev set, $NEWSWATCH_MODEL_LABELLED_DATA; with --rolling every "
        "labelled source, $NEWSWATCH_MODEL_LABELLED_SOURCES)",
    )
    evaluate.add_argument(
        "--split",
        choices=("test", "train", "all"),
        default=None,
        help="rows to score: test (2023 on), train (before 2023) or all (default: test for "
        "the dev set, all for --data; no env variable; ignored with --rolling)",
    )
    evaluate.add_argument(
        "--rolling",
        action="store_true",
        help="rolling-origin validation instead: for each test year 2021-2023 fit the "
        "model's recipe on the rows before it and score that year, with episode recall "
        "(default: off; no env variable; needs the training extras)",
    )
    evaluate.add_argument(
        "--recipe",
        default=None,
        help="with --rolling, the recipe to score (default: the loaded model's; no env variable)",
    )
    evaluate.add_argument(
        "--compare",
        metavar="VERSION",
        action="append",
        default=[],
        help="also score this model version (repeatable), paired with the model; with "
        "--rolling, that version's recipe (or a recipe name such as v2) refitted on each "
        "fold (default: none; no env variable)",
    )
    evaluate.add_argument(
        "--json", action="store_true", help="end with one JSON line (default: off)"
    )
    evaluate.add_argument(
        "--errors",
        action="store_true",
        help="list wrong escalation decisions (default: off; no env variable)",
    )
    evaluate.set_defaults(handler=_eval)


def _train(args: argparse.Namespace) -> int:
    # Lazy (see the module docstring): the train extra, torch and scikit-learn.
    from models.train import TrainConfig, train

    settings = load_settings(args).model
    overrides = {
        "version": args.train_version,
        "recipe": args.recipe,
        "c": args.c,
        "select": args.select,
        "inner_folds": args.inner_folds,
        "seed": args.seed,
        "quantize": args.quantize,
    }
    data = list(args.data or settings.labelled_sources)
    missing = [str(p) for p in data if not Path(p).exists()]
    if missing:
        raise ConfigError(f"--data: no such file or directory {', '.join(missing)}")
    config = TrainConfig(
        data=[Path(p) for p in data],
        artifacts_dir=settings.artifacts_dir,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    started = time.monotonic()
    try:
        meta = train(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps(meta["rolling"]["mean"], sort_keys=True))
    print(f"trained {meta['version']} in {time.monotonic() - started:.0f}s")
    return 0


def _eval(args: argparse.Namespace) -> int:
    # Lazy (see the module docstring): onnxruntime, scipy.stats.
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

    settings = load_settings(args).model
    if args.rolling:
        return _eval_rolling(args, settings)
    paths = args.data or [settings.labelled_data]
    path = ", ".join(str(p) for p in paths)
    split = args.split or ("all" if args.data else "test")
    try:
        rows = split_rows([row for p in paths for row in load_rows(p)], split)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise ConfigError(f"--data: no such file {exc.filename}") from None
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


def _eval_rolling(args: argparse.Namespace, settings: Any) -> int:
    """``model eval --rolling``: recipes refitted on rolling-origin folds, with the baseline."""
    # Lazy (see the module docstring): the train extra, scipy.stats.
    from models.classifier import resolve_artifact
    from models.featurize import FeatureCache
    from models.recipe import RECIPES, predictor, recipe_from_meta
    from models.rolling import rolling_evaluate

    def recipe_of(version: str) -> tuple[str, Any]:
        if version in RECIPES and not (Path(settings.artifacts_dir) / version).is_dir():
            return f"recipe {version}", RECIPES[version]
        directory = resolve_artifact(settings.artifacts_dir, version)
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        recipe = recipe_from_meta(meta)
        return f"recipe {recipe.name} ({meta['version']})", recipe

    if args.recipe:
        if args.recipe not in RECIPES:
            raise ConfigError(f"--recipe: unknown recipe {args.recipe!r} ({', '.join(RECIPES)})")
        systems = [(f"recipe {args.recipe}", RECIPES[args.recipe])]
    else:
        systems = [recipe_of(settings.version)]
    systems += [recipe_of(v) for v in args.compare]
    if len({name for name, _ in systems}) < len(systems):
        raise ConfigError("--compare: that recipe is already scored")
    sources = args.data or settings.labelled_sources
    try:
        cut = before_cutoff(load_labelled(sources))
    except FileNotFoundError as exc:
        raise ConfigError(f"--data: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"--data: {exc}") from None
    if cut.excluded:
        print(cut.message())
    rows = cut.rows
    cache = FeatureCache(Path(settings.artifacts_dir) / ".cache", progress=print)
    started = time.monotonic()
    try:
        report = rolling_evaluate(
            rows,
            {name: predictor(rows, recipe, cache) for name, recipe in systems},
            prefilter=settings.prefilter,
        )
    except ValueError as exc:
        raise ConfigError(f"--data: {exc}") from None
    labelled = sum(bool(r.get("story")) for r in rows)
    print(
        f"{len(rows)} rows before 2024 from {', '.join(str(s) for s in sources)} "
        f"({labelled} with a story label), folds scored in {time.monotonic() - started:.0f}s"
    )
    for name, recipe in systems:
        print(f"  {name}: {recipe.describe()}")
    print()
    print(report.format())
    if args.json:
        print(json.dumps(report.to_dict(), sort_keys=True))
    return 0
