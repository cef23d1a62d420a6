"""Calibration and the F1 convention that the tuned thresholds rest on."""

from __future__ import annotations

import numpy as np
import pytest

from models.recipe import _f1, _platt


def test_platt_recovers_the_scale_and_shift_of_calibrated_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, 20_000)
    labels = (rng.random(logits.size) < 1 / (1 + np.exp(-(1.5 * logits - 0.5)))).astype(float)
    a, b = _platt(logits, labels)
    assert a == pytest.approx(1.5, abs=0.1)
    assert b == pytest.approx(-0.5, abs=0.1)


def test_platt_of_labels_of_one_class_is_the_identity():
    assert _platt(np.array([-1.0, 0.5, 2.0]), np.zeros(3)) == (1.0, 0.0)


def test_f1_is_one_without_gold_or_predicted_positives():
    none = np.zeros(4, dtype=bool)
    assert _f1(none, none) == 1.0
    assert _f1(none, np.array([True, False, False, False])) == 0.0
    assert _f1(np.array([True, True, False, False]), np.array([True, False, True, False])) == 0.5
