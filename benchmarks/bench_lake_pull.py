"""The lake at scale (#19 item 4): what a fresh worker's first step of each kind pulls from a lake
holding a long daily history, in bytes and seconds.

One day of ``--rows`` (100,000) rows goes through the real ``ingest_raw_batch``,
``validate_raw_batch`` and ``build_features`` (fresh processes, local data root), and a
predictions partition of the same rows is written like ``score_customers``' (customer, score,
model version; ``_SCORED.json``). That day's files are then put in a lake on moto's S3 server (a
separate process, on loopback) under each of ``--days`` (365) days, by server-side copies, with
a drift report, a performance record and the shared records (PSI and performance histories). For
each step kind, a fresh working copy pulls what that step pulls (``pavedml.pullset``) on the last
day: files, MB and seconds, median of ``--reps`` (3), each into an empty directory. With
``--compare-days 30`` the same at 30 days of history (the feature steps must not move); with
``--full`` also the whole-tree pull every step did before (once: it is the whole history).

    .venv/bin/python benchmarks/bench_lake_pull.py [--rows 100000] [--days 365] [--reps 3]
        [--compare-days 30] [--full] [--out var/bench/lake_pull.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, WORK, run_worker, synthetic  # noqa: E402

USE_CASES = Path(__file__).resolve().parent / "use_cases"
USE_CASE = "bench_churn"
LAST = date(2026, 11, 30)
STEPS = ("ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features", "score_customers",
         "build_training_set", "train_challenger", "check_drift", "measure_performance")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_day(rows: int, root: Path) -> Path:
    """The use case's tree of one day (``LAST``) made by the real steps; returns the use case root."""
    ds = LAST.isoformat()
    batch = WORK / f"lake_batch_{rows}.parquet"
    if not batch.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        df = synthetic(rows, 5, False)
        df.insert(0, "customer_id", [f"C{i:08d}" for i in range(rows)])
        df.to_parquet(batch, index=False)
    shutil.rmtree(root, ignore_errors=True)
    landing = root / "landing" / USE_CASE / "customers" / f"dt={ds}"
    landing.mkdir(parents=True)
    shutil.copy(batch, landing / "customers.parquet")
    env = {"PAVEDML_DATA_ROOT": str(root), "PAVEDML_USE_CASES_DIR": str(USE_CASES), "TQDM_DISABLE": "1"}
    for step in ("ingest_raw_batch", "validate_raw_batch", "build_features"):
        run_worker(["-m", "pavedml", step, "--use-case", USE_CASE, "--ds", ds], env)
    import numpy as np
    import pandas as pd

    uc_root = root / USE_CASE
    part = uc_root / "predictions" / f"dt={ds}"
    part.mkdir(parents=True)
    rng = np.random.default_rng(1)
    pd.DataFrame({"customer_id": [f"C{i:08d}" for i in range(rows)],
                  "event_timestamp": pd.Timestamp(ds, tz="UTC"), "score": rng.random(rows),
                  "prediction": rng.integers(0, 2, rows), "model_version": "7"}).to_parquet(part / "part-0.parquet")
    (part / "_SCORED.json").write_text(json.dumps({"model_version": "7", "rows": rows}))
    for rel, body in ((f"drift/dt={ds}/report.json", "{}"), (f"performance/dt={ds}/metrics.json", "{}")):
        (uc_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (uc_root / rel).write_text(body)
    return uc_root


class S3:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (workdir / "moto.log").open("w")
        exe = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        import boto3

        self.client = boto3.client("s3", endpoint_url=self.url, aws_access_key_id="bench",
                                   aws_secret_access_key="bench", region_name="us-east-1")
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.create_bucket(Bucket="pavedml")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def fill(s3: S3, prefix: str, day_root: Path, days: int) -> dict:
    """The day's files under each of ``days`` days ending at LAST (server-side copies), plus the shared records."""
    ds = LAST.isoformat()
    files = [p for p in day_root.rglob("*") if p.is_file() and ".lake" not in p.name and "/feast/" not in str(p)
             and not p.relative_to(day_root).as_posix().startswith("feast/")]
    dated = [p.relative_to(day_root).as_posix() for p in files if f"dt={ds}" in p.as_posix()]
    for rel in dated:
        s3.client.upload_file(str(day_root / rel), "pavedml", f"{prefix}/{rel}")
    copies = [(rel, (LAST - timedelta(days=i)).isoformat()) for i in range(1, days) for rel in dated]

    def copy(item):
        rel, d = item
        s3.client.copy_object(Bucket="pavedml", Key=f"{prefix}/{rel.replace(f'dt={ds}', f'dt={d}')}",
                              CopySource={"Bucket": "pavedml", "Key": f"{prefix}/{rel}"})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(copy, copies))
    history = "ds,model_version,metric,value\n" + "".join(
        f"{(LAST - timedelta(days=i)).isoformat()},7,roc_auc,0.8\n" for i in range(days))
    for rel, body in (("drift/psi_history.csv", history), ("performance/history.csv", history),
                      ("drift/retrain_requests.jsonl", ""), ("performance/holdouts.json", "{}")):
        s3.client.put_object(Bucket="pavedml", Key=f"{prefix}/{rel}", Body=body.encode())
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket="pavedml", Prefix=prefix + "/")
    objects = [o for page in pages for o in page.get("Contents", [])]
    return {"objects": len(objects), "mb": sum(o["Size"] for o in objects) / 1e6,
            "day_mb": sum((day_root / rel).stat().st_size for rel in dated) / 1e6}


