from __future__ import annotations

import shutil
from datetime import date

import pytest

HISTORY_START = date(2025, 1, 1)
HISTORY_DAYS = 8
LAST_DAY = "2025-01-08"


@pytest.fixture(scope="session")
def feature_history(tmp_path_factory):
    """Eight simulated days through the feature steps (in-process: fast), built once per session."""
    root = tmp_path_factory.mktemp("history") / "data"
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(root))
    from pavedml.simulate import simulate
    from tests.helpers.steps import feature_days

    simulate("telco_churn", HISTORY_START, HISTORY_DAYS, rows_per_day=1500)
    feature_days(HISTORY_START, HISTORY_DAYS)
    mp.undo()
    return root


@pytest.fixture(scope="module")
def history_copy(feature_history, tmp_path_factory, airflow_db):
    """A private copy of the history for one test module (its own MLflow, ledger and registry)."""
    root = tmp_path_factory.mktemp("copy") / "data"
    shutil.copytree(feature_history, root)
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(root))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    yield root
    mp.undo()
    get_settings.cache_clear()
