"""Drift against time-based references, through the real steps in-process on the pipeline's own
data (eight simulated Telco days, a champion trained and promoted in MLflow, five scored days):
a rolling and a seasonal reference built from the features (and predictions, labels) of earlier
days, a reference period without history named instead of silently judged, and ``drift.judge_on``
making a shifted target or model output fire while the features stay quiet."""

from __future__ import annotations

import io
import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO
from tests.helpers.steps import run_step
from tests.integration.conftest import LAST_DAY

pytestmark = pytest.mark.integration
UC = "telco_churn"
TRAIN_DAG = "telco_churn_training_pipeline"
SCORED = ["2025-01-04", "2025-01-05", "2025-01-06", "2025-01-07", LAST_DAY]
DRIFT_DAY = "2025-01-09"


@pytest.fixture(scope="module")
def pipeline(history_copy):
    """A champion trained on the history, the last five days scored; a drifted ninth day
    (MonthlyCharges, tenure) built and scored."""
    from pavedml.tools.simulate import simulate
    from tests.helpers.steps import feature_days

    kw = {"dag_id": TRAIN_DAG, "run_id": "manual__reference", "params": '{"reason": "reference test"}'}
    for step in ("build_training_set", "train_challenger", "evaluate_challenger", "promote_challenger"):
        run_step(step, LAST_DAY, **kw)
    simulate(UC, date.fromisoformat(DRIFT_DAY), 1, rows_per_day=1500, drift_from=date.fromisoformat(DRIFT_DAY))
    feature_days(date.fromisoformat(DRIFT_DAY), 1)
    for ds in [*SCORED, DRIFT_DAY]:
        run_step("score_customers", ds, dag_id="telco_churn_batch_scoring", run_id=f"manual__{ds}")
    return history_copy


@pytest.fixture
def drift_config(tmp_path, monkeypatch):
    """Write the Telco use case with a changed ``drift`` section into a private use-cases folder."""

    def configure(**drift):
        spec = yaml.safe_load((REPO / "include/use_cases/telco_churn.yaml").read_text())
        spec["drift"] = {**spec["drift"], "cooldown_days": 0, **drift}
        cases = tmp_path / "use_cases"
        cases.mkdir(exist_ok=True)
        (cases / f"{UC}.yaml").write_text(yaml.safe_dump(spec))
        monkeypatch.setenv("PAVEDML_USE_CASES_DIR", str(cases))

    return configure


def check(ds: str):
    return run_step("check_drift", ds, dag_id="telco_churn_drift_monitor", run_id=f"manual__check_{ds}", params="{}")


def report(root, ds: str) -> dict:
    return json.loads((root / f"{UC}/drift/dt={ds}/report.json").read_text())


def test_rolling_reference_is_the_days_before_the_window_and_stays_quiet(pipeline, drift_config):
    drift_config(reference="rolling", reference_days=3)
    result = check(LAST_DAY)
    assert result.status == "no_drift", result
    assert result.reference == "rolling"
    rec = report(pipeline, LAST_DAY)
    assert rec["reference"]["kind"] == "rolling"
    assert rec["reference"]["days"] == ["2025-01-05", "2025-01-06", "2025-01-07"]
    assert rec["reference"]["rows"] == 3 * 1500
    # the model output is compared with the reference days' predictions, reported, not judged
    assert rec["prediction"]["status"] == "ok" and rec["prediction"]["counts_toward_verdict"] is False
    assert result.prediction_psi == pytest.approx(rec["prediction"]["psi"], abs=1e-5)
    # the target: labels land two days late, so the newest known by the window's day are those of
    # 2025-01-06, compared with the labels of the three days before it
    assert rec["target"]["days"] == ["2025-01-06"]
    assert rec["target"]["reference_days"] == ["2025-01-03", "2025-01-04", "2025-01-05"]
    assert rec["target"]["n_actual"] == 1500 and rec["target"]["bins"][:2] == ["0", "1"]
    assert rec["target"]["status"] == "ok"
    table = (pipeline / f"{UC}/drift/dt={LAST_DAY}/psi_table.txt").read_text()
    assert table.startswith("reference: rolling reference 2025-01-05 .. 2025-01-07 (3 days)")
    history = pd.read_csv(pipeline / f"{UC}/drift/psi_history.csv", dtype={"ds": str})
    assert {"prediction", "target", "MonthlyCharges"} <= set(history[history["ds"] == LAST_DAY]["feature"])


