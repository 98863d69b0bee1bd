"""The distributed suite's workload and its reference: the days, the use case, how a run is
triggered and read back through the REST API, and the same steps run on one host alone (the local
profile, in-process) that every distributed result must equal.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import HISTORY_DAYS, HISTORY_START
from tests.helpers.cluster import CeleryCluster
from tests.helpers.prodstack import ProductionServices

SEEDED = HISTORY_DAYS - 2  # days seeded in-process; the next three run through the scheduler
DAYS = [(HISTORY_START + timedelta(days=SEEDED + i)).isoformat() for i in range(3)]
DAY = DAYS[-1]  # the day trained through, scored and checked for drift
#: new days, each run through the scheduler with a fault: a worker dies materializing the first;
#: PostgreSQL restarts during the second, the broker with its tasks queued during the third, and the
#: S3 endpoint goes down in the middle of the fourth's lake push
FAULT_DAY, PG_DAY, BROKER_DAY, S3_DAY = ((HISTORY_START + timedelta(days=SEEDED + len(DAYS) + i)).isoformat()
                                        for i in range(4))
FAULT_DAYS = (FAULT_DAY, PG_DAY, BROKER_DAY, S3_DAY)
LANDED = SEEDED + len(DAYS) + len(FAULT_DAYS)
USE_CASE = "telco_churn"
#: a second use case beside it (the shipped one under another name, model and Feast project): its
#: feature pipeline days run through the same cluster at the same time and must equal one host's too
SECOND = "acme_churn"
SECOND_DAYS = SEEDED + len(DAYS)  # landed for it
#: its days run through the cluster, beside USE_CASE's last day (the concurrency under test, at a
#: third of the cost of all of DAYS)
SECOND_RUN_DAYS = DAYS[-1:]
WORKERS = ("worker-a", "worker-b")
TRAINING = {"training_window_days": 30, "reason": "distributed suite"}


def write_use_cases(cases: Path) -> None:
    """telco_churn and SECOND; every run of the suite is triggered by the test (no schedule)."""
    import yaml

    from tests.conftest import REPO

    cases.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((REPO / "include/use_cases/telco_churn.yaml").read_text())
    spec["schedules"].update(feature_pipeline=None, training_pipeline=None, batch_scoring=None,
                             drift_monitor=None, performance_monitor=None)
    (cases / f"{USE_CASE}.yaml").write_text(yaml.safe_dump(spec))
    spec.update(name=SECOND, description="Churn of ACME's customers (the distributed suite's second use case).")
    spec["model"]["registered_name"] = SECOND
    (cases / f"{SECOND}.yaml").write_text(yaml.safe_dump(spec))


def pulled_predictions(services: ProductionServices, into: Path) -> str:
    """The scored day's prediction partition, downloaded from the lake."""
    into.mkdir(parents=True, exist_ok=True)
    client = services.s3()
    keys = [k for k in services.s3_keys("pavedml", f"lake/{USE_CASE}/predictions/dt={DAY}/") if k.endswith(".parquet")]
    assert keys, "no predictions in the lake"
    for key in keys:
        client.download_file("pavedml", key, str(into / Path(key).name))
    return str(into)


def query(services, db: str, sql: str) -> list[tuple]:
    """Rows of ``sql`` in the services' database ``db`` (a key of ``services.dbs``: airflow, feast...)."""
    import psycopg2

    conn = psycopg2.connect(dbname=services.dbs[db], **services.pg)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def use_env(values: dict[str, str]):
    from pavedml.settings import get_settings

    mp = pytest.MonkeyPatch()
    for name, value in values.items():
        mp.setenv(name, value)
    for name in ("PAVEDML_LANDING_URI", "PAVEDML_LAKE_URI", "PAVEDML_FEAST_REGISTRY", "PAVEDML_FEAST_ONLINE_STORE",
                 "PAVEDML_LOCK_URL", "MLFLOW_TRACKING_URI", "PAVEDML_MLFLOW_CONN_ID", "AWS_ENDPOINT_URL"):
        if name not in values:
            mp.delenv(name, raising=False)
    get_settings.cache_clear()
    return mp


def seed_history(services: ProductionServices, root: Path, cases: Path) -> None:
    """Landing batches on S3; the first feature days in-process (a 'seed host'), pushed to the lake."""
    from pavedml.lake import synced
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate
    from tests.helpers.steps import feature_days

    mp = use_env({**services.step_env(root), "PAVEDML_USE_CASES_DIR": str(cases)})
    try:
        simulate(USE_CASE, HISTORY_START, LANDED, rows_per_day=1500)
        simulate(SECOND, HISTORY_START, SECOND_DAYS, rows_per_day=1500)
        with synced(USE_CASE):
            feature_days(HISTORY_START, SEEDED)
    finally:
        mp.undo()
        get_settings.cache_clear()


