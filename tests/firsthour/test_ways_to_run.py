"""Every documented way of running a DAG, typed as a user types it: a subprocess of ``make`` (or a
shell after ``eval "$(make -s shellenv)"``) from a plain shell with no activated venv, the
Makefile's environment, and a private data root, Airflow home and use-cases folder. A successful
and a failing run each, for two use cases. (A trigger from the UI and a backfill go through the
real scheduler in tests/browser.)

The failing run is a batch without its ``Contract`` column: ``validate_raw_batch`` fails without a
retry (exit 3), which is what a user sees most often.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from datetime import date
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.firsthour
USE_CASES = ("telco_churn", "acme_churn")
GOOD_DAY, BAD_DAY = "2025-02-03", "2025-02-04"  # make run
CLI_GOOD_DAY, CLI_BAD_DAY = "2025-02-05", "2025-02-06"  # airflow dags test
STEPS = ("wait_for_batch", "ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features")


def plain_env(root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A login shell's environment: no venv on PATH, no Airflow settings but the project's own."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "PAVEDML_", "VIRTUAL_ENV", "MLFLOW_", "PYTEST"))}
    keep["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                   if p and not Path(p, "activate").exists())  # no venv's bin
    return {**keep, "PAVEDML_DATA_ROOT": str(root / "data"), "AIRFLOW_HOME": str(root / "airflow"),
            "PAVEDML_USE_CASES_DIR": str(root / "use_cases"), **(extra or {})}


def second_use_case(cases: Path) -> None:
    """telco_churn as shipped, plus acme_churn: the same data contract under another name, model
    and Feast project (what a team copying the example gets)."""
    cases.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((REPO / "include/use_cases/telco_churn.yaml").read_text())
    spec["batches"]["wait_timeout_seconds"] = 0
    (cases / "telco_churn.yaml").write_text(yaml.safe_dump(spec))
    spec.update(name="acme_churn", description="Churn of ACME's customers (a second use case).")
    spec["model"]["registered_name"] = "acme_churn"
    (cases / "acme_churn.yaml").write_text(yaml.safe_dump(spec))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate

    root = tmp_path_factory.mktemp("firsthour")
    second_use_case(root / "use_cases")
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(root / "data"))
    mp.setenv("PAVEDML_USE_CASES_DIR", str(root / "use_cases"))
    get_settings.cache_clear()
    for uc in USE_CASES:
        simulate(uc, date.fromisoformat(GOOD_DAY), 4, rows_per_day=300,
                 bad={BAD_DAY: "missing_column", CLI_BAD_DAY: "missing_column"})
    mp.undo()
    get_settings.cache_clear()
    return root


def run_state(root: Path, dag_id: str, ds: str) -> str | None:
    with sqlite3.connect(root / "airflow" / "airflow.db") as db:
        row = db.execute("SELECT state FROM dag_run WHERE dag_id = ? AND date(logical_date) = ? "
                         "ORDER BY id DESC LIMIT 1", (dag_id, ds)).fetchone()
    return row[0] if row else None


def make(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(REPO), *args], env=plain_env(root), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("uc", USE_CASES)
def test_make_run_success_shows_every_task(project, uc):
    dag_id = f"{uc}_feature_pipeline"
    proc = make(project, "run", f"DAG={dag_id}", f"DATE={GOOD_DAY}")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for step in STEPS:  # a line per task, in order, as each one ends
        assert re.search(rf"^  - {step}\s+ok\s+\d+\.\ds$", out, re.M), out
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("  - ")] == list(STEPS)
    assert "= success" in out
    assert run_state(project, dag_id, GOOD_DAY) == "success"
    assert (project / "data" / uc / "features" / f"dt={GOOD_DAY}").is_dir()
    # the task's log is where Airflow's UI reads it, with the step's own lines
    logs = list((project / "airflow" / "logs" / f"dag_id={dag_id}").glob("run_id=*/task_id=ingest_raw_batch/attempt=1.log"))
    assert logs and "running step: python -m pavedml ingest_raw_batch" in logs[0].read_text()


@pytest.mark.parametrize("uc", USE_CASES)
def test_make_run_failure_names_dag_task_reason_and_log(project, uc):
    dag_id = f"{uc}_feature_pipeline"
    proc = make(project, "run", f"DAG={dag_id}", f"DATE={BAD_DAY}")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in out, out
    assert f"FAILED {dag_id} {BAD_DAY}: task validate_raw_batch" in out, out
    assert "[validation_failed]" in out and "Contract" in out, out  # the reason, naming the column
    log = re.search(r"log: (\S+attempt=1\.log)", out)
    assert log, out
    assert "task_id=validate_raw_batch" in log.group(1)
    assert "FAILED validate_raw_batch [validation_failed]" in Path(log.group(1)).read_text()
    assert re.search(r"^  - build_features\s+upstream_failed", out, re.M), out
    assert run_state(project, dag_id, BAD_DAY) == "failed"


def test_make_run_refuses_bad_arguments_in_one_line(project):
    proc = make(project, "run", "DAG=telco_churn_feature_pipeline")
    assert proc.returncode != 0 and "usage: make run DAG=<dag_id> DATE=<YYYY-MM-DD>" in proc.stdout + proc.stderr
    proc = make(project, "run", "DAG=no_such_dag", f"DATE={GOOD_DAY}")
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "no DAG 'no_such_dag'" in err and "telco_churn_feature_pipeline" in err, err
    assert "Traceback" not in err
    proc = make(project, "run", "DAG=telco_churn_feature_pipeline", "DATE=03/02/2025")
    assert proc.returncode != 0 and "DATE must be YYYY-MM-DD" in proc.stdout + proc.stderr


@pytest.mark.parametrize("uc", USE_CASES)
def test_airflow_dags_test_with_the_project_environment(project, uc):
    """`airflow dags test` after `eval "$(make -s shellenv)"`: the run ends in its real state (the
    pinned Airflow left a DAG with a deadline alert `running` after a crash; pavedml.airflow.compat)."""
    dag_id = f"{uc}_feature_pipeline"
    for ds, expected in ((CLI_GOOD_DAY, "success"), (CLI_BAD_DAY, "failed")):
        proc = subprocess.run(["bash", "-c", f'eval "$(make -s -C {REPO} shellenv)" && airflow dags test {dag_id} {ds}'],
                              env=plain_env(project), capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert "has no attribute 'hex'" not in out, out[-3000:]
        assert (proc.returncode == 0) == (expected == "success"), out[-3000:]
        assert run_state(project, dag_id, ds) == expected, out[-3000:]


def test_the_demo_refuses_too_few_days_in_one_line(project):
    proc = make(project, "demo", "DAYS=3")
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "DAYS must be at least 8 for telco_churn" in err and "Traceback" not in err, err


def test_a_failing_demo_names_the_day_the_step_and_the_log(tmp_path):
    """The demo's failure path: a use case whose schema the data does not meet (a column the Telco
    sample lacks) stops at the first day with the step's summary and where its log is."""
    cases = tmp_path / "use_cases"
    cases.mkdir()
    spec = yaml.safe_load((REPO / "include/use_cases/telco_churn.yaml").read_text())
    spec["schema"]["columns"]["LoyaltyTier"] = {"type": "category", "allowed": ["Gold", "Silver"]}
    (cases / "telco_churn.yaml").write_text(yaml.safe_dump(spec))
    proc = make(tmp_path, "demo", "DAYS=8", "START=2025-03-01", timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "FAILED validate_raw_batch [validation_failed] use case=telco_churn interval=2025-03-01" in out, out[-3000:]
    assert "LoyaltyTier" in out
    log = re.search(r"demo: history day 2025-03-01 failed at validate_raw_batch \(log: (\S+)\)", out)
    assert log and Path(log.group(1)).is_file(), out[-3000:]
