"""The production stack (docker-compose.yaml) started from images built on this machine by `make
up-local`, typed as a user types it (deploy/stack_local.py): every service healthy, every one-shot
service done; then a user's first day through Airflow's REST API: a feature pipeline day, a
training run and batch scoring, each run by the CeleryExecutor's worker in step containers through
the docker guard; then `make down VOLUMES=1` leaves no container, network or volume of the stack.

Runs with the docker suite (the same engine; the package runs on one xdist worker, in order). A
stack of the user's own (network `pavedml`, volume `pavedml-data`) on the engine makes it fail,
never touched: those names are fixed by docker-compose.yaml.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import procs
from tests.helpers.deploy import deploy_module

pytestmark = [pytest.mark.docker, pytest.mark.stack]
PROJECT = "pavedml-stacktest"


def stack_local():
    return deploy_module("stack_local")


def leftovers(sl) -> dict[str, list[str]]:
    docker = sl.dl.docker
    return {
        "containers": docker("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout.split(),
        "networks": [n for n in docker("network", "ls", "--format", "{{.Name}}").stdout.split()
                     if n in ("pavedml", "pavedml-docker-api")],
        "volumes": [v for v in docker("volume", "ls", "-q").stdout.split()
                    if v == "pavedml-data" or v.startswith(f"{PROJECT}_")],
    }


def make(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """`make ...` in the checkout from a login shell's environment (no venv on PATH)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "PAVEDML_", "VIRTUAL_ENV", "MLFLOW_", "PYTEST", "COMPOSE_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and not Path(p, "activate").exists())
    return subprocess.run(["make", "--no-print-directory", *args, f"COMPOSE_PROJECT_NAME={PROJECT}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def printed(out: str, what: str) -> dict:
    """The JSON that stack_local printed after ``stack_local <what>:``."""
    lines = [line for line in out.splitlines() if line.startswith(f"stack_local {what}: ")]
    assert lines, f"no `stack_local {what}:` line in:\n{out[-3000:]}"
    return json.loads(lines[-1].split(": ", 1)[1])


def test_make_up_local_runs_a_feature_day_training_and_scoring_and_make_down_removes_it(tmp_path):
    sl = stack_local()
    env_file = tmp_path / ".env"  # what `make env` writes, here outside the checkout
    try:
        started_engine = sl.dl.start_engine()
    except sl.StackError as exc:
        pytest.fail(f"the stack test needs a Docker engine: {exc}", pytrace=False)
    if started_engine:
        procs.register("dockerd", int(sl.dl.PIDFILE.read_text().split()[0]))
    before = leftovers(sl)
    assert not any(before.values()), f"a pavedml stack exists on this engine ({before}): `make down` it first"
    stack = sl.Stack(PROJECT, env_file)
    t0 = time.monotonic()
    try:
        up = make("up-local", f"ENV_FILE={env_file}", timeout=2400)
        print(up.stdout[-3000:])
        assert up.returncode == 0, (up.stdout + up.stderr)[-6000:]
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        info, smoke = printed(up.stdout, "up"), printed(up.stdout, "smoke")
        print("STACK up:", json.dumps(info), "\nSTACK smoke:", json.dumps(smoke))
        services = set(stack.compose("config", "--services").stdout.split())
        assert set(info["ready_seconds"]) == services
        # every image came from this machine: the registry ones through the override
        images = {s: i["Config"]["Image"] for s, i in stack.containers().items()}
        assert set(images) == services and all(img.startswith("pavedml-") for img in images.values()), images
        # the day was scored by the model the training run registered and promoted
        assert smoke["scored_rows"] == sl.SMOKE_ROWS and smoke["scored_by"] == f"{sl.USE_CASE} v1", smoke
        # every step ran in a container of this commit's task image, created by the worker through
        # the docker guard, and none is left behind
        created = [line for line in stack.logs("docker-socket-proxy", 2000).splitlines() if "creating a step container" in line]
        assert len(created) >= 10, created  # 5 feature tasks, 4+ training tasks, scoring
        assert all(line.endswith(f"of pavedml-task:{stack.commit}") for line in created), created
        assert sl.dl.docker("ps", "-a", "-q", "--filter", "label=org.pavedml.step").stdout.split() == []
        # again on the running stack: nothing rebuilt from scratch, no long-running service recreated
        running = {s: i["Id"] for s, i in stack.containers().items() if i["HostConfig"]["RestartPolicy"]["Name"] != "no"}
        t1 = time.monotonic()
        again = make("up-local", f"ENV_FILE={env_file}", "SMOKE=0", timeout=1200)
        assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
        print(f"STACK up again {time.monotonic() - t1:.0f}s")
        assert "stack_local smoke:" not in again.stdout
        assert {s: i["Id"] for s, i in stack.containers().items() if s in running} == running
    finally:
        down = make("down", f"ENV_FILE={env_file}", "VOLUMES=1", timeout=600)
        print(f"STACK total {time.monotonic() - t0:.0f}s")
        after = leftovers(sl)
        if started_engine:
            sl.dl.stop_engine()
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(after.values()), after
