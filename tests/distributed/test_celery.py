"""The production profile without containers, distributed as users scale it out: Airflow with the
CeleryExecutor (API server, scheduler, DAG processor, triggerer as separate processes) on
PostgreSQL, a Redis broker and **two Celery workers**, each a "host" with its own Airflow home
and its own empty ``PAVEDML_DATA_ROOT`` working copy; the MLflow tracking server over HTTP (basic
auth, PostgreSQL stores, artifacts proxied to S3); the Feast registry on PostgreSQL and its online
store on Redis; landing, raw, feature and prediction data on S3 (moto's server) as the lake every
step syncs its working copy with.

History (six days) is seeded in-process straight into the lake and the stores; then three daily
feature pipeline runs (at once, with the same days of a second use case beside them), a training
run with promotion, batch scoring and a drift check run through the scheduler. Tasks must have run on both workers, and every result must equal a
single host's run of the same steps on the local profile (snapshot hashes, feature rows, online
rows, training set digests, model metrics, predictions, PSI). The MLflow password of the steps
exists only in an Airflow connection (planted through the REST API); the suite proves it is used
and that it never reaches a task log, an XCom or an MLflow param.

The cluster and the workload are the package's fixture (conftest.py); faults are test_faults.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.distributed.workload import (
    DAY,
    DAYS,
    FEATURE_TASKS,
    SECOND,
    SECOND_RUN_DAYS,
    USE_CASE,
    WORKERS,
    query,
)
from tests.helpers.prodstack import PIPELINE_USER

pytestmark = [pytest.mark.distributed, pytest.mark.production]


def test_daily_feature_pipeline_runs_through_the_celery_executor_on_postgres(prod):
    services = prod["services"]
    for ds, run in prod["runs"]["features"].items():
        assert run["state"] == "success", run
        assert run["tasks"] == dict.fromkeys(FEATURE_TASKS, "success"), (ds, run["tasks"])
        sha = run["xcom"]["ingest_raw_batch"]["sha256"]
        lake = services.s3_keys("pavedml", f"lake/{USE_CASE}/")
        assert f"lake/{USE_CASE}/raw/dt={ds}/{sha}.parquet" in lake
        assert any(k.startswith(f"lake/{USE_CASE}/features/dt={ds}/") for k in lake)
        assert any(k.startswith(f"lake/{USE_CASE}/validation/dt={ds}/") and k.endswith(".html") for k in lake)
        assert run["xcom"]["materialize_features"]["rows"] == 1500
    assert not [k for k in services.s3_keys("pavedml", f"lake/{USE_CASE}/") if "/.tmp-" in k or "/feast/" in k]
    # Airflow's metadata is in PostgreSQL; the tasks went through the broker to the Celery workers
    rows = query(services, "airflow", f"SELECT state FROM dag_run WHERE dag_id = '{USE_CASE}_feature_pipeline'"
                                          " AND run_id LIKE 'prod_%'")
    assert rows == [("success",)] * len(DAYS)
    assert query(services, "airflow", "SELECT count(*) FROM celery_taskmeta")[0][0] > 0
    # Feast: registry rows in PostgreSQL, online rows in Redis
    from pavedml.config import get_use_case

    views = query(services, "feast", "SELECT feature_view_name, project_id FROM feature_views")
    assert (get_use_case(USE_CASE).feature_view, USE_CASE) in views, views
    assert services.redis_keys() >= 1500


def test_tasks_ran_on_both_worker_hosts_each_with_its_own_working_copy(prod):
    hosts = [h for (_dag, _run, _task, h) in prod["stack"].task_hosts()]
    assert set(hosts) == set(WORKERS), sorted(set(hosts))
    for name in WORKERS:
        count = hosts.count(name)
        assert count >= 2, f"{name} ran {count} task(s)"
        root = prod["stack"].workers[name].data_root
        assert (root / USE_CASE).is_dir(), f"{name} never pulled a working copy into {root}"
    # and no step ran on the control plane (the scheduler's host)
    assert not (prod["base"] / "control" / "data" / USE_CASE).exists()


def test_every_result_equals_a_single_host_run(prod):
    """Two workers, each syncing its working copy with the lake, end with what one host computes
    alone on the local profile: same snapshots, feature rows, online rows, training set, model
    metrics, predictions and PSI."""
    import pandas as pd

    services, single, runs = prod["services"], prod["single"], prod["runs"]
    client = services.s3()

    def lake_frame(prefix: str, into: Path) -> pd.DataFrame:
        into.mkdir(parents=True, exist_ok=True)
        keys = [k for k in services.s3_keys("pavedml", prefix) if k.endswith(".parquet")]
        assert keys, prefix
        for key in keys:
            client.download_file("pavedml", key, str(into / Path(key).name))
        return pd.read_parquet(into)

    for ds, run in runs["features"].items():
        ingest, built = single["features"][ds]["ingest_raw_batch"], single["features"][ds]["build_features"]
        assert run["xcom"]["ingest_raw_batch"]["sha256"] == ingest.sha256, ds
        assert run["xcom"]["build_features"]["sha256"] == built.sha256, ds
        ours = lake_frame(f"lake/{USE_CASE}/features/dt={ds}/", prod["base"] / "check" / "features" / ds)
        theirs = pd.read_parquet(built.partition)
        key = list(ours.columns)
        pd.testing.assert_frame_equal(ours.sort_values(key[:1]).reset_index(drop=True),
                                      theirs[key].sort_values(key[:1]).reset_index(drop=True))
    assert prod["online"] == single["online"] and len(prod["online"]) >= 1000
    training = runs["training"]["xcom"]
    assert training["build_training_set"]["digests"] == single["training"]["build_training_set"].digests
    metrics = training["train_challenger"]["metrics"]
    assert metrics == pytest.approx(single["training"]["train_challenger"].metrics, rel=1e-9), metrics
    assert training["promote_challenger"]["action"] == single["training"]["promote_challenger"].action == "promoted"
    scored = runs["scoring"]["xcom"]["score_customers"]
    assert scored["rows"] == single["scoring"].rows
    assert scored["feature_snapshot_sha256"] == single["scoring"].feature_snapshot_sha256
    preds = lake_frame(f"lake/{USE_CASE}/predictions/dt={DAY}/", prod["base"] / "check" / "predictions")
    alone = pd.read_parquet(single["scoring"].partition)
    key = "customerID"
    cols = [c for c in alone.columns if c.endswith("score")]
    assert cols
    pd.testing.assert_frame_equal(preds.sort_values(key)[[key, *cols]].reset_index(drop=True),
                                  alone.sort_values(key)[[key, *cols]].reset_index(drop=True))
    drift = runs["drift"]["xcom"]["wait_for_drift"]
    assert drift["status"] == single["drift"].status
    assert drift["psi"] == pytest.approx(single["drift"].psi, rel=1e-9)
    assert drift["data_hash"] == single["drift"].data_hash


def test_a_second_use_case_beside_the_first_ends_as_on_one_host(prod):
    """acme_churn's feature days, triggered at once beside telco_churn's on the same two workers:
    every run succeeds on the worker hosts, with the snapshots, feature partitions and online rows (its
    own Feast project in the same Redis) that one host computes alone."""
    services, single = prod["services"], prod["single"]
    hosts = set()
    for ds, run in prod["runs"]["second"].items():
        assert run["state"] == "success", run
        assert run["tasks"] == dict.fromkeys(FEATURE_TASKS, "success"), (ds, run["tasks"])
        alone = single["second"][ds]
        assert run["xcom"]["ingest_raw_batch"]["sha256"] == alone["ingest_raw_batch"].sha256, ds
        assert run["xcom"]["build_features"]["sha256"] == alone["build_features"].sha256, ds
        assert run["xcom"]["materialize_features"]["rows"] == 1500
        hosts |= set(run["hosts"].values())
    assert hosts <= set(WORKERS), hosts  # on the worker hosts, never the control plane
    lake = services.s3_keys("pavedml", f"lake/{SECOND}/")
    assert all(any(k.startswith(f"lake/{SECOND}/features/dt={ds}/") for k in lake) for ds in SECOND_RUN_DAYS)
    assert set(prod["runs"]["second"]) == set(SECOND_RUN_DAYS)
    assert prod["second_online"] == single["second_online"] and len(prod["second_online"]) >= 1000
    # its own rows: telco_churn's online rows are still its own (the Feast projects never mix)
    assert prod["online"] == single["online"]
    views = query(services, "feast", "SELECT project_id FROM feature_views")
    assert {(USE_CASE,), (SECOND,)} <= set(views), views


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
    task_logs = [p for w in stack.workers.values() for p in Path(w.home, "logs").rglob("*") if p.is_file()]
    assert len(task_logs) >= 10, "task logs expected on the workers"
    component_logs = list(prod["base"].rglob("*.log"))
    leaked = [str(p) for p in task_logs + component_logs if secret in p.read_text(errors="replace")]
    assert not leaked, leaked
    # XCom and rendered task fields, straight from Airflow's database
    xcoms = query(services, "airflow", "SELECT value::text FROM xcom")
    assert xcoms and not [v for (v,) in xcoms if secret in (v or "")]
    rendered = query(services, "airflow", "SELECT rendered_fields::text FROM rendered_task_instance_fields")
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
    stored = query(services, "airflow", "SELECT password FROM connection WHERE conn_id = 'pavedml_mlflow'")
    assert stored and stored[0][0] and secret not in stored[0][0]
