"""The docker runtime end to end on a local Docker engine: every step of the feature pipeline, the
training pipeline (with promotion), batch scoring and the drift monitor runs in a container of the
task image through the docker runtime's runner (pavedml.airflow.docker_step.DockerRunner; host
networking: loopback only), the sensors' pokes included, against the same MLflow,
Feast and data stores as the local runtime, and gives the same results on the same input.
Plus container hygiene: removal after success and failure, the failure summary in the error, no
Airflow secret in a container, non-root and unprivileged, no name clash, and a task (a sensor
poke) marked failed in the UI stopping its container."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import HISTORY_DAYS, HISTORY_START, REPO
from tests.docker.conftest import step_containers
from tests.helpers.dagrun import dagbag, run_dag

pytestmark = pytest.mark.docker
DAY = (HISTORY_START + timedelta(days=HISTORY_DAYS)).isoformat()
BAD_DAY = (HISTORY_START + timedelta(days=HISTORY_DAYS + 1)).isoformat()
TRAIN_CONF = {"training_window_days": 30, "reason": "docker runtime suite"}
#: a value the step environment carries as a secret (private environment); it must never surface
PLANTED = "planted-aws-secret-d0ck3r"


def shared_root(feature_history: Path) -> Path:
    """A copy of the history that the container user (uid 50000, gid 0) can write: outside
    pytest's 0700 folders, group-writable for gid 0."""
    root = Path(tempfile.mkdtemp(prefix="pavedml-docker-")) / "data"
    shutil.copytree(feature_history, root)
    for path in [root.parent, root, *root.rglob("*")]:
        os.chmod(path, (os.stat(path).st_mode | 0o070) & 0o7777)
    return root


def runtime_env(mp: pytest.MonkeyPatch, root: Path, runtime: str, image: str) -> None:
    mp.setenv("PAVEDML_DATA_ROOT", str(root))
    mp.setenv("PAVEDML_RUNTIME", runtime)
    mp.setenv("PAVEDML_IMAGE", image)
    mp.setenv("PAVEDML_DOCKER_NETWORK", "host")
    mp.setenv("PAVEDML_DOCKER_URL", "unix://var/run/docker.sock")
    mp.setenv("PAVEDML_DOCKER_DATA_VOLUME", str(root))
    mp.setenv("AWS_SECRET_ACCESS_KEY", PLANTED)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    dagbag.cache_clear()  # the DAGs build their operators for the runtime when parsed


def run_chain(root: Path) -> dict:
    from pavedml.tools.simulate import simulate

    simulate("telco_churn", date.fromisoformat(DAY), 1, rows_per_day=1500)
    bag = dagbag(str(REPO / "dags"))
    classes = {(t.task_id, type(t).__name__) for d in bag.dags.values() if d.dag_id.startswith("telco_churn")
               for t in d.tasks if t.task_id != "approve_promotion"}
    out = {"task_classes": classes, "runtimes": {t.runtime for d in bag.dags.values() for t in d.tasks
                                                 if hasattr(t, "runtime")}}
    started = time.perf_counter()
    out["features"] = run_dag("telco_churn_feature_pipeline", DAY)
    out["features_seconds"] = time.perf_counter() - started
    # stop at the first failed pipeline: the drift sensor would otherwise wait for a scored window
    # in reschedule mode (dag.test() waits its poke interval in real time)
    for name, dag_id, conf in (("training", "telco_churn_training_pipeline", TRAIN_CONF),
                               ("scoring", "telco_churn_batch_scoring", None),
                               ("drift", "telco_churn_drift_monitor", None)):
        if any(out[k][0] != "success" for k in ("features", "training", "scoring") if k in out):
            out[name] = ("not run", {}, {})
            continue
        out[name] = run_dag(dag_id, DAY, conf)
    return out


@pytest.fixture(scope="module")
def chains(task_image, feature_history, airflow_db):
    roots = {rt: shared_root(feature_history) for rt in ("local", "docker")}
    out = {"roots": roots, "image": task_image}
    for runtime, root in roots.items():
        mp = pytest.MonkeyPatch()
        runtime_env(mp, root, runtime, task_image)
        try:
            out[runtime] = run_chain(root)
        finally:
            mp.undo()
            dagbag.cache_clear()
    yield out
    for root in roots.values():
        shutil.rmtree(root.parent, ignore_errors=True)


