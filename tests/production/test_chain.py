"""The production profile without containers, through a real scheduler: Airflow (scheduler,
DAG processor, triggerer, API server; LocalExecutor) on PostgreSQL; the MLflow tracking server
over HTTP (basic auth, PostgreSQL stores, artifacts proxied to S3); the Feast registry on
PostgreSQL and its online store on Redis; landing, raw, feature and prediction data on S3 (moto's
server) as the lake every step syncs its working copy with.

History (eight days) is seeded in-process straight into the lake and the stores; then one daily
feature pipeline run, a training run with promotion, batch scoring and a drift check all run
through the scheduler. The MLflow password of the steps exists only in an Airflow connection
(planted through the REST API); the suite proves it is used and that it never reaches a task log,
an XCom or an MLflow param.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.conftest import HISTORY_DAYS, HISTORY_START, REPO
from tests.helpers.prodstack import PIPELINE_USER, ProductionServices
from tests.helpers.standalone import Standalone

pytestmark = pytest.mark.production
DAY = (HISTORY_START + timedelta(days=HISTORY_DAYS)).isoformat()  # the day run through the scheduler
USE_CASE = "telco_churn"


def _seed_history(services: ProductionServices, root: Path, cases: Path) -> None:
    """Landing batches on S3; eight feature days in-process (a 'seed host'), pushed to the lake."""
    from pavedml.lake import synced
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate
    from tests.helpers.steps import feature_days

    mp = pytest.MonkeyPatch()
    for name, value in {**services.step_env(root), "PAVEDML_USE_CASES_DIR": str(cases)}.items():
        mp.setenv(name, value)
    get_settings.cache_clear()
    try:
        simulate(USE_CASE, HISTORY_START, HISTORY_DAYS + 1, rows_per_day=1500)
        with synced(USE_CASE):
            feature_days(HISTORY_START, HISTORY_DAYS)
    finally:
        mp.undo()
        get_settings.cache_clear()


def _trigger(stack: Standalone, dag_id: str, conf: dict | None = None) -> dict:
    run_id = f"prod_{DAY}"
    stack.api("POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": f"{DAY}T00:00:00Z",
                                                   "conf": conf or {}})
    run = stack.wait_for_run(dag_id, run_id, timeout=900)
    tis = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    run["tasks"] = {ti["task_id"]: ti["state"] for ti in tis}
    run["xcom"] = {}
    for ti in tis:
        try:
            entry = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
                                     "/xcomEntries/return_value")
            run["xcom"][ti["task_id"]] = entry.get("value")
        except Exception:  # noqa: BLE001 - skipped tasks have none
            pass
    return run


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    base = tmp_path_factory.mktemp("production")
    services = ProductionServices(base / "services").start()
    stack = None
    try:
        cases = base / "use_cases"
        cases.mkdir()
        spec = yaml.safe_load((REPO / "include/use_cases/telco_churn.yaml").read_text())
        spec["schedules"].update(feature_pipeline=None, training_pipeline=None, batch_scoring=None,
                                 drift_monitor=None)  # every run here is triggered by the test
        (cases / "telco_churn.yaml").write_text(yaml.safe_dump(spec))
        _seed_history(services, base / "seed-host", cases)
        worker_root = base / "worker-host"  # an empty working copy: everything comes from the lake
        stack = Standalone(base / "airflow", worker_root, cases,
                           extra_env={**services.airflow_env(), **services.step_env(worker_root)}).start(timeout=420)
        for pipeline in ("feature_pipeline", "training_pipeline", "batch_scoring", "drift_monitor"):
            stack.wait_for_dag(f"{USE_CASE}_{pipeline}")
        # the steps' MLflow password lives only here, in an Airflow connection (stored encrypted)
        stack.api("POST", "/connections", {"connection_id": "pavedml_mlflow", "conn_type": "http",
                                           "login": PIPELINE_USER, "password": services.pipeline_password})
        runs = {"features": _trigger(stack, f"{USE_CASE}_feature_pipeline")}
        runs["training"] = _trigger(stack, f"{USE_CASE}_training_pipeline",
                                    {"training_window_days": 30, "reason": "production profile suite"})
        runs["scoring"] = _trigger(stack, f"{USE_CASE}_batch_scoring")
        runs["drift"] = _trigger(stack, f"{USE_CASE}_drift_monitor")
        yield {"services": services, "stack": stack, "runs": runs, "worker_root": worker_root}
    finally:
        if stack is not None:
            stack.stop()
        services.stop()


def _query(db: str, sql: str) -> list[tuple]:
    import psycopg2

    from tests.helpers.prodstack import PG

    conn = psycopg2.connect(dbname=db, **PG)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def test_a_daily_feature_pipeline_run_through_the_scheduler_on_postgres(prod):
    run = prod["runs"]["features"]
    assert run["state"] == "success", run
    assert run["tasks"] == dict.fromkeys(
        ("wait_for_batch", "ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features"),
        "success")
    services = prod["services"]
    # Airflow's metadata is in PostgreSQL, executed by the LocalExecutor
    rows = _query(services.dbs["airflow"], f"SELECT state FROM dag_run WHERE dag_id = '{USE_CASE}_feature_pipeline'")
    assert rows == [("success",)]
    sha = run["xcom"]["ingest_raw_batch"]["sha256"]
    lake = services.s3_keys("pavedml", f"lake/{USE_CASE}/")
    assert f"lake/{USE_CASE}/raw/dt={DAY}/{sha}.parquet" in lake
    assert any(k.startswith(f"lake/{USE_CASE}/features/dt={DAY}/") for k in lake)
    assert any(k.startswith(f"lake/{USE_CASE}/validation/dt={DAY}/") and k.endswith(".html") for k in lake)
    assert not [k for k in lake if "/.tmp-" in k or "/feast/" in k]
    # Feast: registry rows in PostgreSQL, online rows in Redis (eight seeded days + this one)
    from pavedml.config import get_use_case

    views = _query(services.dbs["feast"], "SELECT feature_view_name, project_id FROM feature_views")
    assert (get_use_case(USE_CASE).feature_view, USE_CASE) in views, views
    assert services.redis_keys() >= 1500
    assert run["xcom"]["materialize_features"]["rows"] == 1500


def test_training_promotes_a_champion_on_the_mlflow_server(prod):
    run = prod["runs"]["training"]
    assert run["state"] == "success", run
    assert run["tasks"]["promote_challenger"] == "success"
    services = prod["services"]
    status, alias = services.mlflow_api("GET", f"/api/2.0/mlflow/registered-models/alias?name={USE_CASE}&alias=champion",
                                        auth=services.admin)
    assert status == 200, alias
    version = alias["model_version"]
    assert version["version"] == str(run["xcom"]["train_challenger"]["model_version"])
    # the model's files went through the server to S3 (the artifacts bucket)
    assert any(k.startswith("artifacts/") for k in services.s3_keys("mlflow"))
    # ...written by the pipeline user, who could only log in with the connection's password
    # (it owns the registered model it created: MANAGE, where everyone else has the default READ)
    status, perm = services.mlflow_api(
        "GET", f"/api/3.0/mlflow/users/permissions/get?username={PIPELINE_USER}"
               f"&resource_type=registered_model&resource_id={USE_CASE}", auth=services.admin)
    assert (status, perm.get("permission")) == (200, "MANAGE"), perm
    # the training set reached the lake (evaluation ran on another working copy than training could have)
    lake = services.s3_keys("pavedml", f"lake/{USE_CASE}/training/")
    assert any(k.endswith("holdout.parquet") for k in lake)


def test_batch_scoring_and_the_drift_check_run_against_the_lake(prod):
    scoring, drift = prod["runs"]["scoring"], prod["runs"]["drift"]
    assert scoring["state"] == "success", scoring
    assert drift["state"] == "success", drift
    lake = prod["services"].s3_keys("pavedml", f"lake/{USE_CASE}/")
    assert any(k.startswith(f"lake/{USE_CASE}/predictions/dt={DAY}/") for k in lake)
    assert any(k.startswith(f"lake/{USE_CASE}/drift/dt={DAY}/") for k in lake)
    check = drift["xcom"]["wait_for_drift"]
    assert check["status"] in ("no_drift", "drift", "insufficient_data"), check


def test_the_mlflow_server_rejects_unauthenticated_requests(prod):
    services = prod["services"]
    path = "/api/2.0/mlflow/experiments/search?max_results=5"
    assert services.mlflow_api("GET", path)[0] == 401
    assert services.mlflow_api("GET", path, auth=(PIPELINE_USER, "wrong-password"))[0] == 401
    assert services.mlflow_api("GET", path, auth=(PIPELINE_USER, services.pipeline_password))[0] == 200


def test_the_planted_secret_never_reaches_logs_xcom_or_mlflow_params(prod):
    services, stack = prod["services"], prod["stack"]
    secret = services.pipeline_password
    logs = [p for p in Path(stack.home, "logs").rglob("*") if p.is_file()]
    assert len(logs) >= 10, "task logs expected"
    leaked = [str(p) for p in logs if secret in p.read_text(errors="replace")]
    assert not leaked, leaked
    assert secret not in Path(stack.home, "standalone.log").read_text(errors="replace")
    # XCom and rendered task fields, straight from Airflow's database
    xcoms = _query(services.dbs["airflow"], "SELECT value::text FROM xcom")
    assert xcoms and not [v for (v,) in xcoms if secret in (v or "")]
    rendered = _query(services.dbs["airflow"], "SELECT rendered_fields::text FROM rendered_task_instance_fields")
    assert not [v for (v,) in rendered if secret in (v or "")]
    # every MLflow run's params and tags
    status, found = services.mlflow_api("POST", "/api/2.0/mlflow/runs/search",
                                        {"experiment_ids": [e["experiment_id"] for e in services.mlflow_api(
                                            "GET", "/api/2.0/mlflow/experiments/search?max_results=100",
                                            auth=services.admin)[1]["experiments"]], "max_results": 1000},
                                        auth=services.admin)
    assert status == 200 and found.get("runs"), found
    for mlflow_run in found["runs"]:
        data = mlflow_run.get("data", {})
        values = [p.get("value", "") for p in data.get("params", [])] + [t.get("value", "") for t in data.get("tags", [])]
        assert not [v for v in values if secret in v], mlflow_run["info"]["run_id"]
    # and the connection is stored encrypted, never as plain text
    stored = _query(services.dbs["airflow"], "SELECT password FROM connection WHERE conn_id = 'pavedml_mlflow'")
    assert stored and stored[0][0] and secret not in stored[0][0]


@pytest.fixture(scope="module", autouse=True)
def _keep_logs_on_failure(request, tmp_path_factory):
    yield
    if request.session.testsfailed:
        target = REPO / "test-artifacts" / "production"
        base = tmp_path_factory.getbasetemp()
        for log in base.rglob("*.log"):
            rel = log.relative_to(base)
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, target / rel)
        print(f"production suite logs copied to {target}")

