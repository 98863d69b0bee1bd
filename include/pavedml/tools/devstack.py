"""``make airflow``: the local Airflow (API server + UI, scheduler, DAG processor, triggerer) and the
MLflow UI over the local profile's stores, from a plain shell. Ctrl-C stops everything it started.

* Ports: ``AIRFLOW_PORT`` (default 8080) and ``MLFLOW_PORT`` (default 5000), on 127.0.0.1 only. A
  port that is taken is refused before anything starts, naming the variable to change.
* Every component is started with this interpreter's ``airflow`` (the venv's), whatever the PATH.
* It waits until the UI answers and every component reports healthy, then prints the URLs, the
  user and the file holding the generated admin password (the local development profile's only
  credential; ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS`` set by you is kept).
* If a component dies (now or later) it says which, with the end of its log, stops the others and
  exits 1. Component logs: ``$AIRFLOW_HOME/devstack/<component>.log``.
* Stopping (Ctrl-C, SIGTERM, a closed terminal, a component's death) stops each component's whole
  session (``pavedml.tools.procs``): the LocalExecutor workers and the tasks they run, which Airflow
  moves into process groups of their own, included; SIGKILL after ``STOP_GRACE_SECONDS``. If this
  process is killed outright (SIGKILL), a watchdog process does the same.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pavedml.tools import procs

SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
HEALTH_KEYS = ("metadatabase", "scheduler", "dag_processor", "triggerer")
STOP_GRACE_SECONDS = 15


class StackError(RuntimeError):
    """Something the user must fix before the stack can run (a taken port, a failed migration)."""


def port_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "") or str(default)
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise StackError(f"{name}={port} is not a port number (1-65535)")
    return port


def check_port_free(port: int, variable: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise StackError(f"port {port} on 127.0.0.1 is taken (another `make airflow`, or another "
                             f"server): stop it, or choose another port, e.g. {variable}={port + 1} make airflow") from None


def venv_path() -> str:
    """PATH with this interpreter's bin folder first: the components find the venv's ``airflow``."""
    return os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


def airflow_env(port: int) -> dict[str, str]:
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PATH": venv_path(),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__CORE__EXECUTOR": os.environ.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"),
        "AIRFLOW__CORE__AUTH_MANAGER": os.environ.get("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE_AUTH),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
                                                                   "admin:admin"),
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
    }
    return env


def password_file(home: Path) -> Path:
    return Path(os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
                or home / "simple_auth_manager_passwords.json.generated")


class Stack:
    def __init__(self, home: Path, airflow_port: int, mlflow_port: int) -> None:
        self.home = home
        self.airflow_port = airflow_port
        self.mlflow_port = mlflow_port
        self.logs = home / "devstack"
        self.procs: dict[str, subprocess.Popen] = {}
        self.started: dict[int, int | None] = {}  # session id -> its leader's start time
        self._guard: procs.Guard | None = None

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        if self._guard is None:
            self._guard = procs.Guard(STOP_GRACE_SECONDS)
        with (self.logs / f"{name}.log").open("ab") as log:
            self.procs[name] = proc = procs.start(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL)
        self.started[proc.pid] = procs.start_time(proc.pid)
        self._guard.watch(proc.pid)
        # each component leads its own session: its pid is the session id of everything it starts
        (self.logs / "sessions.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))

    def start(self) -> None:
        from pavedml.settings import get_settings

        env = airflow_env(self.airflow_port)
        migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env,
                                 capture_output=True, text=True)
        if migrate.returncode != 0:
            raise StackError("airflow db migrate failed:\n" + tail_text(migrate.stderr or migrate.stdout))
        for name in COMPONENTS:
            self._start(name, [sys.executable, "-m", "airflow", name], env)
        s = get_settings()
        uri = s.mlflow_tracking_uri
        if uri.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(uri.removeprefix("sqlite:///")), exist_ok=True)
        self._start("mlflow", [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                               "--port", str(self.mlflow_port), "--backend-store-uri", uri,
                               "--default-artifact-root", s.mlflow_artifact_root, "--workers", "1"],
                    {**os.environ, "PATH": venv_path()})

    def dead(self) -> tuple[str, int] | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return name, proc.returncode
        return None

    def health(self) -> dict[str, str]:
        """Component -> status from the API server's health endpoint and MLflow's."""
        status: dict[str, str] = {}
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.airflow_port}/api/v2/monitor/health",
                                        timeout=5) as r:
                body = json.load(r)
            for key in HEALTH_KEYS:
                status[key] = (body.get(key) or {}).get("status") or "unknown"
        except (OSError, ValueError):
            status["api-server"] = "not answering"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.mlflow_port}/health", timeout=5) as r:
                status["mlflow"] = "healthy" if r.status == 200 else f"HTTP {r.status}"
        except (OSError, ValueError):
            status["mlflow"] = "not answering"
        return status

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            if (died := self.dead()) is not None:
                raise StackError(self.death_message(*died))
            status = self.health()
            if status and all(v == "healthy" for v in status.values()):
                return
            time.sleep(1)
        waiting = ", ".join(f"{k}: {v}" for k, v in status.items() if v != "healthy")
        raise StackError(f"not ready after {timeout:.0f} s ({waiting}); logs in {self.logs}")

    def death_message(self, name: str, code: int) -> str:
        log = self.logs / f"{name}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return f"{name} exited with code {code}; the end of {log}:\n{tail_text(text)}"

    def stop(self) -> list[int]:
        """SIGTERM to every process of every component's session (and to their descendants that
        left it), SIGKILL after the grace period. A second Ctrl-C while stopping does not cut this
        short (the components would outlive us). Returns the pids that survived SIGKILL."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        left = procs.stop_all(self.started, STOP_GRACE_SECONDS, procs=self.procs.values())
        if self._guard is not None:
            if not left:
                for sid in self.started:
                    self._guard.forget(sid)
            self._guard.close()
        return left


