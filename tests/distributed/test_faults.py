"""Faults on the distributed cluster (the package's fixture, conftest.py), each injected into a run
driven by the real scheduler, each ending with nothing lost and the result of an undisturbed run
(the single host's, or the undisturbed distributed run's):

* a worker host SIGKILLed (with its task processes) in the middle of ``materialize_features`` and
  of ``train_challenger``: the task is retried on the other worker; no partial partition, one
  model version;
* PostgreSQL (the suite's own server: Airflow's metadata, MLflow's and Feast's stores) restarted
  while a run is in flight: the scheduler recovers, no run is left stuck;
* the Celery broker (Redis) killed and restarted with tasks queued in it, then again while a worker
  runs a task: the queued tasks run, the run succeeds;
* the S3 endpoint down in the middle of a lake push: a retryable failure naming the lake URI, and
  the retry succeeds; the push never leaves a partition's marker over missing data;
* the MLflow tracking server down for a minute, from the moment ``train_challenger`` has fitted
  its model and logs it: that try fails, the retry waits for the server at its start
  (``PAVEDML_TRACKING_WAIT_SECONDS``) and succeeds, with exactly one new model version.

Each prints its recovery time (fault -> the run's success; ``pytest -s`` shows them).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.distributed.workload import (
    BROKER_DAY,
    DAY,
    FAULT_DAY,
    FEATURE_TASKS,
    PG_DAY,
    S3_DAY,
    TRAINING,
    USE_CASE,
    WORKERS,
    entity_keys,
    finished,
    online_rows,
    use_env,
    versions,
)

pytestmark = [pytest.mark.distributed, pytest.mark.production]
FEATURES = f"{USE_CASE}_feature_pipeline"
TRAINING_DAG = f"{USE_CASE}_training_pipeline"


def _start(stack, dag_id: str, run_id: str, ds: str, conf: dict | None = None, again: str | None = None) -> None:
    # a further run of a day (training) has no logical date (they are unique per DAG): its day is run_after's
    when = {"logical_date": f"{ds}T00:00:00Z"} if again is None else {"logical_date": None, "run_after": f"{ds}T{again}Z"}
    stack.api("POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, **when, "conf": conf or {}})


def _tries(stack, dag_id: str, run_id: str, task_id: str) -> list[tuple[int, str, str]]:
    tries = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")["task_instances"]
    return [(t["try_number"], t["state"], t["hostname"]) for t in tries]


def _attempt_log(stack, worker: str, dag_id: str, run_id: str, task_id: str, attempt: int) -> Path:
    """A try's task log, on the disk of the worker that ran it (Airflow's default log layout)."""
    return (stack.workers[worker].home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
            / f"attempt={attempt}.log")


def _report(name: str, run: dict, **figures) -> None:
    shown = ", ".join(f"{k} {v}" for k, v in figures.items())
    print(f"\nFAULT {name}: run {run['state']}; {shown}")


# -- a worker host dies in the middle of a step ---------------------------------------------------

def _kill_mid_step(prod, dag_id: str, run_id: str, ds: str, task_id: str, conf: dict, settle: float,
                   again: str | None = None) -> dict:
    """Trigger a run, SIGKILL the worker (and its task processes) ``settle`` seconds after the
    step's process started there, let the run finish, start the worker again. Returns the run
    with ``killed`` (its worker), ``recovery_s`` (kill -> run finished) and the task's tries."""
    stack = prod["stack"]
    _start(stack, dag_id, run_id, ds, conf, again)
    ti = stack.wait_running(dag_id, run_id, task_id, step=task_id)
    time.sleep(settle)
    assert stack.step_pids(ti["hostname"], task_id), f"{task_id} ended before the kill: make `settle` shorter"
    stack.kill_worker(ti["hostname"])
    killed_at = time.monotonic()
    try:
        run = finished(stack, dag_id, run_id)
    finally:
        stack.start_worker(ti["hostname"])
    run["recovery_s"] = round(time.monotonic() - killed_at, 1)
    run["killed"] = ti["hostname"]
    run["tries"] = _tries(stack, dag_id, run_id, task_id)
    _report(f"worker killed mid-{task_id}", run, worker=run["killed"], recovery_s=run["recovery_s"], tries=run["tries"])
    return run


