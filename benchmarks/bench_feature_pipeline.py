"""The daily feature pipeline on a synthetic batch (12 numeric, 6 categorical columns): wall time and
peak RSS per step, each step a fresh `python -m pavedml <step>` process (exactly what a task runs),
median of N repetitions on a fresh data root each time.

Each repetition first runs the four steps on the day before (not counted but reported: the first
day of a data root applies the Feast definitions), then measures the day itself, as a daily
pipeline runs. Beside each step, its floor: a fresh process importing what the step needs and
nothing else (``FLOORS``), median of the same number of runs.

    .venv/bin/python benchmarks/bench_feature_pipeline.py --rows 100000 --reps 3
    .venv/bin/python benchmarks/bench_feature_pipeline.py --rows 1000000 --reps 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, run_worker, synthetic  # noqa: E402

STEPS = ("ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features")
DS = "2025-03-01"
FIRST = (dt.date.fromisoformat(DS) - dt.timedelta(days=1)).isoformat()
#: what each step imports that costs: the floor of its fixed cost
FLOORS = {
    "ingest_raw_batch": "import pavedml.cli, pavedml.steps.ingest, pandas, pyarrow.parquet, pyarrow.csv",
    "validate_raw_batch": "import pavedml.cli, pavedml.steps.validation, pandas, great_expectations",
    "build_features": "import pavedml.cli, pavedml.steps.features, pandas, pyarrow.parquet",
    "materialize_features": "import pavedml.cli, pavedml.steps.featurestore, pavedml.adapters.online_sqlite, "
                            "pyarrow.parquet, pyarrow.compute, numpy",
}
FEAST_FLOOR = FLOORS["materialize_features"] + ", feast"
USE_CASES = Path(__file__).resolve().parent / "use_cases"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--online", default="", help="PAVEDML_FEAST_ONLINE_STORE (default: SQLite)")
    args = parser.parse_args()
    batch = WORK / f"feature_batch_{args.rows}.parquet"
    if not batch.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        df = synthetic(args.rows, 3, False)
        df.insert(0, "customer_id", [f"C{i:08d}" for i in range(args.rows)])
        df.to_parquet(batch, index=False)
    per_step: dict[str, list] = {s: [] for s in STEPS}
    first_day = []
    totals = []
    for rep in range(args.reps):
        root = WORK / f"feature_root_{args.rows}"
        shutil.rmtree(root, ignore_errors=True)
        if args.online.startswith("redis://"):  # a fresh store too
            import redis

            redis.Redis.from_url(args.online).flushdb()
        for day in (FIRST, DS):
            landing = root / "landing/bench_churn/customers" / f"dt={day}"
            landing.mkdir(parents=True)
            shutil.copy(batch, landing / "customers.parquet")
        env = {"PAVEDML_DATA_ROOT": str(root), "PAVEDML_USE_CASES_DIR": str(USE_CASES),
               "PAVEDML_FEAST_ONLINE_STORE": args.online, "TQDM_DISABLE": "1"}
        first = 0.0
        for step in STEPS:
            r = run_worker(["-m", "pavedml", step, "--use-case", "bench_churn", "--ds", FIRST], env)
            first += r["process_wall_s"]
            if step == "materialize_features":
                first_day.append((first, r["process_wall_s"]))
        total = 0.0
        for step in STEPS:
            r = run_worker(["-m", "pavedml", step, "--use-case", "bench_churn", "--ds", DS], env)
            per_step[step].append((r["process_wall_s"], r["peak_rss_mib"]))
            total += r["process_wall_s"]
        totals.append(total)
        print(f"rep {rep + 1}: total {total:.1f} s (the first day before it: {first:.1f} s)", flush=True)
    floors = {step: statistics.median(run_worker(["-c", code])["process_wall_s"] for _ in range(args.reps))
              for step, code in {**FLOORS, "feast": FEAST_FLOOR}.items()}
    print(f"\nfeature pipeline, {args.rows:,} rows, the second day of a data root, median of {args.reps} "
          "(fresh process per step):")
    print(f"{'step':<22} {'wall s':>8} {'floor s':>8} {'peak RSS MiB':>13}")
    for step, values in per_step.items():
        print(f"{step:<22} {statistics.median(v[0] for v in values):>8.2f} {floors[step]:>8.2f} "
              f"{statistics.median(v[1] for v in values):>13.0f}")
    print(f"{'total':<22} {statistics.median(totals):>8.2f} {sum(floors[s] for s in STEPS):>8.2f}   "
          f"(runs: {', '.join(f'{t:.2f}' for t in totals)})")
    print(f"the first day (Feast apply): total {statistics.median(f for f, _ in first_day):.2f} s, materialize "
          f"{statistics.median(m for _, m in first_day):.2f} s (floor with Feast's import {floors['feast']:.2f} s)")
    print("floor: a fresh process importing what the step needs (FLOORS in this script)")


if __name__ == "__main__":
    main()
