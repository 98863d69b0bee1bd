"""measure_performance on one scored day of N rows (default 1M) with its labels: wall time and
peak RSS of the step in a fresh process (``python -m pavedml measure_performance``, as a task runs
it), median of K runs. Synthetic data in the contract's format under a temporary data root
(telco_churn's use case): ``predictions/dt=2025-01-01/part-0.parquet`` with a champion and a
shadow challenger score on every row, and the labels CSV landing two days later.

* ``cold``: the labels file seen for the first time (its labels suite runs; nothing cached);
* ``warm``: labels validated before (the suite's result is cached by content), the day measured
  again from scratch (its record and the labels index removed).

Target (issue #17): under 20 s and 1.5 GiB per day's run.

    .venv/bin/python benchmarks/bench_performance.py [--rows 1000000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import WORK, median, run_worker  # noqa: E402

DAY, LABEL_DAY = "2025-01-01", "2025-01-03"


def make_data(root, n: int) -> None:
    import numpy as np
    import pandas as pd

    marker = root / f".rows-{n}-v2"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(7)
    keys = pd.Series(np.arange(n)).map("S{:08d}".format)
    y = rng.random(n) < 0.27
    champion = np.clip(0.27 + 0.35 * (y - 0.27) + rng.normal(0, 0.2, n), 0.001, 0.999)
    challenger = np.clip(0.27 + 0.40 * (y - 0.27) + rng.normal(0, 0.2, n), 0.001, 0.999)
    part = root / "telco_churn" / "predictions" / f"dt={DAY}"
    part.mkdir(parents=True)
    pd.DataFrame({"customerID": keys, "event_timestamp": pd.Timestamp(DAY, tz="UTC"),
                  "probability": champion, "prediction": (champion >= 0.5).astype("int8"),
                  "model_name": "telco_churn", "model_version": "1", "served_by": "champion",
                  "champion_version": "1", "champion_score": champion,
                  "challenger_version": "2", "challenger_score": challenger,
                  "feature_snapshot_sha256": "0" * 64, "scored_at": pd.Timestamp("2025-01-02", tz="UTC")},
                 ).to_parquet(part / "part-0.parquet", index=False)
    (part / "_SCORED.json").write_text(json.dumps({"model_name": "telco_churn", "model_version": "1",
                                                   "challenger_version": "2", "rows": n,
                                                   "holdouts": {"1": {"roc_auc": 0.84}, "2": {"roc_auc": 0.85}}}))
    labels = root / "landing" / "telco_churn" / "labels" / f"dt={LABEL_DAY}"
    labels.mkdir(parents=True)
    pd.DataFrame({"customerID": keys, "Churn": np.where(y, "Yes", "No"), "snapshot_date": DAY}).to_csv(
        labels / "labels.csv", index=False)
    marker.write_text("")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    root = WORK / f"performance_{args.rows}" / "data"
    make_data(root, args.rows)
    env = {"PAVEDML_DATA_ROOT": str(root)}
    argv = ["-m", "pavedml", "measure_performance", "--use-case", "telco_churn", "--ds", LABEL_DAY]
    run_worker(argv, env)  # once, untimed: creates the local MLflow database (not part of a day's run)
    print(f"{'rows':>9} {'run':<5} {'step s':>8} {'process s':>10} {'peak RSS MiB':>13}   (median of {args.reps})")
    for mode in ("cold", "warm"):
        runs = []
        for _ in range(args.reps):
            shutil.rmtree(root / "telco_churn" / "performance", ignore_errors=True)
            if mode == "cold":
                shutil.rmtree(root / "telco_churn" / "validation", ignore_errors=True)
            r = run_worker(argv, env)
            step = r["step_result"]
            assert step["measured"] == [DAY], step
            runs.append(r)
        step_s = median([r["step_result"]["seconds"] for r in runs])
        wall = median([r["process_wall_s"] for r in runs])
        rss = median([r["peak_rss_mib"] for r in runs])
        each = ", ".join("{:.1f} s/{:.0f} MiB".format(r["process_wall_s"], r["peak_rss_mib"]) for r in runs)
        print(f"{args.rows:>9} {mode:<5} {step_s:>8.2f} {wall:>10.2f} {rss:>13.0f}   runs: {each}", flush=True)
    print(f"champion roc_auc {runs[-1]['step_result']['value']} n={runs[-1]['step_result']['n']}")


if __name__ == "__main__":
    main()
