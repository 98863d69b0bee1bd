"""The production profile without containers, distributed as users scale it out: Airflow with the
CeleryExecutor (API server, scheduler, DAG processor, triggerer as separate processes) on
PostgreSQL, a Redis broker and **two Celery workers**, each a "host" with its own Airflow home
and its own empty ``PAVEDML_DATA_ROOT`` working copy; the MLflow tracking server over HTTP (basic
auth, PostgreSQL stores, artifacts proxied to S3); the Feast registry on PostgreSQL and its online
store on Redis; landing, raw, feature and prediction data on S3 (moto's server) as the lake every
step syncs its working copy with.

History (six days) is seeded in-process straight into the lake and the stores; then three daily
feature pipeline runs (at once), a training run with promotion, batch scoring and a drift check
run through the scheduler. Tasks must have run on both workers, and every result must equal a
single host's run of the same steps on the local profile (snapshot hashes, feature rows, online
rows, training set digests, model metrics, predictions, PSI). The MLflow password of the steps
exists only in an Airflow connection (planted through the REST API); the suite proves it is used
and that it never reaches a task log, an XCom or an MLflow param.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.conftest import HISTORY_DAYS, HISTORY_START, REPO
from tests.helpers.cluster import CeleryCluster
from tests.helpers.prodstack import PIPELINE_USER, ProductionServices

pytestmark = [pytest.mark.distributed, pytest.mark.production]
SEEDED = HISTORY_DAYS - 2  # days seeded in-process; the next three run through the scheduler
DAYS = [(HISTORY_START + timedelta(days=SEEDED + i)).isoformat() for i in range(3)]
DAY = DAYS[-1]  # the day trained through, scored and checked for drift
FAULT_DAY = (HISTORY_START + timedelta(days=SEEDED + len(DAYS))).isoformat()  # a worker dies materializing it
LANDED = SEEDED + len(DAYS) + 1
USE_CASE = "telco_churn"
WORKERS = ("worker-a", "worker-b")
TRAINING = {"training_window_days": 30, "reason": "distributed suite"}


def _env(values: dict[str, str]):
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


def _seed_history(services: ProductionServices, root: Path, cases: Path) -> None:
    """Landing batches on S3; the first feature days in-process (a 'seed host'), pushed to the lake."""
    from pavedml.lake import synced
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate
    from tests.helpers.steps import feature_days

    mp = _env({**services.step_env(root), "PAVEDML_USE_CASES_DIR": str(cases)})
    try:
        simulate(USE_CASE, HISTORY_START, LANDED, rows_per_day=1500)
        with synced(USE_CASE):
            feature_days(HISTORY_START, SEEDED)
    finally:
        mp.undo()
        get_settings.cache_clear()


def _single_host(root: Path, cases: Path) -> dict:
    """The same days and steps on one host, the local profile (SQLite stores, local MLflow), in-process."""
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate
    from tests.helpers.steps import FEATURE_STEPS, run_step

    mp = _env({"PAVEDML_DATA_ROOT": str(root), "PAVEDML_USE_CASES_DIR": str(cases)})
    try:
        simulate(USE_CASE, HISTORY_START, LANDED, rows_per_day=1500)
        out: dict = {"features": {}}
        for i in range(SEEDED + len(DAYS)):
            ds = (HISTORY_START + timedelta(days=i)).isoformat()
            out["features"][ds] = {step: run_step(step, ds, USE_CASE) for step in FEATURE_STEPS}
        kw = {"dag_id": f"{USE_CASE}_training_pipeline", "run_id": f"single_{DAY}", "params": json.dumps(TRAINING)}
        out["training"] = {s: run_step(s, DAY, USE_CASE, **kw) for s in
                           ("build_training_set", "train_challenger", "evaluate_challenger", "promote_challenger")}
        out["scoring"] = run_step("score_customers", DAY, USE_CASE)
        out["drift"] = run_step("check_drift", DAY, USE_CASE)
        out["online"] = _online_rows(_keys(out["scoring"].partition))
        out["features"][FAULT_DAY] = {step: run_step(step, FAULT_DAY, USE_CASE) for step in FEATURE_STEPS}
        out["fault_online"] = _online_rows(_keys(out["features"][FAULT_DAY]["build_features"].partition))
        return out
    finally:
        mp.undo()
        get_settings.cache_clear()


def _keys(partition: str) -> list[str]:
    import pandas as pd

    from pavedml.config import get_use_case

    return sorted(pd.read_parquet(partition)[get_use_case(USE_CASE).entity.key].astype(str).unique())


def _online_rows(keys: list[str]) -> dict:
    """key -> (numeric values, categorical values) of ``keys``, read from the online store of the
    current settings (SQLite or Redis) in one round trip."""
    from pavedml.config import get_use_case
    from pavedml.serving.online import OnlineFeatures

    uc = get_use_case(USE_CASE)
    store = OnlineFeatures(uc)
    try:
        rows = store.read(keys)
    finally:
        store.close()
    return {k: (tuple(rows.numeric[i].round(9)), tuple(rows.categorical[i])) for i, k in enumerate(keys) if rows.found[i]}


def _trigger(stack: CeleryCluster, dag_id: str, ds: str, conf: dict | None = None, wait: bool = True) -> dict:
    run_id = f"prod_{ds}"
    stack.api("POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": f"{ds}T00:00:00Z",
                                                   "conf": conf or {}})
    return _finished(stack, dag_id, run_id) if wait else {"dag_run_id": run_id}


def _finished(stack: CeleryCluster, dag_id: str, run_id: str) -> dict:
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


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    base = tmp_path_factory.mktemp("distributed")
    cases = base / "use_cases"
    cases.mkdir()
    spec = yaml.safe_load((REPO / "include/use_cases/telco_churn.yaml").read_text())
    spec["schedules"].update(feature_pipeline=None, training_pipeline=None, batch_scoring=None,
                             drift_monitor=None, performance_monitor=None)  # every run here is triggered by the test
    (cases / "telco_churn.yaml").write_text(yaml.safe_dump(spec))
    single = _single_host(base / "single-host", cases)
    services = ProductionServices(base / "services").start()
    stack = None
    try:
        _seed_history(services, base / "seed-host", cases)
        step_env = services.step_env(base / "control" / "data")
        stack = CeleryCluster(base / "control", base / "control" / "data", cases, services.dbs["airflow"],
                              # each worker host: an empty working copy, everything comes from the lake
                              {name: services.step_env(base / name / "data") for name in WORKERS},
                              extra_env=step_env).start()
        for pipeline in ("feature_pipeline", "training_pipeline", "batch_scoring", "drift_monitor"):
            stack.wait_for_dag(f"{USE_CASE}_{pipeline}")
        # the steps' MLflow password lives only here, in an Airflow connection (stored encrypted)
        stack.api("POST", "/connections", {"connection_id": "pavedml_mlflow", "conn_type": "http",
                                           "login": PIPELINE_USER, "password": services.pipeline_password})
        dag = f"{USE_CASE}_feature_pipeline"
        started = [_trigger(stack, dag, ds, wait=False)["dag_run_id"] for ds in DAYS]  # at once: both workers busy
        runs = {"features": {ds: _finished(stack, dag, run_id) for ds, run_id in zip(DAYS, started, strict=True)}}
        runs["training"] = _trigger(stack, f"{USE_CASE}_training_pipeline", DAY, TRAINING)
        runs["scoring"] = _trigger(stack, f"{USE_CASE}_batch_scoring", DAY)
        runs["drift"] = _trigger(stack, f"{USE_CASE}_drift_monitor", DAY)
        mp = _env({**step_env, "PAVEDML_USE_CASES_DIR": str(cases)})
        try:
            online = _online_rows(_keys(_pulled_predictions(services, base / "check")))
        finally:
            mp.undo()
        yield {"services": services, "stack": stack, "runs": runs, "single": single, "online": online,
               "base": base}
    finally:
        if stack is not None:
            stack.stop()
        services.stop()


def _pulled_predictions(services: ProductionServices, into: Path) -> str:
    """The scored day's prediction partition, downloaded from the lake."""
    into.mkdir(parents=True, exist_ok=True)
    client = services.s3()
    keys = [k for k in services.s3_keys("pavedml", f"lake/{USE_CASE}/predictions/dt={DAY}/") if k.endswith(".parquet")]
    assert keys, "no predictions in the lake"
    for key in keys:
        client.download_file("pavedml", key, str(into / Path(key).name))
    return str(into)


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


