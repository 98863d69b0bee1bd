"""
### Training pipeline — `<use case>_training_pipeline`

**What it does.** Builds a point-in-time correct training set (labels joined with Feast historical
features: no feature value later than its label's timestamp), splits it by time (holdout = the most
recent labelled days), trains the configured scikit-learn pipeline, tracks everything in MLflow
(params, metrics, plots, dataset lineage with snapshot hashes, signature, drift reference) and
registers a version with alias `challenger`. The challenger and the current `champion` are scored
on the same holdout; the use case's policy decides; `promote_challenger` moves `champion` (and
`previous_champion`) only when the policy says so, and writes the ledger.

**When it runs.** On the use case's schedule, on every retrain request from the drift monitor
(Asset `<use case>.retrain_request`), or by hand with the form: training window, hyper-parameter
overrides (JSON object), a reason, and *force promote* (off by default; recorded in the ledger).

| task | output |
|---|---|
| `build_training_set` | `training/<run>/{train,validation,holdout}.parquet` + `dataset.json` (digests) |
| `train_challenger` | MLflow run + registered version, alias `challenger` |
| `evaluate_challenger` | decision record (JSON + table), model card (`card/` in MLflow, link *Model card*), fairness and importance |
| `approve_promotion` | (with `evaluation.require_approval`) a person's Approve/Reject and comment |
| `promote_challenger` | alias `champion` moved or kept; ledger entry; model card updated |

**Failures and what to do.**
- `training_data_invalid` — no labels in the window, a single class, too few labelled days or
  rows. Widen `training_window_days` in the form or wait for labels; no version was registered.
- `tracking_unavailable` — the MLflow server did not answer; the task retries by itself. A retry
  of the same run reuses the run and version it already made (never a second version).
- `registry_error` in `promote_challenger` — the champion changed while this run evaluated (a
  race): clear `evaluate_challenger` to decide against the new champion.
- `config_error` — a form value out of range or a malformed *Hyper-parameter overrides* object
  (the summary names the parameter): every task checks the run's parameters before it reads data.
  Trigger a new run with corrected values.
- A `reject`/`keep_champion` outcome is not a failure: read the decision record or the *Model card*.
  A reason starting `fairness:` is the fairness gate (`evaluation.fairness`): the challenger's
  group metrics on the holdout differ by more than allowed between the named groups; the card's
  *Fairness* table has every group's numbers.
- With `evaluation.require_approval`, `approve_promotion` waits in *Required Actions* (Browse menu):
  read the card, then Approve or Reject with a comment; either way `promote_challenger` runs and
  records the answer (a rejection moves nothing: ledger action `approval_rejected`).
- A `shadow` outcome (with `evaluation.require_shadow_days`): the challenger won offline and now runs in
  shadow beside the champion; the performance monitor's `judge_live_evidence` promotes it only once
  its labelled shadow days beat the champion on the same rows (record: `registry/live/v<version>.json`).
  `force_promote` skips the wait.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from pavedml.airflow import assets
from pavedml.airflow.factory import dag_args, step_task, training_schedule, use_cases

PIPELINE = "training_pipeline"
PARAMS = "{{ params | tojson }}"

for uc in use_cases():
    with DAG(
        **dag_args(uc, PIPELINE, __doc__),
        description=f"Train, evaluate and maybe promote a {uc.model.family} challenger for {uc.name}",
        schedule=training_schedule(uc),
        max_active_runs=1,
        params={
            "training_window_days": Param(uc.model.training_window_days, type="integer", minimum=7, maximum=3650, title="Training window (days)",
                                          description="Train on the labels known by the run's date from the last "
                                                      "N days. The run's date is the Logical Date above: pick one "
                                                      "on or after the newest labels."),
            "hyperparameters": Param({}, type="object", title="Hyper-parameter overrides",
                                     description=f"Overrides of model.params for {uc.model.family}, "
                                                 "e.g. {\"max_iter\": 300}. Empty: the use case's own."),
            "reason": Param("", type="string", title="Reason",
                            description="Why this run (goes to the promotion ledger). Empty: how the run "
                                        "started (scheduled, manual run, backfill, retrain request)."),
            "force_promote": Param(False, type="boolean", title="Force promotion",
                                   description="Promote even if the policy says no (recorded as FORCED)."),
        },
    ) as dag:
        build = step_task("build_training_set", uc, params_template=PARAMS)
        train = step_task("train_challenger", uc, params_template=PARAMS)
        evaluate = step_task("evaluate_challenger", uc, params_template=PARAMS)
        if uc.evaluation.require_approval:
            from pavedml.airflow.approval import PARAMS_WITH_APPROVAL, PromotionApproval

            approve_promotion = PromotionApproval(
                subject=f"Promote {uc.model.registered_name}?",
                body="Read the model card and decision record of evaluate_challenger (its links), then approve "
                     "or reject, with a comment: both are recorded (ledger, version tags, model card).")
            promote = step_task("promote_challenger", uc, params_template=PARAMS_WITH_APPROVAL,
                                outlets=[assets.champion(uc.name)])
            build >> train >> evaluate >> approve_promotion >> promote
        else:
            promote = step_task("promote_challenger", uc, params_template=PARAMS, outlets=[assets.champion(uc.name)])
            build >> train >> evaluate >> promote
    globals()[dag.dag_id] = dag
