"""Batch scoring of 1M customers (score_customers in a fresh process): trains a small champion on
100k synthetic rows first (the training benchmark's splits), then scores a 1M-row feature partition,
beside bare scikit-learn: a fresh process that imports it, reads the same partition and calls
``predict_proba`` of the same pipeline (``make_pipeline`` fitted on the same train split; the fit is
taken out of its wall time).

    .venv/bin/python benchmarks/bench_scoring.py [--rows 1000000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import DS, USE_CASES, make_splits  # noqa: E402
from common import WORK, run_worker, synthetic  # noqa: E402

BARE_PREDICT = r'''
import json, sys, time
t0 = time.perf_counter()
import pandas as pd
from pavedml.config import load_use_case
from pavedml.steps.training import make_pipeline
uc = load_use_case(sys.argv[1])
pipeline, _ = make_pipeline(uc)
t1 = time.perf_counter()
train = pd.read_parquet(sys.argv[2], columns=[*uc.feature_columns, "label"])
pipeline.fit(train[uc.feature_columns], train["label"])
t2 = time.perf_counter()
df = pd.read_parquet(sys.argv[3], columns=uc.feature_columns)
t3 = time.perf_counter()
pipeline.predict_proba(df)
t4 = time.perf_counter()
print("RESULT " + json.dumps({"import": t1 - t0, "fit": t2 - t1, "read": t3 - t2, "predict": t4 - t3}))
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    import pandas as pd

    root = WORK / "scoring_root"
    shutil.rmtree(root, ignore_errors=True)
    run_dir = root / "bench_churn/training/bench_score"
    run_dir.mkdir(parents=True)
    make_splits(run_dir, 100_000)
    env = {"PAVEDML_DATA_ROOT": str(root), "PAVEDML_USE_CASES_DIR": str(USE_CASES), "TQDM_DISABLE": "1"}
    for step in ("train_challenger", "evaluate_challenger", "promote_challenger"):
        run_worker(["-m", "pavedml", step, "--use-case", "bench_churn", "--ds", DS, "--dag-id", "bench",
                    "--run-id", "bench_score"], env)
    part = root / "bench_churn/features" / f"dt={DS}"
    part.mkdir(parents=True)
    df = synthetic(args.rows, 4, False)
    df.insert(0, "customer_id", [f"C{i:08d}" for i in range(args.rows)])
    df.insert(1, "event_timestamp", pd.Timestamp(DS, tz="UTC"))
    df.to_parquet(part / "part-0.parquet", index=False)
    (part / "_SOURCE.json").write_text(json.dumps({"sha256": "synthetic", "rows": args.rows}))
    walls, inner, bare = [], [], []
    for _ in range(args.reps):
        r = run_worker(["-m", "pavedml", "score_customers", "--use-case", "bench_churn", "--ds", DS], env)
        walls.append(r["process_wall_s"])
        inner.append(r["step_result"]["seconds"])
        rss = r["peak_rss_mib"]
        b = run_worker(["-c", BARE_PREDICT, str(USE_CASES / "bench_churn.yaml"), str(run_dir / "train.parquet"),
                        str(part / "part-0.parquet")])
        bare.append(b["process_wall_s"] - b["fit"])  # the process without the fit (it has no part in scoring)
    print(f"batch scoring {args.rows:,} rows, median of {args.reps}: process wall {statistics.median(walls):.1f} s "
          f"(step itself {statistics.median(inner):.1f} s), peak RSS {rss:.0f} MiB; "
          f"runs: {', '.join(f'{w:.1f}' for w in walls)}")
    print(f"bare scikit-learn (interpreter, imports, read, predict_proba; the fit left out): "
          f"{statistics.median(bare):.1f} s; step process / bare {statistics.median(walls) / statistics.median(bare):.2f}; "
          f"runs: {', '.join(f'{w:.1f}' for w in bare)}")


if __name__ == "__main__":
    main()
