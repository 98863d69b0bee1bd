"""The production stack (docker-compose.yaml) started from images built on this machine, as `make
up-local` starts it (deploy/stack_local.py): every service healthy, every one-shot service done;
then a user's first day through Airflow's REST API: a feature pipeline day, a training run and
batch scoring, each run by the CeleryExecutor's worker in step containers through the docker
guard; then `down` leaves no container, network or volume of the stack.

Runs with the docker suite (the same engine; the package runs on one xdist worker, in order). A
stack of the user's own (network `pavedml`, volume `pavedml-data`) on the engine makes it fail,
never touched: those names are fixed by docker-compose.yaml.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.docker.conftest import deploy_module
from tests.helpers import procs

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


def test_the_stack_from_local_images_runs_a_feature_day_training_and_scoring(tmp_path):
    sl = stack_local()
    env_file = tmp_path / ".env"
    gen = subprocess.run([sys.executable, str(REPO / "deploy/gen_env.py"), "--path", str(env_file)],
                         capture_output=True, text=True, timeout=60)
    assert gen.returncode == 0, gen.stderr
    stack = sl.Stack(PROJECT, env_file)
    try:
        started_engine = sl.dl.start_engine()
    except sl.StackError as exc:
        pytest.fail(f"the stack test needs a Docker engine: {exc}", pytrace=False)
    if started_engine:
        procs.register("dockerd", int(sl.dl.PIDFILE.read_text().split()[0]))
    before = leftovers(sl)
    assert not any(before.values()), f"a pavedml stack exists on this engine ({before}): `make down` it first"
    t0 = time.monotonic()
    try:
        info = stack.up()
        print("STACK up:", json.dumps(info))
        services = set(stack.compose("config", "--services").stdout.split())
        assert set(info["ready_seconds"]) == services
        state = stack.containers()
        # every image came from this machine: the registry ones through the override
        images = {s: i["Config"]["Image"] for s, i in state.items()}
        assert all(img.startswith("pavedml-") for img in images.values()), images
        smoke = stack.smoke()
        print("STACK smoke:", json.dumps(smoke))
        # the day was scored by the model the training run registered and promoted
        assert smoke["scored_rows"] == sl.SMOKE_ROWS and smoke["scored_by"] == f"{sl.USE_CASE} v1", smoke
        # every step ran in a container of this commit's task image, created by the worker through
        # the docker guard, and none is left behind
        created = [line for line in stack.logs("docker-socket-proxy", 2000).splitlines() if "creating a step container" in line]
        assert len(created) >= 10, created  # 5 feature tasks, 4+ training tasks, scoring
        assert all(line.endswith(f"of pavedml-task:{stack.commit}") for line in created), created
        assert sl.dl.docker("ps", "-a", "-q", "--filter", "label=org.pavedml.step").stdout.split() == []
    finally:
        try:
            stack.down(volumes=True)
        finally:
            print(f"STACK total {time.monotonic() - t0:.0f}s")
            if started_engine:
                sl.dl.stop_engine()
    after = leftovers(sl) if not started_engine else {}
    assert not any(after.values()), after
