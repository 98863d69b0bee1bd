"""
### Drift monitor — `<use case>_drift_monitor`

**What it does.** `wait_for_drift` (a PSI sensor, reschedule mode) waits until the scoring window
(the last `drift.window_days` days ending at `ds`) is scored, then compares it with a reference:
PSI per feature, warn/alert thresholds from the use case (`drift.warn`, `drift.alert`; the form can
change the alert threshold), a minimum sample size below which it refuses to judge. It writes
`drift/dt=<ds>/` (report JSON, PSI table, an Evidently HTML report) and the PSI history
(`drift/psi_history.csv` and `.png`).

**Which reference** (`drift.reference`):
- `training` (default): the champion's training split (quantile bins frozen with the version).
  Seasonal inputs fire every time the season moves away from the training months.
- `rolling`: the `drift.reference_days` (28) days just before the window: catches a sudden change,
  follows slow ones.
- `seasonal`: `drift.reference_days` days centred on the same day `drift.season_days` (365) ago:
  July is compared with last July, so the season stays quiet and a real change shows.
A time-based reference is binned on that period's features; if the period has fewer rows than
`drift.min_samples` (e.g. less than a season of history) the status is `insufficient_data` and
the reason names the period and the days without features. It never falls back to another one.

**What is judged** (`drift.judge_on`, default `[features]`). Always reported (report JSON, PSI
table, history rows `prediction` and `target`): the model's output (score PSI) and the target:
the labels of the window moved back by `label.delay_days` (the newest labels known by `ds`),
against the same reference choice around those days. Name `predictions` / `target` in `judge_on` to make their alert a drift verdict.
`features` fires when at least `drift.min_alert_features` features alert. The PSI table also notes,
for a flagged feature, its PSI against the same period last season ("likely seasonal").

When the verdict is drift, `request_retraining` emits the `<use case>.retrain_request` Asset (extra: PSI table,
window, data hash) — once per window, and not again within `drift.cooldown_days`. The training
pipeline is scheduled on that Asset. Without drift, `request_retraining` is *skipped* and the run
succeeds; the PSI table is in the sensor's log.

**By hand.** Trigger with the form to check a custom window (`window_days`) or threshold
(`alert_threshold`).

**Sensor timeout / soft fail.** The sensor checks every `drift.poke_interval_seconds` (default 600)
without holding a worker slot in between (reschedule mode). If the window is not scored within
`drift.sensor_timeout_minutes` (default 360) it ends as *skipped* (soft fail): check the batch
scoring DAG. Up to four runs may wait at once, so a run waiting for a missing scoring day never
blocks a run for another day. Step errors fail the task normally.

**Failures and what to do.**
- `drift_input_invalid` — the champion has no drift reference (trained before references
  existed): retrain, then rerun.
- status `insufficient_data` naming a reference period — not enough history for `rolling` /
  `seasonal`: wait, lower `drift.reference_days`, or use `reference: training` until a season exists.
- `tracking_unavailable` — MLflow did not answer; the task retries by itself.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from pavedml.airflow import assets
from pavedml.airflow.factory import dag_args, step_argv, step_task, use_cases
from pavedml.airflow.sensors import PsiDriftSensor

PIPELINE = "drift_monitor"
PARAMS = "{{ params | tojson }}"

for uc in use_cases():
    with DAG(
        **dag_args(uc, PIPELINE, __doc__),
        description=f"PSI drift of {uc.name}'s scored data against the champion's reference",
        schedule=uc.schedules.drift_monitor,
        # a run whose sensor waits for a scoring window must not hold back runs for other days
        max_active_runs=4,
        params={
            "window_days": Param(uc.drift.window_days, type="integer", minimum=1, maximum=90,
                                 title="Window (scored days)",
                                 description="Scored days in the window, ending at the run's date."),
            "alert_threshold": Param(uc.drift.alert, type="number", exclusiveMinimum=0, maximum=10,
                                     title="PSI alert threshold",
                                     description=f"PSI at or above which a feature alerts (use case: {uc.drift.alert})."),
        },
    ) as dag:
        wait_for_drift = PsiDriftSensor(task_id="wait_for_drift", argv=step_argv("check_drift", uc.name, PARAMS),
                                        use_case=uc.name, poke_interval=uc.drift.poke_interval_seconds,
                                        timeout=uc.drift.sensor_timeout_minutes * 60)
        request = step_task("request_retraining", uc, params_template=PARAMS,
                            outlets=[assets.retrain_request(uc.name)])
        wait_for_drift >> request
    globals()[dag.dag_id] = dag
