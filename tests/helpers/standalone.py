"""``airflow standalone`` (scheduler, DAG processor, triggerer, API server and UI) on a free
loopback port, with its own Airflow home, database (SQLite unless ``extra_env`` names another,
e.g. PostgreSQL), known admin password and data root.

Used by the browser and production-profile tests; ``python -m tests.helpers.standalone <data root>`` starts one by hand.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import REPO
from tests.helpers import procs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Standalone:
    def __init__(self, home: Path, data_root: Path, use_cases_dir: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.username = "admin"
        self.password = secrets.token_urlsafe(12)
        home.mkdir(parents=True, exist_ok=True)
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({self.username: self.password}))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            # standalone starts its components as `airflow ...`: this interpreter's bin first
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            # Airflow 3.3 answers any database error with a bare 500 "Database error" and hides
            # the cause; the harness must see it to tell SQLite's "database is locked" (retried in
            # ``api``) from a real failure
            "AIRFLOW__API__EXPOSE_STACKTRACE": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "3600",
            "PAVEDML_DATA_ROOT": str(data_root),
            "TQDM_DISABLE": "1",
        }
        if use_cases_dir:
            self.env["PAVEDML_USE_CASES_DIR"] = str(use_cases_dir)
        self.env.update(extra_env or {})  # e.g. the production profile: PostgreSQL, LocalExecutor, S3
        self.proc: subprocess.Popen | None = None
        self._token: str | None = None

    def start(self, timeout: float = 240) -> Standalone:
        """Start and wait until the scheduler is healthy; on any failure stop what was started."""
        with (self.home / "standalone.log").open("w") as log:  # the child keeps its own descriptor
            self.proc = procs.spawn("airflow standalone", [sys.executable, "-m", "airflow", "standalone"],
                                    env=self.env, cwd=self.home, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"airflow standalone exited ({self.proc.returncode}); "
                                       f"see {self.home}/standalone.log")
                try:
                    with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=5) as r:
                        health = json.load(r)
                    if health.get("scheduler", {}).get("status") == "healthy":
                        return self
                except (urllib.error.URLError, OSError, ValueError):
                    pass
                time.sleep(2)
            raise RuntimeError(f"airflow standalone not healthy after {timeout}s; see {self.home}/standalone.log")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop standalone's whole session: its components, the LocalExecutor workers and the
        tasks they run (each task in a process group of its own); SIGKILL after the grace period."""
        procs.stop(self.proc)

    # -- REST API (v2), as the admin user
    def token(self) -> str:
        if not self._token:
            req = urllib.request.Request(f"{self.base}/auth/token", method="POST",
                                         data=json.dumps({"username": self.username, "password": self.password}).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                self._token = json.load(r)["access_token"]
        return self._token

    def api(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"{self.base}/api/v2{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.token()}"})
        for attempt in range(6):
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return json.load(r)
            except urllib.error.HTTPError as err:
                # 503 is Airflow's answer when SQLite is locked by the scheduler for a moment
                # (backfill creation says "not supported on SQLite under concurrent access"), and
                # some endpoints answer 500 "database is locked": a transient refusal (nothing was
                # committed), so retry as any HTTP client should; anything else is real
                body = err.read().decode(errors="replace") if err.code == 500 else ""
                if not (err.code == 503 or "database is locked" in body) or attempt == 5:
                    if body:
                        raise urllib.error.HTTPError(err.url, err.code, f"{err.msg}: {body[:2000]}",
                                                     err.headers, None) from None
                    raise
                time.sleep(2 * (attempt + 1))

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api("GET", f"/dags/{dag_id}")
                return
            except urllib.error.HTTPError:
                time.sleep(2)
        raise RuntimeError(f"{dag_id} was not parsed within {timeout}s")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> dict:
        """The run once it ended. Not created yet (a form submit is asynchronous), an API server
        restarting (refused) or its database away for a moment (5xx): keep polling until the deadline."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            except urllib.error.HTTPError as err:
                if err.code != 404 and err.code < 500:
                    raise
                last_error = err
                time.sleep(2)
                continue
            except (urllib.error.URLError, OSError) as err:
                last_error = err
                time.sleep(2)
                continue
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(3)
        raise RuntimeError(f"{dag_id} run {run_id} did not finish within {timeout}s (last API error: {last_error})")

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns?order_by=-start_date")["dag_runs"]


if __name__ == "__main__":
    import tempfile

    s = Standalone(Path(tempfile.mkdtemp(prefix="standalone-")), Path(sys.argv[1]),
                   Path(sys.argv[2]) if len(sys.argv) > 2 else None).start()
    print(f"{s.base} user {s.username} password {s.password} home {s.home}", flush=True)
    try:
        s.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        s.stop()