def test_rolling_reference_bins_come_from_the_reference_days(pipeline, drift_config):
    """The PSI of a feature equals the seed formula on quantile bins of the reference days' rows."""
    from pavedml.drift import build_reference, compute_psi

    drift_config(reference="rolling", reference_days=3)
    check(LAST_DAY)
    rec = report(pipeline, LAST_DAY)
    ref_rows = pd.concat([pd.read_parquet(pipeline / f"{UC}/features/dt={d}") for d in
                          ("2025-01-05", "2025-01-06", "2025-01-07")], ignore_index=True)
    window = pd.read_parquet(pipeline / f"{UC}/features/dt={LAST_DAY}")
    direct = compute_psi(build_reference(ref_rows, ["MonthlyCharges", "tenure"], ["Contract"]), window)
    got = {f["name"]: f["psi"] for f in rec["report"]["features"]}
    for f in direct.features:
        assert got[f.name] == pytest.approx(f.psi, rel=1e-9), f.name


def test_drifted_day_fires_under_the_rolling_reference(pipeline, drift_config):
    drift_config(reference="rolling", reference_days=3)
    result = check(DRIFT_DAY)
    assert result.status == "drift" and "MonthlyCharges" in result.alerts, result
    assert report(pipeline, DRIFT_DAY)["reference"]["days"] == ["2025-01-06", "2025-01-07", LAST_DAY]


def test_seasonal_reference_is_the_same_period_a_season_ago(pipeline, drift_config):
    # a "season" of seven days: the window 2025-01-08 is compared with the days around 2025-01-01
    drift_config(reference="seasonal", reference_days=3, season_days=7)
    result = check(LAST_DAY)
    rec = report(pipeline, LAST_DAY)
    assert rec["reference"]["days"] == ["2024-12-31", "2025-01-01", "2025-01-02"]
    assert rec["reference"]["days_with_features"] == 2 and rec["reference"]["rows"] == 3000
    assert result.status == "no_drift", result
    # the predictions of 2025-01-01/02 do not exist (the model was trained later): named, not judged
    assert rec["prediction"]["checked"] is False
    assert "2024-12-31 .. 2025-01-02" in rec["prediction"]["reason"] and "0 scored rows" in rec["prediction"]["reason"]


def test_a_season_without_history_is_named_and_never_judged(pipeline, drift_config):
    drift_config(reference="seasonal", reference_days=28, season_days=365)
    result = check(LAST_DAY)
    assert result.status == "insufficient_data" and result.alerts == [] and result.reference == "seasonal"
    assert "seasonal reference 2023-12-26 .. 2024-01-22 (28 days)" in result.reason
    assert "no features partition for any of its days" in result.reason
    assert "features exist for 2025-01-01 .. 2025-01-09" in result.reason
    rec = report(pipeline, LAST_DAY)
    assert rec["status"] == "insufficient_data" and rec["reason"] == result.reason
    with pytest.raises(Exception, match="insufficient_data"):
        run_step("request_retraining", LAST_DAY, dag_id="telco_churn_drift_monitor", run_id="manual__r", params="{}")


def test_too_little_rolling_history_names_the_missing_days(pipeline, drift_config):
    drift_config(reference="rolling", reference_days=10, min_samples=20000)
    result = check(LAST_DAY)
    assert result.status == "insufficient_data"
    assert "rolling reference 2024-12-29 .. 2025-01-07 (10 days)" in result.reason
    assert "only 10500 feature rows on 7 of its 10 days" in result.reason
    assert "2024-12-29 .. 2024-12-31 (3 days)" in result.reason


def _flip_labels(root, label_day: str, fraction: float, seed: int = 0) -> None:
    """Turn a fraction of one landed labels file's "No" into "Yes" (a real change in the target)."""
    path = root / f"landing/{UC}/labels/dt={label_day}/labels.csv"
    labels = pd.read_csv(path, dtype=str)
    rng = np.random.default_rng(seed)
    flip = (labels["Churn"] == "No") & (rng.random(len(labels)) < fraction)
    labels.loc[flip, "Churn"] = "Yes"
    buf = io.StringIO()
    labels.to_csv(buf, index=False)
    path.write_text(buf.getvalue())