@pytest.fixture(scope="module")
def worker_deaths(prod):
    """Two deaths, each of the worker running the step: mid-``materialize_features`` of a new day,
    mid-``train_challenger`` of a second training run on the same data."""
    services = prod["services"]
    out = {"versions_before": versions(services)}
    out["features"] = _kill_mid_step(prod, FEATURES, f"fault_{FAULT_DAY}", FAULT_DAY,
                                     "materialize_features", {}, settle=1.0)
    out["training"] = _kill_mid_step(prod, TRAINING_DAG, f"fault_train_{DAY}", DAY,
                                     "train_challenger", TRAINING, settle=4.0, again="12:00:00")
    out["versions_after"] = versions(services)
    return out


def _retried_elsewhere(run: dict, task_id: str) -> None:
    assert run["state"] == "success", run
    assert run["tasks"][task_id] == "success", run["tasks"]
    first, *later = run["tries"]
    assert first[2] == run["killed"] and first[1] != "success", run["tries"]
    assert later and later[-1][1] == "success", run["tries"]
    survivor = next(w for w in WORKERS if w != run["killed"])
    assert later[-1][2] == survivor, run["tries"]


def _online(prod, ds: str) -> dict:
    """The online rows of ``ds``'s entities, read from the cluster's online store (Redis)."""
    services = prod["services"]
    mp = use_env({**services.step_env(prod["base"] / "check" / "data"), "PAVEDML_USE_CASES_DIR": str(prod["base"] / "use_cases")})
    try:
        return online_rows(entity_keys(prod["single"]["features"][ds]["build_features"].partition))
    finally:
        mp.undo()


def _same_as_one_host(prod, run: dict, ds: str) -> None:
    """The day's snapshot, feature rows and online rows equal the undisturbed single host's."""
    assert run["state"] == "success", run
    assert run["tasks"] == dict.fromkeys(FEATURE_TASKS, "success"), run["tasks"]
    alone = prod["single"]["features"][ds]
    assert run["xcom"]["ingest_raw_batch"]["sha256"] == alone["ingest_raw_batch"].sha256
    assert run["xcom"]["build_features"]["sha256"] == alone["build_features"].sha256
    assert run["xcom"]["materialize_features"]["rows"] == alone["materialize_features"].rows
    online = _online(prod, ds)
    assert online == prod["single"]["fault_online"][ds] and len(online) >= 1000
    lake = prod["services"].s3_keys("pavedml", f"lake/{USE_CASE}/")
    assert not [k for k in lake if "/.tmp-" in k or "/.old-" in k], "a temporary file reached the lake"
    assert sorted(k.rsplit("/", 1)[1] for k in lake if k.startswith(f"lake/{USE_CASE}/features/dt={ds}/")) == [
        "_SOURCE.json", "part-0.parquet"]


def test_a_worker_killed_mid_materialize_is_retried_on_the_other_and_loses_nothing(prod, worker_deaths):
    run = worker_deaths["features"]
    _retried_elsewhere(run, "materialize_features")
    # the same online rows as one undisturbed host, and no partial partition anywhere in the lake
    _same_as_one_host(prod, run, FAULT_DAY)


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


# -- the services a run depends on fail under it --------------------------------------------------

@pytest.fixture(scope="module")
def postgres_restart(prod):
    """PostgreSQL stopped (fast: every session cut) for 5 s while ``build_features`` runs."""
    stack, run_id = prod["stack"], f"pg_{PG_DAY}"
    _start(stack, FEATURES, run_id, PG_DAY)
    stack.wait_running(FEATURES, run_id, "build_features", step="build_features")
    at = time.monotonic()
    unreachable = prod["services"].postgres.restart(down_s=5)
    run = finished(stack, FEATURES, run_id)
    run["recovery_s"] = round(time.monotonic() - at, 1)
    run["restarts"] = [(what, round(t - at, 1), rc) for what, t, rc in stack.restarts if t >= at]
    run["health"] = stack.healthy()
    _report("PostgreSQL restarted mid-run", run, unreachable_s=round(unreachable, 1), recovery_s=run["recovery_s"],
            component_restarts=run["restarts"])
    return run


