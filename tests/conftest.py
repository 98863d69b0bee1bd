"""Test-session environment: a private data root and Airflow home (SQLite), set before Airflow
is imported, so a rerun never finds leftovers and nothing touches the developer's own setup."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SESSION_ROOT = Path(tempfile.mkdtemp(prefix="pavedml-tests-"))
#: set in the workers of a ``pytest -n N`` run (pytest-xdist: ``make test`` runs two); unset in a plain run
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
#: the production services' Redis database for each xdist worker (tests.helpers.prodstack; 12 and
#: 14 belong to test_hostile_inputs and test_serving_online)
PRODSTACK_REDIS_DBS = (13, 11, 10, 9, 8, 7, 6, 5)

#: ``make test`` runs the suite in two pytest-xdist workers (``-n 2 --dist loadgroup``): each group
#: below runs whole on one worker (a module; or a package whose fixtures are package- or
#: session-scoped and must not start twice), the slowest first (longest-processing-time first, so
#: the two workers end together). The order follows ``--durations`` of a clean-clone CI run
#: (2026-12-01: distributed ~18 min, e2e loops ~10, docker ~7 plus the compose stack ~8, own data
#: ~6, the integration modules 2-3 each, the rest under 2); a group not listed runs after these, in
#: collection order.
WHOLE_PACKAGES = ("tests/distributed", "tests/docker")
SLOWEST_FIRST = (
    "tests/distributed",
    "tests/docker",
    "tests/e2e/test_loops.py",
    "tests/firsthour/test_own_data.py",
    "tests/integration/test_drift_loop.py",
    "tests/integration/test_training_pipeline.py",
    "tests/integration/test_governance.py",
    "tests/integration/test_performance_monitor.py",
    "tests/e2e/test_performance_scheduler.py",
    "tests/firsthour/test_make_airflow.py",
    "tests/firsthour/test_ways_to_run.py",
    "tests/browser/test_ui.py",
)


def pytest_configure(config):
    env = {
        "PAVEDML_DATA_ROOT": str(SESSION_ROOT / "data"),
        "AIRFLOW_HOME": str(SESSION_ROOT / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{SESSION_ROOT / 'airflow' / 'airflow.db'}",
        "TQDM_DISABLE": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "FEAST_USAGE": "False",
        # every step the suite runs checks that it reads only what its lake pull set holds
        # (pavedml.pullset), with or without a lake
        "PAVEDML_CHECK_PULL_SETS": "1",
    }
    if XDIST_WORKER and "PAVEDML_TEST_REDIS_DB" not in os.environ:
        env["PAVEDML_TEST_REDIS_DB"] = str(PRODSTACK_REDIS_DBS[int(XDIST_WORKER.removeprefix("gw"))])
    os.environ.update(env)
    for name in ("PAVEDML_USE_CASES_DIR", "PAVEDML_RUNTIME", "MLFLOW_TRACKING_URI", "PAVEDML_LANDING_URI",
                 "PAVEDML_FEAST_REGISTRY", "PAVEDML_FEAST_ONLINE_STORE"):
        os.environ.pop(name, None)
    (SESSION_ROOT / "airflow").mkdir(parents=True, exist_ok=True)


def group_of(nodeid: str) -> str:
    """The group a test runs in under xdist: its package if in WHOLE_PACKAGES, else its module."""
    path = nodeid.split("::", 1)[0]
    return next((pkg for pkg in WHOLE_PACKAGES if path.startswith(pkg + "/")), path)


def pytest_collection_modifyitems(config, items):
    rank = {group: i for i, group in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))  # stable: each group stays in order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``: our groups (group_of), in collection order. (xdist 3.8's own grouping,
    by ``xdist_group`` markers, does nothing under pytest 9: it renames ``item._nodeid``, which
    pytest 9 no longer reads.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Groups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return Groups(config, log)


def pytest_unconfigure(config):
    if os.environ.get("PAVEDML_KEEP_TEST_DATA") != "1":
        shutil.rmtree(SESSION_ROOT, ignore_errors=True)


#: processes the xdist workers found left behind (reported by the controller)
_LEFT_BY_WORKERS: list[str] = []


@pytest.hookimpl(wrapper=True, trylast=True)  # inside xdist's wrapper: the worker reports after this
def pytest_sessionfinish(session):
    """After every teardown: a process a test started (tests/helpers/procs.py) that is still alive
    is named, stopped (SIGTERM, then SIGKILL) and fails the run (an xdist worker hands its list to
    the controller, which reports every worker's)."""
    result = yield
    procs = sys.modules.get("tests.helpers.procs")
    left = procs.sweep() if procs else []
    if hasattr(session.config, "workeroutput"):  # an xdist worker (not a pytest it started: same env)
        session.config.workeroutput["pavedml_left_behind"] = left
        return result
    left = left + _LEFT_BY_WORKERS
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        say = reporter.write_line if reporter else lambda line, **_: print(line, file=sys.stderr)
        if reporter:
            reporter.write_line("")  # ends the progress line
            reporter.write_sep("=", "processes left behind", red=True)
        say(f"FAILED: {len(left)} process group(s) started by the tests outlived them (stopped now):", red=True)
        for line in left:
            say(f"  {line}", red=True)
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    return result


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    _LEFT_BY_WORKERS.extend(f"[{node.gateway.id}] {line}"
                            for line in getattr(node, "workeroutput", {}).get("pavedml_left_behind", []))


@pytest.fixture(autouse=True)
def _fresh_settings():
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def airflow_db():
    """Migrate the session's SQLite Airflow database once."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=os.environ.copy())
    return SESSION_ROOT / "airflow"


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """A fresh data root for one test."""
    root = tmp_path / "data"
    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(root))
    return root


HISTORY_START = date(2025, 1, 1)
HISTORY_DAYS = 8
LAST_DAY = "2025-01-08"


@pytest.fixture(scope="session")
def feature_history(tmp_path_factory):
    """Eight simulated days through the feature steps (in-process: fast), built once per session."""
    root = tmp_path_factory.mktemp("history") / "data"
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(root))
    from pavedml.tools.simulate import simulate
    from tests.helpers.steps import feature_days

    simulate("telco_churn", HISTORY_START, HISTORY_DAYS, rows_per_day=1500)
    feature_days(HISTORY_START, HISTORY_DAYS)
    mp.undo()
    return root
