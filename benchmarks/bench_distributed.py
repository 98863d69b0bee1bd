"""The scale figure (#19): the same workload on one Celery worker and on two, same machine.

Workload: ``--use-cases`` (3) use cases x ``--days`` (5) daily feature pipeline runs of
``--rows`` (10,000) rows each, all triggered at once, on the production profile without
containers (``tests/helpers/prodstack.py``: PostgreSQL, Redis, moto's S3 server, the MLflow
server; ``tests/helpers/cluster.py``: API server, scheduler, DAG processor, triggerer and Celery
workers as separate processes, each worker a "host" with its own working copy of the lake). Each
worker runs ``--concurrency`` (1) task at a time. Every configuration gets fresh services and
databases and the same batches. The figure is the wall time from the first trigger to the last
run's end; the task count per worker and the task durations are printed beside it.

    .venv/bin/python benchmarks/bench_distributed.py [--use-cases 3] [--days 5] [--rows 10000]
        [--workers 1 2] [--concurrency 1] [--out var/bench/distributed.json]

Two workers on this 2-core machine share its cores: the ratio shows what the second worker
overlaps (waiting on the stores, the scheduler, imports), not what a second host would add.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, synthetic  # noqa: E402

from tests.helpers.cluster import CeleryCluster  # noqa: E402
from tests.helpers.prodstack import ProductionServices  # noqa: E402

FIRST_DAY = date(2025, 3, 1)
TASKS = ("wait_for_batch", "ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features")


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b.replace("Z", "+00:00"))
            - datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()


def _use_cases(work: Path, count: int) -> tuple[Path, list[str]]:
    cases = work / "use_cases"
    cases.mkdir()
    base = yaml.safe_load((REPO / "benchmarks/use_cases/bench_churn.yaml").read_text())
    names = []
    for i in range(count):
        spec = json.loads(json.dumps(base))
        spec["name"] = name = f"bench_{chr(ord('a') + i)}"
        spec["model"]["registered_name"] = name
        spec.setdefault("schedules", {}).update(feature_pipeline=None, training_pipeline=None, batch_scoring=None,
                                                drift_monitor=None, performance_monitor=None)
        (cases / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        names.append(name)
    return cases, names


def _batches(work: Path, rows: int, days: int) -> list[Path]:
    out = []
    for day in range(days):
        path = work / f"batch_{day}.parquet"
        df = synthetic(rows, 200 + day, False)
        df.insert(0, "customer_id", [f"C{i:08d}" for i in range(rows)])
        df.to_parquet(path, index=False)
        out.append(path)
    return out


def run_config(workers: int, concurrency: int, work: Path, cases: Path, names: list[str],
               batches: list[Path]) -> dict:
    base = work / f"workers-{workers}"
    services = ProductionServices(base / "services").start()
    stack = None
    try:
        for name in names:
            for day, batch in enumerate(batches):
                ds = (FIRST_DAY + timedelta(days=day)).isoformat()
                services.s3().upload_file(str(batch), "pavedml", f"landing/{name}/customers/dt={ds}/customers.parquet")
        env = {**services.step_env(base / "control" / "data"), "PAVEDML_MLFLOW_CONN_ID": ""}
        hosts = {f"worker-{i + 1}": {**services.step_env(base / f"worker-{i + 1}" / "data"), "PAVEDML_MLFLOW_CONN_ID": ""}
                 for i in range(workers)}
        stack = CeleryCluster(base / "control", base / "control" / "data", cases, services.dbs["airflow"], hosts,
                              extra_env=env, concurrency=concurrency).start()
        for name in names:
            stack.wait_for_dag(f"{name}_feature_pipeline")
        started = time.monotonic()
        runs = []
        for day in range(len(batches)):  # day-major: every use case's first day goes out first
            ds = (FIRST_DAY + timedelta(days=day)).isoformat()
            for name in names:
                dag_id, run_id = f"{name}_feature_pipeline", f"bench_{ds}"
                stack.api("POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": f"{ds}T00:00:00Z"})
                runs.append((dag_id, run_id))
        finished = [stack.wait_for_run(dag_id, run_id, timeout=3600) for dag_id, run_id in runs]
        wall = time.monotonic() - started
        failed = [(d, r["dag_run_id"], r["state"]) for (d, _), r in zip(runs, finished, strict=True)
                  if r["state"] != "success"]
        if failed:
            raise SystemExit(f"{workers} worker(s): runs did not succeed: {failed}; see {base}")
        durations: dict[str, list[float]] = {t: [] for t in TASKS}
        for dag_id, run_id in runs:
            for ti in stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]:
                if ti["task_id"] in durations and ti.get("start_date") and ti.get("end_date"):
                    durations[ti["task_id"]].append(_seconds(ti["start_date"], ti["end_date"]))
        per_worker = Counter(h for (_d, _r, _t, h) in stack.task_hosts())
        result = {"workers": workers, "concurrency": concurrency, "runs": len(runs), "wall_s": round(wall, 1),
                  "tasks_per_worker": dict(sorted(per_worker.items())),
                  "task_median_s": {t: round(statistics.median(v), 2) for t, v in durations.items() if v}}
        print(json.dumps(result), flush=True)
        return result
    finally:
        if stack is not None:
            stack.stop()
        services.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--use-cases", type=int, default=3)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--out", type=Path, default=WORK / "distributed.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pavedml-bench-distributed-"))
    try:
        cases, names = _use_cases(work, args.use_cases)
        batches = _batches(work, args.rows, args.days)
        results = [run_config(n, args.concurrency, work, cases, names, batches) for n in args.workers]
        print(f"\n{args.use_cases} use cases x {args.days} days x {args.rows:,} rows: feature pipeline runs, "
              f"all triggered at once; {args.concurrency} task(s) at a time per worker")
        print(f"{'workers':>8} {'wall s':>8} {'runs/min':>9}  tasks per worker")
        for r in results:
            print(f"{r['workers']:>8} {r['wall_s']:>8.1f} {r['runs'] / r['wall_s'] * 60:>9.2f}  {r['tasks_per_worker']}")
        if len(results) >= 2:
            print(f"wall time ratio, {results[0]['workers']} worker(s) / {results[-1]['workers']}: "
                  f"{results[0]['wall_s'] / results[-1]['wall_s']:.2f}x")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                       indent=2))
        print(f"figures: {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
