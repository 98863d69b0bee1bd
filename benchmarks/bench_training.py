"""The training step (train_challenger) at 100k and 1M training rows: wall time, peak RSS and the
share of wall time spent in MLflow logging and registration. The train/validation/holdout splits
are written directly (synthetic, 12 numeric + 6 categorical columns, a logistic label), so only the
step itself is measured, in a fresh `python -m pavedml train_challenger` process (SQLite MLflow).

    .venv/bin/python benchmarks/bench_training.py --rows 100000 1000000 --reps 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, run_worker, synthetic  # noqa: E402

DS = "2025-03-01"
USE_CASES = Path(__file__).resolve().parent / "use_cases"


def make_splits(root: Path, rows: int) -> None:
    import numpy as np
    import pandas as pd

    manifest = {"rows": {}, "digests": {}, "window_days": 90, "feature_snapshots": {}, "dropped_without_features": 0}
    for i, (split, frac) in enumerate((("train", 0.6), ("validation", 0.2), ("holdout", 0.2))):
        n = int(rows * frac)
        df = synthetic(n, 10 + i, False)
        rng = np.random.default_rng(20 + i)
        logit = -1.2 + 0.5 * df["num_support_calls"] - 0.04 * df["tenure_months"] + 0.02 * df["payment_delay_days"]
        df["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
        df.insert(0, "customer_id", [f"C{j:08d}" for j in range(n)])
        df.insert(1, "event_timestamp", pd.Timestamp(DS, tz="UTC"))
        df.to_parquet(root / f"{split}.parquet", index=False)
        manifest["rows"][split] = n
        manifest["digests"][split] = f"synthetic-{split}-{rows}"
    (root / "dataset.json").write_text(json.dumps(manifest))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(f"{'rows':>9} {'wall s':>8} {'fit s':>7} {'mlflow s':>9} {'mlflow share':>13} {'peak RSS MiB':>13}")
    for rows in args.rows:
        splits = WORK / f"training_splits_{rows}"
        if not (splits / "dataset.json").exists():
            splits.mkdir(parents=True, exist_ok=True)
            make_splits(splits, rows)
        results = []
        for rep in range(args.reps):
            root = WORK / f"training_root_{rows}"
            shutil.rmtree(root, ignore_errors=True)
            run_key = f"bench_{rep}"
            shutil.copytree(splits, root / "bench_churn/training" / run_key)
            env = {"PAVEDML_DATA_ROOT": str(root), "PAVEDML_USE_CASES_DIR": str(USE_CASES), "TQDM_DISABLE": "1"}
            r = run_worker(["-m", "pavedml", "train_challenger", "--use-case", "bench_churn", "--ds", DS,
                            "--dag-id", "bench", "--run-id", run_key], env)
            results.append(r)
        walls = [r["process_wall_s"] for r in results]
        wall = statistics.median(walls)
        fit = statistics.median(r["step_result"]["seconds"]["fit"] for r in results)
        mlf = statistics.median(r["step_result"]["seconds"]["mlflow_logging_and_registration"] for r in results)
        rss = statistics.median(r["peak_rss_mib"] for r in results)
        print(f"{rows:>9} {wall:>8.1f} {fit:>7.1f} {mlf:>9.2f} {mlf / wall:>12.1%} {rss:>13.0f}   "
              f"(walls: {', '.join(f'{w:.1f}' for w in walls)})", flush=True)


if __name__ == "__main__":
    main()
