"""One daily feature pipeline DAG run (default 100k rows) through a real scheduler, on the
embedded default versus the production profile, same machine, same invocation:

* embedded: ``airflow standalone`` on SQLite, local landing and data folders, Feast file registry
  and SQLite online store;
* production: ``airflow standalone`` on PostgreSQL (LocalExecutor), landing and lake on S3 (moto's
  server), Feast registry on PostgreSQL and online store on Redis (the services of
  ``tests/helpers/prodstack.py``).

Each profile runs a first day (not counted: it applies the Feast definitions, as a new data root's
first day does), then ``--reps`` DAG runs (one day each, a fresh batch of the same size) one after
another; the figure is the run's wall time from queued to finished (what an operator waits),
with the task durations beside it. Medians are printed. Airflow's own share is shown apart:
the run's wall minus the sum of its tasks (scheduling between tasks, queued -> first start, last
end -> run finished), and each task's duration minus the wall of the same step run as a plain
fresh process on the same data root right after (``python -m pavedml <step>``, one more day).

    .venv/bin/python benchmarks/bench_profiles.py --rows 100000 --reps 3
    .venv/bin/python benchmarks/bench_profiles.py --rows 1000 --reps 5 --profiles embedded
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
from common import run_worker, synthetic  # noqa: E402

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
        label = "first day, not counted" if rep == 0 else f"rep {rep}"
        print(f"{name} {label}: {wall:.1f} s  " + "  ".join(f"{t}={tasks.get(t, 0):.1f}" for t in TASKS),
              flush=True)
        if rep:
            results.append({"wall": wall, "tasks": sum(tasks.values()), **tasks})
    return results


def _plain_steps(root: Path, cases: Path, land, batch: Path, day: date, env: dict | None = None) -> dict:
    """The same steps as plain fresh processes on the same data root, one more day: the steps' own wall."""
    ds = day.isoformat()
    land(ds, batch)
    env = {"PAVEDML_DATA_ROOT": str(root), "PAVEDML_USE_CASES_DIR": str(cases), "TQDM_DISABLE": "1", **(env or {})}
    return {step: run_worker(["-m", "pavedml", step, "--use-case", USE_CASE, "--ds", ds], env)["process_wall_s"]
            for step in TASKS[1:]}


def _report(name: str, rows: int, runs: list[dict], plain: list[dict]) -> None:
    med = {key: statistics.median(r.get(key, 0.0) for r in runs) for key in ("wall", "tasks", *TASKS)}
    steps = {step: statistics.median(p[step] for p in plain) for step in TASKS[1:]}
    print(f"\n{name}: feature pipeline DAG run, {rows:,} rows, median of {len(runs)} (queued -> finished; "
          "task = start -> end; plain = the step as a fresh process, median of the same number of days):")
    print(f"{'':<22} {'task s':>7} {'plain s':>8} {'Airflow s':>10}")
    for task in TASKS:
        own = steps.get(task, 0.0)
        print(f"{task:<22} {med[task]:>7.2f} {own:>8.2f} {med[task] - own:>10.2f}")
    print(f"{'sum of tasks':<22} {med['tasks']:>7.2f} {sum(steps.values()):>8.2f} {med['tasks'] - sum(steps.values()):>10.2f}")
    print(f"{'between tasks':<22} {med['wall'] - med['tasks']:>7.2f} {'':>8} {med['wall'] - med['tasks']:>10.2f}")
    print(f"{'DAG run (wall)':<22} {med['wall']:>7.2f} {sum(steps.values()):>8.2f} {med['wall'] - sum(steps.values()):>10.2f}")
    print("runs (wall s): " + ", ".join(f"{r['wall']:.1f}" for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profiles", nargs="+", choices=["embedded", "production"], default=["embedded", "production"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pavedml-bench-profiles-"))
    measured: dict[str, list[dict]] = {}
    try:
        batches = _batches(args.rows, args.reps + 1, work)
        cases = _use_cases(work)
        plain_days = [FIRST_DAY + timedelta(days=len(batches) + i) for i in range(args.reps)]

        if "embedded" in args.profiles:
            root = work / "embedded" / "data"

            def land_local(ds: str, batch: Path) -> None:
                target = root / "landing" / USE_CASE / "customers" / f"dt={ds}" / "customers.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(batch, target)

            stack = Standalone(work / "embedded" / "airflow", root, cases).start()
            try:
                measured["embedded"] = _run_profile("embedded", stack, land_local, batches)
            finally:
                stack.stop()
            plain = [_plain_steps(root, cases, land_local, batches[1 + i % args.reps], day)
                     for i, day in enumerate(plain_days)]
            _report("embedded", args.rows, measured["embedded"], plain)

        if "production" in args.profiles:
            services = ProductionServices(work / "production" / "services").start()
            try:
                worker_root = work / "production" / "worker-host"

                def land_s3(ds: str, batch: Path) -> None:
                    services.s3().upload_file(str(batch), "pavedml",
                                              f"landing/{USE_CASE}/customers/dt={ds}/customers.parquet")

                step_env = {**services.step_env(worker_root), "PAVEDML_MLFLOW_CONN_ID": ""}
                stack = Standalone(work / "production" / "airflow", worker_root, cases,
                                   extra_env={**services.airflow_env(), **step_env}).start(timeout=420)
                try:
                    measured["production"] = _run_profile("production", stack, land_s3, batches)
                finally:
                    stack.stop()
                plain = [_plain_steps(worker_root, cases, land_s3, batches[1 + i % args.reps], day, step_env)
                         for i, day in enumerate(plain_days)]
                _report("production", args.rows, measured["production"], plain)
            finally:
                services.stop()

        if len(measured) == 2:
            print(f"\nembedded vs production, {args.rows:,} rows (median):")
            print(f"{'':<22} {'embedded s':>11} {'production s':>13} {'ratio':>6}")
            for key in ("wall", *TASKS):
                e = statistics.median(r.get(key, 0.0) for r in measured["embedded"])
                p = statistics.median(r.get(key, 0.0) for r in measured["production"])
                print(f"{key:<22} {e:>11.1f} {p:>13.1f} {p / e if e else float('nan'):>6.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
