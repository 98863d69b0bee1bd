"""The training step (train_challenger) at 100k and 1M training rows: wall time, peak RSS and the
share of wall time spent in MLflow logging and registration, beside bare scikit-learn fitting the
same pipeline (``make_pipeline``) on the same train split in a fresh process (read, fit, and
``predict_proba`` of the validation split: what the step needs of the library). The train/validation/holdout splits
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
BARE_FIT = r'''
import json, sys, time
t0 = time.perf_counter()
import pandas as pd
from pavedml.config import load_use_case
from pavedml.steps.training import make_pipeline
uc = load_use_case(sys.argv[1])
pipeline, _ = make_pipeline(uc)
t1 = time.perf_counter()
train = pd.read_parquet(sys.argv[2] + "/train.parquet", columns=[*uc.feature_columns, "label"])
validation = pd.read_parquet(sys.argv[2] + "/validation.parquet", columns=uc.feature_columns)
t2 = time.perf_counter()
pipeline.fit(train[uc.feature_columns], train["label"])
t3 = time.perf_counter()
pipeline.predict_proba(validation)
t4 = time.perf_counter()
print("RESULT " + json.dumps({"import": t1 - t0, "read": t2 - t1, "fit": t3 - t2, "predict": t4 - t3}))
'''


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
    print(f"{'rows':>9} {'wall s':>8} {'fit s':>7} {'mlflow s':>9} {'mlflow share':>13} {'peak RSS MiB':>13} "
          f"{'bare wall s':>12} {'bare fit s':>11} {'wall / bare':>12}")
    for rows in args.rows:
        splits = WORK / f"training_splits_{rows}"
        if not (splits / "dataset.json").exists():
            splits.mkdir(parents=True, exist_ok=True)
            make_splits(splits, rows)
        results, bare = [], []
        for rep in range(args.reps):
            root = WORK / f"training_root_{rows}"
            shutil.rmtree(root, ignore_errors=True)
            run_key = f"bench_{rep}"
            shutil.copytree(splits, root / "bench_churn/training" / run_key)
            env = {"PAVEDML_DATA_ROOT": str(root), "PAVEDML_USE_CASES_DIR": str(USE_CASES), "TQDM_DISABLE": "1"}
            r = run_worker(["-m", "pavedml", "train_challenger", "--use-case", "bench_churn", "--ds", DS,
                            "--dag-id", "bench", "--run-id", run_key], env)
            results.append(r)
            bare.append(run_worker(["-c", BARE_FIT, str(USE_CASES / "bench_churn.yaml"), str(splits)]))
        walls = [r["process_wall_s"] for r in results]
        wall = statistics.median(walls)
        fit = statistics.median(r["step_result"]["seconds"]["fit"] for r in results)
        mlf = statistics.median(r["step_result"]["seconds"]["mlflow_logging_and_registration"] for r in results)
        rss = statistics.median(r["peak_rss_mib"] for r in results)
        bare_wall = statistics.median(b["process_wall_s"] for b in bare)
        bare_fit = statistics.median(b["fit"] for b in bare)
        print(f"{rows:>9} {wall:>8.1f} {fit:>7.1f} {mlf:>9.2f} {mlf / wall:>12.1%} {rss:>13.0f} {bare_wall:>12.1f} "
              f"{bare_fit:>11.1f} {wall / bare_wall:>12.2f}   (walls: {', '.join(f'{w:.1f}' for w in walls)}; "
              f"bare: {', '.join(f'{w:.1f}' for w in (b['process_wall_s'] for b in bare))})", flush=True)


if __name__ == "__main__":
    main()
