"""Training steps in-process: point-in-time correctness, retry idempotency, racing promotions,
and the bad inputs that must fail before training with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pandas as pd
import pytest

from pavedml.errors import TrainingDataError
from tests.helpers.steps import run_step
from tests.integration.conftest import LAST_DAY

pytestmark = pytest.mark.integration
DAG = "telco_churn_training_pipeline"


def _train(run_id: str, params: str = '{"reason": "test"}'):
    kw = {"dag_id": DAG, "run_id": run_id, "params": params}
    return [run_step(s, LAST_DAY, **kw) for s in ("build_training_set", "train_challenger", "evaluate_challenger")]


def test_no_feature_value_later_than_the_label_enters(history_copy):
    """Plant a late feature row (after the label's timestamp) for a labelled customer."""
    from pavedml.config import get_use_case
    from pavedml.layout import Layout
    from pavedml.steps.training import LABEL, point_in_time_join

    uc = get_use_case("telco_churn")
    day2 = pd.read_parquet(history_copy / "telco_churn/features/dt=2025-01-02/part-0.parquet")
    key = day2["customerID"].iloc[0]
    late = day2[day2["customerID"] == key].copy()
    late["event_timestamp"] = pd.Timestamp("2025-01-02 12:00", tz="UTC")
    late["tenure"] = 999.0
    planted = history_copy / "telco_churn/features/dt=2025-01-02b"
    planted.mkdir()
    late.to_parquet(planted / "part-0.parquet", index=False)
    try:
        labels = pd.DataFrame({"customerID": [key, key], LABEL: [1, 0],
                               "event_timestamp": pd.to_datetime(["2025-01-02 06:00", "2025-01-02 13:00"], utc=True)})
        joined, dropped = point_in_time_join(uc, labels, Layout.for_use_case(uc.name))
        assert dropped == 0
        by_time = joined.sort_values("event_timestamp")["tenure"].tolist()
        assert by_time[0] == day2.loc[day2["customerID"] == key, "tenure"].iloc[0]  # before the late row
        assert by_time[1] == 999.0  # after it
    finally:
        import shutil

        shutil.rmtree(planted)


def test_retry_of_the_same_dag_run_creates_no_second_version(history_copy):
    built, first, _ = _train("manual__retry")
    with open(f"{built.path}/dataset.json") as fh:
        manifest = json.load(fh)
    assert set(manifest["positive_rate"]) == {"train", "validation", "holdout"} and "label_mean" not in manifest
    assert set(first.metrics) == {f"holdout_{m}" for m in ("roc_auc", "pr_auc", "f1", "precision", "recall",
                                                           "log_loss", "brier")}
    again = run_step("train_challenger", LAST_DAY, dag_id=DAG, run_id="manual__retry", params="{}", try_number=2)
    assert again.model_version == first.model_version and again.reused and not first.reused
    import mlflow

    from pavedml.settings import get_settings

    client = mlflow.MlflowClient(get_settings().mlflow_tracking_uri)
    versions = client.search_model_versions("name = 'telco_churn'")
    assert [str(v.version) for v in versions if v.tags.get("pavedml.dag_run") == f"{DAG}/manual__retry"] == \
        [first.model_version]


def test_racing_promotions_never_leave_champion_on_the_loser(history_copy):
    """Two challengers decided against the same champion; whoever moves second is re-decided
    against the new champion (same holdout) and must not replace a better model."""
    import mlflow

    from pavedml.settings import get_settings

    base = _train("manual__base")
    run_step("promote_challenger", LAST_DAY, dag_id=DAG, run_id="manual__base", params="{}")
    strong = _train("manual__strong", '{"hyperparameters": {"max_iter": 300, "learning_rate": 0.08}, "force_promote": false}')
    weak = _train("manual__weak", '{"hyperparameters": {"max_iter": 60, "learning_rate": 0.2, "max_leaf_nodes": 63}}')
    errors = []

    def promote(run_id):
        try:
            run_step("promote_challenger", LAST_DAY, dag_id=DAG, run_id=run_id, params="{}")
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(r,)) for r in ("manual__strong", "manual__weak")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    client = mlflow.MlflowClient(get_settings().mlflow_tracking_uri)
    champion = str(client.get_model_version_by_alias("telco_churn", "champion").version)
    assert champion in {base[1].model_version, strong[1].model_version, weak[1].model_version}
    # Invariant: no candidate left out would win against the final champion under the policy,
    # scored on the same holdout with slices (what a fresh evaluation would decide).
    from pavedml.config import get_use_case
    from pavedml.metrics import model_scores, task_metrics
    from pavedml.steps.evaluation import decide, slice_metrics
    from pavedml.steps.training import load_split

    uc = get_use_case("telco_churn")
    from pavedml.context import StepContext

    holdout = load_split(StepContext.build("telco_churn", LAST_DAY, dag_id=DAG, run_id="manual__base"), "holdout")

    def scored(version):
        proba = model_scores(mlflow.sklearn.load_model(f"models:/telco_churn/{version}"), holdout[uc.feature_columns],
                             uc.task)
        return (task_metrics(uc.task, holdout["label"], proba),
                slice_metrics(holdout, proba, uc.evaluation.slices, uc.task))

    champ_m, champ_s = scored(champion)
    for result in (strong[1], weak[1]):
        if result.model_version != champion:
            m, sl = scored(result.model_version)
            assert decide(m, champ_m, uc.evaluation, sl, champ_s).outcome != "promote", result.model_version


