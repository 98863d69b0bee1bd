"""A regression use case through the steps, in-process with a real MLflow: features, training
(rmse, mae, r2 and the regression plots), evaluation (the first model is promoted; a worse second
keeps the champion by rmse), scoring (``prediction``, no ``probability``) and the drift check
(the PSI of the predictions, reported beside the features')."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from pavedml.errors import TrainingDataError
from tests.helpers.steps import feature_days, run_step

pytestmark = pytest.mark.integration
NAME = "house_prices"
DAG = f"{NAME}_training_pipeline"
START, DAYS, ROWS = date(2025, 3, 1), 6, 400
LAST_DAY = (START + timedelta(days=DAYS - 1)).isoformat()
USE_CASE = f"""
name: {NAME}
description: Predict a house's sale price (a regression use case for the tests).
task: regression
entity: {{name: house, key: house_id}}
batches: {{dataset: houses, format: csv, timestamp: interval_start}}
schema:
  columns:
    house_id: {{type: string, nullable: false, unique: true}}
    sqft: {{type: float, min: 0}}
    rooms: {{type: int, min: 1, max: 10}}
    age: {{type: float, min: 0}}
    region: {{type: category, allowed: [north, south, east]}}
label: {{dataset: sales, column: price, delay_days: 0}}
features:
  numeric: [sqft, rooms, age]
  categorical: [region]
model:
  registered_name: {NAME}
  family: ridge
  params: {{alpha: 1.0}}
  split: {{holdout_days: 1, validation_days: 1}}
  min_train_rows: 200
evaluation:
  min_uplift: 0.0
  floors: {{rmse: 200000}}   # lower is better: a ceiling
  slices: [region]
