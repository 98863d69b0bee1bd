"""No credential of a URL leaves a step in text: not in its summary, its task log, the UI's error
line, the alerts file or the alert e-mail (issue 14, item 8)."""

from __future__ import annotations

import json
import logging
import time

import pytest

from pavedml.redact import redact, redact_urls

pytestmark = pytest.mark.unit

PLANTED = "PLANTED"


@pytest.mark.parametrize(("text", "expected"), [
    ("redis://:PLANTED@host:6379/0", "redis://:***@host:6379/0"),
    ("rediss://default:PLANTED@redis:6380", "rediss://default:***@redis:6380"),
    ("http://user:PLANTED@mlflow:5000", "http://user:***@mlflow:5000"),
    ("postgresql://u:PLANTED@h/db", "postgresql://u:***@h/db"),
    ("postgresql+psycopg2://u:PLANTED@h:5432/db?sslmode=require", "postgresql+psycopg2://u:***@h:5432/db?sslmode=require"),
    ("redis://:p@ssPLANTED@host:6379/0", "redis://:***@host:6379/0"),  # an unencoded @ in the password
    ("server http://u:PLANTED@127.0.0.1:1/api is down", "server http://u:***@127.0.0.1:1/api is down"),
    ("'http://u:PLANTED@h'", "'http://u:***@h'"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA/x&X-Amz-Signature=PLANTED&X-Amz-Expires=60",
     "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60"),
    ("https://acc.blob.core.windows.net/c?sv=2022&sig=PLANTED", "https://acc.blob.core.windows.net/c?sv=2022&sig=***"),
    ("https://api/x?token=PLANTED&page=2", "https://api/x?token=***&page=2"),
    ("host=h dbname=d password=PLANTED", "host=h dbname=d password=***"),
    ("MLFLOW_TRACKING_PASSWORD=PLANTED", "MLFLOW_TRACKING_PASSWORD=***"),
    ("Authorization: Bearer PLANTEDabc.def", "Authorization: Bearer ***"),
    ("Authorization: Basic dXNlcjpQTEFOVEVE", "Authorization: Basic ***"),
    ('{"authorization": "Basic dXNlcjpQTEFOVEVE"}', '{"authorization": "Basic ***"}'),
    ("uses basic features_v2 and basic configuration", "uses basic features_v2 and basic configuration"),
    # nothing secret: unchanged
    ("http://mlflow:5000/#/experiments/1", "http://mlflow:5000/#/experiments/1"),
    ("s3://bucket/pavedml/telco_churn", "s3://bucket/pavedml/telco_churn"),
    ("mail oncall@example.org at 10:30", "mail oncall@example.org at 10:30"),
    ("ssh://git@github.com/x.git", "ssh://git@github.com/x.git"),
    ("max_tokens=5 tenure=72", "max_tokens=5 tenure=72"),
])
def test_redact_urls(text, expected):
    assert redact_urls(text) == expected
    assert redact_urls(expected) == expected  # idempotent


def test_redact_walks_nested_values_and_is_linear_on_a_huge_line():
    assert redact({"a": ["redis://:PLANTED@h/0", ("x", 1)], "n": None}) == {"a": ["redis://:***@h/0", ("x", 1)], "n": None}
    for huge in ("a" * 1_000_000, "://" * 300_000 + "x:y", "password=" * 100_000, "http://u:" + "p" * 1_000_000):
        started = time.perf_counter()
        redact_urls(huge)
        assert time.perf_counter() - started < 2


def test_errors_and_summaries_carry_no_password():
    from pavedml.errors import ConfigError
    from pavedml.summary import failure_summary

    exc = ConfigError("PAVEDML_FEAST_ONLINE_STORE='redis://:PLANTED@redis:6379/0' is wrong",
                      details={"evidence": ["tried postgresql://u:PLANTED@h/db"], "next": "fix token=PLANTED"})
    assert PLANTED not in str(exc) and PLANTED not in json.dumps(exc.details)
    exc.message += " (also http://u:PLANTED@mlflow:5000)"  # messages are amended after the fact (training.py)
    exc.details["evidence"].append("http://u:PLANTED@mlflow:5000")
    summary = failure_summary("materialize_features", "telco_churn", "2025-01-01", exc)
    assert PLANTED not in summary
    assert "redis://:***@redis:6379/0" in summary and "http://u:***@mlflow:5000" in summary