def pull_once(lake_uri: str, step: str | None) -> dict:
    from pavedml import pullset
    from pavedml.context import StepContext
    from pavedml.lake import Lake

    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
        lake = Lake(f"{lake_uri}/{USE_CASE}", Path(tmp) / USE_CASE)
        select = None
        if step is not None:
            ctx = StepContext.build(USE_CASE, LAST, run_id="manual__bench")
            select = pullset.for_step(step, ctx)
        started = time.perf_counter()
        stats = lake.pull(select)
        return {"files": stats.transferred, "mb": stats.bytes / 1e6, "s": time.perf_counter() - started,
                "left": stats.left, "days": select.describe() if select else "every day"}


def measure(lake_uri: str, reps: int, steps) -> dict:
    out = {}
    for step in steps:
        runs = [pull_once(lake_uri, step) for _ in range(reps)]
        out[step or "(whole tree)"] = {**runs[0], "s": statistics.median(r["s"] for r in runs),
                                       "runs_s": [round(r["s"], 2) for r in runs]}
        r = out[step or "(whole tree)"]
        print(f"  {step or '(whole tree)':<22} {r['files']:>6} files {r['mb']:>9.1f} MB {r['s']:>7.2f} s "
              f"(runs {', '.join(f'{x:.2f}' for x in r['runs_s'])})  pulls {r['days']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--compare-days", type=int, default=30)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="also the whole-tree pull (once)")
    parser.add_argument("--out", type=Path, default=WORK / "lake_pull.json")
    args = parser.parse_args()
    os.environ.update({"PAVEDML_USE_CASES_DIR": str(USE_CASES), "PAVEDML_LANDING_URI": "",
                       "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    work = WORK / "lake_pull"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    day_root = one_day(args.rows, work / "day")
    print(f"one day of {args.rows:,} rows made by the real steps in {time.perf_counter() - started:.0f} s", flush=True)
    s3 = S3(work)
    os.environ["AWS_ENDPOINT_URL"] = s3.url
    results: dict = {"rows": args.rows, "reps": args.reps, "histories": {}}
    try:
        for days in sorted({args.days, args.compare_days} - {0}, reverse=True):
            prefix = f"lake{days}"
            filled = fill(s3, f"{prefix}/{USE_CASE}", day_root, days)
            print(f"\n{days} days of history in the lake: {filled['objects']} objects, {filled['mb']:.0f} MB "
                  f"({filled['day_mb']:.1f} MB a day); a fresh worker's first step pulls:", flush=True)
            steps = list(STEPS) + ([None] if args.full and days == args.days else [])
            results["histories"][days] = {**filled, "pulls": measure(f"s3://pavedml/{prefix}", args.reps, steps)}
    finally:
        s3.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
