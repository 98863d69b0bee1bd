"""The training pipeline through dag.test(), checked through models:/<name>@champion and the ledger."""

from __future__ import annotations

import json

import pytest

from tests.helpers.dagrun import run_dag
from tests.helpers.http_sink import HttpSink
from tests.helpers.registry import mlflow_client
from tests.integration.conftest import LAST_DAY

pytestmark = pytest.mark.integration
TRAIN = "telco_churn_training_pipeline"
ROLLBACK = "telco_churn_model_rollback"
WORSE = {"max_iter": 2, "learning_rate": 0.01, "max_leaf_nodes": 2}


def _champion() -> str:
    return str(mlflow_client().get_model_version_by_alias("telco_churn", "champion").version)


def _ledger(root):
    path = root / "telco_churn/registry/ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(history_copy):
    """The scenario, in order; each test checks one part of it. Registry events go to a local
    webhook sink (a Teams-style generic webhook) all along."""
    from pavedml.settings import get_settings

    out = {}
    mp = pytest.MonkeyPatch()
    with HttpSink() as sink:
        mp.setenv("AIRFLOW_CONN_TRAINING_EVENTS", json.dumps({"conn_type": "http", "password": f"{sink.url}/events"}))
        mp.setenv("PAVEDML_EVENTS_WEBHOOK_CONN_ID", "training_events")
        get_settings.cache_clear()
        try:
            _scenario(out)
        finally:
            mp.undo()
            get_settings.cache_clear()
        out["events"] = [p["json"]["event"] for p in sink.posts]
    return out


def _scenario(out: dict) -> None:
    out["first"] = run_dag(TRAIN, LAST_DAY, {"reason": "first model"})
    out["champion_after_first"] = _champion()
    out["second"] = run_dag(TRAIN, LAST_DAY, {"reason": "same data again"})
    out["champion_after_second"] = _champion()
    out["worse"] = run_dag(TRAIN, LAST_DAY, {"reason": "deliberately worse", "hyperparameters": WORSE})
    out["champion_after_worse"] = _champion()
    out["forced"] = run_dag(TRAIN, LAST_DAY, {"reason": "forced for the rollback test", "hyperparameters": WORSE,
                                              "force_promote": True})
    out["champion_after_forced"] = _champion()
    out["rollback"] = run_dag(ROLLBACK, LAST_DAY, {"target_version": "previous", "reason": "forced model was worse"})
    out["champion_after_rollback"] = _champion()


def test_every_registration_promotion_rejection_and_rollback_was_posted(runs):
    got = [(e["event"], e["version"]) for e in runs["events"]]
    worse = runs["worse"][2]["evaluate_challenger"]
    assert got == [("registered", "1"), ("promoted", "1"), ("registered", "2"), ("rejected", "2"),
                   ("registered", "3"), ("rejected", "3"), ("registered", "4"), ("promoted", "4"),
                   ("rolled_back", "1")], got
    rejected = [e for e in runs["events"] if e["event"] == "rejected"]
    assert rejected[0]["summary"].startswith("keep_champion: tie on roc_auc")
    assert rejected[1]["summary"].startswith(f"{worse['outcome']}: {worse['reasons'][0]}")
    rollback = runs["events"][-1]
    assert (rollback["from_version"], rollback["to_version"], rollback["summary"]) == ("4", "1", "forced model was worse")


def test_first_run_promotes_v1(runs):
    state, tasks, xcoms = runs["first"]
    assert state == "success", tasks
    assert xcoms["train_challenger"]["model_version"] == "1"
    assert xcoms["evaluate_challenger"]["outcome"] == "promote"
    assert runs["champion_after_first"] == "1"


def test_second_run_on_identical_data_keeps_v1(runs):
    state, _, xcoms = runs["second"]
    assert state == "success"
    assert xcoms["train_challenger"]["model_version"] == "2"
    assert xcoms["evaluate_challenger"]["outcome"] == "keep_champion"
    assert xcoms["evaluate_challenger"]["reasons"][0].startswith("tie on roc_auc")
    assert runs["champion_after_second"] == "1"


def test_worse_model_is_rejected_with_its_reason(runs, history_copy):
    state, _, xcoms = runs["worse"]
    assert state == "success"
    decision = xcoms["evaluate_challenger"]
    assert decision["outcome"] in ("reject", "keep_champion") and not decision["promote"]
    assert runs["champion_after_worse"] == "1"
    entry = [e for e in _ledger(history_copy) if e.get("challenger_version") == "3"][0]
    assert entry["action"] == decision["outcome"] and decision["reasons"][0] in entry["reason"]
    tags = mlflow_client().get_model_version("telco_churn", "3").tags
    assert tags["evaluation.outcome"] == decision["outcome"]


def test_forced_promotion_is_recorded_and_rollback_restores_previous(runs, history_copy):
    assert runs["champion_after_forced"] == "4"
    state, _, xcoms = runs["rollback"]
    assert state == "success"
    assert xcoms["rollback_model"]["to_version"] == "1" and xcoms["rollback_model"]["from_version"] == "4"
    assert runs["champion_after_rollback"] == "1"
    assert str(mlflow_client().get_model_version_by_alias("telco_churn", "previous_champion").version) == "4"


def test_ledger_shows_every_move(runs, history_copy):
    moves = [(e["action"], e["from_version"], e["to_version"]) for e in _ledger(history_copy)]
    assert moves == [("promoted", None, "1"), ("keep_champion", "1", "1"), (runs["worse"][2]["evaluate_challenger"]
                     ["outcome"], "1", "1"), ("promoted", "1", "4"), ("rolled_back", "4", "1")]
    forced = _ledger(history_copy)[3]
    assert "FORCED" in forced["reason"] and forced["run_id"].startswith("manual__")


def test_mlflow_run_has_lineage_plots_signature_and_drift_reference(runs):
    client = mlflow_client()
    mv = client.get_model_version("telco_churn", "1")
    run = client.get_run(mv.run_id)
    tags = run.data.tags
    assert tags["airflow.dag_id"] == TRAIN and tags["use_case"] == "telco_churn"
    assert tags["airflow.run_id"].startswith("manual__") and tags["git_commit"]
    for metric in ("roc_auc", "pr_auc", "f1", "precision", "recall", "log_loss", "brier"):
        assert f"validation_{metric}" in run.data.metrics and f"holdout_{metric}" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(mv.run_id, "plots")}
    assert artifacts == {f"plots/{p}.png" for p in ("roc_curve", "pr_curve", "confusion_matrix", "calibration",
                                                    "feature_importance")}
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"telco_churn-train", "telco_churn-validation",
                                                                   "telco_churn-holdout"}
    assert json.loads(tags["raw_snapshot_hashes"])
    reference = client.download_artifacts(mv.run_id, "drift/reference.json")
    assert "tenure" in json.loads(open(reference).read())["features"]
    assert mv.tags["drift_reference"] == f"runs:/{mv.run_id}/drift/reference.json"
    import mlflow

    model_info = mlflow.models.get_model_info("models:/telco_churn@champion")
    assert model_info.signature is not None
