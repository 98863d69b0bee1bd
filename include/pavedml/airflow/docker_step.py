"""The ``docker`` step runtime: :class:`DockerRunner` runs the step argv in a container of the task
image (``PAVEDML_IMAGE``), for tasks and sensor pokes alike (see :mod:`pavedml.airflow.runners`).

* the environment contract (public and private variables) is the container's environment;
* the container's stderr is relayed into the task log line by line as it happens; its *stdout*
  is read apart once it exits (the step's JSON result line can never be mixed with a log line);
* the image is never pulled (a missing image fails at once, naming the fix); the container is
  unnamed (no name clash with a leftover), unprivileged, runs as the image's non-root user, is
  labelled ``org.pavedml.step=<step>`` and ``org.pavedml.use_case=<use case>``, gets the data root
  mounted at the same path (``PAVEDML_DOCKER_DATA_VOLUME``) and the network ``PAVEDML_DOCKER_NETWORK``;
* it is removed afterwards whatever happened; ``kill()`` force-removes it (SIGKILL and remove in
  one call: Airflow gives ``on_kill`` a few seconds only, and the step, PID 1 of its container,
  would ignore a SIGTERM; steps are safe to kill mid-write).

The Docker API client comes from the Docker provider's :class:`DockerHook` (public API, no
registry login: nothing is pulled) at ``PAVEDML_DOCKER_URL``.
"""

from __future__ import annotations

from typing import Any

from pavedml.airflow.runners import StepLog, StepRun, StepRunner

#: Label of every step container (value: the step name); `docker ps -a --filter label=...` finds them.
STEP_LABEL = "org.pavedml.step"
#: Label naming the use case a step container runs for.
USE_CASE_LABEL = "org.pavedml.use_case"


def _text_chunk(chunk) -> str:
    return chunk.decode(errors="replace") if isinstance(chunk, bytes) else str(chunk)


def docker_client(docker_url: str):
    """docker-py's low-level ``APIClient`` at ``docker_url``, through the provider's DockerHook
    (no connection id: no registry login)."""
    from airflow.providers.docker.hooks.docker import DockerHook

    return DockerHook(docker_conn_id=None, base_url=docker_url).api_client


def require_local_image(client, image: str) -> None:
    """Never pull: a missing task image is a deployment error, named with its fix."""
    if not client.images(name=image):
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(
            f"task image {image!r} is not on this Docker engine and is never pulled: build it here "
            "(make image-local, or docker compose build task-image) or set PAVEDML_IMAGE")


def step_mounts(settings) -> list:
    """The data root, bind-mounted (a host folder) or a named volume, at the same path."""
    if not settings.docker_data_volume:
        return []
    from docker.types import Mount

    source = settings.docker_data_volume
    return [Mount(target=str(settings.data_root), source=source, type="bind" if source.startswith("/") else "volume")]


def step_labels(step: str, use_case: str) -> dict[str, str]:
    return {STEP_LABEL: step, USE_CASE_LABEL: use_case}


class DockerRunner(StepRunner):
    """One container of the task image per run; configured from settings (image, engine URL,
    network, data-root mount) unless given. ``client`` is a docker-py ``APIClient`` (default:
    :func:`docker_client` of the settings' ``docker_url``)."""

    def __init__(self, step: str, use_case: str, *, settings=None, client=None) -> None:
        super().__init__(step, use_case)
        if settings is None:
            from pavedml.settings import get_settings

            settings = get_settings()
        self.settings = settings
        self._client = client
        self._container: tuple[Any, str] | None = None
        self.log = None

    @property
    def client(self):
        if self._client is None:
            self._client = docker_client(self.settings.docker_url)
        return self._client

    def create_spec(self, argv: list[str], env: dict[str, str], private_env: dict[str, str]) -> dict:
        """The container's create arguments (what the Docker engine gets)."""
        client, s = self.client, self.settings
        env, private_env = self.with_source(env, private_env)
        return {
            "image": s.image, "command": list(argv), "environment": {**env, **private_env},
            "labels": step_labels(self.step, self.use_case),
            "host_config": client.create_host_config(network_mode=s.docker_network, mounts=step_mounts(s),
                                                     privileged=False),
        }

    def run(self, argv: list[str], env: dict[str, str], private_env: dict[str, str], log) -> StepRun:
        self.log = log
        client, image = self.client, self.settings.image
        require_local_image(client, image)
        container_id = client.create_container(**self.create_spec(argv, env, private_env))["Id"]
        self._container = (client, container_id)
        log.info("running step in container %s of %s: %s", container_id[:12], image, " ".join(argv))
        relay = StepLog(log)
        try:
            client.start(container_id)
            buffer = ""
            for chunk in client.logs(container_id, stdout=False, stderr=True, stream=True, follow=True):
                buffer += _text_chunk(chunk)
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    relay.line(line)
            if buffer:
                relay.line(buffer)
            code = int(client.wait(container_id)["StatusCode"])
            stdout = client.logs(container_id, stdout=True, stderr=False).decode(errors="replace")
            return StepRun(code, stdout, relay.close())
        finally:
            self._container = None
            try:
                client.remove_container(container_id, force=True)
            except Exception as exc:  # noqa: BLE001 - already gone (kill) is fine
                log.info("container %s already removed: %s", container_id[:12], exc)

    def kill(self) -> None:
        current = self._container
        if not current:
            return
        client, container_id = current
        if self.log is not None:
            self.log.warning("task killed: removing step container %s", container_id[:12])
        try:
            client.remove_container(container_id, force=True)
        except Exception as exc:  # noqa: BLE001 - it may be gone already
            if self.log is not None:
                self.log.info("container %s: %s", container_id[:12], exc)
