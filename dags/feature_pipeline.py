"""
### Daily feature pipeline — `<use case>_feature_pipeline`

**What it does.** For its data interval (one day) it reads the landing batch, writes an immutable
raw snapshot named by the SHA-256 of its content, validates it with a Great Expectations suite
generated from the use-case schema, builds the offline feature partition, and materializes exactly
that interval into Feast's online store. Emits the `<use case>.features` Asset (extra: snapshot hash).

| task | reads | writes |
|---|---|---|
| `wait_for_batch` | `landing/<uc>/<dataset>/dt=<ds>/` (a sensor: it waits, freeing its worker slot between checks); with `batches.source` it counts the query's rows for the interval | — |
| `ingest_raw_batch` | `landing/<uc>/<dataset>/dt=<ds>/`; with `batches.source` the query's rows, landed there first as the day's CSV extract | `raw/dt=<ds>/<sha256>.parquet` + manifest |
| `validate_raw_batch` | the raw snapshot | `validation/dt=<ds>/<sha256>/` (Data Docs HTML, JSON) |
| `build_features` | the validated snapshot | `features/dt=<ds>/part-0.parquet` |
| `materialize_features` | the feature partition | Feast online store; Asset event |

**Failures and what to do.**
- `batch_missing` — *no batch for <ds> at <uri>*: the file did not arrive within the wait
  timeout (`batches.wait_timeout_seconds`; `wait_for_batch` looks every
  `batches.poke_interval_seconds` in reschedule mode, then fails; each of its retries looks once
  more, after the retry delay). Deliver it, then
  **Clear** `wait_for_batch` (downstream reruns too).
- `source_unavailable` — (`batches.source`) the database cannot be reached; the task retries by
  itself. Check the database and the URL in the variable `batches.source.url_env` names.
- `source_query_failed` — (`batches.source`) the database refused the query (unknown table or
  column, syntax); fix `batches.source.query` in the use-case file, then clear the task.
- `batch_unreadable` — empty or unparseable file. It is copied to `quarantine/dt=<ds>/<sha>/`.
  Replace the landing file, then clear the task.
- `validation_failed` — the summary lists each failed expectation, its column, observed vs
  expected and offending values, plus the Data Docs link. The batch and its report are in
  quarantine; nothing downstream ran. Fix the batch upstream, re-deliver, clear `ingest_raw_batch`.
- `feature_check_failed` — a feature came out NaN/inf where the config requires a value; fix the
  derived-feature hook or the config's `fill_null`, then clear `build_features`.

**Reruns** are idempotent: the same content gives the same snapshot hash, the feature partition
is replaced atomically, and the online store is overwritten for the same keys.
**Backfill:** `airflow backfill create --dag-id <dag_id> --from-date ... --to-date ...`.
"""

from __future__ import annotations

from airflow.sdk import DAG

from pavedml.airflow import assets
from pavedml.airflow.factory import dag_args, step_sensor, step_task, use_cases

PIPELINE = "feature_pipeline"

for uc in use_cases():
    with DAG(
        **dag_args(uc, PIPELINE, __doc__),
        description=f"Daily raw snapshot, validation and features for {uc.name}",
        schedule=uc.schedules.feature_pipeline,
        max_active_runs=4,
    ) as dag:
        wait = step_sensor("check_landing_batch", uc, task_id="wait_for_batch",
                           poke_interval=uc.batches.poke_interval_seconds,
                           timeout=uc.batches.wait_timeout_seconds, retry_on_timeout=True)
        ingest = step_task("ingest_raw_batch", uc)
        validate = step_task("validate_raw_batch", uc)
        build = step_task("build_features", uc)
        materialize = step_task("materialize_features", uc, outlets=[assets.features(uc.name)])
        wait >> ingest >> validate >> build >> materialize
    globals()[dag.dag_id] = dag
