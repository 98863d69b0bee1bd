"""The task that runs a pipeline step: :class:`StepOperator`, for every runtime.

The step's argv (``python -m pavedml <step> ...``) runs through the runtime's
:class:`pavedml.airflow.runners.StepRunner` (a subprocess of the worker, or a container of the task
image) with the step environment contract. The step's stderr streams into the task log as it
happens; its last stdout line (one JSON object) becomes the task's XCom return value. A non-zero
exit fails the task with the step's one-screen failure summary (3: at once, without retries;
99: skipped). Killing the task kills the step.
"""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from pavedml.airflow.links import STEP_LINKS
from pavedml.airflow.runners import PLUMBING_ENV, StepLog, StepRun, StepRunner, runner_for
from pavedml.errors import EXIT_NO_RETRY, EXIT_SKIP
from pavedml.redact import clip, redact_urls

__all__ = ["PLUMBING_ENV", "StepFailed", "StepLog", "StepOperator", "StepRejectedInput", "RunsStep",
           "check_exit", "finish_step", "last_summary", "parse_result"]

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


class RunsStep:
    """What tasks and sensors share: a step argv, its name and use case, the runtime chosen when the
    DAG file is parsed (``PAVEDML_RUNTIME``, unless given), the environment contract resolved when
    the step runs, and the runner that runs it (killed with the task)."""

    argv: list[str]
    log: Any

    def _init_step(self, argv: list[str], *, step: str, use_case: str, runtime: str | None,
                   env: dict[str, str] | None, private_env: dict[str, str] | None) -> None:
        if runtime is None:
            from pavedml.settings import get_settings

            runtime = get_settings().runtime
        self.argv = list(argv)
        self.step = step
        self.use_case = use_case
        self.runtime = runtime
        #: None = the step contract of the worker's environment, resolved when the task runs.
        self.env = None if env is None else dict(env)
        self.private_env = None if private_env is None else dict(private_env)
        self._runner: StepRunner | None = None

    def contract_environment(self) -> tuple[dict[str, str], dict[str, str]]:
        """(public, private) step environment: the worker's step variables
        (:func:`pavedml.settings.step_environment`) plus the credentials kept in Airflow connections."""
        from pavedml.airflow.connections import connection_environment
        from pavedml.settings import step_environment

        public, private = step_environment()
        public = public if self.env is None else self.env
        private = private if self.private_env is None else self.private_env
        conn_public, conn_private = connection_environment()
        return {**public, **conn_public}, {**private, **conn_private}

    def run_process(self) -> StepRun:
        """Run the step through the runtime's runner; its stderr streams into the task log."""
        self.log.info("running step: %s", redact_urls(" ".join(self.argv)))
        public, private = self.contract_environment()
        self._runner = runner_for(self.runtime, self.step, self.use_case)
        try:
            return self._runner.run(self.argv, public, private, self.log)
        finally:
            self._runner = None

    def on_kill(self) -> None:
        runner = self._runner
        if runner is not None:
            runner.kill()


class StepOperator(RunsStep, BaseOperator):
    """Run ``python -m pavedml <step> ...`` in the configured runtime; see the module docstring.

    Args:
        argv: the step argv (templated).
        step: the step's name (default: the task id); use_case: its use case (default: empty).
        runtime: ``local`` or ``docker`` (default: ``PAVEDML_RUNTIME`` when the DAG file is parsed).
        env, private_env: the step environment (default: the worker's contract when the task runs).
    """

    template_fields = ("argv",)
    ui_color = "#e8f4fa"
    operator_extra_links = STEP_LINKS
    #: link key -> URL of this try's evidence (pushed to XCom by Airflow when the task ends)
    links: dict[str, str] | None = None

    def __init__(self, *, argv: list[str], step: str | None = None, use_case: str = "", runtime: str | None = None,
                 env: dict[str, str] | None = None, private_env: dict[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_step(argv, step=step or self.task_id, use_case=use_case, runtime=runtime, env=env,
                        private_env=private_env)

    def execute(self, context) -> Any:
        run = self.run_process()
        return finish_step(self, context, self.argv, run.returncode, run.stdout, run.stderr_tail)


def finish_step(operator, context, argv: list[str], returncode: int, stdout: str, tail: list[str]) -> Any:
    """What every runtime does with a finished step: links to its evidence, the exit code mapped
    onto Airflow, the result line parsed (the XCom), the Asset event's extra set, the step's alert
    (``result["alert"]``) sent."""
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
    alert = result.get("alert") if isinstance(result, dict) else None
    if alert:  # a step's alert (drift detected): recorded and e-mailed here, where the SMTP connection is
        from pavedml.airflow.callbacks import email_alert
        from pavedml.alerts import send

        send(dict(alert), context, mailer=email_alert)
    event = result.get("registry_event") if isinstance(result, dict) else None
    if event:  # a registered version, a promotion, a rejection, a rollback: to chat, never failing the task
        from pavedml.airflow.events import post

        post(dict(event), context)
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