def test_a_postgres_restart_mid_run_leaves_no_run_stuck(prod, postgres_restart):
    run = postgres_restart
    _same_as_one_host(prod, run, PG_DAY)
    # every component is healthy again (the scheduler too, restarted by its supervisor if it died)
    assert {c: run["health"].get(c) for c in ("metadatabase", "scheduler", "dag_processor", "triggerer")} == dict.fromkeys(
        ("metadatabase", "scheduler", "dag_processor", "triggerer"), "healthy"), run["health"]
    stuck = prod["stack"].api("GET", "/dags/~/dagRuns?state=running&state=queued")["dag_runs"]
    assert not stuck, [(r["dag_id"], r["dag_run_id"], r["state"]) for r in stuck]


@pytest.fixture(scope="module")
def broker_restart(prod):
    """Both workers down; a run's first task queued in the broker; the broker SIGKILLed and started
    again (its append-only file is what survives); the workers back; then, while a worker runs
    ``build_features``, the broker killed and started again once more."""
    import redis

    stack, run_id = prod["stack"], f"broker_{BROKER_DAY}"
    for name in WORKERS:
        stack.kill_worker(name)
    _start(stack, FEATURES, run_id, BROKER_DAY)
    deadline = time.monotonic() + 300
    broker = redis.Redis.from_url(stack.redis.url)
    while not broker.llen("default"):  # the CeleryExecutor's queue: the message is in Redis
        assert time.monotonic() < deadline, "no task reached the broker's queue"
        time.sleep(0.5)
    state = stack.api("GET", f"/dags/{FEATURES}/dagRuns/{run_id}/taskInstances/wait_for_batch")["state"]
    time.sleep(2)  # appendfsync everysec: a message older than a second is on disk
    at = time.monotonic()
    stack.restart_broker(down_s=5)
    queued_after = broker.llen("default")
    for name in WORKERS:
        stack.start_worker(name)
    stack.wait_running(FEATURES, run_id, "build_features", step="build_features")
    stack.restart_broker(down_s=5)
    run = finished(stack, FEATURES, run_id)
    run["recovery_s"] = round(time.monotonic() - at, 1)
    run["queued_state"], run["queued_after_restart"] = state, queued_after
    run["restarts"] = [(what, round(t - at, 1), rc) for what, t, rc in stack.restarts if t >= at]
    _report("broker restarted with a task queued, then mid-task", run, recovery_s=run["recovery_s"],
            queued_after_restart=queued_after, component_restarts=run["restarts"])
    return run


def test_a_broker_restart_with_tasks_queued_loses_no_task(prod, broker_restart):
    run = broker_restart
    assert run["queued_state"] == "queued", run["queued_state"]
    assert run["queued_after_restart"] >= 1, "the queued task did not survive the broker's restart"
    _same_as_one_host(prod, run, BROKER_DAY)


@pytest.fixture(scope="module")
def s3_down_mid_push(prod):
    """The S3 endpoint goes down (connections reset, then refused) at the second object of
    ``build_features``' push and stays down 15 s."""
    services, stack, run_id = prod["services"], prod["stack"], f"s3_{S3_DAY}"
    proxy = services.proxy
    _start(stack, FEATURES, run_id, S3_DAY)
    ti = stack.wait_running(FEATURES, run_id, "build_features", step="build_features")
    proxy.down_at(b"PUT ", 2)
    assert proxy.tripped.wait(300), "build_features pushed fewer than two objects"
    partial = services.s3_keys("pavedml", f"lake/{USE_CASE}/features/dt={S3_DAY}/")  # straight from the server
    time.sleep(15)
    proxy.up()
    run = finished(stack, FEATURES, run_id)
    run["recovery_s"] = round(time.monotonic() - proxy.tripped_at, 1)
    run["partial"] = [k.rsplit("/", 1)[1] for k in partial]
    run["tries"] = _tries(stack, FEATURES, run_id, "build_features")
    first = _attempt_log(stack, ti["hostname"], FEATURES, run_id, "build_features", 1)
    run["first_log"] = first.read_text(errors="replace") if first.exists() else ""
    _report("S3 down mid-push", run, recovery_s=run["recovery_s"], tries=run["tries"], lake_at_the_cut=run["partial"])
    return run


