"""What governance costs (#20): the evaluation's extra work on a holdout (fairness report, permutation
importance, metric intervals, model card) and batch scoring's per-row explanation against plain
scoring, in-process on the synthetic churn table (12 numeric, 6 categorical columns).

    .venv/bin/python benchmarks/bench_governance.py [--train 100000] [--holdout 50000] [--score 100000 1000000] [--reps 3]

Prints one JSON line per measurement (median of ``--reps``) and a summary table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CAT_COLS, NUM_COLS, emit, synthetic  # noqa: E402


def _labels(df, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    logit = (-1.5 + 0.04 * df["num_support_calls"] - 0.03 * df["tenure_months"]
             + 0.8 * (df["contract_type"] == "month-to-month") + 0.3 * (df["region"] == "south"))
    return (rng.random(len(df)) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()


def _timed(fn, reps: int) -> tuple[float, list[float]]:
    runs = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs), runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--holdout", type=int, default=50_000)
    parser.add_argument("--score", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from pavedml.config import Fairness
    from pavedml.explain import baseline_values, permutation_table, row_contributions
    from pavedml.fairness import group_report
    from pavedml.metrics import model_scores
    from pavedml.steps.performance import realized_metrics

    cats = list(CAT_COLS)
    train = synthetic(args.train, 1, False)
    pipe = Pipeline([("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cats)],
                                               remainder="passthrough")),
                     ("model", HistGradientBoostingClassifier(max_iter=100, random_state=0))])
    pipe.fit(train, _labels(train, 1))
    holdout = synthetic(args.holdout, 2, False)
    y = _labels(holdout, 2)
    scores = model_scores(pipe, holdout, "binary_classification")
    policy = Fairness(sensitive=["region", "plan_tier"], max_difference={"true_positive_rate": 0.1})
    rows = []
    for name, fn in (("fairness_report", lambda: group_report(holdout, y, scores, policy)),
                     ("permutation_importance_2000_rows", lambda: permutation_table(pipe, holdout, y, rows=2000)),
                     ("metric_intervals", lambda: realized_metrics("binary_classification", y, scores, resamples=100))):
        med, runs = _timed(fn, args.reps)
        rows.append({"what": name, "holdout_rows": args.holdout, "seconds": round(med, 3),
                     "runs": [round(r, 3) for r in runs]})
        emit(rows[-1])
    baseline = baseline_values(train, NUM_COLS, cats)
    for n in args.score:
        batch = synthetic(n, 3, False)
        plain, plain_runs = _timed(lambda b=batch: model_scores(pipe, b, "binary_classification"), args.reps)
        explained, explain_runs = _timed(lambda b=batch: row_contributions(pipe, b, baseline, k=3), args.reps)
        rows.append({"what": "scoring_explain", "rows": n, "features": batch.shape[1],
                     "scoring_seconds": round(plain, 3), "explain_seconds": round(explained, 3),
                     "ratio": round(explained / plain, 1), "explain_runs": [round(r, 3) for r in explain_runs]})
        emit(rows[-1])
    print("\n| measurement | rows | median s |")
    print("|---|---|---|")
    for r in rows:
        if r["what"] == "scoring_explain":
            print(f"| scoring | {r['rows']} | {r['scoring_seconds']} |")
            print(f"| + per-row top 3 features ({r['features']} features) | {r['rows']} | {r['explain_seconds']} "
                  f"({r['ratio']}x scoring) |")
        else:
            print(f"| {r['what']} | {r['holdout_rows']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
