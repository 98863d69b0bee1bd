"""The docker suite's engine and task image (deploy/docker_local.py): dockerd is started if none
runs (and stopped afterwards only if started here), the Debian base image is made once, the task
image is built offline from the wheelhouse. Nothing is pulled. If the engine cannot start, every
test of the suite fails with the reason: it is never skipped."""

from __future__ import annotations

import json

import pytest

from tests.helpers import procs
from tests.helpers.deploy import deploy_module


def docker_local():
    return deploy_module("docker_local")


@pytest.fixture(scope="session")
def task_image():
    dl = docker_local()
    try:
        info = dl.up()
    except dl.DockerLocalError as exc:
        pytest.fail(f"the docker runtime suite needs a Docker engine and the task image: {exc}", pytrace=False)
    print("docker_local:", json.dumps(info))
    if info["engine_started"]:  # the session's end check and the watchdog know it too
        procs.register("dockerd", int(dl.PIDFILE.read_text().split()[0]))
    # step containers left by an earlier run that was killed (its teardown never ran) would make
    # every "no container left behind" check fail: start from none, so those checks see only ours
    leftovers = step_containers()
    if leftovers:
        print(f"removing {len(leftovers)} step container(s) left by an interrupted earlier run")
        dl.docker("rm", "-f", *leftovers)
    yield info["image"]
    if info["engine_started"]:
        dl.stop_engine()


def step_containers(all_states: bool = True) -> list[str]:
    """Ids of containers carrying the step label (any state)."""
    out = docker_local().docker("ps", *(["-a"] if all_states else []), "-q", "--filter", "label=org.pavedml.step")
    return out.stdout.split()
