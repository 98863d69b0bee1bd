"""``make airflow`` from a plain shell (no activated venv) on non-default ports: it waits until the UI
answers, prints the URLs and the password file, serves both use cases' DAGs, exits naming a
component that dies, refuses a taken port in one line, and leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.firsthour.test_ways_to_run import plain_env, second_use_case
from tests.helpers import procs
from tests.helpers.standalone import free_port

pytestmark = pytest.mark.firsthour


def processes_with(marker: str) -> list[int]:
    """Pids of the stack under test: whose environment holds ``marker`` (the test's private
    AIRFLOW_HOME), or whose session is one a component leads (Airflow's processes rewrite their
    title over their environment, so the session is what finds a LocalExecutor worker)."""
    home = Path(marker.split("=", 1)[1])
    sessions_file = home / "devstack" / "sessions.json"
    sessions = set(json.loads(sessions_file.read_text()).values()) if sessions_file.exists() else set()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            sid = int(stat.rsplit(")", 1)[1].split()[3])
            if sid in sessions or marker.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_gone(marker: str, timeout: float = 40) -> list[int]:
    deadline = time.monotonic() + timeout
    left = processes_with(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_with(marker)
    return left


def kill_all(marker: str) -> None:
    for pid in processes_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_make_airflow_from_a_plain_shell_on_other_ports(tmp_path):
    """After a run made with ``make run`` (what the demo does), the UI lists it with its logical
    date, no reserialize needed, and unpausing its DAG schedules nothing for a day without data."""
    from datetime import UTC, datetime

    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate

    second_use_case(tmp_path / "use_cases")
    today = datetime.now(UTC).date()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "data"))
        mp.setenv("PAVEDML_USE_CASES_DIR", str(tmp_path / "use_cases"))
        get_settings.cache_clear()
        simulate("telco_churn", today, 1, rows_per_day=200)
    get_settings.cache_clear()
    made = subprocess.run(["make", "-s", "-C", str(REPO), "run", "DAG=telco_churn_feature_pipeline",
                           f"DATE={today}"], env=plain_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stdout + made.stderr
    a_port, m_port = free_port(), free_port()
    env = plain_env(tmp_path, {"AIRFLOW_PORT": str(a_port), "MLFLOW_PORT": str(m_port)})
    assert "/.venv/bin" not in env["PATH"]
    marker = f"AIRFLOW_HOME={tmp_path / 'airflow'}"
    out = (tmp_path / "make-airflow.out").open("w+")
    proc = procs.spawn("make airflow", ["make", "-s", "-C", str(REPO), "airflow"], env=env, stdout=out,
                       stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        text = ""
        while time.monotonic() < deadline and "Airflow UI" not in text:
            assert proc.poll() is None, Path(out.name).read_text()
            time.sleep(1)
            text = Path(out.name).read_text()
        assert f"Airflow UI  http://127.0.0.1:{a_port}" in text, text
        assert f"MLflow UI   http://127.0.0.1:{m_port}" in text, text
        pw_file = tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated"
        assert f"password in {pw_file}" in text
        # the banner comes only once the UI answers and every component is healthy
        with urllib.request.urlopen(f"http://127.0.0.1:{a_port}/api/v2/monitor/health", timeout=10) as r:
            health = json.load(r)
        assert {health[k]["status"] for k in ("metadatabase", "scheduler", "dag_processor", "triggerer")} == {"healthy"}
        with urllib.request.urlopen(f"http://127.0.0.1:{m_port}/health", timeout=10) as r:
            assert r.status == 200
        # sign in with the printed password file; both use cases' DAGs are served
        password = json.loads(pw_file.read_text())["admin"]
        req = urllib.request.Request(f"http://127.0.0.1:{a_port}/auth/token", method="POST",
                                     data=json.dumps({"username": "admin", "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            token = json.load(r)["access_token"]
        dag_ids: set[str] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not {"telco_churn_feature_pipeline", "acme_churn_feature_pipeline"} <= dag_ids:
            req = urllib.request.Request(f"http://127.0.0.1:{a_port}/api/v2/dags?limit=100",
                                         headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                dag_ids = {d["dag_id"] for d in json.load(r)["dags"]}
            time.sleep(2)
        assert {"telco_churn_feature_pipeline", "acme_churn_feature_pipeline"} <= dag_ids, dag_ids

        def api(method: str, path: str, body: dict | None = None):
            req = urllib.request.Request(f"http://127.0.0.1:{a_port}/api/v2{path}", method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.load(r)

        runs = api("GET", "/dags/telco_churn_feature_pipeline/dagRuns")["dag_runs"]
        assert [(r["logical_date"][:10], r["state"]) for r in runs] == [(today.isoformat(), "success")], runs
        api("PATCH", "/dags/telco_churn_feature_pipeline", {"is_paused": False})
        time.sleep(20)  # the scheduler's chance to make a run it must not make
        runs = api("GET", "/dags/telco_churn_feature_pipeline/dagRuns")["dag_runs"]
        assert len(runs) == 1, runs  # today's tick already has its run: nothing for a day without data

        # a component dies: make airflow says which, stops the rest and exits non-zero
        triggerer = [p for p in processes_with(marker) if "airflow triggerer" in cmdline(p)]
        assert triggerer, [cmdline(p) for p in processes_with(marker)]
        os.kill(triggerer[0], signal.SIGKILL)
        assert proc.wait(timeout=90) != 0
        text = Path(out.name).read_text()
        assert "make airflow: triggerer exited with code" in text, text
        assert "Traceback" not in text.split("make airflow: triggerer exited")[0][-200:]
        assert not wait_gone(marker), [cmdline(p) for p in processes_with(marker)]
    finally:
        procs.stop(proc)
        kill_all(marker)


def test_make_airflow_stops_everything_on_ctrl_c(tmp_path):
    second_use_case(tmp_path / "use_cases")
    env = plain_env(tmp_path, {"AIRFLOW_PORT": str(free_port()), "MLFLOW_PORT": str(free_port())})
    marker = f"AIRFLOW_HOME={tmp_path / 'airflow'}"
    out = tmp_path / "make-airflow.out"
    with out.open("w") as fh:
        proc = procs.spawn("make airflow", ["make", "-s", "-C", str(REPO), "airflow"], env=env, stdout=fh,
                           stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and "Airflow UI" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            time.sleep(1)
        assert len(processes_with(marker)) >= 6  # make, supervisor, four components, MLflow
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        assert proc.wait(timeout=90) in (0, 2, -signal.SIGINT), out.read_text()
        assert not wait_gone(marker), [cmdline(p) for p in processes_with(marker)]
    finally:
        procs.stop(proc)
        kill_all(marker)


def test_make_airflow_refuses_a_taken_port_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = plain_env(tmp_path, {"AIRFLOW_PORT": str(port), "MLFLOW_PORT": str(free_port())})
        started = time.monotonic()
        proc = subprocess.run(["make", "-s", "-C", str(REPO), "airflow"], env=env, capture_output=True,
                              text=True, timeout=120)
    assert proc.returncode != 0
    assert f"port {port} on 127.0.0.1 is taken" in proc.stderr and f"AIRFLOW_PORT={port + 1}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60  # refused before anything starts
    assert not (tmp_path / "airflow" / "devstack").exists()
    proc = subprocess.run(["make", "-s", "-C", str(REPO), "airflow"], capture_output=True, text=True, timeout=120,
                          env=plain_env(tmp_path, {"AIRFLOW_PORT": "http", "MLFLOW_PORT": "5000"}))
    assert proc.returncode != 0 and "AIRFLOW_PORT='http' is not a port number" in proc.stderr, proc.stderr
