"""Fixtures of the classifier tests: the trained artefact, loaded once.

The set-up script trains the artefact before the tests run. When it is missing
(a fresh checkout), the session trains one with the default recipe first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.classifier import EscalationClassifier
from models.train import TrainConfig, train
from newswatch.config import ModelSettings
from newswatch.errors import ModelNotFound

SEED = Path(__file__).resolve().parents[2] / "seeds" / "000_926da616d7d9c5df.txt"


@pytest.fixture(scope="session")
def model_settings() -> ModelSettings:
    return ModelSettings()


@pytest.fixture(scope="session")
def classifier(model_settings: ModelSettings) -> EscalationClassifier:
    """The latest trained artefact (trained here if there is none)."""
    try:
        return EscalationClassifier.load(model_settings)
    except ModelNotFound:
        train(
            TrainConfig(
                data=list(model_settings.labelled_sources),
                artifacts_dir=model_settings.artifacts_dir,
            )
        )
        return EscalationClassifier.load(model_settings)


@pytest.fixture(scope="session")
def labelled_rows(model_settings: ModelSettings) -> list[dict]:
    with model_settings.labelled_data.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="session")
def seed_text() -> str:
    return SEED.read_text(encoding="utf-8")
