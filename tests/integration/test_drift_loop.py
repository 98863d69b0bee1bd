"""End to end through dag.test(): train, score, inject drift on day N, the drift monitor requests
retraining (once per window), the training DAG runs and its decision is recorded."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest

from tests.helpers.dagrun import asset_events, run_dag
from tests.integration.conftest import LAST_DAY

pytestmark = pytest.mark.integration
DRIFT_DAY = "2025-01-09"


@pytest.fixture(scope="module")
def loop(history_copy):
    from pavedml.tools.simulate import simulate

    simulate("telco_churn", date.fromisoformat(DRIFT_DAY), 1, rows_per_day=1500,
             drift_from=date.fromisoformat(DRIFT_DAY))
    out = {"features_drift_day": run_dag("telco_churn_feature_pipeline", DRIFT_DAY)}
    out["train"] = run_dag("telco_churn_training_pipeline", LAST_DAY, {"reason": "first model"})
    out["score_stable"] = run_dag("telco_churn_batch_scoring", LAST_DAY)
    out["monitor_stable"] = run_dag("telco_churn_drift_monitor", LAST_DAY)
    out["score_drift"] = run_dag("telco_churn_batch_scoring", DRIFT_DAY)
    out["monitor_drift"] = run_dag("telco_churn_drift_monitor", DRIFT_DAY)
    out["monitor_again"] = run_dag("telco_churn_drift_monitor", DRIFT_DAY)
    out["retrain"] = run_dag("telco_churn_training_pipeline", DRIFT_DAY, {"reason": "retrain request: PSI alert"})
    return out


def test_scoring_writes_predictions_with_model_version_and_snapshot_hash(loop, history_copy):
    state, _, xcoms = loop["score_stable"]
    assert state == "success"
    preds = pd.read_parquet(history_copy / f"telco_churn/predictions/dt={LAST_DAY}/part-0.parquet")
    assert len(preds) == 1500 and preds["customerID"].is_unique
    assert set(preds["model_version"]) == {"1"}
    assert set(preds["feature_snapshot_sha256"]) == {xcoms["score_customers"]["feature_snapshot_sha256"]}
    assert preds["probability"].between(0, 1).all()
    assert set(preds["prediction"]) <= {0, 1}
    assert (preds["prediction"] == (preds["probability"] >= 0.5)).all()
    assert xcoms["score_customers"]["positive_rate"] == pytest.approx(preds["prediction"].mean(), abs=1e-4)
    assert xcoms["score_customers"]["prediction_mean"] is None


def test_rerun_of_scoring_overwrites_never_duplicates(loop, history_copy):
    state, _, _ = run_dag("telco_churn_batch_scoring", LAST_DAY)
    assert state == "success"
    files = list((history_copy / f"telco_churn/predictions/dt={LAST_DAY}").glob("*.parquet"))
    assert len(files) == 1 and len(pd.read_parquet(files[0])) == 1500


def test_no_drift_ends_without_failure_and_without_request(loop, history_copy):
    state, tasks, xcoms = loop["monitor_stable"]
    assert state == "success"
    assert tasks == {"wait_for_drift": "success", "request_retraining": "skipped"}
    assert xcoms["wait_for_drift"]["status"] == "no_drift"
    assert (history_copy / f"telco_churn/drift/dt={LAST_DAY}/psi_table.txt").exists()


def test_prediction_drift_is_reported_but_not_judged(loop, history_copy):
    """The PSI of the model's probabilities is in the result, the report and the table, and never
    in the verdict's alerts (retraining is on feature drift)."""
    for key, ds in (("monitor_stable", LAST_DAY), ("monitor_drift", DRIFT_DAY)):
        check = loop[key][2]["wait_for_drift"]
        assert isinstance(check["prediction_psi"], float) and check["prediction_psi"] >= 0, check
        assert "prediction" not in check["alerts"] and "prediction" not in check["psi"]
        report = json.loads((history_copy / f"telco_churn/drift/dt={ds}/report.json").read_text())
        assert report["prediction"]["psi"] == pytest.approx(check["prediction_psi"], abs=1e-5)
        assert report["prediction"]["counts_toward_verdict"] is False
        table = (history_copy / f"telco_churn/drift/dt={ds}/psi_table.txt").read_text()
        assert "not part of the verdict" in table.splitlines()[-1]