def test_step_log_lines_and_the_error_line_are_redacted():
    """A line a library prints straight to stderr (no summary) is masked in the task log and in the
    failure message the UI shows."""
    from pavedml.airflow.operators import StepFailed, StepLog, check_exit

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("test.redact.steplog")
    logger.handlers[:] = [Keep()]
    logger.setLevel(logging.INFO)
    relay = StepLog(logger)
    relay.line("connecting to redis://:PLANTED@redis:6379/0")
    relay.line("redis.exceptions.ConnectionError: Error connecting to redis://:PLANTED@redis:6379/0")
    tail = relay.close()
    with pytest.raises(StepFailed) as err:
        check_exit(["python", "-m", "pavedml", "materialize_features"], 1, tail)
    assert PLANTED not in "\n".join(records) + str(err.value)
    assert "redis://:***@redis:6379/0" in str(err.value)


def test_the_step_clis_log_lines_are_redacted():
    from pavedml.cli import RedactingFormatter

    record = logging.LogRecord("pavedml.lake", logging.INFO, __file__, 1, "pulled (%s -> %s)",
                               ("https://minio/b?X-Amz-Signature=PLANTED", "/data"), None)
    line = RedactingFormatter("%(name)s: %(message)s").format(record)
    assert line == "pavedml.lake: pulled (https://minio/b?X-Amz-Signature=*** -> /data)"


def test_a_planted_password_reaches_no_sink(tmp_path, monkeypatch):
    """train_challenger against an MLflow URI with a password that does not answer: the step's
    stderr (the task log, through the local runtime's relay), the task's error (the UI's error line),
    the alerts file and the e-mail carry the summary, never the password."""
    import structlog.testing
    from airflow.sdk.exceptions import AirflowException

    from pavedml.airflow.callbacks import on_task_failure
    from pavedml.airflow.operators import StepOperator, check_exit
    from tests.helpers.smtp_sink import SmtpSink

    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://u:{PLANTED}@127.0.0.1:1")
    monkeypatch.setenv("PAVEDML_TRACKING_WAIT_SECONDS", "0")
    monkeypatch.setenv("PAVEDML_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    monkeypatch.setenv("PAVEDML_ALERT_EMAIL_TO", "oncall@example.org")
    monkeypatch.setenv("PAVEDML_ALERT_SMTP_CONN_ID", "pavedml_smtp")
    op = StepOperator(task_id="train_challenger",
                      argv=["python", "-m", "pavedml", "train_challenger", "--use-case", "telco_churn",
                            "--ds", "2025-01-08"])
    with structlog.testing.capture_logs() as records:  # the task log, as Airflow's logger gets it
        returncode, _, tail = op.run_process()
    task_log = "\n".join(str(r["event"]) for r in records)
    assert returncode == 1, task_log  # tracking unavailable: retryable
    assert "FAILED train_challenger [tracking_unavailable]" in task_log
    assert "http://u:***@127.0.0.1:1" in task_log
    with pytest.raises(AirflowException) as err:
        check_exit(op.argv, returncode, tail)
    ui_line = str(err.value)
    assert ui_line.startswith("FAILED train_challenger [tracking_unavailable]")
    with SmtpSink() as sink:
        monkeypatch.setenv("AIRFLOW_CONN_PAVEDML_SMTP", json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": sink.port,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@localhost", "retry_limit": 0}}))
        monkeypatch.setenv("PAVEDML_ALERT_SMTP_CONN_ID", "pavedml_smtp")
        on_task_failure({"ti": None, "exception": err.value})
    alerts = (tmp_path / "alerts.jsonl").read_text()
    assert "tracking_unavailable" in alerts
    assert len(sink.messages) == 1
    mail = sink.messages[0]["message"]
    mail_text = mail["Subject"] + mail.get_body(("html",)).get_content()
    assert "tracking_unavailable" in mail_text
    for sink_name, text in (("task log", task_log), ("UI error line", ui_line + str(err.value.summary)),
                            ("alerts file", alerts), ("e-mail", mail_text)):
        assert PLANTED not in text, sink_name


def test_the_mlflow_link_in_the_ui_never_carries_the_tracking_password(monkeypatch):
    """The UI's MLflow link defaults to MLFLOW_TRACKING_URI: its user:password must not reach a link."""
    from pavedml.settings import get_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://pavedml:PLANTED@mlflow:5000")
    monkeypatch.delenv("PAVEDML_MLFLOW_UI_URL", raising=False)
    get_settings.cache_clear()
    assert get_settings().mlflow_ui_url == "http://mlflow:5000"
    monkeypatch.setenv("PAVEDML_MLFLOW_UI_URL", "https://u:PLANTED@ml.example/path?x=1")
    get_settings.cache_clear()
    assert get_settings().mlflow_ui_url == "https://ml.example/path?x=1"
