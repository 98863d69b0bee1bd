"""The daily feature pipeline through dag.test(): three consecutive days, idempotent reruns,
every bad input quarantined with a named reason and nothing written downstream, then a fixed
batch rerun succeeds."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest

from tests.helpers.dagrun import asset_events, run_dag

pytestmark = pytest.mark.integration
DAG_ID = "telco_churn_feature_pipeline"
DAYS = ["2025-01-01", "2025-01-02", "2025-01-03"]


@pytest.fixture(scope="module")
def root(tmp_path_factory, airflow_db):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("feature_pipeline")
    mp.setenv("PAVEDML_DATA_ROOT", str(root))
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    from pavedml.tools.simulate import simulate

    simulate("telco_churn", date(2025, 1, 1), 3, rows_per_day=400)
    yield root
    mp.undo()


def _online(keys: list[str]) -> pd.DataFrame:
    from pavedml.config import get_use_case
    from pavedml.steps.featurestore import get_store

    uc = get_use_case("telco_churn")
    store, defs = get_store(uc, apply=False)
    out = store.get_online_features(features=defs["feature_service"],
                                    entity_rows=[{uc.entity.key: k} for k in keys]).to_df()
    return out.sort_values(uc.entity.key).reset_index(drop=True)


@pytest.fixture(scope="module")
def three_days(root):
    return {ds: run_dag(DAG_ID, ds) for ds in DAYS}


def test_three_consecutive_days_succeed(root, three_days):
    for ds, (state, tasks, xcoms) in three_days.items():
        assert state == "success", (ds, tasks)
        assert set(tasks.values()) == {"success"}
        assert xcoms["ingest_raw_batch"]["rows"] == 400
        assert xcoms["validate_raw_batch"]["success"] is True
        assert xcoms["validate_raw_batch"]["data_docs"].endswith(".html")
        assert (root / "telco_churn/features" / f"dt={ds}" / "part-0.parquet").exists()
    events = asset_events("pavedml://telco_churn/features")
    assert [e["sha256"] for e in events[-3:]] == [three_days[d][2]["ingest_raw_batch"]["sha256"] for d in DAYS]


def test_rerun_of_a_day_is_identical(root, three_days):
    ds = DAYS[1]
    part = root / "telco_churn/features" / f"dt={ds}" / "part-0.parquet"
    before_rows = pd.read_parquet(part)
    keys = before_rows["customerID"].head(50).tolist()
    before_online = _online(keys)
    state, _, xcoms = run_dag(DAG_ID, ds)
    assert state == "success"
    assert xcoms["ingest_raw_batch"]["sha256"] == three_days[ds][2]["ingest_raw_batch"]["sha256"]
    assert xcoms["ingest_raw_batch"]["created"] is False
    pd.testing.assert_frame_equal(pd.read_parquet(part), before_rows)
    pd.testing.assert_frame_equal(_online(keys), before_online)


BAD = [
    ("missing_column", "validate_raw_batch", "Contract"),
    ("wrong_type", "validate_raw_batch", "MonthlyCharges"),
    ("empty_file", "ingest_raw_batch", "empty (0 bytes)"),
    ("null_key", "validate_raw_batch", "customerID"),
    ("duplicate_keys", "validate_raw_batch", "customerID"),
    ("unparseable", "ingest_raw_batch", "could not be parsed"),
    ("out_of_range", "validate_raw_batch", "tenure"),
    ("unknown_category", "validate_raw_batch", "Contract"),
]


@pytest.mark.parametrize("kind,failing_task,named", BAD)
def test_bad_batch_is_quarantined_and_nothing_downstream_runs(root, kind, failing_task, named, monkeypatch):
    from pavedml.tools.simulate import simulate

    ds = f"2025-02-{BAD.index((kind, failing_task, named)) + 1:02d}"
    simulate("telco_churn", date.fromisoformat(ds), 1, rows_per_day=400, bad={ds: kind})
    alerts = root / "alerts.jsonl"
    alerts_before = alerts.read_text().count("\n") if alerts.exists() else 0
    # the DAG's own retries (2): a bad batch is never retried, fails on try 1, and still alerts
    state, tasks, _ = run_dag(DAG_ID, ds, retries=None)
    assert state == "failed"
    assert tasks[failing_task] == "failed"
    assert tasks["materialize_features"] == "upstream_failed"
    assert not (root / "telco_churn/features" / f"dt={ds}").exists()
    quarantined = list((root / "telco_churn/quarantine" / f"dt={ds}").glob("*/*"))
    assert quarantined, "the bad batch must be kept in quarantine"
    alert = alerts.read_text().splitlines()[alerts_before:]
    assert len(alert) == 1
    summary = json.loads(alert[0])["summary"].splitlines()
    assert summary[0].startswith(f"FAILED {failing_task} [") and f"interval={ds}" in summary[0]
    assert named in "\n".join(summary[:3]), summary[:6]  # the cause is in the first lines
    # after the batch is fixed, a rerun of the same interval succeeds
    simulate("telco_churn", date.fromisoformat(ds), 1, rows_per_day=400)
    state, tasks, _ = run_dag(DAG_ID, ds)
    assert state == "success", tasks


def test_wait_for_batch_frees_its_slot_until_the_batch_lands(root, monkeypatch):
    """wait_for_batch (a reschedule sensor running check_landing_batch): its first poke finds no
    batch and reschedules; the batch lands in between; the next poke finds it and the run goes on."""
    from pavedml.airflow.sensors import StepSensor
    from pavedml.tools.simulate import simulate

    ds = "2025-03-01"
    pokes: list[bool] = []
    poke = StepSensor.poke

    def recorded(self, context):
        done = poke(self, context)
        pokes.append(bool(done))
        if not done and len(pokes) == 1:  # the batch lands between the first and the second poke
            simulate("telco_churn", date.fromisoformat(ds), 1, rows_per_day=400)
        return done

    monkeypatch.setattr(StepSensor, "poke", recorded)
    state, tasks, xcoms = run_dag(DAG_ID, ds)
    assert pokes == [False, True]
    assert state == "success", tasks
    landing = root / "landing/telco_churn/customers" / f"dt={ds}" / "customers.csv"
    assert xcoms["wait_for_batch"] == {"step": "check_landing_batch", "use_case": "telco_churn", "ds": ds,
                                       "status": "ready", "uri": str(landing), "reason": "", "evidence": [],
                                       "next": "", "on_timeout": ""}
    assert xcoms["ingest_raw_batch"]["rows"] == 400 and xcoms["ingest_raw_batch"]["source_uri"] == str(landing)


def test_a_batch_that_never_lands_fails_the_wait_and_alerts_naming_its_path(root, monkeypatch):
    """After the use case's wait timeout (here shortened), wait_for_batch fails and is retried like a
    step's exit 1 (each retry looks once more: a batch a few minutes late still gets in); after the
    last retry nothing downstream runs, and one alert names the missing batch as batch_missing."""
    from pavedml.airflow.sensors import StepSensor
    from tests.conftest import REPO
    from tests.helpers.dagrun import dagbag

    ds = "2025-03-09"
    sensor = dagbag(str(REPO / "dags")).dags[DAG_ID].get_task("wait_for_batch")
    assert sensor.timeout == 60  # telco_churn.yaml: batches.wait_timeout_seconds
    monkeypatch.setattr(sensor, "timeout", 3)
    monkeypatch.setattr(sensor, "retry_delay", timedelta(seconds=1))
    monkeypatch.setattr(sensor, "retry_exponential_backoff", False)
    pokes: list[int] = []
    poke = StepSensor.poke

    def counted(self, context):
        pokes.append(context["ti"].try_number)
        return poke(self, context)

    monkeypatch.setattr(StepSensor, "poke", counted)
    alerts = root / "alerts.jsonl"
    alerts_before = alerts.read_text().count("\n") if alerts.exists() else 0
    state, tasks, _ = run_dag(DAG_ID, ds, retries=None)  # the DAG's own retries (2)
    assert state == "failed"
    assert pokes[-1] == 3 and {1, 2, 3} == set(pokes), pokes  # the wait, then one look per retry
    assert tasks["wait_for_batch"] == "failed" and tasks["ingest_raw_batch"] == "upstream_failed"
    assert not (root / "telco_churn/raw" / f"dt={ds}").exists()
    alert = alerts.read_text().splitlines()[alerts_before:]
    assert len(alert) == 1
    record = json.loads(alert[0])
    assert record["task_id"] == "wait_for_batch" and record["try_number"] == 3  # the final failure only
    summary = record["summary"].splitlines()
    folder = root / "landing/telco_churn/customers" / f"dt={ds}"
    assert summary[0] == f"FAILED wait_for_batch [batch_missing] use case=telco_churn interval={ds}"
    assert summary[1] == f"no batch for {ds} at {folder}/customers.csv"
    assert f"  - looked for: {folder}/customers.parquet" in summary
    assert "timed out after 3s" in summary[-1]
