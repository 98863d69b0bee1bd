"""PsiDriftSensor (task ``wait_for_drift``): waits for the scoring window, then compares it with the
champion's drift reference.

Each poke runs the ``check_drift`` step (``python -m pavedml check_drift ...``) with the step
environment contract: a subprocess of the worker in the local runtime, a container of the task
image in the docker runtime. The worker never imports numpy, MLflow or Evidently itself:

* status ``waiting`` (the window is not fully scored yet): the poke returns False and, in
  ``reschedule`` mode (the default), the task frees its worker slot until the next poke
  (``poke_interval``, default 10 minutes);
* any other status (``no_drift``, ``drift``, ``insufficient_data``): the sensor succeeds and its
  XCom is the check's result (PSI per feature, alerts, window, data hash, report paths). A run
  without drift therefore ends without failure, with the PSI table in the log.

**Timeout and soft fail.** If the window is still not scored after ``timeout`` (default 6 hours
after the first poke), the sensor stops. With ``soft_fail=True`` (the default here) it ends as
*skipped*, not failed: a missing scoring run is the scoring DAG's alert, not the monitor's, and
the next day's run checks again. Set ``soft_fail=False`` to page on it. A step that exits non-zero
(unreachable MLflow, a corrupt reference) fails the sensor like any task (with retries).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from pavedml.airflow.links import STEP_LINKS, links_for
from pavedml.airflow.operators import StepProcessMixin, check_exit, parse_result


class PsiDriftSensor(StepProcessMixin, BaseSensorOperator):
    template_fields = ("argv",)
    ui_color = "#fdf1e3"
    operator_extra_links = STEP_LINKS
    links: dict[str, str] | None = None

    def __init__(self, *, argv: list[str], mode: str = "reschedule", poke_interval: float = 600,
                 timeout: float = timedelta(hours=6).total_seconds(), soft_fail: bool = True,
                 runtime: str | None = None, **kwargs: Any) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, timeout=timeout, soft_fail=soft_fail, **kwargs)
        if runtime is None:  # the configured step runtime: in "docker" every poke is a container
            from pavedml.settings import get_settings

            runtime = get_settings().runtime
        self._init_step(argv, None, None, runtime)

    def poke(self, context) -> PokeReturnValue | bool:
        returncode, stdout, tail = self.run_process()
        check_exit(self.argv, returncode, tail)
        result = parse_result(stdout)
        self.links = links_for(result)
        if result.get("status") == "waiting":
            self.log.info("scoring window not ready: %s", result.get("reason"))
            return False
        return PokeReturnValue(is_done=True, xcom_value=result)