def test_window_without_labels_fails_before_training(history_copy):
    """The error says what was found instead: where the newest labels are (a trigger form left at
    today's date, or a date before the data, is the usual cause)."""
    days = sorted(p.name.removeprefix("dt=") for p in (history_copy / "landing/telco_churn/labels").glob("dt=*"))
    with pytest.raises(TrainingDataError, match="no labels known by 2024-06-01") as err:
        run_step("build_training_set", "2024-06-01", dag_id=DAG, run_id="manual__nolabels", params="{}")
    assert f"labels known: {len(days)} day(s), oldest {days[0]}, newest {days[-1]}" in err.value.message
    assert "logical date on or after the newest labels" in err.value.details["next"]


def test_too_few_labelled_days_names_the_labels_known(history_copy):
    days = sorted(p.name.removeprefix("dt=") for p in (history_copy / "landing/telco_churn/labels").glob("dt=*"))
    with pytest.raises(TrainingDataError, match="labelled snapshot day") as err:
        run_step("build_training_set", days[1], dag_id=DAG, run_id="manual__fewdays", params="{}")
    assert f"newest {days[-1]}" in err.value.message


def test_a_run_without_a_reason_records_how_it_started():
    from pavedml.context import StepContext

    for run_id, reason in (("scheduled__2025-01-08T00:00:00+00:00", "scheduled"),
                           ("manual__2025-01-08T10:00:00+00:00", "manual run"),
                           ("backfill__2025-01-08T00:00:00+00:00", "backfill"),
                           ("asset_triggered__2025-01-08T00:00:00+00:00", "retrain request (asset event)")):
        assert StepContext.build("telco_churn", "2025-01-08", run_id=run_id).reason == reason
        assert StepContext.build("telco_churn", "2025-01-08", run_id=run_id, params={"reason": " why "}).reason == "why"


def test_single_class_window_fails_before_training(history_copy):
    labels_dir = history_copy / "landing/telco_churn/labels"
    saved = {p: p.read_bytes() for p in labels_dir.rglob("*.csv")}
    try:
        for p in saved:
            df = pd.read_csv(p, dtype=str)
            df["Churn"] = "No"
            df.to_csv(p, index=False)
        with pytest.raises(TrainingDataError, match=r"single class \(0\)"):
            run_step("build_training_set", LAST_DAY, dag_id=DAG, run_id="manual__oneclass", params="{}")
    finally:
        for p, data in saved.items():
            p.write_bytes(data)


def test_unreachable_tracking_server_fails_clearly_and_registers_nothing(history_copy):
    run_step("build_training_set", LAST_DAY, dag_id=DAG, run_id="manual__down", params="{}")
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "3", "PAVEDML_TRACKING_WAIT_SECONDS": "0"}
    out = subprocess.run([sys.executable, "-m", "pavedml", "train_challenger", "--use-case", "telco_churn",
                          "--ds", LAST_DAY, "--dag-id", DAG, "--run-id", "manual__down"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]  # retryable
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in out.stderr
    import mlflow

    from pavedml.settings import get_settings

    client = mlflow.MlflowClient(get_settings().mlflow_tracking_uri)
    assert not [v for v in client.search_model_versions("name = 'telco_churn'")
                if v.tags.get("pavedml.dag_run") == f"{DAG}/manual__down"]


def test_promotion_refuses_a_stale_decision_without_a_champion_change(history_copy):
    from pavedml.adapters.tracking import setup
    from pavedml.context import StepContext
    from pavedml.errors import EXIT_NO_RETRY
    from pavedml.ledger import read_ledger
    from pavedml.steps.registry import ChampionChanged, move_champion
    from pavedml.summary import failure_summary

    ctx = StepContext.build("telco_churn", LAST_DAY, dag_id=DAG, run_id="manual__cas")
    client, _ = setup(ctx)
    current = str(client.get_model_version_by_alias("telco_churn", "champion").version)
    entries = len(read_ledger(ctx))
    with pytest.raises(ChampionChanged, match=f"champion is v{current} now, not v999") as err:
        move_champion(ctx, client, "1", "999", "promoted", "stale")
    # nothing moved, nothing recorded
    assert str(client.get_model_version_by_alias("telco_churn", "champion").version) == current
    assert len(read_ledger(ctx)) == entries
    # what the operator sees: the DAG doc's registry_error, no retry, and what to do
    assert err.value.exit_code == EXIT_NO_RETRY
    summary = failure_summary("promote_challenger", "telco_churn", LAST_DAY, err.value)
    assert summary.splitlines()[1].startswith("FAILED promote_challenger [registry_error]")
    assert "Next step: another promotion won the race; rerun evaluate_challenger" in summary


def test_scoring_features_equal_feast_historical_retrieval(history_copy):
    """The batch path reads the interval from the offline store's source; it must equal what
    get_historical_features returns for entity timestamps at the interval start."""
    from pavedml.config import get_use_case
    from pavedml.context import StepContext
    from pavedml.steps.featurestore import get_store
    from pavedml.steps.scoring import read_interval_features

    uc = get_use_case("telco_churn")
    ctx = StepContext.build("telco_churn", "2025-01-05")
    ours = read_interval_features(ctx, [uc.entity.key, "event_timestamp", *uc.feature_columns])[0].to_pandas()
    store, defs = get_store(uc)
    entity = ours[[uc.entity.key, "event_timestamp"]].head(200)
    feast = store.get_historical_features(entity_df=entity, features=defs["feature_service"]).to_df()
    key = uc.entity.key
    a = ours.set_index(key).loc[feast[key], uc.feature_columns].reset_index(drop=True)
    b = feast.set_index(key).loc[feast[key], uc.feature_columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