drift: {{min_samples: 100}}
"""


def _land(landing, day: date, rng) -> None:
    ids = [f"h{i:04d}" for i in range(ROWS)]
    df = pd.DataFrame({"house_id": ids, "sqft": rng.uniform(500, 3000, ROWS).round(1),
                       "rooms": rng.integers(1, 7, ROWS), "age": rng.uniform(0, 60, ROWS).round(1),
                       "region": rng.choice(["north", "south", "east"], ROWS)})
    price = (120 * df["sqft"] + 8000 * df["rooms"] - 500 * df["age"]
             + df["region"].map({"north": 30000, "south": 0, "east": 10000}) + rng.normal(0, 8000, ROWS))
    ds = day.isoformat()
    for dataset, frame in (("houses", df),
                           ("sales", pd.DataFrame({"house_id": ids, "price": price.round(2), "snapshot_date": ds}))):
        path = landing / NAME / dataset / f"dt={ds}" / f"{dataset}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)


@pytest.fixture(scope="module")
def houses(tmp_path_factory):
    """A regression use-case file in its own use-cases folder and six days of landed houses and
    their sale prices, through the feature steps."""
    base = tmp_path_factory.mktemp("regression")
    (base / "use_cases").mkdir()
    (base / "use_cases" / f"{NAME}.yaml").write_text(USE_CASE)
    root = base / "data"
    rng = np.random.default_rng(16)
    for i in range(DAYS):
        _land(root / "landing", START + timedelta(days=i), rng)
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(root))
    mp.setenv("PAVEDML_USE_CASES_DIR", str(base / "use_cases"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    feature_days(START, DAYS, NAME)
    yield root
    mp.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def trained(houses):
    def train(run_id: str, params: dict):
        kw = {"dag_id": DAG, "run_id": run_id, "params": json.dumps({"reason": "test", **params})}
        return [run_step(s, LAST_DAY, NAME, **kw) for s in ("build_training_set", "train_challenger",
                                                            "evaluate_challenger")]

    first = train("manual__first", {})
    promoted = run_step("promote_challenger", LAST_DAY, NAME, dag_id=DAG, run_id="manual__first", params="{}")
    # a huge ridge penalty shrinks every coefficient: predictions near the mean, a much higher rmse
    worse = train("manual__worse", {"hyperparameters": {"alpha": 1e7}})
    return {"first": first, "promoted": promoted, "worse": worse}


def test_training_set_holds_float_targets_and_their_mean(trained, houses):
    dataset = trained["first"][0]
    out = houses / NAME / "training" / dataset.path.rsplit("/", 1)[-1]
    manifest = json.loads((out / "dataset.json").read_text())
    assert dataset.rows == {"train": 4 * ROWS, "validation": ROWS, "holdout": ROWS}
    assert "positive_rate" not in manifest and set(manifest["label_mean"]) == {"train", "validation", "holdout"}
    assert 100_000 < manifest["label_mean"]["train"] < 600_000
    assert pd.read_parquet(out / "train.parquet")["label"].dtype == np.float64


def test_train_logs_regression_metrics_plots_and_a_value_signature(trained):
    import mlflow

    result = trained["first"][1]
    assert set(result.metrics) == {"holdout_rmse", "holdout_mae", "holdout_r2"}
    assert result.metrics["holdout_r2"] > 0.8
    client = mlflow.MlflowClient()
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {f"plots/{n}.png" for n in ("predicted_vs_actual", "residuals", "calibration",
                                                "feature_importance")}
    run = client.get_run(result.run_id)
    assert run.data.params["task"] == "regression"
    assert "validation_rmse" in run.data.metrics
    info = mlflow.models.get_model_info(f"models:/{NAME}/{result.model_version}")
    spec = info.signature.outputs.to_dict()[0]["tensor-spec"]  # the predicted value per row
    assert spec["dtype"] == "float64" and list(spec["shape"]) == [-1]


def test_first_model_is_promoted_and_a_worse_one_keeps_the_champion_by_rmse(trained):
    first, worse = trained["first"][2], trained["worse"][2]
    assert first.outcome == "promote" and first.reasons == ["no champion yet and every floor is met"]
    assert trained["promoted"].action == "promoted" and trained["promoted"].to_version == first.challenger_version
    assert worse.champion_version == first.challenger_version
    chal, champ = worse.metrics["challenger"], worse.metrics["champion"]
    assert set(chal) == {"rmse", "mae", "r2"} and chal["rmse"] > champ["rmse"]
    assert worse.outcome == "keep_champion" and not worse.promote
    assert worse.reasons[0].startswith(f"reduction {champ['rmse'] - chal['rmse']:+.4f} on rmse"), worse.reasons
    record = json.loads(open(worse.record).read())
    assert set(record["challenger"]["slices"]) == {"region=north", "region=south", "region=east"}


def test_scoring_writes_the_predicted_value_and_no_probability(trained, houses):
    result = run_step("score_customers", LAST_DAY, NAME)
    assert result.positive_rate is None and result.prediction_mean > 100_000
    preds = pd.read_parquet(houses / NAME / "predictions" / f"dt={LAST_DAY}" / "part-0.parquet")
    assert "probability" not in preds.columns and "churn_probability" not in preds.columns
    assert preds["prediction"].dtype == np.float64 and preds["prediction"].nunique() > 100
    assert set(preds["model_name"]) == {NAME} and set(preds["model_version"]) == {trained["first"][2].challenger_version}
    assert preds["prediction"].mean() == pytest.approx(result.prediction_mean, abs=1e-3)


def test_drift_check_reports_the_psi_of_the_predictions(trained, houses):
    run_step("score_customers", LAST_DAY, NAME)
    check = run_step("check_drift", LAST_DAY, NAME)
    assert check.status == "no_drift", check
    assert isinstance(check.prediction_psi, float) and 0 <= check.prediction_psi < 0.25
    assert "prediction" not in check.psi and "prediction" not in check.alerts
    report = json.loads((houses / NAME / "drift" / f"dt={LAST_DAY}" / "report.json").read_text())
    assert report["prediction"]["psi"] == pytest.approx(check.prediction_psi, abs=1e-5)
    table = (houses / NAME / "drift" / f"dt={LAST_DAY}" / "psi_table.txt").read_text().splitlines()
    assert table[-1].startswith("prediction") and "not part of the verdict" in table[-1]


def test_prediction_drift_never_decides_retraining(trained, houses, monkeypatch):
    """Shift every prediction: the output's PSI alerts, the verdict stays on the features."""
    part = houses / NAME / "predictions" / f"dt={LAST_DAY}" / "part-0.parquet"
    run_step("score_customers", LAST_DAY, NAME)
    preds = pd.read_parquet(part)
    preds.assign(prediction=preds["prediction"] * 3,
                 champion_score=preds["champion_score"] * 3).to_parquet(part, index=False)
    check = run_step("check_drift", LAST_DAY, NAME)
    assert check.prediction_psi >= 0.25 and check.status == "no_drift" and check.alerts == []
    run_step("score_customers", LAST_DAY, NAME)  # back to the real predictions


