"""The last run of each DAG of a use case, from the Airflow metadata database (for the on-call
screen, :mod:`pavedml.tools.status`)."""

from __future__ import annotations

from pavedml.config import PIPELINES, UseCase


def last_run_lines(uc: UseCase) -> list[str]:
    """One line per DAG of ``uc``: its last run's state, ``ds`` and time (``make status``)."""
    try:
        from airflow.models import DagRun
        from airflow.utils.session import create_session
    except Exception as exc:  # pragma: no cover
        return [f"  Airflow unavailable: {exc}"]
    lines = []
    try:
        with create_session() as session:
            for pipeline in PIPELINES:
                dag_id = uc.dag_id(pipeline)
                run = (session.query(DagRun).filter(DagRun.dag_id == dag_id)
                       .order_by(DagRun.start_date.desc()).first())
                if run is None:
                    lines.append(f"  {dag_id:<36} never ran")
                else:
                    when = (run.end_date or run.start_date)
                    lines.append(f"  {dag_id:<36} {str(run.state):<8} ds={run.logical_date.date() if run.logical_date else '-'}"
                                 f"  at {str(when)[:19]}")
    except Exception as exc:
        lines.append(f"  Airflow metadata unavailable: {str(exc)[:120]}")
    return lines