def test_s3_down_mid_push_fails_retryably_naming_the_lake_then_succeeds(prod, s3_down_mid_push):
    run = s3_down_mid_push
    first, *later = run["tries"]
    assert first[1] != "success" and later and later[-1][1] == "success", run["tries"]
    assert "lake push failed between s3://pavedml/lake/telco_churn" in run["first_log"], run["first_log"][-3000:]
    assert "lake_unavailable" in run["first_log"], run["first_log"][-3000:]
    # cut after its first object: the data went up, its marker did not (a marker never names missing data)
    assert run["partial"] == ["part-0.parquet"], run["partial"]
    _same_as_one_host(prod, run, S3_DAY)


@pytest.fixture(scope="module")
def mlflow_outage(prod):
    """The tracking server SIGKILLed as ``train_challenger`` (a third training run on the same data)
    has fitted its model and starts logging it, and started again a minute later."""
    services, stack, run_id = prod["services"], prod["stack"], f"mlflow_down_{DAY}"
    before = versions(services)
    _start(stack, TRAINING_DAG, run_id, DAY, TRAINING, again="13:00:00")
    ti = stack.wait_running(TRAINING_DAG, run_id, "train_challenger", step="train_challenger")
    log = _attempt_log(stack, ti["hostname"], TRAINING_DAG, run_id, "train_challenger", 1)
    deadline = time.monotonic() + 300
    while not (log.exists() and "INFO pavedml.steps.training: fitted " in log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"train_challenger never said it fitted; see {log}"
        time.sleep(0.1)
    services.mlflow_down()
    at = time.monotonic()
    time.sleep(60)
    services.mlflow_up()
    back = time.monotonic()
    run = finished(stack, TRAINING_DAG, run_id)
    run["recovery_s"] = round(time.monotonic() - at, 1)
    run["after_back_s"] = round(time.monotonic() - back, 1)
    run["tries"] = _tries(stack, TRAINING_DAG, run_id, "train_challenger")
    run["versions_before"], run["versions_after"] = before, versions(services)
    _report("MLflow down a minute mid-training", run, recovery_s=run["recovery_s"],
            after_server_back_s=run["after_back_s"], tries=run["tries"])
    return run


def test_mlflow_down_a_minute_mid_training_retries_to_one_version(prod, mlflow_outage):
    run = mlflow_outage
    assert run["state"] == "success", run
    assert run["tasks"]["train_challenger"] == "success", run["tasks"]
    # the try cut while logging failed; the next one waited for the server rather than failing too
    assert [t[1] for t in run["tries"]] == ["failed", "success"], run["tries"]
    before = {v["version"] for v in run["versions_before"]}
    new = [v for v in run["versions_after"] if v["version"] not in before]
    assert len(new) == 1, [(v["version"], v.get("run_id")) for v in new]
    assert new[0]["version"] == str(run["xcom"]["train_challenger"]["model_version"])
    assert run["xcom"]["train_challenger"]["metrics"] == pytest.approx(
        prod["runs"]["training"]["xcom"]["train_challenger"]["metrics"], rel=1e-9)


def test_no_secret_reached_the_logs_of_the_faults(prod, postgres_restart, broker_restart, s3_down_mid_push,
                                                  mlflow_outage):
    """Failures print more (tracebacks, retried requests): still never the planted password."""
    secret = prod["services"].pipeline_password
    logs = [p for p in Path(prod["base"]).rglob("*.log") if p.is_file()]
    assert not [str(p) for p in logs if secret in p.read_text(errors="replace")]
