"""Alerts go out on every final failure (whatever the try number: a step that exits 3 fails on its
first try without a retry), never on a retry."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pavedml.airflow.callbacks import on_task_failure

pytestmark = pytest.mark.unit


def _ti(try_number, max_tries, state="failed"):
    return SimpleNamespace(try_number=try_number, max_tries=max_tries, dag_id="d", task_id="t", run_id="r",
                           state=state)


def _step_failure(summary: str):
    """What a step's failure raises (pavedml.airflow.operators.check_exit): the summary rides along."""
    from pavedml.airflow.operators import StepRejectedInput

    exc = StepRejectedInput(summary.splitlines()[0] + " (step x exited with code 3; its summary is logged above)")
    exc.summary = summary
    return exc


def test_retry_does_not_alert_final_failure_does(tmp_path, monkeypatch):
    monkeypatch.setenv("PAVEDML_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    on_task_failure({"ti": _ti(1, 2, "up_for_retry"), "exception": RuntimeError("first try")})
    on_task_failure({"ti": _ti(2, 2, "up_for_retry"), "exception": RuntimeError("second try")})
    assert not (tmp_path / "alerts.jsonl").exists()
    on_task_failure({"ti": _ti(3, 2), "exception": _step_failure("FAILED ingest_raw_batch [batch_missing]\nno batch")})
    # a failure that is never retried (exit 3: bad input) fails on try 1 of 3: it is final too
    on_task_failure({"ti": _ti(1, 2), "exception": _step_failure("FAILED validate_raw_batch [validation_failed]\nx")})
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [a["summary"].split()[1] for a in alerts] == ["ingest_raw_batch", "validate_raw_batch"]
    assert alerts[1]["task_id"] == "t" and alerts[1]["try_number"] == 1


def _smtp_conn(monkeypatch, port: int) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PAVEDML_SMTP", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@localhost", "retry_limit": 0}}))
    monkeypatch.setenv("PAVEDML_ALERT_SMTP_CONN_ID", "pavedml_smtp")


