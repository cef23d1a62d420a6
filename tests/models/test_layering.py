"""The models package imports only itself and the shared newswatch package."""

from __future__ import annotations

import ast
from pathlib import Path

from models import baseline, features, lexicon

MODELS = Path(__file__).resolve().parents[2] / "models"
ABOVE = ("connectors", "pipelines", "web", "notifiers")


def test_models_imports_no_package_that_uses_it_or_feeds_the_pipeline():
    found = []
    for path in sorted(MODELS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ABOVE]
    assert found == []


def test_the_baseline_and_the_lexical_features_share_one_lexicon():
    assert baseline.ACTORS is lexicon.ACTORS and features.EVENTS is lexicon.EVENTS
