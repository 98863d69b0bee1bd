"""Work-arounds for bugs of the pinned Airflow, in one place, applied in every Airflow process.

Applied by ``plugins/airflow_local_settings.py``: Airflow imports ``airflow_local_settings`` from
its plugins folder while it initializes (``airflow.settings.initialize``), so the scheduler, the
DAG processor, the workers, ``airflow dags test``, ``make demo``, ``make run`` and the tests all
get the same fix, and nothing else has to remember it. Each fix names the upstream defect and is
a no-op once the defect is gone, so upgrading Airflow needs no change here (delete the fix when
the pinned version no longer needs it: ``tests/unit/test_airflow_compat.py`` says when).

Fixes:

``deadline_alert_in_dag_test``
    Airflow 3.3.2: ``dag.test()`` (and so ``airflow dags test``) round-trips the DAG through
    serialization in memory, so ``dag.deadline`` holds the alerts' *definitions* (dicts), not the
    ids of their ``deadline_alert`` rows that the DAG processor writes. When the run succeeds,
    ``DagRun.update_state`` passes each to ``DeadlineAlert.get_by_id`` and crashes with
    ``AttributeError: 'dict' object has no attribute 'hex'``, leaving the run ``running``.
    Upstream: apache/airflow#73428 (open; fix proposed in apache/airflow#73430). The fix: given a
    definition instead of an id, ``get_by_id`` returns an unsaved model of that definition, which
    is all ``update_state`` needs (the reference type, to prune the run's deadlines). Under the
    scheduler nothing changes: ids are ids there. Deadlines themselves are not evaluated by
    ``dag.test()`` (no triggerer; Airflow logs "skipping deadline alert"): a missed deadline is
    tested through the real scheduler (tests/browser).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_APPLIED: set[str] = set()


def _deadline_alert_in_dag_test() -> None:
    from airflow.models.deadline_alert import DeadlineAlert

    original = DeadlineAlert.get_by_id
    if getattr(original, "__pavedml_fix__", False):
        return

    def get_by_id(deadline_alert_id, *args, **kwargs):
        if isinstance(deadline_alert_id, dict):  # a definition from dag.test()'s in-memory round trip
            d = deadline_alert_id
            return DeadlineAlert(name=d.get("name"), description=d.get("description"),
                                 reference=d.get("reference") or {}, interval=d.get("interval") or {},
                                 callback_def=d.get("callback") or {})
        return original(deadline_alert_id, *args, **kwargs)

    get_by_id.__pavedml_fix__ = True  # type: ignore[attr-defined]
    get_by_id.__wrapped__ = original  # type: ignore[attr-defined]
    DeadlineAlert.get_by_id = staticmethod(get_by_id)  # type: ignore[method-assign]


FIXES = {"deadline_alert_in_dag_test": _deadline_alert_in_dag_test}


def apply() -> list[str]:
    """Apply every fix once per process; returns the names applied. Never raises: a fix that cannot
    be applied (a changed Airflow) is logged, and Airflow runs unpatched."""
    for name, fix in FIXES.items():
        if name in _APPLIED:
            continue
        try:
            fix()
            _APPLIED.add(name)
        except Exception as err:  # noqa: BLE001 - a compat shim must never stop Airflow from starting
            log.warning("pavedml: Airflow work-around %s not applied: %s", name, err)
    return sorted(_APPLIED)