FEATURE_TASKS = ("wait_for_batch", "ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features")


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
    rows = _query(services.dbs["airflow"], f"SELECT state FROM dag_run WHERE dag_id = '{USE_CASE}_feature_pipeline'")
    assert rows == [("success",)] * len(DAYS)
    assert _query(services.dbs["airflow"], "SELECT count(*) FROM celery_taskmeta")[0][0] > 0
    # Feast: registry rows in PostgreSQL, online rows in Redis
    from pavedml.config import get_use_case

    views = _query(services.dbs["feast"], "SELECT feature_view_name, project_id FROM feature_views")
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


# -- faults: a worker host dies in the middle of a step ------------------------------------------

def _kill_mid_step(prod, dag_id: str, run_id: str, ds: str, task_id: str, conf: dict, settle: float,
                   again: bool = False) -> dict:
    """Trigger a run, SIGKILL the worker (and its task processes) ``settle`` seconds after the
    step's process started there, let the run finish, start the worker again. Returns the run
    with ``killed`` (its worker), ``recovery_s`` (kill -> run finished) and the task's tries."""
    import time

    stack = prod["stack"]
    # a second run of a day (training) has no logical date (they are unique per DAG): its day is run_after's
    when = {"logical_date": f"{ds}T00:00:00Z"} if again is False else {"logical_date": None, "run_after": f"{ds}T12:00:00Z"}
    stack.api("POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, **when, "conf": conf})
    ti = stack.wait_running(dag_id, run_id, task_id, step=task_id)
    time.sleep(settle)
    assert stack.step_pids(ti["hostname"], task_id), f"{task_id} ended before the kill: make `settle` shorter"
    stack.kill_worker(ti["hostname"])
    killed_at = time.monotonic()
    try:
        run = _finished(stack, dag_id, run_id)
    finally:
        stack.start_worker(ti["hostname"])
    run["recovery_s"] = round(time.monotonic() - killed_at, 1)
    run["killed"] = ti["hostname"]
    tries = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")["task_instances"]
    run["tries"] = [(t["try_number"], t["state"], t["hostname"]) for t in tries]
    print(f"{task_id}: worker {run['killed']} killed; run {run['state']} {run['recovery_s']} s later; tries {run['tries']}")
    return run


@pytest.fixture(scope="module")
def worker_deaths(prod):
    """Two deaths, each of the worker running the step: mid-``materialize_features`` of a new day,
    mid-``train_challenger`` of a second training run on the same data."""
    services = prod["services"]
    out = {"versions_before": _versions(services)}
    out["features"] = _kill_mid_step(prod, f"{USE_CASE}_feature_pipeline", f"fault_{FAULT_DAY}", FAULT_DAY,
                                     "materialize_features", {}, settle=1.0)
    out["training"] = _kill_mid_step(prod, f"{USE_CASE}_training_pipeline", f"fault_train_{DAY}", DAY,
                                     "train_challenger", TRAINING, settle=4.0, again=True)
    out["versions_after"] = _versions(services)
    mp = _env({**services.step_env(prod["base"] / "check" / "data"), "PAVEDML_USE_CASES_DIR": str(prod["base"] / "use_cases")})
    try:
        out["online"] = _online_rows(_keys(prod["single"]["features"][FAULT_DAY]["build_features"].partition))
    finally:
        mp.undo()
    return out


def _versions(services: ProductionServices) -> list[dict]:
    status, found = services.mlflow_api("GET", f"/api/2.0/mlflow/model-versions/search?filter=name%3D%27{USE_CASE}%27"
                                               "&max_results=1000", auth=services.admin)
    assert status == 200, found
    return found.get("model_versions", [])


def _retried_elsewhere(run: dict, task_id: str) -> None:
    assert run["state"] == "success", run
    assert run["tasks"][task_id] == "success", run["tasks"]
    first, *later = run["tries"]
    assert first[2] == run["killed"] and first[1] != "success", run["tries"]
    assert later and later[-1][1] == "success", run["tries"]
    survivor = next(w for w in WORKERS if w != run["killed"])
    assert later[-1][2] == survivor, run["tries"]


def test_a_worker_killed_mid_materialize_is_retried_on_the_other_and_loses_nothing(prod, worker_deaths):
    run = worker_deaths["features"]
    _retried_elsewhere(run, "materialize_features")
    # the same online rows as one undisturbed host, and no partial partition anywhere in the lake
    assert worker_deaths["online"] == prod["single"]["fault_online"] and len(worker_deaths["online"]) >= 1000
    lake = prod["services"].s3_keys("pavedml", f"lake/{USE_CASE}/")
    assert not [k for k in lake if "/.tmp-" in k or "/.old-" in k], "a temporary file reached the lake"
    alone = prod["single"]["features"][FAULT_DAY]
    assert run["xcom"]["build_features"]["sha256"] == alone["build_features"].sha256
    assert run["xcom"]["materialize_features"]["rows"] == alone["materialize_features"].rows


def test_a_worker_killed_mid_training_is_retried_on_the_other_with_one_model_version(prod, worker_deaths):
    run = worker_deaths["training"]
    _retried_elsewhere(run, "train_challenger")
    before = {v["version"] for v in worker_deaths["versions_before"]}
    new = [v for v in worker_deaths["versions_after"] if v["version"] not in before]
    assert len(new) == 1, [(v["version"], v.get("run_id")) for v in new]
    assert new[0]["version"] == str(run["xcom"]["train_challenger"]["model_version"])
    # the same model as the undisturbed run on the same data
    assert run["xcom"]["train_challenger"]["metrics"] == pytest.approx(
        prod["runs"]["training"]["xcom"]["train_challenger"]["metrics"], rel=1e-9)


@pytest.fixture(scope="module", autouse=True)
def _keep_logs_on_failure(request, tmp_path_factory):
    yield
    if request.session.testsfailed:
        target = REPO / "test-artifacts" / "distributed"
        base = tmp_path_factory.getbasetemp()
        for log in base.rglob("*.log"):
            rel = log.relative_to(base)
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, target / rel)
        print(f"distributed suite logs copied to {target}")

