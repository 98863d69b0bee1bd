"""The ``local`` step runtime: run the step's argv in a subprocess of the worker.

The step's stderr streams into the task log as it happens; its last stdout line (one JSON object)
becomes the task's XCom return value. A non-zero exit fails the task with the tail of stderr,
which ends with the step's one-screen failure summary. Killing the task kills the step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from pavedml.airflow.links import STEP_LINKS
from pavedml.errors import EXIT_NO_RETRY, EXIT_SKIP
from pavedml.redact import clip, redact_urls

#: Plumbing a subprocess needs to start at all (not part of the step's contract).
PLUMBING_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR", "PYTHONDONTWRITEBYTECODE")
STDERR_TAIL_LINES = 60
#: Characters of one stderr line quoted in a failure message (the UI's error line, the alert).
TAIL_LINE_LIMIT = 1000


class StepFailed(AirflowException):
    """A step exited non-zero; the message holds its stderr tail. Retried.

    ``summary`` is the step's whole one-screen summary (the alert's text); the message is its first
    line, because the summary itself is already in the task log, once, at ERROR level."""

    summary: str | None = None


class StepRejectedInput(AirflowFailException):
    """A step rejected its input (exit code 3): the task fails at once, without retries."""

    summary: str | None = None


class StepLog:
    """Relays a step's stderr into the task log, a line at a time, keeping a tail for the failure
    message. The step's one-screen failure summary (between two ``RULE`` lines) is logged once, as
    one ERROR record; everything else at INFO. Every line is redacted first (a URL's password never
    reaches the task log, the UI's error line or an alert). Shared by every runtime."""

    def __init__(self, logger) -> None:
        from pavedml.summary import RULE

        self.log = logger
        self.rule = RULE
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._block: list[str] | None = None

    def line(self, line: str) -> None:
        line = redact_urls(line)
        self.tail.append(line)
        if line == self.rule:
            if self._block is None:
                self._block = []
                return
            block, self._block = self._block, None
            self.log.error("%s", "\n".join(block))
            return
        if self._block is not None:
            self._block.append(line)
        else:
            self.log.info("%s", line)

    def close(self) -> list[str]:
        if self._block:  # an unterminated block (the step died mid-summary): still logged, once
            self.log.error("%s", "\n".join(self._block))
            self._block = None
        return list(self.tail)


class StepProcessMixin:
    """Runs a step's argv as a subprocess with the step environment contract (operators and sensors)."""

    argv: list[str]
    env: dict[str, str] | None
    private_env: dict[str, str] | None
    _proc: subprocess.Popen | None

    def _init_step(self, argv: list[str], env: dict[str, str] | None, private_env: dict[str, str] | None,
                   runtime: str = "local") -> None:
        self.argv = list(argv)
        #: "docker": each run is a container of the task image (the sensor's pokes in the docker runtime)
        self.runtime = runtime
        self._step_container = None
        #: None = the step contract of the worker's environment, resolved when the task runs.
        self.env = None if env is None else dict(env)
        self.private_env = None if private_env is None else dict(private_env)
        self._proc = None

    def contract_environment(self) -> tuple[dict[str, str], dict[str, str]]:
        """(public, private) step environment: the same contract the docker runtime passes."""
        from pavedml.settings import connection_environment, step_environment

        public, private = step_environment()
        public = public if self.env is None else self.env
        private = private if self.private_env is None else self.private_env
        conn_public, conn_private = connection_environment()  # credentials kept in Airflow connections
        return {**public, **conn_public}, {**private, **conn_private}

    def _command(self) -> list[str]:
        argv = list(self.argv)
        if argv and argv[0] == "python":  # the worker's own interpreter (the venv)
            argv[0] = sys.executable or shutil.which("python3") or "python3"
        return argv

    def _environment(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in PLUMBING_ENV if k in os.environ}
        public, private = self.contract_environment()
        return {**env, **public, **private}

    def run_process(self) -> tuple[int, str, list[str]]:
        """Run the step; stream its stderr into the task log. Returns (exit code, stdout, stderr tail)."""
        self.log.info("running step: %s", redact_urls(" ".join(self.argv)))
        if self.runtime == "docker":
            from pavedml.airflow.docker_step import sensor_container

            return sensor_container(self, self.argv, *self.contract_environment())
        relay = StepLog(self.log)
        self._proc = proc = subprocess.Popen(
            self._command(), env=self._environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                relay.line(line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        assert proc.stdout is not None
        stdout = proc.stdout.read()  # stderr is drained by the reader thread, never by communicate()
        proc.wait()
        reader.join(timeout=10)
        return proc.returncode, stdout, relay.close()

    def on_kill(self) -> None:
        if self.runtime == "docker":
            from pavedml.airflow.docker_step import stop_step_container

            stop_step_container(self)
        proc = self._proc
        if proc and proc.poll() is None:
            self.log.warning("killing step process group %s", proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)


class StepOperator(StepProcessMixin, BaseOperator):
    """Run ``python -m pavedml <step> ...`` locally; see module docstring."""

    template_fields = ("argv",)
    ui_color = "#e8f4fa"
    operator_extra_links = STEP_LINKS
    #: link key -> URL of this try's evidence (pushed to XCom by Airflow when the task ends)
    links: dict[str, str] | None = None

    def __init__(self, *, argv: list[str], env: dict[str, str] | None = None,
                 private_env: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_step(argv, env, private_env)

    def execute(self, context) -> Any:
        returncode, stdout, tail = self.run_process()
        return finish_step(self, context, self.argv, returncode, stdout, tail)


def finish_step(operator, context, argv: list[str], returncode: int, stdout: str, tail: list[str]) -> Any:
    """What every runtime does with a finished step: links to its evidence, the exit code mapped
    onto Airflow, the result line parsed (the XCom), the Asset event's extra set."""
    from pavedml.airflow.links import links_for

    if returncode not in (0, EXIT_SKIP):  # links to the evidence of a failure (e.g. Data Docs)
        operator.links = links_for(None, last_summary(tail))
    check_exit(argv, returncode, tail)
    result = parse_result(stdout)
    operator.links = links_for(result if isinstance(result, dict) else None)
    extra = result.get("asset_extra") if isinstance(result, dict) else None
    if extra and operator.outlets:
        for outlet in operator.outlets:
            context["outlet_events"][outlet].extra = dict(extra)
    return result


def check_exit(argv: list[str], returncode: int, tail: list[str]) -> None:
    """Map a step's exit code onto Airflow: 0 ok, 99 skipped, 3 failed without retry, else failed."""
    if returncode == 0:
        return
    if returncode == EXIT_SKIP:
        raise AirflowSkipException(tail[-1] if tail else "step had nothing to do")
    error = StepRejectedInput if returncode == EXIT_NO_RETRY else StepFailed
    step = argv[3] if len(argv) > 3 else " ".join(argv)
    summary = [clip(line, TAIL_LINE_LIMIT) for line in last_summary(tail)]  # bounded and redacted
    if summary:  # the cause first: it is what the alert and the UI's error line show
        exc = error(f"{summary[0]} (step {step} exited with code {returncode}; its summary is logged above)")
        exc.summary = "\n".join(summary) + f"\n(step {step} exited with code {returncode})"
        raise exc
    raise error(f"step {step} exited with code {returncode}; last lines of its stderr:\n"
                + "\n".join(clip(line, TAIL_LINE_LIMIT) for line in tail))


def last_summary(lines: list[str]) -> list[str]:
    """The step's one-screen failure summary (from its ``FAILED <step> [...]`` line) in ``lines``."""
    from pavedml.summary import RULE

    starts = [i for i, line in enumerate(lines) if line.startswith("FAILED ")]
    if not starts:
        return []
    block = []
    for line in lines[starts[-1]:]:
        if line == RULE:
            break
        block.append(line)
    return block


def parse_result(stdout: str) -> Any:
    """The last non-empty stdout line as JSON (the step contract)."""
    lines = [ln for ln in (stdout or "").splitlines() if ln.strip()]
    if not lines:
        raise StepFailed("step printed no result line on stdout")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise StepFailed(f"step's last stdout line is not JSON ({exc}): {lines[-1][:200]}") from None
