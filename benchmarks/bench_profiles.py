"""One daily feature pipeline DAG run (default 100k rows) through a real scheduler, on the
embedded default versus the production profile, same machine, same invocation:

* embedded: ``airflow standalone`` on SQLite, local landing and data folders, Feast file registry
  and SQLite online store;
* production: ``airflow standalone`` on PostgreSQL (LocalExecutor), landing and lake on S3 (moto's
  server), Feast registry on PostgreSQL and online store on Redis (the services of
  ``tests/helpers/prodstack.py``).

Each profile runs ``--reps`` DAG runs (one day each, a fresh batch of the same size) one after
another; the figure is the run's wall time from queued to finished (what an operator waits),
with the task durations beside it. Medians are printed.

    .venv/bin/python benchmarks/bench_profiles.py --rows 100000 --reps 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import synthetic  # noqa: E402

from tests.helpers.prodstack import ProductionServices  # noqa: E402
from tests.helpers.standalone import Standalone  # noqa: E402

USE_CASE = "bench_churn"
DAG_ID = f"{USE_CASE}_feature_pipeline"
FIRST_DAY = date(2025, 3, 1)
TASKS = ("wait_for_batch", "ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features")


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()


def _batches(rows: int, reps: int, work: Path) -> list[Path]:
    out = []
    for rep in range(reps):
        path = work / f"batch_{rows}_{rep}.parquet"
        df = synthetic(rows, 100 + rep, False)
        df.insert(0, "customer_id", [f"C{i:08d}" for i in range(rows)])
        df.to_parquet(path, index=False)
        out.append(path)
    return out


def _use_cases(work: Path) -> Path:
    cases = work / "use_cases"
    cases.mkdir()
    spec = yaml.safe_load((REPO / "benchmarks/use_cases/bench_churn.yaml").read_text())
    spec.setdefault("schedules", {}).update(feature_pipeline=None, training_pipeline=None, batch_scoring=None,
                                            drift_monitor=None)
    (cases / "bench_churn.yaml").write_text(yaml.safe_dump(spec))
    return cases


def _run_profile(name: str, stack: Standalone, land, batches: list[Path]) -> list[dict]:
    stack.wait_for_dag(DAG_ID)
    results = []
    for rep, batch in enumerate(batches):
        ds = (FIRST_DAY + timedelta(days=rep)).isoformat()
        land(ds, batch)
        run_id = f"bench_{name}_{ds}"
        stack.api("POST", f"/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": f"{ds}T00:00:00Z"})
        run = stack.wait_for_run(DAG_ID, run_id, timeout=1800)
        if run["state"] != "success":
            raise SystemExit(f"{name}: {run_id} ended {run['state']}; see {stack.home}/logs")
        tis = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        tasks = {ti["task_id"]: _seconds(ti["start_date"], ti["end_date"]) for ti in tis}
        wall = _seconds(run["queued_at"], run["end_date"])
        results.append({"wall": wall, **tasks})
        print(f"{name} rep {rep + 1}: {wall:.1f} s  " + "  ".join(f"{t}={tasks.get(t, 0):.1f}" for t in TASKS),
              flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pavedml-bench-profiles-"))
    try:
        batches = _batches(args.rows, args.reps, work)
        cases = _use_cases(work)

        # embedded default
        root = work / "embedded" / "data"

        def land_local(ds: str, batch: Path) -> None:
            target = root / "landing" / USE_CASE / "customers" / f"dt={ds}" / "customers.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(batch, target)

        stack = Standalone(work / "embedded" / "airflow", root, cases).start()
        try:
            embedded = _run_profile("embedded", stack, land_local, batches)
        finally:
            stack.stop()

        # production profile
        services = ProductionServices(work / "production" / "services").start()
        try:
            worker_root = work / "production" / "worker-host"

            def land_s3(ds: str, batch: Path) -> None:
                services.s3().upload_file(str(batch), "pavedml",
                                          f"landing/{USE_CASE}/customers/dt={ds}/customers.parquet")

            stack = Standalone(work / "production" / "airflow", worker_root, cases,
                               extra_env={**services.airflow_env(), **services.step_env(worker_root),
                                          "PAVEDML_MLFLOW_CONN_ID": ""}).start(timeout=420)
            try:
                production = _run_profile("production", stack, land_s3, batches)
            finally:
                stack.stop()
        finally:
            services.stop()

        print(f"\nfeature pipeline DAG run, {args.rows:,} rows, median of {args.reps} (queued -> finished; "
              "task = start -> end):")
        print(f"{'':<22} {'embedded s':>11} {'production s':>13} {'ratio':>6}")
        for key in ("wall", *TASKS):
            e = statistics.median(r.get(key, 0.0) for r in embedded)
            p = statistics.median(r.get(key, 0.0) for r in production)
            print(f"{key:<22} {e:>11.1f} {p:>13.1f} {p / e if e else float('nan'):>6.2f}")
        print("runs (wall s): embedded " + ", ".join(f"{r['wall']:.1f}" for r in embedded)
              + "; production " + ", ".join(f"{r['wall']:.1f}" for r in production))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
