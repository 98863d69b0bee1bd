"""A step waits (bounded by PAVEDML_TRACKING_WAIT_SECONDS) for an MLflow tracking server that does
not answer when it starts, and goes on as soon as it answers; past the bound it fails with the
retryable ``tracking_unavailable``. A server restarting for a minute costs a step a minute, not
a failed try."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest

from tests.helpers.standalone import free_port

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _own_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: restore it for the tests after these."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(name, "unset-by-test")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # each request fails at once: the wait is ours


def _settings(port: int, wait: str, tmp_path):
    from pavedml.settings import Settings

    return Settings.from_env({"PAVEDML_DATA_ROOT": str(tmp_path), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
                              "PAVEDML_TRACKING_WAIT_SECONDS": wait})


def test_a_step_waits_for_a_tracking_server_that_comes_back(tmp_path, caplog, monkeypatch):
    """The server refuses the first two requests (restarting), then answers: the step goes on."""
    import mlflow
    import requests

    from pavedml.adapters.tracking import connect

    calls: list[float] = []

    def restarting(name):
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise requests.exceptions.ConnectionError("Connection refused")
        return SimpleNamespace(experiment_id="7", name=name)

    monkeypatch.setattr(mlflow, "get_experiment_by_name", restarting)
    caplog.set_level(logging.WARNING, logger="pavedml.adapters.tracking")
    _, exp_id = connect(_settings(free_port(), "60", tmp_path), "telco_churn")
    assert exp_id == "7" and len(calls) == 3
    assert [round(b - a) for a, b in zip(calls, calls[1:], strict=False)] == [2, 4]  # backing off
    assert caplog.text.count("waiting for it") == 2 and "PAVEDML_TRACKING_WAIT_SECONDS" in caplog.text


def test_past_the_bound_the_step_fails_retryably_naming_the_server(tmp_path):
    from pavedml.adapters.tracking import connect
    from pavedml.errors import TrackingUnavailableError

    port = free_port()  # nothing listens
    started = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match=f"MLflow tracking server http://127.0.0.1:{port} is unreachable") as err:
        connect(_settings(port, "1", tmp_path), "telco_churn")
    assert err.value.exit_code == 1
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("raw", ["soon", "-5", "nan"])
def test_a_wrong_wait_setting_is_named(raw, tmp_path):
    from pavedml.errors import ConfigError
    from pavedml.settings import Settings

    with pytest.raises(ConfigError, match=f"PAVEDML_TRACKING_WAIT_SECONDS={raw!r}"):
        Settings.from_env({"PAVEDML_DATA_ROOT": str(tmp_path), "PAVEDML_TRACKING_WAIT_SECONDS": raw})