def test_a_non_finite_target_is_refused_before_training(houses, monkeypatch):
    from pavedml.steps import training

    real = training.load_labels

    def with_infinite(ctx, window):
        labels, sources = real(ctx, window)
        labels.loc[labels.index[:3], "label"] = np.inf
        return labels, sources

    monkeypatch.setattr(training, "load_labels", with_infinite)
    with pytest.raises(TrainingDataError, match=r"3 of \d+ label rows have no finite price"):
        run_step("build_training_set", LAST_DAY, NAME, dag_id=DAG, run_id="manual__inf", params="{}")


TIMED = "house_sales"
TIMED_USE_CASE = USE_CASE.replace(f"name: {NAME}", f"name: {TIMED}").replace(
    f"registered_name: {NAME}", f"registered_name: {TIMED}").replace(
    "timestamp: interval_start", "timestamp: {column: sold_at}").replace(
    "    house_id: {type: string, nullable: false, unique: true}",
    "    house_id: {type: string, nullable: false, unique: true}\n    sold_at: {type: timestamp, nullable: false}")


@pytest.fixture(scope="module")
def timed_sales(tmp_path_factory):
    """A use case whose rows carry their own event time (``sold_at``, any time of the day): its
    labels hold ``event_timestamp``, the sale's time. One house per sale (ids unique across days)."""
    base = tmp_path_factory.mktemp("timed")
    (base / "use_cases").mkdir()
    (base / "use_cases" / f"{TIMED}.yaml").write_text(TIMED_USE_CASE)
    root = base / "data"
    rng = np.random.default_rng(7)
    landed = []
    for i in range(4):
        day = START + timedelta(days=i)
        n = 150
        ids = [f"s{i}-{j:03d}" for j in range(n)]
        times = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(np.sort(rng.integers(3600, 86000, n)), unit="s")
        df = pd.DataFrame({"house_id": ids, "sold_at": times.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "sqft": rng.uniform(500, 3000, n).round(1), "rooms": rng.integers(1, 7, n),
                           "age": rng.uniform(0, 60, n).round(1), "region": rng.choice(["north", "south"], n)})
        labels = pd.DataFrame({"house_id": ids, "price": (100 * df["sqft"]).round(2), "snapshot_date": day.isoformat(),
                               "event_timestamp": df["sold_at"]})
        for dataset, frame in (("houses", df), ("sales", labels)):
            path = root / "landing" / TIMED / dataset / f"dt={day.isoformat()}" / f"{dataset}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(path, index=False)
        landed.append(df)
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(root))
    mp.setenv("PAVEDML_USE_CASES_DIR", str(base / "use_cases"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    feature_days(START, 4, TIMED)
    yield root, pd.concat(landed, ignore_index=True)
    mp.undo()
    get_settings.cache_clear()


def test_labels_with_event_times_join_the_features_of_their_own_moment(timed_sales):
    """Label time = the labels' event_timestamp (not the snapshot day's midnight, which is before
    every sale of the day and would find no features): every sale joins its own row."""
    root, landed = timed_sales
    last = (START + timedelta(days=3)).isoformat()
    dataset = run_step("build_training_set", last, TIMED, dag_id=f"{TIMED}_training_pipeline", run_id="manual__timed",
                       params="{}")
    assert dataset.dropped_without_features == 0
    assert sum(dataset.rows.values()) == len(landed)
    splits = pd.concat([pd.read_parquet(f"{dataset.path}/{s}.parquet") for s in ("train", "validation", "holdout")])
    merged = splits.merge(landed, on="house_id", suffixes=("", "_landed"))
    assert len(merged) == len(landed)
    assert (merged["event_timestamp"] == pd.to_datetime(merged["sold_at"], utc=True)).all()
    assert np.allclose(merged["sqft"], merged["sqft_landed"])
    assert np.allclose(merged["label"], 100 * merged["sqft_landed"], atol=0.01)
