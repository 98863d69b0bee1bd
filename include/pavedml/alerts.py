"""Sending alerts (no Airflow at import): :func:`send` records one and e-mails it. The Airflow
callbacks that decide when a task failure or a missed deadline alerts live in
:mod:`pavedml.airflow.callbacks`; a step's own alert (the drift monitor's) is part of its result and
sent by its task (:func:`pavedml.airflow.operators.finish_step`).

Every alert is appended to the local JSON-lines alerts file (``PAVEDML_ALERTS_FILE``), the record
an on-call engineer can always grep. The Airflow callbacks also e-mail it when
``PAVEDML_ALERT_EMAIL_TO`` is set, through Airflow's ``SmtpNotifier`` over the SMTP connection
``PAVEDML_ALERT_SMTP_CONN_ID`` (default ``smtp_default``), on the worker: a step never holds that
connection.
The alert's first line names the cause (the step's summary first).

Every record is redacted before it goes anywhere (:func:`pavedml.redact.redact`: no password of a
URL reaches the file or the mail), and its text is capped at :data:`TEXT_LIMIT` characters with
the first line kept whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from pavedml.redact import clip, redact

log = logging.getLogger(__name__)
#: Characters of an alert's text (the summary); its first line gets at most FIRST_LINE_LIMIT of them.
TEXT_LIMIT = 4000
FIRST_LINE_LIMIT = 1000


def _write_file(record: dict) -> None:
    from pavedml.settings import get_settings

    path = get_settings().alerts_file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    except OSError as err:  # alerting must never mask the task's own failure
        log.warning("could not write alert to %s: %s", path, err)


def subject(record: dict) -> str:
    first = (record.get("summary") or "").strip().splitlines()[:1]
    where = record.get("dag_id") or "-"
    if record.get("task_id"):
        where += f".{record['task_id']}"
    return f"[pavedml] {record['kind']}: {where}: {(first[0] if first else '')[:160]}"


def send(record: dict, context=None, mailer: Callable[[dict, object], None] | None = None) -> dict:
    """Record the alert in the alerts file, redacted; hand it to ``mailer(record, context)`` too
    when given (the Airflow side passes :func:`pavedml.airflow.callbacks.email_alert`)."""
    record = redact({"at": datetime.now(UTC).isoformat(), **record})
    _write_file(record)
    if mailer is not None:
        mailer(record, context)
    return record


def cap_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` redacted, at most ``limit`` chars (plus a marker), its first line kept on top."""
    first, _, rest = redact(str(text)).partition("\n")
    first = clip(first, FIRST_LINE_LIMIT)
    room = max(limit - len(first) - 1, 0)
    if len(rest) > room:
        rest = f"{rest[:room]}... ({len(rest)} chars)"
    return f"{first}\n{rest}" if rest else first
