"""The pure numeric core of the performance monitor against plain computations: realized metrics
(scikit-learn on the same rows), the thresholded ones at DECISION_THRESHOLD, the expected
calibration error by hand, the one-class case, and the judge's refusal to call an uncomputable
metric "within its floors"."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as m

from pavedml.config import get_use_case
from pavedml.metrics import DECISION_THRESHOLD, classification_metrics
from pavedml.steps.performance import (
    due_days,
    expected_calibration_error,
    judge_realized,
    realized_metrics,
    unjudgeable,
)


@pytest.fixture
def rows():
    rng = np.random.default_rng(3)
    y = (rng.random(3000) < 0.3).astype("float64")
    p = np.clip(0.3 + 0.4 * (y - 0.3) + rng.normal(0, 0.2, len(y)), 0.001, 0.999)
    return y, p


def test_realized_metrics_equal_scikit_learn(rows):
    y, p = rows
    got = realized_metrics("binary_classification", y, p, resamples=50, seed=1)
    want = classification_metrics(y.astype(int), p)
    for name in ("roc_auc", "pr_auc", "f1", "precision", "recall", "brier", "log_loss"):
        assert got[name]["value"] == pytest.approx(want[name], abs=1e-6), name
        assert got[name]["lo"] < got[name]["value"] < got[name]["hi"], (name, got[name])
    pred = p >= DECISION_THRESHOLD
    assert got["f1"]["value"] == pytest.approx(m.f1_score(y, pred), abs=1e-6) and 0 < got["f1"]["value"] < 1
    assert got["observed_rate"]["value"] == pytest.approx(y.mean(), abs=1e-6)
    assert got["mean_predicted"]["value"] == pytest.approx(p.mean(), abs=1e-6)


def test_regression_metrics_equal_scikit_learn(rows):
    y, p = rows
    got = realized_metrics("regression", y * 100, p * 100, resamples=50)
    assert got["rmse"]["value"] == pytest.approx(np.sqrt(m.mean_squared_error(y * 100, p * 100)), abs=1e-4)
    assert got["mae"]["value"] == pytest.approx(m.mean_absolute_error(y * 100, p * 100), abs=1e-4)
    assert got["r2"]["value"] == pytest.approx(m.r2_score(y, p), abs=1e-6)


def test_expected_calibration_error_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0, 1, 0], dtype=float)
    p = np.array([0.05, 0.15, 0.18, 0.55, 0.58, 0.92, 0.95, 1.0])
    # bins of width 0.1: [0.05] [0.15, 0.18] [0.55, 0.58] [0.92, 0.95, 1.0 (the last bin holds 1.0)]
    gaps = [abs(0.05 - 0), abs(0.15 + 0.18 - 1), abs(0.55 + 0.58 - 2), abs(0.92 + 0.95 + 1.0 - 1)]
    assert expected_calibration_error(y, p) == pytest.approx(sum(gaps) / len(y))
    assert expected_calibration_error(np.ones(4), np.ones(4)) == 0.0


def test_one_class_leaves_ranking_and_thresholded_metrics_undefined(rows):
    _, p = rows
    got = realized_metrics("binary_classification", np.zeros(len(p)), p, resamples=20)
    for name in ("roc_auc", "pr_auc", "f1", "precision", "recall"):
        assert got[name] == {"value": None, "lo": None, "hi": None}, name
    assert got["brier"]["value"] == pytest.approx(np.mean(p ** 2), abs=1e-6)


def test_a_floor_on_f1_is_judged_and_one_class_is_not_within_the_floors(rows):
    y, p = rows
    base = get_use_case("telco_churn")
    uc = base.model_copy(update={
        "evaluation": base.evaluation.model_copy(update={"primary_metric": "f1"}),
        "performance": base.performance.model_copy(update={"floors": {"f1": 0.99, "roc_auc": 0.5}})})
    got = realized_metrics("binary_classification", y, p, resamples=20)
    assert unjudgeable(uc, got, y, "2025-03-16") is None
    assert any(b.startswith("f1 ") and "below its floor 0.99" in b for b in judge_realized(uc, got, {}))
    one = realized_metrics("binary_classification", np.zeros(len(p)), p, resamples=20)
    assert judge_realized(uc, one, {}) == []
    reason = unjudgeable(uc, one, np.zeros(len(p)), "2025-03-16")
    assert reason is not None and reason.startswith("the labelled rows of 2025-03-16 hold one class")
    assert "f1, roc_auc cannot be judged" in reason


def test_only_days_whose_labels_are_due_are_judged():
    from datetime import date

    days = ["2025-03-12", "2025-03-14", "2025-03-15", "2025-03-16"]
    assert due_days(days, date(2025, 3, 16), 2) == ["2025-03-12", "2025-03-14"]
    assert due_days(days, date(2025, 3, 16), 0) == days
    assert due_days(days, date(2025, 3, 13), 2) == []


def test_status_renders_missing_bounds_and_orders_versions_by_number(data_root):
    """make status with pr_auc and performance.bootstrap 0 (no interval) and versions 9 and 10."""
    from pavedml import storage
    from pavedml.layout import Layout
    from pavedml.settings import get_settings
    from pavedml.tools.status import _performance_lines

    uc = get_use_case("telco_churn")
    layout = Layout.for_use_case(uc.name, get_settings())
    path = layout.performance_day("2025-03-16")
    path.parent.mkdir(parents=True)

    def block(role, version, value):
        return {"role": role, "model_version": version, "n": 600,
                "metrics": {"pr_auc": {"value": value, "lo": None, "hi": None}}}

    storage.write_json(str(path), {"ds": "2025-03-16", "primary_metric": "pr_auc", "confidence": 0.95,
                                   "versions": [block("champion", "9", 0.41), block("champion", "10", 0.43),
                                                block("challenger", "11", 0.5)]})
    lines = _performance_lines(uc, layout)
    rows = [line for line in lines if " v" in line and "n=600" in line]
    assert [line.split()[-5] for line in rows] == ["v9", "v10", "v11"], lines
    assert "0.4100 [n/a, n/a]" in rows[0]
    assert "(v10 not in the registry)" in lines[-1], lines  # the newest champion version by number


@pytest.mark.parametrize("ties", [False, True])
def test_average_precision_is_scikit_learns(ties):
    """The bootstrap's one-sort average precision equals scikit-learn's, ties included."""
    from sklearn.metrics import average_precision_score

    from pavedml.steps.performance import average_precision

    rng = np.random.default_rng(3)
    for n in (7, 300, 20_000):
        y = (rng.random(n) < 0.3).astype(float)
        y[0] = 1.0
        s = np.round(rng.random(n), 1) if ties else rng.random(n)
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert np.isnan(average_precision(np.zeros(5), rng.random(5)))  # no positive: undefined
