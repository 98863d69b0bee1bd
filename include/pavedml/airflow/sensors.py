"""Sensors that wait by running a step: :class:`StepSensor` and the drift monitor's
:class:`PsiDriftSensor` (task ``wait_for_drift``).

Each poke runs the sensor's step (``python -m pavedml <step> ...``) once through the runtime's
:class:`pavedml.airflow.runners.StepRunner` with the step environment contract (a subprocess of
the worker, or a container of the task image), exactly as a task runs its step. The worker never
imports numpy, MLflow or Evidently itself:

* result status ``waiting``: the poke returns False and, in ``reschedule`` mode (the default), the
  task frees its worker slot until the next poke (``poke_interval``);
* any other status: the sensor succeeds and its XCom is the step's result;
* a step that exits non-zero fails the sensor like any task (3: at once; else with retries).

**Timeout.** If the step still waits after ``timeout`` seconds (counted from the first poke of the
first try), the sensor stops: with ``soft_fail=True`` it ends as *skipped*; otherwise it fails, and
the error (the alert's text, on the final failure) is a one-screen summary built from the last
waiting result: ``FAILED <task> [<result's on_timeout>] ...``, its ``reason``, ``evidence`` and
``next`` (the landing check names the missing batch's path as ``batch_missing``). The failure is
retried like a step's exit 1 when ``retry_on_timeout`` (``wait_for_batch``: each retry, after the
DAG's retry delay, looks once more, so a batch late by a few minutes still gets in, as when the
ingest step waited itself), else it is final (``AirflowSensorTimeout``).

**Drift.** ``wait_for_drift`` waits until the scoring window is scored, then its ``check_drift``
result (``no_drift``, ``drift``, ``insufficient_data``: PSI per feature, alerts, window, data
hash, report paths) is its XCom; a run without drift ends without failure, with the PSI table in
the log. Its timeout (default 6 hours) is a soft fail: a missing scoring run is the scoring DAG's
alert, not the monitor's, and the next day's run checks again. Set ``soft_fail=False`` to page on it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from pavedml.airflow.links import STEP_LINKS, links_for
from pavedml.airflow.operators import RunsStep, StepFailed, check_exit, last_summary, parse_result
from pavedml.errors import EXIT_SKIP


class StepSensorTimeout(AirflowSensorTimeout):
    """The step still waited when the sensor's timeout ran out; ``summary`` is the alert's text."""

    summary: str | None = None


class StepSensor(RunsStep, BaseSensorOperator):
    """Poke = run ``step`` once; done unless its JSON result has ``status == "waiting"``.

    Args:
        argv: the step argv (templated); step, use_case: its name and use case.
        runtime: ``local`` or ``docker`` (default: ``PAVEDML_RUNTIME`` when the DAG file is parsed).
        mode, poke_interval, timeout, soft_fail: as for any sensor (default: reschedule, 10 min,
            6 hours, fail on timeout).
        retry_on_timeout: a timeout is a retryable failure (the task's retries apply), not a final one.
    """

    template_fields = ("argv",)
    ui_color = "#fdf1e3"
    operator_extra_links = STEP_LINKS
    links: dict[str, str] | None = None

    def __init__(self, *, argv: list[str], step: str, use_case: str, runtime: str | None = None,
                 mode: str = "reschedule", poke_interval: float = 600,
                 timeout: float = timedelta(hours=6).total_seconds(), soft_fail: bool = False,
                 retry_on_timeout: bool = False, **kwargs: Any) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, timeout=timeout, soft_fail=soft_fail, **kwargs)
        self.retry_on_timeout = retry_on_timeout
        self._init_step(argv, step=step, use_case=use_case, runtime=runtime, env=None, private_env=None)
        self._waiting: dict | None = None

    def poke(self, context) -> PokeReturnValue | bool:
        run = self.run_process()
        if run.returncode not in (0, EXIT_SKIP):  # links to the evidence of a failure, as for a task
            self.links = links_for(None, last_summary(run.stderr_tail))
        check_exit(self.argv, run.returncode, run.stderr_tail)
        result = parse_result(run.stdout)
        self.links = links_for(result)
        if result.get("status") == "waiting":
            self._waiting = result
            self.log.info("%s: not ready: %s", self.step, result.get("reason"))
            return False
        return PokeReturnValue(is_done=True, xcom_value=result)

    def execute(self, context) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            if isinstance(exc, StepSensorTimeout) or not self._waiting:
                raise
            summary = self.timeout_summary(self._waiting)
            self.log.error("%s", summary)
            message = f"{summary.splitlines()[0]} (waited {self.timeout:g}s: {exc})"
            error: StepSensorTimeout | StepFailed = StepFailed(message) if self.retry_on_timeout \
                else StepSensorTimeout(message)
            error.summary = summary + f"\n({self.task_id} timed out after {self.timeout:g}s)"
            raise error from None

    def timeout_summary(self, waiting: dict) -> str:
        """The one-screen failure summary of a wait that timed out (the step's summary shape)."""
        from pavedml.errors import PavedMLError
        from pavedml.summary import RULE, failure_summary

        err = PavedMLError(str(waiting.get("reason") or f"{self.step} still waiting"),
                           details={"evidence": waiting.get("evidence") or [], "next": waiting.get("next")})
        err.reason = str(waiting.get("on_timeout") or "timeout")
        text = failure_summary(self.task_id, self.use_case, waiting.get("ds"), err)
        return "\n".join(line for line in text.splitlines() if line != RULE)


class PsiDriftSensor(StepSensor):
    """``wait_for_drift``: the ``check_drift`` step as a sensor, a soft fail on timeout (see module docstring)."""

    def __init__(self, *, argv: list[str], use_case: str, step: str = "check_drift", soft_fail: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(argv=argv, step=step, use_case=use_case, soft_fail=soft_fail, **kwargs)
