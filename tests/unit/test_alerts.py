"""Alerts go out on the final failure only, never on a retry."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pavedml.alerts import on_task_failure

pytestmark = pytest.mark.unit


def _ti(try_number, max_tries):
    return SimpleNamespace(try_number=try_number, max_tries=max_tries, dag_id="d", task_id="t", run_id="r")


def test_retry_does_not_alert_final_failure_does(tmp_path, monkeypatch):
    monkeypatch.setenv("PAVEDML_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    on_task_failure({"ti": _ti(1, 2), "exception": RuntimeError("first try")})
    on_task_failure({"ti": _ti(2, 2), "exception": RuntimeError("second try")})
    assert not (tmp_path / "alerts.jsonl").exists()
    on_task_failure({"ti": _ti(3, 2), "exception": RuntimeError("FAILED validate_raw_batch [validation_failed]")})
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert len(alerts) == 1 and alerts[0]["summary"].startswith("FAILED validate_raw_batch")
    assert alerts[0]["task_id"] == "t" and alerts[0]["try_number"] == 3
