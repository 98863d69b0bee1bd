"""The ``docker`` step runtime's operator: ``DockerOperator`` running the step argv in the task
image, finished exactly like the local runtime's ``StepOperator``.

On top of DockerOperator it adds what the step contract needs:

* the credentials the step holds in Airflow connections (PAVEDML_MLFLOW_CONN_ID,
  PAVEDML_AWS_CONN_ID), read when the task starts, as private (never rendered) environment;
* the container's last *stdout* line parsed as the step's JSON result (the XCom value, a dict as
  in the local runtime; stdout is read apart from stderr, so a log line can never take its place),
  the Asset event's extra and the links to the evidence;
* the exit code mapped the same way: 3 fails at once without retries, 99 skips, anything else
  fails (retried), the step's one-screen summary first in the error. The container's stderr is
  in the task log line by line as it happens.

Containers are removed after success and failure, stopped and removed when the task is killed or
marked failed (``on_kill``), unnamed (no name clash with a leftover), unprivileged, labelled
``org.pavedml.step=<step>``, and run as the image's non-root user; the image is never pulled.
Imported only when PAVEDML_RUNTIME=docker.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.docker.operators.docker import DockerOperator

from pavedml.airflow.links import STEP_LINKS
from pavedml.airflow.operators import StepLog, finish_step

#: Label of every step container (value: the step name); `docker ps -a --filter label=...` finds them.
STEP_LABEL = "org.pavedml.step"


def _text_chunk(chunk) -> str:
    return chunk.decode(errors="replace") if isinstance(chunk, bytes) else str(chunk)


class DockerStepOperator(DockerOperator):
    """DockerOperator's configuration, templating and UI; the run itself is :func:`run_step_container`
    (stderr streamed to the log, stdout read apart, so the result line is never mixed with a log
    line) and :func:`pavedml.airflow.operators.finish_step`, like the local runtime."""

    operator_extra_links = STEP_LINKS
    links: dict[str, str] | None = None
    _step_container = None

    def execute(self, context) -> Any:
        from pavedml.settings import connection_environment

        public, private = connection_environment()
        self._normalize_mounts()
        returncode, stdout, tail = run_step_container(
            self, self.cli, image=self.image, argv=list(self.command),
            environment={**(self.environment or {}), **public},
            private_environment={**(self._private_environment or {}), **private},
            network_mode=self.network_mode, mounts=self.mounts, labels=self.labels)
        return finish_step(self, context, list(self.command), returncode, stdout, tail)

    def on_kill(self) -> None:
        stop_step_container(self)


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


def run_step_container(runner, client, *, image: str, argv: list[str], environment: dict[str, str],
                       private_environment: dict[str, str], network_mode: str, mounts: list,
                       labels: dict[str, str] | None) -> tuple[int, str, list[str]]:
    """Run one step argv in ``image``: stderr streams into ``runner.log`` line by line (its last
    lines kept for the failure message), stdout is read apart once the container exits (the result
    line). Returns (exit code, stdout, stderr tail) like a subprocess. The container is removed
    afterwards whatever happened; ``runner._step_container`` lets ``on_kill`` stop it."""

    require_local_image(client, image)
    container = client.create_container(
        image=image, command=argv, environment={**environment, **private_environment}, labels=labels or {},
        host_config=client.create_host_config(network_mode=network_mode, mounts=mounts, privileged=False))
    container_id = container["Id"]
    runner._step_container = (client, container_id)
    runner.log.info("running step in container %s of %s: %s", container_id[:12], image, " ".join(argv))
    relay = StepLog(runner.log)
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
        return code, stdout, relay.close()
    finally:
        runner._step_container = None
        try:
            client.remove_container(container_id, force=True)
        except Exception as exc:  # noqa: BLE001 - already gone (on_kill) is fine
            runner.log.info("container %s already removed: %s", container_id[:12], exc)


def stop_step_container(runner) -> None:
    """on_kill: kill and remove the step's running container, if any."""
    current = getattr(runner, "_step_container", None)
    if not current:
        return
    client, container_id = current
    # One call that kills (SIGKILL) and removes: Airflow's supervisor gives on_kill a few seconds
    # only, and the step (PID 1 in its container) would ignore a SIGTERM. Steps are safe to kill
    # mid-write (temp + rename).
    runner.log.warning("task killed: removing step container %s", container_id[:12])
    try:
        client.remove_container(container_id, force=True)
    except Exception as exc:  # noqa: BLE001 - it may be gone already
        runner.log.info("container %s: %s", container_id[:12], exc)


def sensor_container(runner, argv: list[str], public: dict[str, str], private: dict[str, str]) -> tuple[int, str, list[str]]:
    """The PSI sensor's poke in the docker runtime: the same container run, configured from settings."""
    from docker import APIClient

    from pavedml.settings import get_settings

    s = get_settings()
    return run_step_container(
        runner, APIClient(base_url=s.docker_url), image=s.image, argv=argv, environment=public,
        private_environment=private, network_mode=s.docker_network, mounts=step_mounts(s),
        labels={STEP_LABEL: argv[3] if len(argv) > 3 else "step", "org.pavedml.use_case": argv[5] if len(argv) > 5 else ""})
