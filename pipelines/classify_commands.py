"""``newswatch classify PATH...``: local documents through the classifier, without a broker.

Files are read as the file connector reads them (`connectors.files.read_document`:
the title is the first line of a .txt, HTML is stripped, JSON rows and RSS/Atom
snapshots are split into articles), so a document is decided as the pipeline
would decide it; one JSON decision per document goes to standard output. The
command joins a connector's reader to the classifier, so it sits here, beside
the pipeline, rather than in `models`, which does not depend on `connectors`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from connectors.files import read_document
from models.commands import SERVING_FLAGS
from newswatch.config import load_settings
from newswatch.flags import add_common_flags, add_flags

__all__ = ["register"]

#: Extensions of the documents taken from a directory.
DOCUMENT_SUFFIXES = frozenset({".txt", ".html", ".htm", ".json", ".jsonl", ".xml"})


def register(subparsers: Any) -> None:
    """Add ``classify`` to the ``newswatch`` command."""
    classify = subparsers.add_parser("classify", help="classify local documents offline")
    add_common_flags(classify)
    add_flags(classify, "model", SERVING_FLAGS)
    classify.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="documents (.txt, .html, .json, .jsonl, .xml) or directories of them",
    )
    classify.set_defaults(handler=_classify)


def _classify(args: argparse.Namespace) -> int:
    # Lazy: onnxruntime and the tokenizer load only when a command classifies.
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
                if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES
            )
        else:
            out.append(path)
    return out


def _read(path: Path) -> tuple[list[Any], list[str]]:
    """Articles of one file, read as the file connector reads them, and problems as text."""
    document = read_document(path)
    problems = [f"{d.error}: {d.message}" for d in document.bad]
    return list(document.good), problems
