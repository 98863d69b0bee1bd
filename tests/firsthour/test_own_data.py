"""README "Bring your own data", typed as a user types it: a use case from one YAML (an example
copied into the use-cases folder, no code), its history landed by ``import-history`` (from a CSV;
from a PostgreSQL table), then ``make demo USE_CASE=<name>`` runs every DAG on it: the feature
pipeline, training with promotion, scoring, the drift monitor and the performance monitor. A binary classifier on a table
without dates and a regression model with an event time per row."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO
from tests.firsthour.test_ways_to_run import plain_env

pytestmark = pytest.mark.firsthour
EXAMPLES = REPO / "include" / "examples"


def shell(script: str, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f'set -e; eval "$(make -s shellenv)"; {script}'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def check_chain(root: Path, name: str, regression: bool) -> None:
    data = root / "data" / name
    ledger = [json.loads(line) for line in (data / "registry" / "ledger.jsonl").read_text().splitlines()]
    assert ledger[0]["action"] == "promoted" and ledger[0]["to_version"] == "1", ledger[0]
    assert len(ledger) >= 2, "the second training must decide against the champion (kept or promoted)"
    days = sorted(p.name for p in (data / "predictions").glob("dt=*"))
    # 12 imported days: the first model is trained five days before the end and scores the four after it
    assert len(days) == 4, days
    # the first scored days' labels landed within the demo: their realized metrics are recorded
    history = pd.read_csv(data / "performance" / "history.csv", dtype={"ds": str})
    assert {f"dt={d}" for d in history["ds"]} == set(days[:3]), history["ds"].unique()
    primary = "rmse" if regression else "roc_auc"
    assert history[(history["metric"] == primary) & (history["role"] == "champion")]["value"].notna().all()
    preds = pd.read_parquet(data / "predictions" / days[-1])
    assert {"prediction", "model_name", "model_version"} <= set(preds.columns)
    assert ("probability" in preds.columns) is (not regression)
    if regression:
        assert preds["prediction"].dtype.kind == "f" and preds["prediction"].nunique() > 10
    else:
        assert set(preds["prediction"].unique()) <= {0, 1} and preds["probability"].between(0, 1).all()
    report = json.loads((data / "drift" / days[-1] / "report.json").read_text())
    assert report["status"] in ("drift", "no_drift"), report["status"]  # judged: enough rows


def test_a_binary_table_without_dates_from_a_csv(tmp_path):
    env = plain_env(tmp_path)
    cases = tmp_path / "use_cases"
    cases.mkdir()
    shutil.copy(EXAMPLES / "breast_cancer" / "breast_cancer.yaml", cases)
    proc = shell("python -m pavedml import-history --use-case breast_cancer "
                 "--from include/examples/breast_cancer/patients.csv --days 12 && make demo USE_CASE=breast_cancer",
                 env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "569 rows (47-48 a day), 569 labelled, label rate 0.373" in proc.stdout
    assert "Demo complete" in proc.stdout, proc.stdout[-3000:]
    check_chain(tmp_path, "breast_cancer", regression=False)


def test_a_regression_table_with_event_times_from_postgresql(tmp_path):
    from tests.helpers.prodstack import _pg_admin, pg_url

    db = f"pavedml_test_clinic_{uuid.uuid4().hex[:8]}"
    _pg_admin(f"CREATE DATABASE {db}")
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(pg_url(db))
        with engine.begin() as conn:
            pd.read_csv(EXAMPLES / "diabetes_visits" / "visits.csv").assign(
                visit_time=lambda d: pd.to_datetime(d["visit_time"], utc=True)).to_sql("visits", conn, index=False)
        engine.dispose()
        env = plain_env(tmp_path, {"CLINIC_DB": pg_url(db)})
        cases = tmp_path / "use_cases"
        cases.mkdir()
        shutil.copy(EXAMPLES / "diabetes_visits" / "diabetes_visits.yaml", cases)
        proc = shell('python -m pavedml import-history --use-case diabetes_visits --db-url-env CLINIC_DB '
                     '--sql "SELECT * FROM visits" && make demo USE_CASE=diabetes_visits', env)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert "12 day(s) 2025-03-01 .. 2025-03-12, 442 rows" in proc.stdout
        assert "Demo complete" in proc.stdout, proc.stdout[-3000:]
        check_chain(tmp_path, "diabetes_visits", regression=True)
        # the row times travelled: the offline features keep each visit's own time
        part = next((tmp_path / "data" / "diabetes_visits" / "features").glob("dt=2025-03-12/*.parquet"))
        times = pd.read_parquet(part)["event_timestamp"]
        assert times.dt.hour.nunique() > 1 and (times.dt.strftime("%Y-%m-%d") == "2025-03-12").all()
    finally:
        _pg_admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_demo_refuses_a_use_case_without_history_in_one_line(tmp_path):
    env = plain_env(tmp_path)
    cases = tmp_path / "use_cases"
    cases.mkdir()
    shutil.copy(EXAMPLES / "breast_cancer" / "breast_cancer.yaml", cases)
    proc = shell("make demo USE_CASE=breast_cancer", env, timeout=300)
    assert proc.returncode != 0
    line = next(x for x in proc.stderr.splitlines() if x.startswith("demo: "))
    assert "no history has been imported for breast_cancer" in line and "import-history --use-case breast_cancer" in line
    sim = shell("python -m pavedml simulate --use-case breast_cancer --start 2025-01-01 --days 3", env, timeout=120)
    assert sim.returncode == 3
    assert "simulate replays the bundled Telco sample" in sim.stderr and "import-history" in sim.stderr
    assert not (tmp_path / "data" / "landing" / "breast_cancer").exists()
