"""Use-case files that cannot be loaded, as an Airflow import error that names each file and what
is wrong with it. Every other use case keeps its DAGs (the DAG files load only the valid ones), so
one bad file in the use-cases folder never takes the others down.

This file defines no DAG. (The word DAG is here so that Airflow's safe-mode discovery parses it.)
"""

from __future__ import annotations

from pavedml.airflow.factory import use_case_errors

_errors = use_case_errors()
if _errors:
    raise ValueError(f"{len(_errors)} use-case file(s) not loaded; their DAGs are missing until fixed:\n"
                     + "\n".join(_errors.values()))