def single_host(root: Path, cases: Path) -> dict:
    """The same days and steps on one host, the local profile (SQLite stores, local MLflow), in-process."""
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate
    from tests.helpers.steps import FEATURE_STEPS, run_step

    mp = use_env({"PAVEDML_DATA_ROOT": str(root), "PAVEDML_USE_CASES_DIR": str(cases)})
    try:
        simulate(USE_CASE, HISTORY_START, LANDED, rows_per_day=1500)
        simulate(SECOND, HISTORY_START, SECOND_DAYS, rows_per_day=1500)
        out: dict = {"features": {}}
        for i in range(SEEDED + len(DAYS)):
            ds = (HISTORY_START + timedelta(days=i)).isoformat()
            out["features"][ds] = {step: run_step(step, ds, USE_CASE) for step in FEATURE_STEPS}
        kw = {"dag_id": f"{USE_CASE}_training_pipeline", "run_id": f"single_{DAY}", "params": json.dumps(TRAINING)}
        out["training"] = {s: run_step(s, DAY, USE_CASE, **kw) for s in
                           ("build_training_set", "train_challenger", "evaluate_challenger", "promote_challenger")}
        out["scoring"] = run_step("score_customers", DAY, USE_CASE)
        out["drift"] = run_step("check_drift", DAY, USE_CASE)
        out["online"] = online_rows(entity_keys(out["scoring"].partition))
        out["second"] = {ds: {step: run_step(step, ds, SECOND) for step in FEATURE_STEPS} for ds in SECOND_RUN_DAYS}
        out["second_online"] = online_rows(entity_keys(out["second"][DAY]["build_features"].partition, SECOND), SECOND)
        out["fault_online"] = {}
        for ds in FAULT_DAYS:
            out["features"][ds] = {step: run_step(step, ds, USE_CASE) for step in FEATURE_STEPS}
            out["fault_online"][ds] = online_rows(entity_keys(out["features"][ds]["build_features"].partition))
        return out
    finally:
        mp.undo()
        get_settings.cache_clear()


def entity_keys(partition: str, use_case: str = USE_CASE) -> list[str]:
    import pandas as pd

    from pavedml.config import get_use_case

    return sorted(pd.read_parquet(partition)[get_use_case(use_case).entity.key].astype(str).unique())


def online_rows(keys: list[str], use_case: str = USE_CASE) -> dict:
    """key -> (numeric values, categorical values) of ``keys``, read from the online store of the
    current settings (SQLite or Redis) in one round trip."""
    from pavedml.config import get_use_case
    from pavedml.serving.online import OnlineFeatures

    uc = get_use_case(use_case)
    store = OnlineFeatures(uc)
    try:
        rows = store.read(keys)
    finally:
        store.close()
    return {k: (tuple(rows.numeric[i].round(9)), tuple(rows.categorical[i])) for i, k in enumerate(keys) if rows.found[i]}


def trigger(stack: CeleryCluster, dag_id: str, ds: str, conf: dict | None = None, wait: bool = True) -> dict:
    run_id = f"prod_{ds}"
    stack.api("POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": f"{ds}T00:00:00Z",
                                                   "conf": conf or {}})
    return finished(stack, dag_id, run_id) if wait else {"dag_run_id": run_id}


def finished(stack: CeleryCluster, dag_id: str, run_id: str) -> dict:
    run = stack.wait_for_run(dag_id, run_id, timeout=900)
    tis = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    run["tasks"] = {ti["task_id"]: ti["state"] for ti in tis}
    run["hosts"] = {ti["task_id"]: ti["hostname"] for ti in tis}
    run["xcom"] = {}
    for ti in tis:
        try:
            entry = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
                                     "/xcomEntries/return_value")
            run["xcom"][ti["task_id"]] = entry.get("value")
        except Exception:  # noqa: BLE001 - skipped tasks have none
            pass
    return run


def versions(services: ProductionServices) -> list[dict]:
    status, found = services.mlflow_api("GET", f"/api/2.0/mlflow/model-versions/search?filter=name%3D%27{USE_CASE}%27"
                                               "&max_results=1000", auth=services.admin)
    assert status == 200, found
    return found.get("model_versions", [])


FEATURE_TASKS = ("wait_for_batch", "ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features")
