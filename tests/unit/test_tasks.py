"""Task types (binary_classification, regression): metrics, the model's scores, the estimator each
family builds, the label conversions and label times of the training step, and the drift
reference of the model's output."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pavedml.config import FAMILIES_BY_TASK, METRICS_BY_TASK, UseCase
from pavedml.errors import TrainingDataError
from pavedml.metrics import LABEL, model_scores, regression_metrics, split_metrics, task_metrics

pytestmark = pytest.mark.unit


def use_case(task: str = "regression", family: str | None = None, label: dict | None = None) -> UseCase:
    """A small use case of either task (houses: three numeric features and a region)."""
    default_label = {"column": "price"} if task == "regression" else {"column": "sold", "positive": "yes",
                                                                      "negative": "no"}
    return UseCase.model_validate({
        "name": "houses", "task": task,
        "entity": {"name": "house", "key": "house_id"},
        "schema": {"columns": {"house_id": {"type": "string", "nullable": False, "unique": True},
                               "sqft": {"type": "float"}, "rooms": {"type": "int"}, "age": {"type": "float"},
                               "region": {"type": "category", "allowed": ["north", "south"]}}},
        "label": {"delay_days": 0, **(label or default_label)},
        "features": {"numeric": ["sqft", "rooms", "age"], "categorical": ["region"]},
        "model": {"registered_name": "houses", "family": family or next(iter(FAMILIES_BY_TASK[task])),
                  "split": {"holdout_days": 1, "validation_days": 1}},
    })


def frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"sqft": rng.uniform(500, 3000, n), "rooms": rng.integers(1, 6, n).astype(float),
                       "age": rng.uniform(0, 50, n), "region": rng.choice(["north", "south"], n)})
    df.loc[df.index[:5], "age"] = np.nan  # the imputer's job
    price = 100 * df["sqft"] + 5000 * df["rooms"] - 300 * df["age"].fillna(25) + (df["region"] == "north") * 20000
    return df.assign(price=price + rng.normal(0, 5000, n), sold=(price > price.median()).astype(int))


# -- metrics ----------------------------------------------------------------------------------------
def test_regression_metrics_values():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.0, 2.0, 3.0, 6.0])
    m = regression_metrics(y, pred)
    assert m["rmse"] == pytest.approx(1.0)  # sqrt(4 / 4)
    assert m["mae"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - 4 / 5)  # 1 - SSE / SST, SST = 2.25 + 0.25 + 0.25 + 2.25
    perfect = regression_metrics(y, y)
    assert perfect == {"rmse": 0.0, "mae": 0.0, "r2": 1.0}


def test_task_metrics_names_are_the_tasks_metrics():
    y = np.array([0, 1, 0, 1, 1, 0])
    scores = np.array([0.1, 0.8, 0.3, 0.6, 0.9, 0.2])
    assert tuple(task_metrics("binary_classification", y, scores)) == METRICS_BY_TASK["binary_classification"]
    assert tuple(task_metrics("regression", y.astype(float), scores)) == METRICS_BY_TASK["regression"]
    assert task_metrics("binary_classification", y, scores)["roc_auc"] == 1.0


# -- make_pipeline: every family of both tasks ---------------------------------------------------------
@pytest.mark.parametrize(("task", "family"), sorted((t, f) for t, fams in FAMILIES_BY_TASK.items() for f in fams))
def test_make_pipeline_builds_the_tasks_estimator(task, family):
    import importlib

    from pavedml.steps.training import make_pipeline

    uc = use_case(task, family)
    pipeline, params = make_pipeline(uc)
    module, cls = FAMILIES_BY_TASK[task][family][0].split(":")
    assert type(pipeline.named_steps["model"]) is getattr(importlib.import_module(module), cls)
    numeric = pipeline.named_steps["preprocess"].transformers[0][1]
    assert ("scale" in numeric.named_steps) == (family in ("logistic_regression", "ridge"))
    df = frame()
    target = df["price"] if task == "regression" else df["sold"]
    pipeline.fit(df[uc.feature_columns], target)
    scores = model_scores(pipeline, df[uc.feature_columns], task)
    assert scores.shape == (len(df),) and scores.dtype == np.float64 and np.isfinite(scores).all()
    if task == "regression":
        assert scores.max() > 1.0  # a value, not a probability
        assert regression_metrics(df["price"], scores)["r2"] > 0.5
    else:
        assert ((scores >= 0) & (scores <= 1)).all()
    metrics = split_metrics(pipeline, {"holdout": df.assign(**{LABEL: target})}, uc.feature_columns, task)
    assert set(metrics) == {f"holdout_{m}" for m in METRICS_BY_TASK[task]}


def test_a_regression_family_refuses_classifier_params():
    from pavedml.errors import ConfigError
    from pavedml.steps.training import make_pipeline

    with pytest.raises(ConfigError, match="unknown hyper-parameter.*class_weight"):
        make_pipeline(use_case("regression", "random_forest"), {"class_weight": "balanced"})


# -- labels -------------------------------------------------------------------------------------------
def test_label_list_of_positives_compared_as_text():
    from pavedml.steps.training import label_values

    uc = use_case("binary_classification", label={"column": "outcome", "positive": ["churned", 2],
                                                   "negative": ["stayed", 0]})
    got = label_values(uc, pd.Series(["churned", "stayed", "2", "0", "churned"], dtype=str))
    assert got.tolist() == [1, 0, 1, 0, 1] and got.dtype == np.int64


def test_label_threshold_positive_at_or_above():
    from pavedml.steps.training import label_values

    uc = use_case("binary_classification", label={"column": "score", "threshold": 0.5})
    got = label_values(uc, pd.Series(["0.2", "0.5", "0.75", "1e3", "-1"], dtype=str))
    assert got.tolist() == [0, 1, 1, 1, 0]


def test_label_threshold_refuses_text_and_empty_labels_naming_the_file():
    from pavedml.steps.training import label_values

    uc = use_case("binary_classification", label={"column": "score", "threshold": 0.5})
    with pytest.raises(TrainingDataError, match=r"labels/dt=2025-01-02/labels.csv: label column 'score' holds "
                                                r"2 value\(s\) that are not numbers \(e.g. 'high'"):
        label_values(uc, pd.Series(["0.2", "high", None]), "labels/dt=2025-01-02/labels.csv")


def test_regression_label_is_the_float_value():
    from pavedml.steps.training import label_values

    uc = use_case("regression")
    got = label_values(uc, pd.Series(["250000", "199999.5", "-3", None], dtype=object))
    assert got.dtype == np.float64
    assert got[:3].tolist() == [250000.0, 199999.5, -3.0] and math.isnan(got[3])  # build_training_set refuses it
    with pytest.raises(TrainingDataError, match="regression target needs numeric labels"):
        label_values(uc, pd.Series(["250000", "a lot"]))


def test_label_time_is_the_event_timestamp_when_present_else_the_snapshot_date():
    from pavedml.steps.training import label_timestamps

    with_events = pd.DataFrame({"snapshot_date": ["2025-01-02"] * 4,
                                "event_timestamp": ["2025-01-02T13:30:00Z", "2025-01-02T14:00:00+02:00",
                                                    "2025-01-02 09:15:00", "2025-01-02T23:59:59.5Z"]})
    got = label_timestamps(with_events)
    assert str(got.dt.tz) == "UTC"
    assert [t.isoformat() for t in got] == ["2025-01-02T13:30:00+00:00", "2025-01-02T12:00:00+00:00",
                                            "2025-01-02T09:15:00+00:00", "2025-01-02T23:59:59.500000+00:00"]
    snapshot = label_timestamps(pd.DataFrame({"snapshot_date": ["2025-01-02", "2025-01-03"]}))
    assert [t.isoformat() for t in snapshot] == ["2025-01-02T00:00:00+00:00", "2025-01-03T00:00:00+00:00"]
    with pytest.raises(TrainingDataError, match="f.csv: column 'event_timestamp' is not an ISO 8601 time"):
        label_timestamps(pd.DataFrame({"snapshot_date": ["2025-01-02"], "event_timestamp": ["noon"]}), "f.csv")


# -- evaluation slices -------------------------------------------------------------------------------
def test_regression_slices_need_rows_not_two_classes():
    from pavedml.steps.evaluation import MIN_SLICE_ROWS, slice_metrics

    n = MIN_SLICE_ROWS
    df = pd.DataFrame({"region": ["north"] * n + ["south"] * (n - 1), LABEL: [1.0] * n + [2.0] * (n - 1)})
    out = slice_metrics(df, np.full(len(df), 1.5), ["region"], "regression")
    assert list(out) == ["region=north"]  # south has one row too few
    assert out["region=north"]["rmse"] == pytest.approx(0.5)
    single_class = slice_metrics(df.assign(**{LABEL: 1}), np.full(len(df), 0.5), ["region"])
    assert single_class == {}  # a classifier's slice needs both classes


# -- drift of the model's output ---------------------------------------------------------------------
def test_prediction_reference_and_its_psi():
    from pavedml.drift import PREDICTION, build_prediction_reference, compute_psi

    rng = np.random.default_rng(1)
    ref = build_prediction_reference(rng.normal(100, 10, 5000), bins=10)
    assert list(ref["features"]) == [PREDICTION] and ref["features"][PREDICTION]["kind"] == "numeric"
    same = compute_psi(ref, pd.DataFrame({PREDICTION: rng.normal(100, 10, 5000)}))
    shifted = compute_psi(ref, pd.DataFrame({PREDICTION: rng.normal(120, 10, 5000)}))
    assert same.features[0].psi < 0.05 < 0.25 < shifted.features[0].psi


def test_drift_reference_carries_the_models_output_distribution():
    from pavedml.drift import PREDICTION
    from pavedml.steps.training import drift_reference, make_pipeline

    uc = use_case("regression", "ridge")
    df = frame()
    pipeline, _ = make_pipeline(uc)
    pipeline.fit(df[uc.feature_columns], df["price"])
    reference, sample = drift_reference(uc, df, pipeline)
    assert set(reference["features"]) == set(uc.feature_columns)
    assert reference[PREDICTION]["n"] == len(df)
    edges = reference[PREDICTION]["features"][PREDICTION]["edges"]
    scores = model_scores(pipeline, df[uc.feature_columns], "regression")
    assert edges[0] == pytest.approx(scores.min()) and edges[-1] == pytest.approx(scores.max())
    assert PREDICTION not in drift_reference(uc, df)[0]  # without a model: the features only


def test_psi_table_ends_with_the_models_output_outside_the_verdict():
    from pavedml.drift import PREDICTION, build_prediction_reference, build_reference, compute_psi

    rng = np.random.default_rng(2)
    ref = build_reference(pd.DataFrame({"x": rng.normal(0, 1, 2000)}), ["x"], [])
    report = compute_psi(ref, pd.DataFrame({"x": rng.normal(0, 1, 2000)}))
    output = compute_psi(build_prediction_reference(rng.normal(5, 1, 2000)),
                         pd.DataFrame({PREDICTION: rng.normal(8, 1, 2000)})).features[0]
    lines = report.table(output).splitlines()
    assert lines[0].index("kind") == lines[-1].index("output")  # aligned with the features' columns
    assert lines[-1].startswith("prediction") and output.status == "alert"
    assert lines[-1].endswith("alert  (the model's output: reported, not part of the verdict)")
    assert report.alerts == [] and [line.split()[0] for line in lines[1:-1]] == ["x"]
    assert len(report.table().splitlines()) == len(lines) - 1
