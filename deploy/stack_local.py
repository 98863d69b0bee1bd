"""The production stack (docker-compose.yaml) on a machine without an image registry: `make up-local`.

    python deploy/stack_local.py up [--smoke] [--project NAME] [--env-file PATH]
    python deploy/stack_local.py smoke [--project NAME] [--env-file PATH]
    python deploy/stack_local.py down [--volumes] [--project NAME] [--env-file PATH]

up     Docker engine, base image and wheelhouse as `make image-local` does (deploy/docker_local.py);
       builds every image the stack needs (deploy/local/Dockerfile: PostgreSQL, Redis, the S3
       stand-in, the Airflow base; the project's Dockerfile: pavedml-task, -mlflow, -serve,
       -airflow, tagged with the commit); `up -d --no-build` of docker-compose.yaml with the
       override deploy/local/docker-compose.local.yaml (image names only); then waits until every
       long-running service is healthy and every one-shot service has exited 0, and prints the
       seconds each took. With --smoke, then `smoke`.
smoke  Through the stack as a user drives it: lands SMOKE_DAYS days of the Telco sample in the
       landing bucket and runs the first days' feature steps in a one-off task container (the
       history), then through Airflow's REST API (the admin of .env) one feature pipeline day, a
       training run and batch scoring of that day; each must succeed (a failure prints the failed
       task's log). Prints the seconds of each.
down   `down` of the stack (volumes kept unless --volumes); the engine keeps running
       (`make docker-down` stops one that image-local started).

The compose command is `docker compose` when the client has the plugin, else `docker-compose` (v1,
Debian's package). Standard library only. Every failure names the service, image or DAG run and
where its log is.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILES = (REPO / "docker-compose.yaml", REPO / "deploy" / "local" / "docker-compose.local.yaml")
LOCAL_DOCKERFILE = REPO / "deploy" / "local" / "Dockerfile"
LOCAL_TAG = "bookworm"
#: deploy/local/Dockerfile targets -> image names (docker-compose.local.yaml uses them)
LOCAL_TARGETS = {"postgres": "pavedml-local-postgres", "redis": "pavedml-local-redis",
                 "s3": "pavedml-local-s3", "airflow": "pavedml-local-airflow"}
#: the project's Dockerfile targets the compose file names as pavedml-<target>:${GIT_COMMIT}
PROJECT_TARGETS = ("task", "mlflow", "serve", "airflow")
API = "http://127.0.0.1:8080"
USE_CASE = "telco_churn"
SMOKE_START, SMOKE_DAYS, SMOKE_ROWS = "2025-01-01", 9, 1000
#: what a one-off step container may get of the worker's environment (pavedml.settings.step_environment's prefixes)
STEP_ENV_PREFIXES = ("PAVEDML_", "MLFLOW_", "AWS_")
STEP_ENV_DROP = ("PAVEDML_DOCKER_", "PAVEDML_RUNTIME", "PAVEDML_IMAGE", "PAVEDML_DATA_ROOT")

SEED = """
import subprocess, sys
from datetime import date, timedelta
from pavedml.config import get_use_case
from pavedml.tools.demo import land_history
from pavedml.tools.simulate import simulate
uc, start, n, rows = sys.argv[1], date.fromisoformat(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
simulate(uc, start, n, rows_per_day=rows)
try:
    land_history(get_use_case(uc), [(start + timedelta(days=i)).isoformat() for i in range(n - 1)])
except SystemExit:
    print(open("/tmp/seed/logs/pavedml-devrun/history.log").read()[-6000:], file=sys.stderr)
    raise
subprocess.run([sys.executable, "-m", "pavedml", "lake", "push", "--use-case", uc], check=True)
"""


def _docker_local():
    spec = importlib.util.spec_from_file_location("docker_local", REPO / "deploy" / "docker_local.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dl = _docker_local()
StackError = dl.DockerLocalError


@functools.cache
def compose_cmd() -> tuple[str, ...]:
    """`docker compose` (v2 plugin) if the client has it, else Debian's `docker-compose` (v1); asked once."""
    docker = dl.docker_bin()
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return (docker, "compose")
    v1 = shutil.which("docker-compose")
    if v1:
        return (v1,)
    raise StackError("neither `docker compose` nor `docker-compose` is installed: apt-get install docker-compose")


class Stack:
    def __init__(self, project: str = "pavedml", env_file: Path = REPO / ".env", commit: str | None = None) -> None:
        self.project = project
        self.env_file = Path(env_file)
        self.commit = commit or dl.commit_tag()
        self.log_dir = dl.STATE / "stack"

    # -- compose
    def compose(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        cmd = [*compose_cmd(), "--project-name", self.project, "--env-file", str(self.env_file)]
        for path in COMPOSE_FILES:
            cmd += ["-f", str(path)]
        env = {**os.environ, "GIT_COMMIT": self.commit, "LOCAL_IMAGE_TAG": LOCAL_TAG}  # images: built by build()
        out = subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
        if check and out.returncode != 0:
            raise StackError(f"compose {' '.join(args[:2])} failed ({out.returncode}): "
                             f"{(out.stderr or out.stdout)[-3000:]}")
        return out

    def env_values(self) -> dict[str, str]:
        values = {}
        for line in self.env_file.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not name.lstrip().startswith("#"):
                values[name.strip()] = value.strip()
        return values

    # -- images
    def build(self) -> dict[str, float]:
        """Every image of the stack, offline. Returns seconds per image."""
        seconds = {}
        for target, name in LOCAL_TARGETS.items():
            tag = f"{name}:{LOCAL_TAG}"
            seconds[tag] = dl.build_image(target, tag, dockerfile=LOCAL_DOCKERFILE)
        for target in PROJECT_TARGETS:
            tag = f"pavedml-{target}:{self.commit}"
            extra = {"AIRFLOW_IMAGE": f"{LOCAL_TARGETS['airflow']}:{LOCAL_TAG}"} if target == "airflow" else {}
            seconds[tag] = dl.build_image(target, tag, commit=self.commit, args=extra)
        return {k: round(v, 1) for k, v in seconds.items()}

    # -- state
    def containers(self) -> dict[str, dict]:
        """service -> docker inspect of its (newest) container."""
        ids = dl.docker("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.project}").stdout.split()
        if not ids:
            return {}
        found: dict[str, dict] = {}
        for info in json.loads(dl.docker("inspect", *ids).stdout):
            service = info["Config"]["Labels"].get("com.docker.compose.service", "?")
            if service not in found or info["Created"] > found[service]["Created"]:
                found[service] = info
        return found

    def logs(self, service: str, lines: int = 60) -> str:
        info = self.containers().get(service)
        if not info:
            return f"(no container of {service})"
        out = dl.docker("logs", "--tail", str(lines), info["Id"], check=False)
        return (out.stdout + out.stderr)[-6000:]

    def wait_ready(self, services: list[str], timeout: float = 900, since: float | None = None) -> dict[str, float]:
        """Until every long-running service is healthy and every one-shot one exited 0. Returns the
        seconds from ``since`` (monotonic; default now) at which each was first seen so."""
        started, ready = since or time.monotonic(), {}
        while True:
            state = self.containers()
            for service in services:
                info = state.get(service)
                if service in ready or not info:
                    continue
                st = info["State"]
                if info["HostConfig"]["RestartPolicy"]["Name"] == "no":  # one-shot
                    if st["Status"] == "exited":
                        if st["ExitCode"] != 0:
                            raise StackError(f"one-shot service {service} exited {st['ExitCode']}; its log:\n"
                                             + self.logs(service))
                        ready[service] = round(time.monotonic() - started, 1)
                elif st.get("Health", {}).get("Status") == "healthy":
                    ready[service] = round(time.monotonic() - started, 1)
            if len(ready) == len(services):
                return ready
            if time.monotonic() - started > timeout:
                late = sorted(set(services) - set(ready))
                detail = "\n".join(f"--- {s}: {self._state_line(state.get(s))}\n{self.logs(s, 30)}" for s in late)
                raise StackError(f"not ready after {timeout:.0f}s: {', '.join(late)}\n{detail}")
            time.sleep(3)

    @staticmethod
    def _state_line(info: dict | None) -> str:
        if not info:
            return "no container"
        st = info["State"]
        return f"{st['Status']} (exit {st['ExitCode']}, health {st.get('Health', {}).get('Status', '-')})"

    def up(self) -> dict:
        if not self.env_file.exists():
            raise StackError(f"{self.env_file} does not exist: run `make env` (python deploy/gen_env.py)")
        info = {"engine_started": dl.start_engine(), "base_image_seconds": round(dl.ensure_base_image(), 1),
                "wheelhouse_seconds": round(dl.ensure_wheelhouse(), 1), "commit": self.commit}
        t0 = time.monotonic()
        info["images_seconds"] = self.build()
        info["build_seconds"] = round(time.monotonic() - t0, 1)
        services = self.compose("config", "--services").stdout.split()
        t0 = time.monotonic()
        out = self.compose("up", "-d", "--no-build", check=False, timeout=1500)
        if out.returncode != 0:
            raise StackError(f"compose up failed ({out.returncode}): {(out.stderr or out.stdout)[-3000:]}\n"
                             + "\n".join(f"--- {s}: {self._state_line(i)}\n{self.logs(s, 30)}"
                                         for s, i in self.containers().items()
                                         if i["State"]["Status"] != "running" or
                                         i["State"].get("Health", {}).get("Status") == "unhealthy"))
        info["ready_seconds"] = self.wait_ready(services, since=t0)
        info["up_seconds"] = round(time.monotonic() - t0, 1)
        return info

    def down(self, volumes: bool = False) -> None:
        self.compose("down", "--remove-orphans", *(["--volumes"] if volumes else []), timeout=600)

    # -- smoke: what a user does first
    def token(self) -> str:
        env = self.env_values()
        body = json.dumps({"username": env["AIRFLOW_ADMIN_USERNAME"], "password": env["AIRFLOW_ADMIN_PASSWORD"]})
        req = urllib.request.Request(f"{API}/auth/token", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)["access_token"]

    def api(self, token: str, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"{API}/api/v2{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.load(r)
        except urllib.error.HTTPError as err:
            raise StackError(f"{method} {path}: HTTP {err.code} {err.read().decode(errors='replace')[:1000]}") from None

    def seed(self) -> float:
        """The landing batches and the history's feature steps, in a one-off task container with the
        worker's step environment (its secrets through a 0600 env file, removed at once)."""
        worker = self.containers().get("airflow-worker")
        if not worker:
            raise StackError("no airflow-worker container: run `up` first")
        env = [e for e in worker["Config"]["Env"]
               if e.startswith(STEP_ENV_PREFIXES) and not e.startswith(STEP_ENV_DROP)]
        started = time.monotonic()
        fd, path = tempfile.mkstemp(prefix="pavedml-seed-", suffix=".env")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write("\n".join(env) + "\nPAVEDML_DATA_ROOT=/tmp/seed\nAIRFLOW_HOME=/tmp/seed\n")
            out = dl.docker("run", "--rm", "--network", "pavedml", "--env-file", path, f"pavedml-task:{self.commit}",
                            "python", "-c", SEED, USE_CASE, SMOKE_START, str(SMOKE_DAYS), str(SMOKE_ROWS),
                            check=False, timeout=1200)
        finally:
            os.unlink(path)
        if out.returncode != 0:
            raise StackError(f"seeding the history failed ({out.returncode}):\n{(out.stdout + out.stderr)[-4000:]}")
        return time.monotonic() - started

    def run_dag(self, token: str, pipeline: str, ds: str, conf: dict | None = None,
                timeout: float = 1200) -> tuple[float, str]:
        """Trigger ``pipeline`` for ``ds`` and wait; (seconds, run id) on success, else the failed tasks' logs."""
        dag_id = f"{USE_CASE}_{pipeline}"
        self.api(token, "PATCH", f"/dags/{dag_id}", {"is_paused": False})
        run_id = f"stack_smoke__{pipeline}__{ds}__{int(time.time())}"
        started = time.monotonic()
        self.api(token, "POST", f"/dags/{dag_id}/dagRuns",
                 {"dag_run_id": run_id, "logical_date": f"{ds}T00:00:00Z", "conf": conf or {}})
        state = "queued"
        while time.monotonic() - started < timeout:
            state = self.api(token, "GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                break
            time.sleep(5)
        if state != "success":
            tis = self.api(token, "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
            states = {t["task_id"]: t["state"] for t in tis}
            logs = []
            for t in tis:
                if t["state"] not in ("success", "skipped", None):
                    try:
                        text = self.api(token, "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
                                                      f"{t['task_id']}/logs/{max(t.get('try_number') or 1, 1)}")
                        logs.append(f"--- {t['task_id']} ({t['state']})\n{json.dumps(text)[-3000:]}")
                    except StackError as exc:
                        logs.append(f"--- {t['task_id']}: log unavailable ({exc})")
            raise StackError(f"{dag_id} run {run_id}: {state} after {time.monotonic() - started:.0f}s; "
                             f"tasks {states}\n" + "\n".join(logs))
        return time.monotonic() - started, run_id

    def result(self, token: str, pipeline: str, run_id: str, task_id: str) -> dict:
        """A step's result (its JSON line, the task's XCom return value)."""
        return self.api(token, "GET", f"/dags/{USE_CASE}_{pipeline}/dagRuns/{run_id}/taskInstances/{task_id}"
                                      "/xcomEntries/return_value")["value"]

    def smoke(self) -> dict:
        from datetime import date, timedelta

        last = (date.fromisoformat(SMOKE_START) + timedelta(days=SMOKE_DAYS - 1)).isoformat()
        out = {"day": last, "seed_seconds": round(self.seed(), 1)}
        token = self.token()
        for pipeline, conf in (("feature_pipeline", None),
                               ("training_pipeline", {"reason": "make up-local smoke", "training_window_days": 30}),
                               ("batch_scoring", None)):
            seconds, run_id = self.run_dag(token, pipeline, last, conf)
            out[f"{pipeline}_seconds"] = round(seconds, 1)
        scored = self.result(token, "batch_scoring", run_id, "score_customers")
        out["scored_rows"], out["scored_by"] = scored["rows"], f"{scored['model_name']} v{scored['asset_extra']['model_version']}"
        return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "smoke", "down"])
    parser.add_argument("--smoke", action="store_true", help="up: then run the smoke")
    parser.add_argument("--volumes", action="store_true", help="down: remove the volumes too")
    parser.add_argument("--project", default=os.environ.get("COMPOSE_PROJECT_NAME", "pavedml"))
    parser.add_argument("--env-file", type=Path, default=REPO / ".env")
    args = parser.parse_args(argv)
    stack = Stack(args.project, args.env_file)
    try:
        if args.command == "up":
            print("stack_local up:", json.dumps(stack.up()), flush=True)
            if args.smoke:
                print("stack_local smoke:", json.dumps(stack.smoke()), flush=True)
            print(f"stack {args.project} is up: Airflow {API} (user {stack.env_values().get('AIRFLOW_ADMIN_USERNAME')}, "
                  f"password in {args.env_file}), MLflow http://127.0.0.1:5000; `make down` stops it")
        elif args.command == "smoke":
            print("stack_local smoke:", json.dumps(stack.smoke()))
        else:
            stack.down(volumes=args.volumes)
            print(f"stack {args.project} removed" + (" with its volumes" if args.volumes else " (volumes kept)"))
    except StackError as exc:
        print(f"stack_local: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
