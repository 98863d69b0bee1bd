"""
### Performance monitor — `<use case>_performance_monitor`

**What it does.** Joins the scored days of the last `performance.lookback_days` days with the labels
that have landed for them (label delay honoured: a day without labels is *waiting*, measured when
they land) and records the realized metrics per day and model version (champion, and the shadow
challenger where it scored): the primary metric and the others with sample sizes and confidence
intervals, in `performance/dt=<day>/metrics.json`, `performance/history.csv` and the plot
`performance/history.png` (floor, training-holdout line, score PSI). A day whose predictions and
labels files did not change is not measured again. Then:
- `request_performance_retraining` judges the champion on the newest `performance.judge_days`
  labelled days whose labels are due (`day <= ds - label.delay_days`: a newer day with a few early
  labels is measured but not judged), pooled: below a floor (`performance.floors`, else `evaluation.floors`) or worse than
  its training holdout by more than `performance.max_drop` sends a `performance_degraded` alert and
  emits the `<use case>.retrain_request` Asset (the drift monitor's: same dedup, same
  `drift.cooldown_days`). Otherwise, or with fewer than `performance.min_rows` labelled rows, it is
  *skipped* and the run succeeds (the reason is in its log). A metric that cannot be computed
  (the judged rows hold one class: AUC, f1, precision, recall) is skipped with that reason, never
  "within its floors".
- A run never overwrites a day's record measured by a later run (its `as_of`): a backfill or a
  labels event for an old partition cannot see the corrections that landed since (it logs "kept
  the records of ...").
- `judge_live_evidence` decides a challenger waiting in shadow (`evaluation.require_shadow_days`)
  once it has its labelled shadow days; skipped when there is nothing to decide.

**When.** On `schedules.performance_monitor` (cron) and on every `<use case>.labels` Asset event
(post one with extra `{"ds": "<label partition day>"}` when labels are delivered).

**Failures and what to do.**
- `validation_failed` / `training_data_error` naming a labels file — the labels break their
  contract (the file is quarantined): re-deliver it, then clear `measure_performance`.
- `drift_input_invalid` — a predictions partition lacks a column: rerun batch scoring for that day.
- `tracking_unavailable` — MLflow did not answer (training-holdout lookup); the task retries by itself.
- A `performance_degraded` alert — the champion's realized metric fell: see the plot and
  `performance/dt=<day>/metrics.json`; the training pipeline runs on the retrain request.
"""

from __future__ import annotations

from airflow.sdk import DAG

from pavedml.airflow import assets
from pavedml.airflow.factory import dag_args, step_task, use_cases

PIPELINE = "performance_monitor"


def schedule(uc):
    """The config's cron OR the labels Asset (only the Asset when the cron is off)."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    labels = assets.labels(uc.name)
    cron = uc.schedules.performance_monitor
    if cron in (None, "", "none"):
        return [labels]
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=[labels])


for uc in use_cases():
    with DAG(
        **dag_args(uc, PIPELINE, __doc__),
        description=f"Realized performance of {uc.name}'s models once labels land",
        schedule=schedule(uc),
        max_active_runs=1,
    ) as dag:
        measure = step_task("measure_performance", uc)
        request = step_task("request_performance_retraining", uc, outlets=[assets.retrain_request(uc.name)])
        live = step_task("judge_live_evidence", uc, outlets=[assets.champion(uc.name)])
        measure >> [request, live]
    globals()[dag.dag_id] = dag
