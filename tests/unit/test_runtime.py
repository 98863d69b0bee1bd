"""The step runners (pavedml.airflow.runners, pavedml.airflow.docker_step) and the one StepOperator:
the argv and environment contract each runtime really hands to its step, the container's labels,
mounts and host config, never pulling, removal and kill, and the exit-code mapping. The real
containers are in tests/docker/test_docker_runtime.py."""

from __future__ import annotations

import threading
import time

import airflow.sdk  # noqa: F401  (configure Airflow before the fixture plants fake settings)
import pytest
from docker import APIClient

from pavedml.airflow.factory import step_task
from pavedml.config import get_use_case
from pavedml.settings import Settings, step_environment

pytestmark = pytest.mark.unit
SECRETS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:hunter2@db/airflow",
    "AIRFLOW__CORE__FERNET_KEY": "fernet-secret",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret",
    "AIRFLOW_CONN_WAREHOUSE": "postgres://u:p@h/db",
}
ARGV = ["python", "-m", "pavedml", "ingest_raw_batch", "--use-case", "telco_churn", "--ds", "2025-01-03"]


@pytest.fixture
def env(monkeypatch):
    for k, v in {**SECRETS, "PAVEDML_DATA_ROOT": "/data", "MLFLOW_TRACKING_URI": "http://mlflow:5000",
                 "MLFLOW_TRACKING_PASSWORD": "mlflow-pass", "AWS_SECRET_ACCESS_KEY": "aws-secret",
                 "AWS_ENDPOINT_URL": "http://s3:9000", "UNRELATED": "x"}.items():
        monkeypatch.setenv(k, v)
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


class Log:
    """A task logger that keeps what it was given."""

    def __init__(self):
        self.records: list[tuple[str, str]] = []

    def _add(self, level, msg, *args):
        self.records.append((level, msg % args if args else msg))

    def info(self, msg, *args):
        self._add("info", msg, *args)

    def warning(self, msg, *args):
        self._add("warning", msg, *args)

    def error(self, msg, *args):
        self._add("error", msg, *args)


class FakeEngine(APIClient):
    """docker-py's own APIClient (its real create_host_config and Mount encoding) with the engine
    calls recorded instead of sent."""

    def __init__(self, images=("pavedml-task:test",), stderr=(b"",), stdout=b"", code=0, on_logs=None):
        super().__init__(base_url="unix:///nonexistent.sock", version="1.43")
        self._images, self._stderr, self._stdout, self._code, self._on_logs = images, stderr, stdout, code, on_logs
        self.calls: list[tuple[str, object]] = []

    def images(self, name=None, **_):
        self.calls.append(("images", name))
        return [{"Id": name}] if name in self._images else []

    def pull(self, *a, **k):  # never called: asserted below
        self.calls.append(("pull", a))

    def create_container(self, **spec):
        self.calls.append(("create", spec))
        return {"Id": "c0ffee" * 8}

    def start(self, container_id):
        self.calls.append(("start", container_id))

    def logs(self, container_id, stdout=True, stderr=True, stream=False, **_):
        if stream:
            def gen():
                for chunk in self._stderr:
                    if self._on_logs:
                        self._on_logs()
                    yield chunk
            return gen()
        return self._stdout

    def wait(self, container_id):
        return {"StatusCode": self._code}

    def remove_container(self, container_id, force=False):
        self.calls.append(("remove", (container_id, force)))


def _settings(**env):
    return Settings.from_env({"PAVEDML_DATA_ROOT": "/srv/pavedml", "PAVEDML_IMAGE": "pavedml-task:test",
                              "PAVEDML_DOCKER_NETWORK": "pavedml", **env})


def _docker(client, step="ingest_raw_batch", use_case="telco_churn", **env):
    from pavedml.airflow.docker_step import DockerRunner

    return DockerRunner(step, use_case, settings=_settings(**env), client=client)


def _created(client) -> dict:
    return next(spec for call, spec in client.calls if call == "create")


