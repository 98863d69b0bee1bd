"""Both runtimes build the identical argv and environment contract, and never hand Airflow's
secrets to a step."""

from __future__ import annotations

import airflow.sdk  # noqa: F401  (configure Airflow before the fixture plants fake settings)
import pytest

from pavedml.airflow.factory import step_task
from pavedml.config import get_use_case
from pavedml.settings import step_environment

pytestmark = pytest.mark.unit
SECRETS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:hunter2@db/airflow",
    "AIRFLOW__CORE__FERNET_KEY": "fernet-secret",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret",
    "AIRFLOW_CONN_WAREHOUSE": "postgres://u:p@h/db",
}


@pytest.fixture
def env(monkeypatch):
    for k, v in {**SECRETS, "PAVEDML_DATA_ROOT": "/data", "MLFLOW_TRACKING_URI": "http://mlflow:5000",
                 "MLFLOW_TRACKING_PASSWORD": "mlflow-pass", "AWS_SECRET_ACCESS_KEY": "aws-secret",
                 "AWS_ENDPOINT_URL": "http://s3:9000", "UNRELATED": "x"}.items():
        monkeypatch.setenv(k, v)


def _tasks(step="ingest_raw_batch"):
    from airflow.sdk import DAG

    uc = get_use_case("telco_churn")
    with DAG("contract_test", schedule=None):
        local = step_task(step, uc, runtime="local", task_id="local")
        docker = step_task(step, uc, runtime="docker", task_id="docker")
    return local, docker


def test_identical_argv(env):
    local, docker = _tasks()
    assert local.argv == docker.command
    assert local.argv[:6] == ["python", "-m", "pavedml", "ingest_raw_batch", "--use-case", "telco_churn"]
    assert "{{ run_ds(dag_run, triggering_asset_events) }}" in local.argv


def test_identical_environment_contract(env):
    local, docker = _tasks()
    public, private = local.contract_environment()
    assert public == docker.environment
    assert private == docker._private_environment
    assert docker._private_environment == {"AWS_SECRET_ACCESS_KEY": "aws-secret", "MLFLOW_TRACKING_PASSWORD": "mlflow-pass"}
    assert docker.environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "UNRELATED" not in docker.environment


def test_airflow_secrets_never_reach_a_step(env):
    local, docker = _tasks()
    for mapping in (local._environment(), docker.environment, docker._private_environment):
        assert not any(k.startswith("AIRFLOW") for k in mapping)
        for secret in SECRETS.values():
            assert secret not in mapping.values()


def test_docker_operator_never_pulls_and_cleans_up(env):
    _, docker = _tasks()
    assert docker.force_pull is False
    assert docker.auto_remove == "force"
    assert docker.privileged is False
    assert docker.network_mode == "host"


def test_step_environment_marks_secrets_private():
    public, private = step_environment({"PAVEDML_X": "1", "PAVEDML_API_TOKEN": "t", "AIRFLOW__X": "no"})
    assert public["PAVEDML_X"] == "1" and "PAVEDML_API_TOKEN" not in public
    assert private == {"PAVEDML_API_TOKEN": "t"}
    assert public["TQDM_DISABLE"] == "1"


def test_local_operator_pushes_last_json_line_and_fails_with_stderr_tail(tmp_path):
    from airflow.sdk.exceptions import AirflowException

    from pavedml.airflow.operators import StepOperator, StepRejectedInput

    ok = StepOperator(task_id="ok", argv=["python", "-c", "print('noise'); print('{\"a\": 1}')"])
    assert ok.execute({"outlet_events": {}}) == {"a": 1}
    bad = StepOperator(task_id="bad", argv=["python", "-c",
                                            "import sys; sys.stderr.write('line1\\nthe reason\\n'); sys.exit(1)"],
                       )
    with pytest.raises(AirflowException, match="(?s)exited with code 1.*the reason") as err:
        bad.execute({})
    assert not isinstance(err.value, StepRejectedInput)
    rejected = StepOperator(task_id="rej", argv=["python", "-c", "import sys; sys.exit(3)"])
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
    task = StepOperator(task_id="validate_raw_batch", argv=["python", "-c", script])
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


class _Conn:
    def __init__(self, login, password, extra=None):
        self.login, self.password, self.extra_dejson = login, password, extra or {}


def test_credentials_come_from_airflow_connections_as_private_environment(env, monkeypatch):
    from pavedml.settings import Settings, connection_environment

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
    from pavedml.errors import ConfigError
    from pavedml.settings import Settings, connection_environment

    monkeypatch.setenv("PAVEDML_MLFLOW_CONN_ID", "nope")

    def missing(conn_id):
        raise LookupError(f"The conn_id `{conn_id}` isn't defined")

    with pytest.raises(ConfigError, match="'nope' \\(PAVEDML_MLFLOW_CONN_ID\\) could not be read"):
        connection_environment(Settings.from_env(), missing)