def test_final_failure_is_emailed_through_airflows_smtp_notifier(tmp_path, monkeypatch):
    from tests.helpers.smtp_sink import SmtpSink

    monkeypatch.setenv("PAVEDML_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    monkeypatch.setenv("PAVEDML_ALERT_EMAIL_TO", "oncall@example.org, data-eng@example.org")
    summary = ("FAILED validate_raw_batch [validation_failed] use case=telco_churn interval=2025-01-03\n"
               "2 expectation(s) failed\n  - column 'tenure' observed {{ 7 }} {% if %} expected <= 72")
    with SmtpSink() as sink:
        _smtp_conn(monkeypatch, sink.port)
        on_task_failure({"ti": _ti(1, 2, "up_for_retry"), "exception": RuntimeError("a retry")})
        assert sink.messages == []
        on_task_failure({"ti": _ti(3, 2), "exception": _step_failure(summary)})
    assert len(sink.messages) == 1
    msg = sink.messages[0]
    assert msg["to"] == ["oncall@example.org", "data-eng@example.org"]
    assert msg["message"]["Subject"].startswith("[pavedml] task_failed: d.t: FAILED validate_raw_batch [validation_failed]")
    body = msg["message"].get_body(("html",)).get_content()
    assert "observed {{ 7 }} {% if %} expected &lt;= 72" in body  # data is quoted, never rendered
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 1


def test_unreachable_mail_relay_never_masks_the_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("PAVEDML_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    monkeypatch.setenv("PAVEDML_ALERT_EMAIL_TO", "oncall@example.org")
    _smtp_conn(monkeypatch, 9)  # discard port: connection refused
    on_task_failure({"ti": _ti(3, 2), "exception": _step_failure("FAILED x [y]")})
    assert json.loads((tmp_path / "alerts.jsonl").read_text())["summary"] == "FAILED x [y]"


def test_a_template_or_setup_error_alerts_with_its_first_line(tmp_path, monkeypatch):
    """A task that fails before its step runs (a template error, a missing connection) is named."""
    import jinja2

    monkeypatch.setenv("PAVEDML_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    try:
        jinja2.Environment(undefined=jinja2.StrictUndefined).from_string("{{ ds }}").render()
    except jinja2.UndefinedError as exc:
        on_task_failure({"ti": _ti(3, 2), "exception": exc})
    on_task_failure({"ti": _ti(1, 0), "exception": None})
    first, second = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert first["summary"] == "UndefinedError: 'ds' is undefined"
    assert second["summary"].startswith("task failed")


def test_the_summary_is_logged_once_at_error_level():
    """The step's summary reaches the task log once, as one ERROR record, not line by line at INFO."""
    import logging

    from pavedml.airflow.operators import StepLog, check_exit
    from pavedml.summary import RULE

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("test.steplog")
    logger.handlers[:] = [Keep()]
    logger.setLevel(logging.INFO)
    relay = StepLog(logger)
    for line in ["loading batch", "", RULE, "FAILED validate_raw_batch [validation_failed] use case=u interval=d",
                 "1 expectation(s) failed", "  - Contract: missing", RULE]:
        relay.line(line)
    tail = relay.close()
    errors = [r for r in records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].getMessage().startswith("FAILED validate_raw_batch")
    assert "Contract" in errors[0].getMessage()
    assert not [r for r in records if r.levelno == logging.INFO and "FAILED" in r.getMessage()]
    with pytest.raises(Exception) as err:
        check_exit(["python", "-m", "pavedml", "validate_raw_batch"], 3, tail)
    assert str(err.value).count("\n") == 0 and "summary is logged above" in str(err.value)
    assert err.value.summary.splitlines()[:3] == ["FAILED validate_raw_batch [validation_failed] use case=u interval=d",
                                                   "1 expectation(s) failed", "  - Contract: missing"]


def test_deadline_callback_alerts_with_the_run(tmp_path, monkeypatch):
    import asyncio

    from pavedml.airflow.callbacks import on_deadline_missed

    monkeypatch.setenv("PAVEDML_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    asyncio.run(on_deadline_missed(dag_id="telco_churn_feature_pipeline", expected_minutes=60,
                                   context={"dag_run": {"dag_run_id": "scheduled__2025-01-03"}}))
    alert = json.loads((tmp_path / "alerts.jsonl").read_text())
    assert alert["kind"] == "deadline_missed" and alert["run_id"] == "scheduled__2025-01-03"
    assert alert["summary"].startswith("DEADLINE MISSED: telco_churn_feature_pipeline run scheduled__2025-01-03")


def test_every_dag_carries_a_deadline_alert_from_its_config():
    from pavedml.airflow.factory import deadline
    from pavedml.config import get_use_case

    uc = get_use_case("telco_churn")
    alert = deadline(uc, "feature_pipeline")
    assert alert.interval.total_seconds() == uc.schedules.expected_duration_minutes * 60
    assert alert.callback.path == "pavedml.airflow.callbacks.on_deadline_missed"
    assert alert.callback.kwargs == {"dag_id": "telco_churn_feature_pipeline",
                                     "expected_minutes": uc.schedules.expected_duration_minutes}


def test_every_alert_field_is_redacted_in_the_file_and_the_mail(tmp_path, monkeypatch):
    """Not only a step's summary: any text an alert carries (a setup error, a run id) is masked."""
    from pavedml.airflow.callbacks import email_alert
    from pavedml.alerts import send
    from tests.helpers.smtp_sink import SmtpSink

    monkeypatch.setenv("PAVEDML_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    monkeypatch.setenv("PAVEDML_ALERT_EMAIL_TO", "oncall@example.org")
    with SmtpSink() as sink:
        _smtp_conn(monkeypatch, sink.port)
        send({"kind": "task_failed", "dag_id": "d", "task_id": "t", "run_id": "manual__redis://:PLANTED@r:6379/0",
              "summary": "OperationalError: could not connect to postgresql://airflow:PLANTED@db/airflow"},
             mailer=email_alert)
    text = (tmp_path / "alerts.jsonl").read_text()
    mail = sink.messages[0]["message"]
    assert "postgresql://airflow:***@db/airflow" in text and "postgresql://airflow:***@db/airflow" in mail["Subject"]
    assert "PLANTED" not in text + mail["Subject"] + mail.get_body(("html",)).get_content()


def test_a_steps_alert_is_recorded_and_emailed_by_its_task(tmp_path, monkeypatch):
    """The drift monitor's alert rides in request_retraining's result; the task (on the worker, which
    holds the SMTP connection; the step never does) records it and e-mails it, once."""
    from pavedml.airflow.operators import finish_step
    from tests.helpers.smtp_sink import SmtpSink

    monkeypatch.setenv("PAVEDML_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    monkeypatch.setenv("PAVEDML_ALERT_EMAIL_TO", "oncall@example.org")
    alert = {"kind": "drift_detected", "dag_id": "acme_drift_monitor", "task_id": "request_retraining",
             "run_id": "r", "summary": "DRIFT DETECTED [acme] window 2025-01-03: PSI alert on tenure"}
    result = {"step": "request_retraining", "use_case": "acme", "ds": "2025-01-03", "requested": True,
              "asset_extra": {}, "alert": alert}
    operator = SimpleNamespace(links=None, outlets=[])
    with SmtpSink() as sink:
        _smtp_conn(monkeypatch, sink.port)
        assert finish_step(operator, {}, ["python", "-m", "pavedml", "request_retraining"], 0,
                           json.dumps(result) + "\n", []) == result
        finish_step(operator, {}, ["python", "-m", "pavedml", "request_retraining"], 0,
                    json.dumps({**result, "alert": {}}) + "\n", [])  # no alert: nothing sent
    records = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["drift_detected"] and records[0]["summary"] == alert["summary"]
    assert len(sink.messages) == 1
    assert sink.messages[0]["message"]["Subject"].startswith(
        "[pavedml] drift_detected: acme_drift_monitor.request_retraining: DRIFT DETECTED [acme]")