def test_one_operator_for_every_runtime_with_the_same_argv(env):
    from airflow.sdk import DAG

    from pavedml.airflow.operators import StepOperator

    uc = get_use_case("telco_churn")
    with DAG("contract_test", schedule=None):
        local = step_task("ingest_raw_batch", uc, runtime="local", task_id="local")
        docker = step_task("ingest_raw_batch", uc, runtime="docker", task_id="docker")
    assert type(local) is StepOperator and type(docker) is StepOperator
    assert (local.runtime, docker.runtime) == ("local", "docker")
    assert local.argv == docker.argv
    assert local.argv[:6] == ["python", "-m", "pavedml", "ingest_raw_batch", "--use-case", "telco_churn"]
    assert "{{ run_ds(dag_run, triggering_asset_events) }}" in local.argv
    assert (docker.step, docker.use_case) == ("ingest_raw_batch", "telco_churn")


def test_the_runtime_is_the_configured_one_when_the_dag_is_parsed(env, monkeypatch):
    from airflow.sdk import DAG

    from pavedml.settings import get_settings

    monkeypatch.setenv("PAVEDML_RUNTIME", "docker")
    get_settings.cache_clear()
    with DAG("contract_test", schedule=None):
        task = step_task("build_features", get_use_case("telco_churn"))
    assert task.runtime == "docker" and task.task_id == "build_features"


def test_runner_for_names_each_runtime_and_refuses_an_unknown_one():
    from pavedml.airflow.docker_step import DockerRunner
    from pavedml.airflow.runners import LocalRunner, runner_for
    from pavedml.errors import ConfigError

    local = runner_for("local", "build_features", "acme")
    assert type(local) is LocalRunner and (local.step, local.use_case) == ("build_features", "acme")
    assert type(runner_for("docker", "build_features", "acme")) is DockerRunner
    with pytest.raises(ConfigError, match="unknown step runtime 'k8s'.*local, docker"):
        runner_for("k8s", "build_features", "acme")


