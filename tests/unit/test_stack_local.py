"""deploy/stack_local.py's readiness wait (`make up-local`), on the states `docker inspect` reports:
a one-shot service that failed and a service that never turns healthy are named with their log;
nothing is ready before every service is."""

from __future__ import annotations

import pytest

from tests.helpers.deploy import deploy_module

pytestmark = pytest.mark.unit


def stack_local():
    return deploy_module("stack_local")


def inspected(status: str, restart: str = "always", exit_code: int = 0, health: str | None = None) -> dict:
    state = {"Status": status, "ExitCode": exit_code}
    if health:
        state["Health"] = {"Status": health}
    return {"Id": "x", "Created": "2026-12-01T00:00:00Z", "State": state, "HostConfig": {"RestartPolicy": {"Name": restart}}}


@pytest.fixture
def stack(monkeypatch, tmp_path):
    sl = stack_local()
    s = sl.Stack("pavedml-unit", tmp_path / ".env", commit="abc")
    monkeypatch.setattr(s, "logs", lambda service, lines=60: f"<last lines of {service}>")
    monkeypatch.setattr(sl.time, "sleep", lambda _s: None)
    return sl, s


def test_ready_when_every_service_is_healthy_and_every_one_shot_exited_0(stack, monkeypatch):
    sl, s = stack
    states = iter([
        {"postgres": inspected("running", health="starting"), "init": inspected("running", restart="no")},
        {"postgres": inspected("running", health="healthy"), "init": inspected("running", restart="no")},
        {"postgres": inspected("running", health="healthy"), "init": inspected("exited", restart="no")},
    ])
    monkeypatch.setattr(s, "containers", lambda: next(states))
    ready = s.wait_ready(["postgres", "init"], timeout=60)
    assert set(ready) == {"postgres", "init"}


def test_a_failed_one_shot_service_is_named_with_its_log(stack, monkeypatch):
    sl, s = stack
    monkeypatch.setattr(s, "containers", lambda: {"airflow-init": inspected("exited", restart="no", exit_code=1)})
    with pytest.raises(sl.StackError, match=r"one-shot service airflow-init exited 1; its log:\n<last lines of airflow-init>"):
        s.wait_ready(["airflow-init"], timeout=60)


def test_a_service_that_never_turns_healthy_is_named_with_its_state_and_log(stack, monkeypatch):
    sl, s = stack
    clock = iter(range(0, 10_000, 50))
    monkeypatch.setattr(sl.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(s, "containers", lambda: {"redis": inspected("running", health="healthy"),
                                                  "mlflow": inspected("running", health="unhealthy")})
    with pytest.raises(sl.StackError) as err:
        s.wait_ready(["redis", "mlflow", "serving"], timeout=120)
    text = str(err.value)
    assert text.startswith("not ready after 120s: mlflow, serving")
    assert "--- mlflow: running (exit 0, health unhealthy)\n<last lines of mlflow>" in text
    assert "--- serving: no container" in text