def test_judged_target_fires_while_the_features_stay_quiet(pipeline, drift_config):
    """The newest labels known by the window's day (those of 2025-01-06, landed on 2025-01-08)
    shift; the features do not."""
    path = pipeline / f"landing/{UC}/labels/dt={LAST_DAY}/labels.csv"
    keep = path.read_text()
    try:
        _flip_labels(pipeline, LAST_DAY, 0.6)
        drift_config(reference="rolling", reference_days=3)
        reported = check(LAST_DAY)  # judge_on: [features] (default): reported, no drift
        assert reported.status == "no_drift" and reported.alerts == []
        rec = report(pipeline, LAST_DAY)
        assert rec["target"]["status"] == "alert" and rec["target"]["counts_toward_verdict"] is False
        assert rec["report"]["alerts"] == []

        drift_config(reference="rolling", reference_days=3, judge_on=["features", "target"])
        judged = check(LAST_DAY)
        assert judged.status == "drift" and judged.alerts == ["target"], judged
        assert judged.target_psi is not None and judged.target_psi >= 0.25
        table = (pipeline / f"{UC}/drift/dt={LAST_DAY}/psi_table.txt").read_text()
        assert "target" in table and "counts toward the verdict" in table
        request = run_step("request_retraining", LAST_DAY, dag_id="telco_churn_drift_monitor",
                           run_id="manual__target", params="{}")
        assert request.requested and request.asset_extra["alerts"] == ["target"]
        assert request.asset_extra["psi"]["target"] == pytest.approx(report(pipeline, LAST_DAY)["target"]["psi"],
                                                                     abs=1e-5)
    finally:
        path.write_text(keep)


def test_judged_predictions_fire_while_the_features_stay_under_their_thresholds(pipeline, drift_config):
    """On the drifted day the model's output moves; with per-feature thresholds that accept the
    drifted inputs' change (and their derived features'), only judging the predictions makes it a
    drift verdict."""
    accept = {"warn": 50.0, "alert": 100.0}  # the drifted inputs and the features derived from them
    lenient = {name: accept for name in ("MonthlyCharges", "tenure", "TotalCharges", "avg_monthly_spend")}
    drift_config(reference="rolling", reference_days=3, per_feature=lenient)
    quiet = check(DRIFT_DAY)
    rec = report(pipeline, DRIFT_DAY)
    assert quiet.status == "no_drift", rec["report"]["alerts"]
    assert rec["prediction"]["status"] == "alert", rec["prediction"]["psi"]

    drift_config(reference="rolling", reference_days=3, per_feature=lenient, judge_on=["features", "predictions"])
    fired = check(DRIFT_DAY)
    assert fired.status == "drift" and fired.alerts == ["prediction"]
    assert report(pipeline, DRIFT_DAY)["prediction"]["counts_toward_verdict"] is True


def test_training_reference_keeps_its_behaviour_and_adds_target_and_seasonal_notes(pipeline, drift_config):
    """The default reference: features against the champion's training split, the model output
    against its training distribution, the target against the training split's positive rate; a
    drifted feature gets a note comparing it with the same period one (seven-day) season ago."""
    drift_config(season_days=7, reference_days=3)
    result = check(DRIFT_DAY)
    assert result.status == "drift" and "MonthlyCharges" in result.alerts
    rec = report(pipeline, DRIFT_DAY)
    assert rec["reference"]["kind"] == "training" and rec["prediction"]["counts_toward_verdict"] is False
    assert rec["target"]["bins"][:2] == ["0", "1"] and rec["target"]["n_actual"] == 1500
    assert rec["target"]["days"] == ["2025-01-07"] and rec["target"]["status"] == "ok"
    note = rec["seasonality"]["MonthlyCharges"]
    assert note["period"] == ["2025-01-01", "2025-01-02", "2025-01-03"]
    assert note["note"].endswith("not only seasonal") and note["seasonal_psi"] >= 0.25
