"""The docker guard (pavedml.tools.docker_guard) between a real Docker client and the real local engine:
a step container runs through it exactly as the docker runtime's DockerRunner runs one (create, start, logs,
wait, remove); a privileged container, a bind of `/`, another image, a call outside the step's
endpoints and a container that is not a step's are refused with 403 naming the rule, and nothing
is created on the engine."""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

import pytest
from docker import APIClient
from docker.errors import APIError
from docker.types import Mount

from pavedml.airflow.docker_step import DockerRunner
from pavedml.tools.docker_guard import STEP_LABEL, Engine, GuardServer, Policy
from tests.docker.conftest import docker_local, step_containers

pytestmark = pytest.mark.docker
ENGINE = "unix:///var/run/docker.sock"
OTHER_IMAGE = "pavedml-base:bookworm-py311"  # on the engine (the task image's base), but not allowed


@pytest.fixture(scope="module")
def data_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="pavedml-guard-"))
    folder.chmod(0o777)
    return folder


@pytest.fixture(scope="module")
def guard(task_image, data_folder):
    policy = Policy(images=(task_image,), networks=("none",), mounts=((str(data_folder), str(data_folder)),))
    server = GuardServer(("127.0.0.1", 0), policy, Engine(ENGINE))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def client(guard) -> APIClient:
    return APIClient(base_url=guard, version="auto", timeout=120)  # auto: GET /version through the guard


def step_host_config(client: APIClient, data_folder: Path, **extra) -> dict:
    return client.create_host_config(**{"network_mode": "none", "privileged": False, **extra},
                                     mounts=[Mount(target=str(data_folder), source=str(data_folder), type="bind")])


def refused(call, rule: str) -> APIError:
    before = set(step_containers())
    with pytest.raises(APIError) as info:
        call()
    assert info.value.response.status_code == 403
    assert f"rule {rule}" in str(info.value) and "pavedml docker guard refused" in str(info.value)
    assert set(step_containers()) == before, "a refused call created a container"
    return info.value


def test_a_step_container_runs_through_the_guard(client, task_image, data_folder):
    argv = ["python", "-c", "import pathlib, sys; print('to the log', file=sys.stderr); "
            f"pathlib.Path('{data_folder}/written').write_text('ok'); print('{{\"ok\": 1}}')"]
    from pavedml.settings import Settings

    settings = Settings.from_env({"PAVEDML_DATA_ROOT": str(data_folder), "PAVEDML_IMAGE": task_image,
                                  "PAVEDML_DOCKER_NETWORK": "none", "PAVEDML_DOCKER_DATA_VOLUME": str(data_folder)})
    runner = DockerRunner("guard_test", "telco_churn", settings=settings, client=client)
    code, stdout, tail = runner.run(argv, {"PAVEDML_X": "1"}, {}, logging.getLogger("test_docker_guard"))
    assert (code, stdout.strip()) == (0, '{"ok": 1}')
    assert tail == ["to the log"]
    assert (data_folder / "written").read_text() == "ok"
    assert not step_containers(), "the step container was not removed through the guard"


def test_a_privileged_container_is_refused(client, task_image, data_folder):
    refused(lambda: client.create_container(task_image, ["true"], labels={STEP_LABEL: "x"},
                                            host_config=step_host_config(client, data_folder, privileged=True)),
            "privileged")


def test_a_bind_of_the_host_root_is_refused(client, task_image, data_folder):
    host_config = client.create_host_config(network_mode="none", binds=["/:/host"])
    refused(lambda: client.create_container(task_image, ["true"], labels={STEP_LABEL: "x"}, host_config=host_config),
            "mounts")


def test_another_image_is_refused(client, data_folder):
    assert docker_local().image_exists(OTHER_IMAGE)
    refused(lambda: client.create_container(OTHER_IMAGE, ["true"], labels={STEP_LABEL: "x"},
                                            host_config=step_host_config(client, data_folder)), "image")


def test_host_namespaces_and_capabilities_are_refused(client, task_image, data_folder):
    for extra, rule in (({"pid_mode": "host"}, "namespace"), ({"cap_add": ["SYS_ADMIN"]}, "capabilities"),
                        ({"devices": ["/dev/null:/dev/x"]}, "devices")):
        refused(lambda extra=extra: client.create_container(
            task_image, ["true"], labels={STEP_LABEL: "x"}, host_config=step_host_config(client, data_folder, **extra)),
            rule)
    host_network = client.create_host_config(network_mode="host")
    refused(lambda: client.create_container(task_image, ["true"], labels={STEP_LABEL: "x"},
                                            host_config=host_network), "network")


def test_containers_that_are_not_steps_are_out_of_reach(client, task_image):
    # made directly on the engine (as compose makes postgres or the worker): not through the guard
    other = docker_local().docker("create", "--label", "purpose=not-a-step", "-e", "SECRET=planted-guard",
                                  task_image, "true").stdout.strip()
    try:
        error = refused(lambda: client.inspect_container(other), "step-container")
        assert "planted-guard" not in str(error)
        refused(lambda: client.logs(other), "step-container")
        refused(lambda: client.remove_container(other, force=True), "step-container")
        refused(lambda: client.start(other), "step-container")
        refused(lambda: client.exec_create(other, ["sh"]), "endpoint")
        refused(lambda: client.containers(all=True), "endpoint")
        assert docker_local().docker("inspect", other).returncode == 0
    finally:
        docker_local().docker("rm", "-f", other, check=False)


def test_calls_outside_a_steps_needs_are_refused(client):
    refused(lambda: client.pull("alpine", tag="3"), "endpoint")
    refused(lambda: client.create_volume("x", driver_opts={"type": "none", "o": "bind", "device": "/"}), "endpoint")
    refused(lambda: client.info(), "endpoint")
    assert client.ping() is True