def tail_text(text: str, lines: int = 15) -> str:
    return "\n".join("    " + ln for ln in text.strip().splitlines()[-lines:])


def banner(stack: Stack) -> str:
    users = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    user = users.split(",")[0].split(":")[0]
    return "\n".join([
        "",
        f"Airflow UI  http://127.0.0.1:{stack.airflow_port}   user {user}, password in {password_file(stack.home)}",
        f"MLflow UI   http://127.0.0.1:{stack.mlflow_port}",
        f"Logs        {stack.logs}/<component>.log   (task logs: {stack.home}/logs/)",
        "DAGs are paused when first seen: unpause one in the UI to schedule it; trigger runs with the",
        "play button (a form with the run's parameters). Ctrl-C stops everything.",
        "",
    ])


def main() -> int:
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    try:
        airflow_port = port_from_env("AIRFLOW_PORT", 8080)
        mlflow_port = port_from_env("MLFLOW_PORT", 5000)
        if airflow_port == mlflow_port:
            raise StackError(f"AIRFLOW_PORT and MLFLOW_PORT are both {airflow_port}")
        check_port_free(airflow_port, "AIRFLOW_PORT")
        check_port_free(mlflow_port, "MLFLOW_PORT")
    except StackError as err:
        print(f"make airflow: {err}", file=sys.stderr)
        return 2
    stack = Stack(home, airflow_port, mlflow_port)
    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C, kill, a closed terminal
        signal.signal(sig, on_signal)
    print(f"starting Airflow ({', '.join(COMPONENTS)}) and MLflow; AIRFLOW_HOME={home}", flush=True)
    try:
        stack.start()
        stack.wait_ready(float(os.environ.get("PAVEDML_DEVSTACK_TIMEOUT", "240")))
        print(banner(stack), flush=True)
        while True:
            if (died := stack.dead()) is not None:
                raise StackError(stack.death_message(*died))
            time.sleep(1)
    except StackError as err:
        print(f"make airflow: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
        return 0
    finally:
        if left := stack.stop():
            print(f"make airflow: still alive after SIGKILL: {', '.join(map(str, left))}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
