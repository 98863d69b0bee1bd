"""Airflow imports this module (from its plugins folder, which it puts on ``sys.path``) while it
initializes, in every process: scheduler, DAG processor, workers, API server, ``airflow dags test``
and any Python process that imports Airflow with this plugins folder configured.

It only applies pavedml's work-arounds for defects of the pinned Airflow
(:mod:`pavedml.airflow.compat`). A deployment with its own ``airflow_local_settings`` (in
``$AIRFLOW_HOME/config``, which comes first on ``sys.path``) must call
``pavedml.airflow.compat.apply()`` from it.
"""

__all__: list[str] = []  # no policies or settings: only the side effect below

try:
    from pavedml.airflow.compat import apply as _apply_pavedml_fixes
except ImportError:  # the package is not installed in this interpreter: nothing to fix for it
    pass
else:
    _apply_pavedml_fixes()