def test_drift_requests_retraining_with_evidence(loop, history_copy):
    state, tasks, xcoms = loop["monitor_drift"]
    assert state == "success" and tasks["request_retraining"] == "success"
    check = xcoms["wait_for_drift"]
    assert check["status"] == "drift" and "MonthlyCharges" in check["alerts"]
    # this module's requests (the session's Airflow database also holds other modules' events)
    events = [e for e in asset_events("pavedml://telco_churn/retrain-request") if e.get("window") == [DRIFT_DAY]
              and e.get("data_hash") == check["data_hash"]]
    assert len(events) == 1
    extra = events[0]
    assert extra["window"] == [DRIFT_DAY] and extra["data_hash"] == check["data_hash"]
    assert extra["psi"]["MonthlyCharges"] >= 0.25
    # on-call gets one drift alert whose first line names the drifted feature
    drift_alerts = [a for a in map(json.loads, (history_copy / "alerts.jsonl").read_text().splitlines())
                    if a["kind"] == "drift_detected"]
    assert len(drift_alerts) == 1
    first = drift_alerts[0]["summary"].splitlines()[0]
    assert first.startswith(f"DRIFT DETECTED [telco_churn] window {DRIFT_DAY}: PSI alert on") and "MonthlyCharges" in first


def test_never_two_requests_for_the_same_window(loop):
    state, tasks, _ = loop["monitor_again"]
    assert state == "success" and tasks["request_retraining"] == "skipped"
    data_hash = loop["monitor_drift"][2]["wait_for_drift"]["data_hash"]
    assert len([e for e in asset_events("pavedml://telco_churn/retrain-request")
                if e.get("data_hash") == data_hash]) == 1


def test_reports_and_history_are_written(loop, history_copy):
    drift_dir = history_copy / f"telco_churn/drift/dt={DRIFT_DAY}"
    html = (drift_dir / "evidently.html").read_text()
    assert "Sturges" in html and "quantiles of the training reference" in html
    report = json.loads((drift_dir / "report.json").read_text())
    assert report["status"] == "drift"
    history = pd.read_csv(history_copy / "telco_churn/drift/psi_history.csv", dtype={"ds": str})
    assert set(history["ds"]) == {LAST_DAY, DRIFT_DAY}
    assert (history_copy / "telco_churn/drift/psi_history.png").exists()


def test_training_runs_on_the_request_and_records_its_decision(loop, history_copy):
    """The retrain run's decision follows the policy on the numbers it recorded, and the registry and
    the ledger did what the decision says (the champion moved to the challenger, or stayed)."""
    from mlflow import MlflowClient

    from pavedml.config import get_use_case
    from pavedml.steps.evaluation import decide

    state, tasks, xcoms = loop["retrain"]
    assert state == "success", tasks
    decision = xcoms["evaluate_challenger"]
    record = json.loads(open(decision["record"]).read())
    assert record["outcome"] == decision["outcome"]
    assert record["champion"]["version"] == "1" and record["challenger"]["version"] == "2"
    # the same policy on the recorded holdout metrics gives the same outcome and reasons
    uc = get_use_case("telco_churn")
    again = decide(record["challenger"]["metrics"], record["champion"]["metrics"], uc.evaluation,
                   record["challenger"].get("slices") or {}, record["champion"].get("slices") or {})
    assert (again.outcome, list(again.reasons)) == (record["outcome"], record["reasons"])
    promoted = record["outcome"] == "promote"
    from pavedml.config import LOWER_IS_BETTER

    metric = uc.evaluation.primary_metric
    uplift = record["challenger"]["metrics"][metric] - record["champion"]["metrics"][metric]
    uplift = -uplift if metric in LOWER_IS_BETTER else uplift
    if promoted:  # a promotion always wins by the policy's margin on its primary metric
        assert uplift >= uc.evaluation.min_uplift, record
    ledger = [json.loads(x) for x in (history_copy / "telco_churn/registry/ledger.jsonl").read_text().splitlines()]
    assert ledger[-1]["reason"].startswith("retrain request: PSI alert")
    assert ledger[-1]["action"] == ("promoted" if promoted else record["outcome"])
    assert ledger[-1]["challenger_version" if not promoted else "to_version"] == "2"
    from pavedml.settings import get_settings

    uri = get_settings().mlflow_tracking_uri
    champion = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("telco_churn", "champion").version
    assert str(champion) == ("2" if promoted else "1")


def test_training_dag_is_scheduled_on_the_retrain_request():
    from tests.conftest import REPO
    from tests.helpers.dagrun import dagbag

    dag = dagbag(str(REPO / "dags")).dags["telco_churn_training_pipeline"]
    condition = dag.timetable.asset_condition
    uris = {getattr(a, "uri", None) for a in getattr(condition, "objects", [condition])}
    assert "pavedml://telco_churn/retrain-request" in uris


def test_status_screen_names_champion_runs_psi(loop):
    from pavedml.tools.status import render

    screen = render("telco_churn")
    assert "telco_churn v" in screen and "holdout: " in screen
    assert "telco_churn_drift_monitor" in screen and "success" in screen
    assert "status DRIFT" in screen and "MonthlyCharges" in screen
    # the model output's PSI line shows even when the features fill the screen's rows
    assert screen.splitlines()[screen.splitlines().index("Quarantined batches") - 2].split()[:2] == ["prediction",
                                                                                                  "output"]
