"""DAG wiring helpers. Imported by DAG files, so only ``airflow.sdk``, the standard library and
cheap package modules here: no pandas, GX, Feast, MLflow or Evidently.

:func:`step_task` builds the task for a pipeline step. Both runtimes run the identical argv
(``python -m pavedml <step> --use-case ... --ds ...``) with the identical environment contract
(:func:`pavedml.settings.step_environment`):

* ``local`` (default): :class:`pavedml.airflow.operators.StepOperator` runs it in a subprocess of the worker;
* ``docker``: the same operator runs it in a container of the task image (``PAVEDML_IMAGE``).

:func:`step_sensor` builds a sensor that runs a step each poke until it stops waiting. Both go
through the runtime's :class:`pavedml.airflow.runners.StepRunner`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pavedml.config import UseCase, scan
from pavedml.settings import get_settings

#: Jinja templates that hand the run's identity to every step. The batch of a run is the partition
#: ``dt=<ds>`` (the snapshot as of ``ds`` 00:00 UTC), so its data interval is ``[ds, ds + 1 day)``
#: whatever the timetable (Airflow 3's cron timetables give manual runs a zero-length interval).
#: ``ds`` comes from :func:`run_ds`, for every way a run starts (Airflow's ``{{ ds }}`` is undefined
#: in an Asset-triggered run, which has no logical date).
RUN_ARGS = (
    "--ds", "{{ run_ds(dag_run, triggering_asset_events) }}",
    "--dag-id", "{{ dag.dag_id }}",
    "--run-id", "{{ run_id }}",
    "--try-number", "{{ ti.try_number }}",
)


def run_ds(dag_run, triggering_asset_events=None) -> str:
    """The day (``YYYY-MM-DD``, UTC) a DAG run works on, however it started:

    * scheduled, manual with a logical date (the UI's default), backfill: the logical date's day;
    * Asset-triggered (no logical date): the newest ``ds`` in the triggering events' extra (the drift
      monitor's retrain request and the feature pipeline's features event both carry it), else the
      newest event's own day;
    * anything else without a logical date (a manual trigger that cleared it): the day of
      ``run_after``, when the run was allowed to start.
    """
    from datetime import UTC

    logical = getattr(dag_run, "logical_date", None)
    if logical is not None:
        return logical.astimezone(UTC).date().isoformat()
    days = []
    for events in (triggering_asset_events or {}).values():
        for event in events:
            extra = getattr(event, "extra", None) or {}
            if extra.get("ds"):
                days.append(str(extra["ds"])[:10])
            elif getattr(event, "timestamp", None) is not None:
                days.append(event.timestamp.astimezone(UTC).date().isoformat())
    if days:
        return max(days)
    return dag_run.run_after.astimezone(UTC).date().isoformat()


def use_cases() -> list[UseCase]:
    """Every valid use case in the configured folder (one set of DAGs each). A bad file never hides
    the others: it is left out here and reported by ``dags/use_case_config.py`` as an import error
    naming the file and what is wrong."""
    return scan(get_settings().use_cases_dir).use_cases


def use_case_errors() -> dict[str, str]:
    """Use-case file -> what is wrong with it (empty when every file is valid)."""
    return scan(get_settings().use_cases_dir).errors


def default_args(uc: UseCase) -> dict[str, Any]:
    from pavedml.airflow.callbacks import on_task_failure

    return {
        "owner": uc.owner,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "on_failure_callback": on_task_failure,
    }


def tags(uc: UseCase, pipeline: str) -> list[str]:
    return ["pavedml", uc.name, pipeline]


def dag_args(uc: UseCase, pipeline: str, doc: str | None) -> dict[str, Any]:
    """What every DAG of every use case shares: id, start, no catchup, default args, tags, runbook."""
    return {
        "dag_id": uc.dag_id(pipeline),
        "start_date": start_date(uc),
        "catchup": False,
        "default_args": default_args(uc),
        "tags": tags(uc, pipeline),
        "doc_md": runbook(doc, uc, pipeline),
        "deadline": deadline(uc, pipeline),
        "user_defined_macros": {"run_ds": run_ds},
    }


def deadline(uc: UseCase, pipeline: str):
    """A deadline alert: a run still unfinished ``expected_duration_minutes`` after it was queued
    sends a ``deadline_missed`` alert (the triggerer runs :func:`pavedml.airflow.callbacks.on_deadline_missed`)."""
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    minutes = uc.schedules.expected_duration_minutes
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback("pavedml.airflow.callbacks.on_deadline_missed",
                               kwargs={"dag_id": uc.dag_id(pipeline), "expected_minutes": minutes}),
        name=f"{uc.dag_id(pipeline)} finished within {minutes} min",
    )


def step_argv(step: str, use_case: str, params_template: str | None = None) -> list[str]:
    argv = ["python", "-m", "pavedml", step, "--use-case", use_case, *RUN_ARGS]
    if params_template:
        argv += ["--params", params_template]
    return argv


def step_task(step: str, uc: UseCase, *, params_template: str | None = None, runtime: str | None = None, **kwargs):
    """The task that runs ``step`` for ``uc`` in ``runtime`` (default: the configured one).
    ``task_id`` = step name."""
    from pavedml.airflow.operators import StepOperator

    kwargs.setdefault("task_id", step)
    return StepOperator(argv=step_argv(step, uc.name, params_template), step=step, use_case=uc.name,
                        runtime=runtime or get_settings().runtime, **kwargs)


def step_sensor(step: str, uc: UseCase, *, task_id: str, params_template: str | None = None, **kwargs):
    """A sensor (reschedule mode) that runs ``step`` for ``uc`` each poke until its result stops
    ``waiting``: :class:`pavedml.airflow.sensors.StepSensor`."""
    from pavedml.airflow.sensors import StepSensor

    return StepSensor(task_id=task_id, argv=step_argv(step, uc.name, params_template), step=step,
                      use_case=uc.name, **kwargs)


def runbook(doc: str | None, uc: UseCase, pipeline: str) -> str:
    """The DAG's ``doc_md``: the DAG file's docstring plus the use case's identity."""
    head = f"**Use case:** `{uc.name}` ({uc.description})  \n**Config:** `{uc.source_file}`  \n" \
           f"**DAG:** `{uc.dag_id(pipeline)}`\n\n"
    return head + (doc or "")


def start_date(uc: UseCase):
    from datetime import UTC, datetime

    d = uc.schedules.start_date
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def training_schedule(uc: UseCase):
    """The config's cadence (cron) or the features Asset, always OR the drift monitor's retrain request."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    from pavedml.airflow import assets

    retrain = assets.retrain_request(uc.name)
    cadence = uc.schedules.training_pipeline
    if cadence in (None, "", "none"):
        return [retrain]
    if cadence == "features":
        return assets.features(uc.name) | retrain
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cadence, timezone="UTC"), assets=[retrain])