def test_identical_environment_contract_in_both_runtimes(env):
    from pavedml.airflow.operators import StepOperator
    from pavedml.airflow.runners import LocalRunner

    public, private = StepOperator(task_id="t", argv=ARGV, runtime="local").contract_environment()
    assert private == {"AWS_SECRET_ACCESS_KEY": "aws-secret", "MLFLOW_TRACKING_PASSWORD": "mlflow-pass"}
    assert public["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and "UNRELATED" not in public
    client = FakeEngine()
    _docker(client).run(ARGV, public, private, Log())
    assert _created(client)["environment"] == {**public, **private}
    local = LocalRunner.environment(public, private)
    assert {k: v for k, v in local.items() if k in {**public, **private}} == {**public, **private}
    assert set(local) - set(public) - set(private) <= {"PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV",
                                                        "TMPDIR", "PYTHONDONTWRITEBYTECODE"}
    for mapping in (local, _created(client)["environment"]):
        assert not any(k.startswith("AIRFLOW") for k in mapping)
        for secret in SECRETS.values():
            assert secret not in mapping.values()


def test_step_environment_marks_secrets_private():
    public, private = step_environment({"PAVEDML_X": "1", "PAVEDML_API_TOKEN": "t", "AIRFLOW__X": "no"})
    assert public["PAVEDML_X"] == "1" and "PAVEDML_API_TOKEN" not in public
    assert private == {"PAVEDML_API_TOKEN": "t"}
    assert public["TQDM_DISABLE"] == "1"


def test_a_container_gets_the_argv_labels_host_config_and_data_root_it_should():
    client = FakeEngine(stdout=b'{"rows": 3}\n')
    # the labels come from the runner's arguments, never from the argv (here no step argv at all)
    run = _docker(client, step="validate_raw_batch", use_case="acme_churn",
                  PAVEDML_DOCKER_DATA_VOLUME="/srv/host-data").run(["python", "-c", "pass"], {"A": "1"}, {}, Log())
    spec = _created(client)
    assert spec["image"] == "pavedml-task:test" and spec["command"] == ["python", "-c", "pass"]
    assert spec["labels"] == {"org.pavedml.step": "validate_raw_batch", "org.pavedml.use_case": "acme_churn"}
    host = spec["host_config"]
    assert host["NetworkMode"] == "pavedml" and not host.get("Privileged") and not host.get("CapAdd")
    assert host["Mounts"] == [{"Target": "/srv/pavedml", "Source": "/srv/host-data", "Type": "bind",
                               "ReadOnly": False}]
    assert "name" not in spec  # unnamed: a leftover never clashes
    assert run.returncode == 0 and run.stdout == '{"rows": 3}\n'
    named = FakeEngine()
    _docker(named, PAVEDML_DOCKER_DATA_VOLUME="pavedml-data").run(ARGV, {}, {}, Log())
    assert _created(named)["host_config"]["Mounts"][0]["Type"] == "volume"
    bare = FakeEngine()
    _docker(bare).run(ARGV, {}, {}, Log())
    assert not _created(bare)["host_config"].get("Mounts")


def test_a_missing_image_is_never_pulled_and_fails_at_once_naming_the_fix():
    from airflow.sdk.exceptions import AirflowFailException

    client = FakeEngine(images=())
    with pytest.raises(AirflowFailException, match="'pavedml-task:test' is not on this Docker engine.*make image-local"):
        _docker(client).run(ARGV, {}, {}, Log())
    assert [call for call, _ in client.calls] == ["images"]


def test_stderr_is_relayed_line_by_line_and_the_container_removed_after_success_and_failure():
    from pavedml.summary import RULE

    summary = f"{RULE}\nFAILED ingest_raw_batch [batch_missing] use case=telco_churn interval=2025-01-03\n" \
              f"no batch for 2025-01-03\n{RULE}\n"
    # chunks split mid-line, as the engine streams them
    chunks = [b"first li", b"ne\nsecond\n" + summary[:30].encode(), summary[30:].encode(), b"last, no newline"]
    log = Log()
    client = FakeEngine(stderr=chunks, stdout=b"", code=1)
    run = _docker(client).run(ARGV, {}, {}, log)
    assert run.returncode == 1
    assert run.stderr_tail[:2] == ["first line", "second"] and run.stderr_tail[-1] == "last, no newline"
    assert ("error", "FAILED ingest_raw_batch [batch_missing] use case=telco_churn interval=2025-01-03\n"
                     "no batch for 2025-01-03") in log.records  # the summary: one ERROR record
    assert ("info", "first line") in log.records
    assert client.calls[-1] == ("remove", ("c0ffee" * 8, True))

    class Broken(FakeEngine):
        def wait(self, container_id):
            raise ConnectionError("engine went away")

    broken = Broken()
    with pytest.raises(ConnectionError):
        _docker(broken).run(ARGV, {}, {}, Log())
    assert broken.calls[-1] == ("remove", ("c0ffee" * 8, True))


def test_kill_force_removes_the_running_container_and_is_a_no_op_otherwise():
    holder = {}
    client = FakeEngine(stderr=[b"working\n", b"still working\n"], on_logs=lambda: holder["runner"].kill())
    runner = holder["runner"] = _docker(client)
    runner.kill()  # nothing runs yet
    assert not [c for c in client.calls if c[0] == "remove"]
    runner.run(ARGV, {}, {}, Log())
    removes = [c for c in client.calls if c[0] == "remove"]
    assert removes[0] == ("remove", ("c0ffee" * 8, True))  # by kill(), while the step ran
    count = len(client.calls)
    runner.kill()  # the run is over: nothing left to kill
    assert len(client.calls) == count


def test_local_runner_kill_stops_the_whole_process_group(tmp_path):
    from pavedml.airflow.runners import LocalRunner

    marker = tmp_path / "child.pid"
    script = ("import os, subprocess, sys, time; "
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(marker)!r}, 'w').write(str(c.pid)); sys.stderr.write('started\\n'); "
              "sys.stderr.flush(); time.sleep(60)")
    runner = LocalRunner("train_challenger", "telco_churn")
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("run", runner.run(["python", "-c", script], {}, {}, Log())))
    thread.start()
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    time.sleep(0.2)
    runner.kill()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert result["run"].returncode < 0  # ended by a signal
    child = int(marker.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import os

            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the step's child process {child} outlived the kill")


class _Scripted:
    """A runner that returns a given StepRun (and records its call)."""

    def __init__(self, run):
        self.run_result, self.calls, self.killed = run, [], 0

    def run(self, argv, env, private_env, log):
        self.calls.append((argv, env, private_env))
        return self.run_result

    def kill(self):
        self.killed += 1


@pytest.mark.parametrize("code,expected", [(0, "result"), (99, "skip"), (3, "rejected"), (1, "failed"), (2, "failed")])
def test_exit_codes_map_onto_airflow_in_every_runtime(monkeypatch, code, expected):
    from airflow.sdk.exceptions import AirflowSkipException

    from pavedml.airflow import operators
    from pavedml.airflow.runners import StepRun
    from pavedml.errors import EXIT_NO_RETRY, EXIT_SKIP

    assert (EXIT_NO_RETRY, EXIT_SKIP) == (3, 99)
    scripted = _Scripted(StepRun(code, '{"status": "ok"}\n' if code == 0 else "", ["the reason"]))
    seen = []
    monkeypatch.setattr(operators, "runner_for",
                        lambda runtime, step, use_case: seen.append((runtime, step, use_case)) or scripted)
    for runtime in ("local", "docker"):
        op = operators.StepOperator(task_id="t", argv=ARGV, step="ingest_raw_batch", use_case="telco_churn",
                                    runtime=runtime, env={"A": "1"}, private_env={"S": "2"})
        if expected == "result":
            assert op.execute({"outlet_events": {}}) == {"status": "ok"}
        else:
            error = {"skip": AirflowSkipException, "rejected": operators.StepRejectedInput,
                     "failed": operators.StepFailed}[expected]
            with pytest.raises(error) as err:
                op.execute({})
            if expected == "failed":
                assert not isinstance(err.value, operators.StepRejectedInput)
                assert f"exited with code {code}" in str(err.value) and "the reason" in str(err.value)
    assert seen == [("local", "ingest_raw_batch", "telco_churn"), ("docker", "ingest_raw_batch", "telco_churn")]
    assert scripted.calls[0] == (ARGV, {"A": "1"}, {"S": "2"})


def test_on_kill_kills_the_running_step_through_its_runner(monkeypatch):
    from pavedml.airflow import operators

    holder = {}

    class Blocking(_Scripted):
        def run(self, argv, env, private_env, log):
            holder["op"].on_kill()  # the task is killed while its step runs
            return super().run(argv, env, private_env, log)

    from pavedml.airflow.runners import StepRun

    runner = Blocking(StepRun(0, "{}", []))
    monkeypatch.setattr(operators, "runner_for", lambda *a: runner)
    op = holder["op"] = operators.StepOperator(task_id="t", argv=ARGV, runtime="docker", env={}, private_env={})
    op.on_kill()  # nothing runs: nothing to kill
    assert runner.killed == 0
    op.execute({"outlet_events": {}})
    assert runner.killed == 1


def test_local_operator_pushes_last_json_line_and_fails_with_stderr_tail(tmp_path):
    from airflow.sdk.exceptions import AirflowException

    from pavedml.airflow.operators import StepOperator, StepRejectedInput

    ok = StepOperator(task_id="ok", argv=["python", "-c", "print('noise'); print('{\"a\": 1}')"], runtime="local")
    assert ok.execute({"outlet_events": {}}) == {"a": 1}
    bad = StepOperator(task_id="bad", argv=["python", "-c",
                                            "import sys; sys.stderr.write('line1\\nthe reason\\n'); sys.exit(1)"],
                       runtime="local")
    with pytest.raises(AirflowException, match="(?s)exited with code 1.*the reason") as err:
        bad.execute({})
    assert not isinstance(err.value, StepRejectedInput)
    rejected = StepOperator(task_id="rej", argv=["python", "-c", "import sys; sys.exit(3)"], runtime="local")
    with pytest.raises(StepRejectedInput):
        rejected.execute({})


def test_failed_step_leads_with_its_summary_and_links_its_report(tmp_path, monkeypatch):
    """The exception (the alert, the UI's error line) starts with the summary, not with log noise;
    the task's links point at the report named in the summary."""
    from pavedml.airflow.operators import StepOperator, StepRejectedInput
    from pavedml.settings import get_settings
    from pavedml.summary import RULE

    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path))
    get_settings.cache_clear()
    docs = tmp_path / "telco_churn/validation/dt=2025-01-03/abc"
    docs.mkdir(parents=True)
    (docs / "index.html").write_text("<html>docs</html>")
    summary = [RULE, "FAILED validate_raw_batch [validation_failed] use case=telco_churn interval=2025-01-03",
               "1 expectation failed", f"Report: {docs}", RULE]
    script = "import sys; sys.stderr.write('Traceback noise\\n' + " + repr("\n".join(summary) + "\n") + "); sys.exit(3)"
    task = StepOperator(task_id="validate_raw_batch", argv=["python", "-c", script], runtime="local")
    with pytest.raises(StepRejectedInput) as err:
        task.execute({})
    assert str(err.value).startswith("FAILED validate_raw_batch [validation_failed] use case=telco_churn "
                                     "interval=2025-01-03 (step ")  # the UI's error line: the cause
    lines = err.value.summary.splitlines()  # the alert's text: the whole summary, no log noise
    assert lines[0] == "FAILED validate_raw_batch [validation_failed] use case=telco_churn interval=2025-01-03"
    assert not any("Traceback noise" in line for line in lines[:-1]) and "exited with code 3" in lines[-1]
    assert task.links == {"data_docs": "/pavedml/reports/telco_churn/validation/dt%3D2025-01-03/abc/index.html"}
    link = next(link for link in task.operator_extra_links if link.key == "data_docs")
    assert link.get_link(task, ti_key=None) == task.links["data_docs"]
    # a sensor whose poke fails is finished the same way: the summary first, the report linked
    from pavedml.airflow.sensors import StepSensor

    sensor = StepSensor(task_id="wait_for_drift", argv=["python", "-c", script], step="check_drift",
                        use_case="telco_churn", runtime="local")
    with pytest.raises(StepRejectedInput, match=r"^FAILED validate_raw_batch \[validation_failed\]"):
        sensor.poke({})
    assert sensor.links == task.links


