"""Alerts go out on every final failure (whatever the try number: a step that exits 3 fails on its
first try without a retry), never on a retry."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pavedml.alerts import on_task_failure

pytestmark = pytest.mark.unit


def _ti(try_number, max_tries, state="failed"):
    return SimpleNamespace(try_number=try_number, max_tries=max_tries, dag_id="d", task_id="t", run_id="r",
                           state=state)


def test_retry_does_not_alert_final_failure_does(tmp_path, monkeypatch):
    monkeypatch.setenv("PAVEDML_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    on_task_failure({"ti": _ti(1, 2, "up_for_retry"), "exception": RuntimeError("first try")})
    on_task_failure({"ti": _ti(2, 2, "up_for_retry"), "exception": RuntimeError("second try")})
    assert not (tmp_path / "alerts.jsonl").exists()
    on_task_failure({"ti": _ti(3, 2), "exception": RuntimeError("FAILED ingest_raw_batch [batch_missing]")})
    # a failure that is never retried (exit 3: bad input) fails on try 1 of 3: it is final too
    on_task_failure({"ti": _ti(1, 2), "exception": RuntimeError("FAILED validate_raw_batch [validation_failed]")})
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
        on_task_failure({"ti": _ti(3, 2), "exception": RuntimeError(summary)})
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
    on_task_failure({"ti": _ti(3, 2), "exception": RuntimeError("FAILED x [y]")})
    assert json.loads((tmp_path / "alerts.jsonl").read_text())["summary"] == "FAILED x [y]"


def test_deadline_callback_alerts_with_the_run(tmp_path, monkeypatch):
    import asyncio

    from pavedml.alerts import on_deadline_missed

    monkeypatch.setenv("PAVEDML_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    asyncio.run(on_deadline_missed(dag_id="telco_churn_feature_pipeline", expected_minutes=60,
                                   context={"dag_run": {"dag_run_id": "scheduled__2025-01-03"}}))
    alert = json.loads((tmp_path / "alerts.jsonl").read_text())
    assert alert["kind"] == "deadline_missed" and alert["run_id"] == "scheduled__2025-01-03"
    assert alert["summary"].startswith("DEADLINE MISSED: telco_churn_feature_pipeline run scheduled__2025-01-03")


def test_every_dag_carries_a_deadline_alert_from_its_config():
    from pavedml.config import get_use_case
    from pavedml.orchestration import deadline

    uc = get_use_case("telco_churn")
    alert = deadline(uc, "feature_pipeline")
    assert alert.interval.total_seconds() == uc.schedules.expected_duration_minutes * 60
    assert alert.callback.path == "pavedml.alerts.on_deadline_missed"
    assert alert.callback.kwargs == {"dag_id": "telco_churn_feature_pipeline",
                                     "expected_minutes": uc.schedules.expected_duration_minutes}
