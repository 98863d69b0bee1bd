"""Failure alerts: the last thing in a failed task's log, and one alert per final failure.

Goes to a local JSON-lines alerts file by default (``PAVEDML_ALERTS_FILE``); retries do not alert.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

log = logging.getLogger(__name__)


def _is_final_failure(ti) -> bool:
    try:
        return ti.try_number > ti.max_tries
    except (AttributeError, TypeError):
        return True


def on_task_failure(context) -> None:
    ti = context.get("ti") or context.get("task_instance")
    if ti is not None and not _is_final_failure(ti):
        return
    from pavedml.settings import get_settings

    exc = context.get("exception")
    record = {
        "at": datetime.now(UTC).isoformat(),
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None),
        "try_number": getattr(ti, "try_number", None),
        "summary": str(exc)[-4000:] if exc else "task failed",
    }
    path = get_settings().alerts_file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    except OSError as err:  # alerting must never mask the task's own failure
        log.warning("could not write alert to %s: %s", path, err)
