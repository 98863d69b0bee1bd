from __future__ import annotations

import shutil

import pytest

from tests.conftest import HISTORY_DAYS, HISTORY_START, LAST_DAY  # noqa: F401  (re-exported)


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