def test_every_pipeline_succeeds_with_each_step_in_a_container(chains):
    docker = chains["docker"]
    for name in ("features", "training", "scoring", "drift"):
        state, tasks, _ = docker[name]
        assert state == "success", (name, tasks)
    assert docker["training"][1]["promote_challenger"] == "success"
    # every step really ran in a container: the containers' output is the step's (a dict result
    # parsed from the container's last line), and the task classes were the docker runtime's
    assert {t for t, _ in docker["task_classes"]} >= {"ingest_raw_batch", "train_challenger", "score_customers"}
    assert {c for _, c in docker["task_classes"]} == {"StepOperator", "StepSensor", "PsiDriftSensor"}
    assert docker["runtimes"] == {"docker"}
    assert docker["features"][2]["wait_for_batch"]["status"] == "ready"  # the landing check ran in a container


def test_results_equal_the_local_runtime_on_the_same_input(chains):
    local, docker = chains["local"], chains["docker"]
    for name in ("features", "training", "scoring", "drift"):
        assert local[name][0] == "success", (name, local[name][1])
    lx, dx = local["features"][2], docker["features"][2]
    assert dx["ingest_raw_batch"]["sha256"] == lx["ingest_raw_batch"]["sha256"]
    assert dx["build_features"]["sha256"] == lx["build_features"]["sha256"]
    assert dx["materialize_features"]["rows"] == lx["materialize_features"]["rows"] == 1500
    lt, dt = local["training"][2]["train_challenger"], docker["training"][2]["train_challenger"]
    assert dt["metrics"].keys() == lt["metrics"].keys()
    for key, value in lt["metrics"].items():
        assert dt["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert docker["training"][2]["evaluate_challenger"]["outcome"] == local["training"][2]["evaluate_challenger"]["outcome"]
    roots = chains["roots"]
    lp = pd.read_parquet(roots["local"] / f"telco_churn/predictions/dt={DAY}").sort_values("customerID")
    dp = pd.read_parquet(roots["docker"] / f"telco_churn/predictions/dt={DAY}").sort_values("customerID")
    assert len(dp) == len(lp) == 1500
    assert dp["probability"].to_numpy() == pytest.approx(lp["probability"].to_numpy(), rel=1e-6)
    lpsi, dpsi = local["drift"][2]["wait_for_drift"], docker["drift"][2]["wait_for_drift"]
    assert dpsi["status"] == lpsi["status"]
    assert dpsi.get("psi") == pytest.approx(lpsi.get("psi"), rel=1e-6)


def test_xcom_is_the_parsed_result_and_holds_no_secret(chains):
    for name in ("features", "training", "scoring", "drift"):
        for task_id, value in chains["docker"][name][2].items():
            assert isinstance(value, dict), (task_id, value)  # the step's JSON result, as in the local runtime
            assert PLANTED not in repr(value), task_id


def test_containers_are_removed_after_success_and_failure(chains, task_image, monkeypatch):
    from pavedml.tools.simulate import simulate

    runtime_env(monkeypatch, chains["roots"]["docker"], "docker", task_image)
    simulate("telco_churn", date.fromisoformat(BAD_DAY), 1, rows_per_day=1500, bad={BAD_DAY: "out_of_range"})
    state, tasks, _ = run_dag("telco_churn_feature_pipeline", BAD_DAY)
    dagbag.cache_clear()
    assert state == "failed"
    assert tasks["validate_raw_batch"] == "failed" and tasks["build_features"] == "upstream_failed"
    assert step_containers() == []  # none left, running or exited, after the successes and this failure


def _step(task_image, argv: list[str]):
    """A docker-runtime step task with a concrete (rendered) argv."""
    from airflow.sdk import DAG

    from pavedml.airflow.factory import step_task
    from pavedml.config import get_use_case

    with DAG("docker_hygiene", schedule=None):
        op = step_task(argv[3] if len(argv) > 3 else "probe", get_use_case("telco_churn"), runtime="docker",
                       task_id="probe")
    op.argv = argv
    return op


def test_a_failing_step_fails_the_task_without_retry_and_with_its_summary(chains, task_image, monkeypatch):
    from pavedml.airflow.operators import StepRejectedInput

    runtime_env(monkeypatch, chains["roots"]["docker"], "docker", task_image)
    op = _step(task_image, ["python", "-m", "pavedml", "validate_raw_batch", "--use-case", "telco_churn",
                            "--ds", BAD_DAY])
    logged: list[tuple[str, str]] = []

    class TaskLog:  # what the task log receives (Airflow's structlog logger, recorded)
        def info(self, msg, *args):
            logged.append(("info", msg % args if args else msg))

        def error(self, msg, *args):
            logged.append(("error", msg % args if args else msg))

        warning = info

    op._cached_logger = op._log = TaskLog()
    with pytest.raises(StepRejectedInput) as failure:
        op.execute({})
    message = str(failure.value)
    assert message.startswith("FAILED validate_raw_batch [validation_failed]"), message
    assert "exited with code 3" in message and failure.value.summary.startswith("FAILED validate_raw_batch")
    # the container's summary reaches the task log once, at ERROR, as in the local runtime
    summaries = [(level, text) for level, text in logged if "FAILED validate_raw_batch" in text]
    assert [level for level, _ in summaries] == ["error"], logged[-20:]
    assert step_containers() == []


def test_step_containers_hold_no_airflow_secret_run_as_non_root_and_unprivileged(chains, task_image, monkeypatch):
    runtime_env(monkeypatch, chains["roots"]["docker"], "docker", task_image)
    for name, value in {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:hunter2@db/airflow",
                        "AIRFLOW__CORE__FERNET_KEY": "fernet-secret", "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret",
                        "AIRFLOW_CONN_WAREHOUSE": "postgres://u:p@h/db"}.items():
        monkeypatch.setenv(name, value)
    probe = ("import json, os; print(json.dumps({'uid': os.getuid(), 'env': sorted(os.environ), "
             "'values': '|'.join(os.environ.values())}))")
    op = _step(task_image, ["python", "-c", probe])
    result = op.execute({})
    assert result["uid"] != 0
    assert not [n for n in result["env"] if n.startswith("AIRFLOW")], result["env"]
    for secret in ("hunter2", "fernet-secret", "jwt-secret"):
        assert secret not in result["values"]
    assert "AWS_SECRET_ACCESS_KEY" in result["env"]  # step credentials do arrive (as private environment)


def test_a_rerun_of_the_same_interval_finds_no_name_clash(chains, task_image, monkeypatch):
    runtime_env(monkeypatch, chains["roots"]["docker"], "docker", task_image)
    state, tasks, xcoms = run_dag("telco_churn_feature_pipeline", DAY)
    dagbag.cache_clear()
    assert state == "success", tasks
    assert xcoms["ingest_raw_batch"]["sha256"] == chains["docker"]["features"][2]["ingest_raw_batch"]["sha256"]
    assert step_containers() == []


def test_marking_a_running_task_failed_stops_its_container(task_image, tmp_path):
    """Through a real scheduler: the landing check of ``wait_for_batch`` (a sensor poke, in a
    container) hangs on a landing store that accepts connections and never answers; the task is
    marked failed through the REST API (what the UI's 'Mark as failed' does); its container stops."""
    import socket

    import yaml

    from tests.helpers.standalone import Standalone

    root = Path(tempfile.mkdtemp(prefix="pavedml-docker-kill-")) / "data"
    root.mkdir(parents=True)
    for path in (root.parent, root):
        os.chmod(path, 0o770)
    cases = root / "use_cases"  # inside the data root: the containers see it at the same path
    cases.mkdir()
    spec = yaml.safe_load((REPO / "include/use_cases/telco_churn.yaml").read_text())
    spec["schedules"].update(feature_pipeline=None, training_pipeline=None, batch_scoring=None, drift_monitor=None)
    spec["batches"].update(wait_timeout_seconds=900, poke_interval_seconds=5)
    (cases / "telco_churn.yaml").write_text(yaml.safe_dump(spec))
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel's backlog), never answers
    stack = Standalone(tmp_path / "airflow", root, cases, extra_env={
        "PAVEDML_LANDING_URI": "s3://landing/zone", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent.getsockname()[1]}",
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
        "PAVEDML_RUNTIME": "docker", "PAVEDML_IMAGE": task_image, "PAVEDML_DOCKER_NETWORK": "host",
        "PAVEDML_DOCKER_URL": "unix://var/run/docker.sock", "PAVEDML_DOCKER_DATA_VOLUME": str(root),
        "PAVEDML_USE_CASES_DIR": str(cases)}).start()
    try:
        dag_id, run_id = "telco_churn_feature_pipeline", "kill_me"
        stack.wait_for_dag(dag_id)
        stack.api("POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": "2025-06-01T00:00:00Z"})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not step_containers(all_states=False):
            time.sleep(2)
        running = step_containers(all_states=False)
        assert running, f"the landing check's container never started; see {stack.home}/logs"
        stack.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/wait_for_batch",
                  {"new_state": "failed"})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and step_containers():
            time.sleep(2)
        assert step_containers() == [], "the container outlived its task"
    finally:
        stack.stop()
        silent.close()
        shutil.rmtree(root.parent, ignore_errors=True)
