"""Run a DAG through ``dag.test()`` and read back what happened."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache


@lru_cache(maxsize=4)
def dagbag(folder: str):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=folder)


def run_dag(dag_id: str, ds: str, conf: dict | None = None, retries: int | None = 0):
    """Run one DAG for ``ds`` (retries off by default: dag.test() waits retry delays in real time;
    ``retries=None``: the DAG's own).

    Returns ``(state, {task_id: state}, {task_id: xcom return value})``.
    """
    from sqlalchemy import select

    from pavedml.settings import get_settings
    from tests.conftest import REPO

    get_settings.cache_clear()
    bag = dagbag(str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[dag_id]
    # the DagBag is cached: remember each task's own retries, so that retries=None means the DAG's
    # own (2), never what an earlier run_dag of the same DAG set
    for task in dag.tasks:
        own = task.__dict__.setdefault("_pavedml_own_retries", task.retries)
        task.retries = own if retries is None else retries
    # Airflow 3.3.2's dag.test() crash on DAGs with deadline alerts is fixed for every process by
    # pavedml.airflow.compat (plugins/airflow_local_settings.py): the DAGs run as users run them.
    day = dt.date.fromisoformat(ds)
    run = dag.test(logical_date=dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC), run_conf=conf)
    from airflow.models import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        states = {ti.task_id: ti.state for ti in
                  session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run.run_id)}
        xcoms = dict(session.execute(select(XComModel.task_id, XComModel.value).where(
            XComModel.dag_id == dag_id, XComModel.run_id == run.run_id, XComModel.key == "return_value")).all())
    return run.state, states, xcoms


def asset_events(uri: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetModel.uri == uri).order_by(AssetEvent.id)).all()
        return [dict(r.extra or {}) for r in rows]
