"""Airflow callbacks that alert: one alert per final failure of a task (never per retry), one per
missed DAG-run deadline. What an alert holds and where it goes is :mod:`pavedml.alerts`."""

from __future__ import annotations

import html
import json
import logging

from pavedml.alerts import cap_text, send, subject
from pavedml.settings import get_settings

log = logging.getLogger(__name__)


def _is_final_failure(ti) -> bool:
    """Airflow 3 calls ``on_failure_callback`` only when a task ends FAILED (``on_retry_callback``
    when it will be retried): no retry left, a failure that is never retried (a step's exit 3,
    ``AirflowFailException``), or an error before the task ran (a template, a missing connection).
    So the callback alerts whatever the try number; a task instance that says it will be retried
    (a caller passing a retry's context) does not."""
    state = str(getattr(getattr(ti, "state", None), "value", getattr(ti, "state", None)) or "")
    return state != "up_for_retry"


def email_alert(record: dict, context) -> None:
    """E-mail an alert through Airflow's SmtpNotifier when ``PAVEDML_ALERT_EMAIL_TO`` is set."""
    s = get_settings()
    if not s.alert_email_to:
        return
    try:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        body = "<pre>" + html.escape(json.dumps(record, indent=2)) + "</pre>"
        notifier = SmtpNotifier(
            to=[a.strip() for a in s.alert_email_to.split(",") if a.strip()],
            subject=subject(record),
            html_content=body,
            smtp_conn_id=s.alert_smtp_conn_id,
        )
        # notify(), not __call__: no Jinja rendering of a summary that quotes data values
        notifier.notify(context or {})  # type: ignore[arg-type]  # a plain dict outside a task (deadline alerts)
    except Exception as err:  # noqa: BLE001 - alerting must never mask the task's own failure
        log.warning("could not e-mail the alert through %s: %s", s.alert_smtp_conn_id, err)


def on_task_failure(context) -> None:
    ti = context.get("ti") or context.get("task_instance")
    if ti is not None and not _is_final_failure(ti):
        return
    send({
        "kind": "task_failed",
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None),
        "try_number": getattr(ti, "try_number", None),
        "summary": failure_text(context.get("exception")),
    }, context, mailer=email_alert)


def failure_text(exc) -> str:
    """The alert's text: a step's whole one-screen summary, else the error itself, its first line
    first (a template or setup error is named, never only its traceback). Redacted and capped at
    TEXT_LIMIT chars; the first line is always there, whole up to FIRST_LINE_LIMIT chars."""
    if exc is None:
        return "task failed (no exception recorded: see the task log)"
    text = getattr(exc, "summary", None) or str(exc) or type(exc).__name__
    if not getattr(exc, "summary", None) and type(exc).__name__ not in text.split("\n", 1)[0]:
        text = f"{type(exc).__name__}: {text}"
    return cap_text(text)


async def on_deadline_missed(dag_id: str, expected_minutes: float, context=None, **_) -> None:
    """Deadline-alert callback (runs in the triggerer): the DAG run did not finish in time."""
    run = (context or {}).get("dag_run") or {}  # Airflow 3.3 passes the run as its REST representation
    run_id = (run.get("dag_run_id") or run.get("run_id")) if isinstance(run, dict) else getattr(run, "run_id", None)
    send({
        "kind": "deadline_missed",
        "dag_id": dag_id,
        "task_id": None,
        "run_id": run_id,
        "summary": f"DEADLINE MISSED: {dag_id} run {run_id or '-'} has not finished {expected_minutes} min "
                   "after it was queued. Open the run in the Airflow UI: a task may be stuck waiting "
                   "(sensor, missing batch) or the workers may be saturated.",
    }, None, mailer=email_alert)
