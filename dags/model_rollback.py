"""
### Model rollback — `<use case>_model_rollback`

**What it does.** Manual only. Moves the `champion` alias back to `previous_champion` (the
default) or to a given version, after checking that the version exists and is `READY`. The move is
compare-and-set under the same lock as promotions and is written to the ledger with your reason.

**How to use.** Trigger with the form: *target_version* = `previous` or a version number;
*reason* (required). Batch scoring picks the new champion up on its next run.

**Failures and what to do.**
- `registry_error` — no `previous_champion`, the version does not exist or is not READY, or a
  promotion moved the champion meanwhile. Pick an explicit version and trigger again.
- `config_error` — the target is neither `previous` nor a number, or the reason is missing.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from pavedml.airflow.factory import dag_args, step_task, use_cases

PIPELINE = "model_rollback"

for uc in use_cases():
    with DAG(
        **dag_args(uc, PIPELINE, __doc__),
        description=f"Roll {uc.model.registered_name}'s champion back to a previous version",
        schedule=None,
        max_active_runs=1,
        params={
            "target_version": Param("previous", type="string", pattern=r"^(previous|[0-9]+)$",
                                    title="Target version",
                                    description="'previous' (the champion before the current one) or a model "
                                                "version number."),
            "reason": Param("", type="string", minLength=3, title="Reason",
                            description="Why you roll back (goes to the ledger). Required."),
        },
    ) as dag:
        step_task("rollback_model", uc, params_template="{{ params | tojson }}")
    globals()[dag.dag_id] = dag
