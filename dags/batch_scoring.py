"""
### Batch scoring — `<use case>_batch_scoring`

**What it does.** Daily, scores the interval's customers with `models:/<model>@champion`. Features
come from Feast's offline store for the interval (the online store is for request-time lookups).
Predictions land in `predictions/dt=<ds>/part-0.parquet` with the model version and the
feature-snapshot hash; a rerun replaces the partition (never duplicates). Emits the
`<use case>.predictions` Asset.

**Shadow challenger and canary.** While the `challenger` alias names another version than the
champion — registered within `evaluation.shadow_days` (default 7) after the day it was trained
through, or waiting for live evidence (`evaluation.require_shadow_days`) — it scores the same rows:
every row has `champion_version`/`champion_score` and `challenger_version`/`challenger_score`, never
served as the decision. With `evaluation.canary_fraction`, a challenger waiting for live evidence is
served to that fraction of entities (a stable hash of the key): those rows say
`served_by = challenger` and carry its `model_version`. `_SCORED.json` and the task's result name both
versions and the canary rows.

**Failures and what to do.**
- `registry_error` — *has no champion yet*: run the training pipeline first.
- `feature_check_failed` — *no offline features for <ds>*: the feature pipeline for that day did
  not finish (see its alert); rerun it, then clear `score_customers`.
- `tracking_unavailable` — MLflow did not answer; the task retries by itself.
"""

from __future__ import annotations

from airflow.sdk import DAG

from pavedml.airflow import assets
from pavedml.airflow.factory import dag_args, step_task, use_cases

PIPELINE = "batch_scoring"

for uc in use_cases():
    with DAG(
        **dag_args(uc, PIPELINE, __doc__),
        description=f"Daily batch scoring of {uc.name} with the champion",
        schedule=uc.schedules.batch_scoring,
        max_active_runs=2,
    ) as dag:
        step_task("score_customers", uc, outlets=[assets.predictions(uc.name)])
    globals()[dag.dag_id] = dag