class _Conn:
    def __init__(self, login, password, extra=None):
        self.login, self.password, self.extra_dejson = login, password, extra or {}


def test_credentials_come_from_airflow_connections_as_private_environment(env, monkeypatch):
    from pavedml.airflow.connections import connection_environment

    monkeypatch.setenv("PAVEDML_MLFLOW_CONN_ID", "pavedml_mlflow")
    monkeypatch.setenv("PAVEDML_AWS_CONN_ID", "pavedml_s3")
    conns = {"pavedml_mlflow": _Conn("pavedml", "planted-mlflow-secret"),
             "pavedml_s3": _Conn("AKIDEXAMPLE", "planted-s3-secret", {"endpoint_url": "http://minio:9000"})}
    public, private = connection_environment(Settings.from_env(), conns.__getitem__)
    assert public == {"MLFLOW_TRACKING_USERNAME": "pavedml", "AWS_ENDPOINT_URL": "http://minio:9000"}
    assert private == {"MLFLOW_TRACKING_PASSWORD": "planted-mlflow-secret", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
                       "AWS_SECRET_ACCESS_KEY": "planted-s3-secret"}
    assert connection_environment(Settings.from_env({}), conns.__getitem__) == ({}, {})


def test_a_missing_connection_names_the_setting(env, monkeypatch):
    from pavedml.airflow.connections import connection_environment
    from pavedml.errors import ConfigError

    monkeypatch.setenv("PAVEDML_MLFLOW_CONN_ID", "nope")

    def missing(conn_id):
        raise LookupError(f"The conn_id `{conn_id}` isn't defined")

    with pytest.raises(ConfigError, match="'nope' \\(PAVEDML_MLFLOW_CONN_ID\\) could not be read"):
        connection_environment(Settings.from_env(), missing)
