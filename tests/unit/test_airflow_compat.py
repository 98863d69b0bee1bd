"""pavedml.airflow.compat: the work-around for the pinned Airflow's dag.test() deadline-alert crash
is applied in every Airflow process (through plugins/airflow_local_settings.py), and it is still
needed (when this canary fails after an upgrade, delete the fix)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit
DEFINITION = {"name": "x finished within 60 min", "reference": {"reference_type": "DagRunQueuedAtDeadline"},
              "interval": {"__classname__": "datetime.timedelta", "__version__": 2, "__data__": 3600.0},
              "callback": {"__classname__": "airflow.sdk.definitions.callback.AsyncCallback", "__version__": 0,
                           "__data__": {"path": "pavedml.airflow.callbacks.on_deadline_missed", "kwargs": {}}}}


def test_any_airflow_process_with_the_plugins_folder_gets_the_fix():
    code = ("import airflow\nfrom airflow.models.deadline_alert import DeadlineAlert\n"
            "print(getattr(DeadlineAlert.get_by_id, '__pavedml_fix__', False))")
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-2000:]


def test_a_definition_resolves_to_its_reference_and_ids_still_hit_the_table(airflow_db):
    from airflow.models.deadline_alert import DeadlineAlert
    from airflow.serialization.definitions.deadline import SerializedReferenceModels
    from airflow.utils.session import create_session
    from sqlalchemy.exc import NoResultFound

    from pavedml.airflow.compat import apply

    assert "deadline_alert_in_dag_test" in apply()
    alert = DeadlineAlert.get_by_id(DEFINITION)
    assert alert.reference_class in SerializedReferenceModels.TYPES.DAGRUN
    with create_session() as session, pytest.raises(NoResultFound):
        DeadlineAlert.get_by_id("01a228dd-a646-7b96-99d2-f2eb0e3998c8", session=session)


def test_canary_the_pinned_airflow_still_crashes_without_the_fix(airflow_db):
    """Delete pavedml.airflow.compat's fix when this fails: upstream no longer needs it."""
    from airflow.models.deadline_alert import DeadlineAlert
    from airflow.utils.session import create_session

    original = getattr(DeadlineAlert.get_by_id, "__wrapped__", DeadlineAlert.get_by_id)
    with create_session() as session, pytest.raises(Exception, match="has no attribute 'hex'"):
        original(DEFINITION, session=session)
