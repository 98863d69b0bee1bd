"""Step runners: how one step argv (``python -m pavedml <step> --use-case ... --ds ...``) runs.

A :class:`StepRunner` takes the argv and the step environment contract (public and private
variables) and returns a :class:`StepRun`: the exit code, the whole stdout (its last line is the
step's JSON result) and the tail of stderr. While the step runs, its stderr goes into the task log
line by line through :class:`StepLog` (the one-screen failure summary as one ERROR record, every
line redacted). ``kill()`` stops a running step (the task was killed or marked failed).

Every task and every sensor runs its step through a runner (:class:`pavedml.airflow.operators.StepOperator`,
:class:`pavedml.airflow.sensors.StepSensor`); what a finished step means for Airflow (exit codes,
result, links, Asset extra) is the operators' business, never the runner's. Implementations:

* ``local`` (:class:`LocalRunner`): a subprocess of the worker, in a session of its own;
* ``docker`` (:class:`pavedml.airflow.docker_step.DockerRunner`): a container of the task image.

A third runtime (e.g. a Kubernetes pod per step, the README's production design) is a third
subclass: start the argv with the environment (the private part as a Secret), relay the pod's
stderr through ``StepLog``, read stdout apart, return a ``StepRun``; ``kill()`` deletes the pod.
Then add its name to :data:`RUNNERS`. Nothing else changes: the argv and the environment contract
are the same for every runtime.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections import deque
from typing import NamedTuple

from pavedml.redact import redact_urls

#: Plumbing a subprocess needs to start at all (not part of the step's contract).
PLUMBING_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR", "PYTHONDONTWRITEBYTECODE")
STDERR_TAIL_LINES = 60
#: runtime name -> "module:class" of its runner (imported only when a step runs in that runtime).
RUNNERS = {
    "local": "pavedml.airflow.runners:LocalRunner",
    "docker": "pavedml.airflow.docker_step:DockerRunner",
}


class StepRun(NamedTuple):
    """A finished step: its exit code, its whole stdout, the last lines of its (redacted) stderr."""

    returncode: int
    stdout: str
    stderr_tail: list[str]


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


#: Steps that read a use case's SQL source (``batches.source``): only they get its ``url_env`` variable.
SOURCE_STEPS = ("check_landing_batch", "ingest_raw_batch")


def source_environment(step: str, use_case: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """For a step that reads the use case's SQL source: the worker's ``batches.source.url_env``
    variable (the database URL, password included), to pass as *private* environment; else ``{}``.
    A use-case file that does not load gives ``{}``: the step itself reports the config error."""
    if step not in SOURCE_STEPS or not use_case:
        return {}
    from pavedml.config import get_use_case
    from pavedml.errors import ConfigError

    try:
        source = get_use_case(use_case).batches.source
    except ConfigError:
        return {}
    name = source.url_env if source is not None else None
    env = os.environ if environ is None else environ
    return {name: env[name]} if name and env.get(name) else {}


class StepRunner(ABC):
    """Runs one step argv with the step environment contract; see the module docstring.

    Args:
        step: the step's name (a container's label, a pod's name); never read back from the argv.
        use_case: the use case it runs for (likewise).
    """

    def __init__(self, step: str, use_case: str) -> None:
        self.step = step
        self.use_case = use_case

    @abstractmethod
    def run(self, argv: list[str], env: dict[str, str], private_env: dict[str, str], log) -> StepRun:
        """Run ``argv`` with ``env`` and ``private_env`` (secrets: never rendered, never logged),
        stream its stderr into ``log`` through :class:`StepLog`, wait for it to end."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the running step, if any, at once (steps are safe to kill mid-write)."""

    def with_source(self, env: dict[str, str], private_env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """``(env, private_env)`` plus, privately, the SQL source's URL variable of a step that
        reads it (:func:`source_environment`; never in the public part)."""
        extra = source_environment(self.step, self.use_case)
        if not extra:
            return env, private_env
        return {k: v for k, v in env.items() if k not in extra}, {**private_env, **extra}


class LocalRunner(StepRunner):
    """The step as a subprocess of the worker in a session of its own (``kill`` signals the whole
    group); ``python`` in the argv is the worker's own interpreter (the venv). Besides the contract,
    the subprocess gets only :data:`PLUMBING_ENV` from the worker."""

    def __init__(self, step: str, use_case: str) -> None:
        super().__init__(step, use_case)
        self._proc: subprocess.Popen | None = None
        self.log = None

    @staticmethod
    def command(argv: list[str]) -> list[str]:
        argv = list(argv)
        if argv and argv[0] == "python":
            argv[0] = sys.executable or shutil.which("python3") or "python3"
        return argv

    @staticmethod
    def environment(env: dict[str, str], private_env: dict[str, str]) -> dict[str, str]:
        plumbing = {k: os.environ[k] for k in PLUMBING_ENV if k in os.environ}
        return {**plumbing, **env, **private_env}

    def run(self, argv: list[str], env: dict[str, str], private_env: dict[str, str], log) -> StepRun:
        self.log = log
        relay = StepLog(log)
        env, private_env = self.with_source(env, private_env)
        self._proc = proc = subprocess.Popen(
            self.command(argv), env=self.environment(env, private_env), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
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
        return StepRun(proc.returncode, stdout, relay.close())

    def kill(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        if self.log is not None:
            self.log.warning("killing step process group %s", proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def runner_for(runtime: str, step: str, use_case: str) -> StepRunner:
    """The runner of ``runtime`` (``local``, ``docker``) for one step of one use case."""
    try:
        module, cls = RUNNERS[runtime].split(":")
    except KeyError:
        from pavedml.errors import ConfigError

        raise ConfigError(f"unknown step runtime {runtime!r} (PAVEDML_RUNTIME); known: {', '.join(RUNNERS)}") from None
    return getattr(importlib.import_module(module), cls)(step, use_case)
