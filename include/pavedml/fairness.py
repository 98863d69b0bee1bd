"""The fairness gate's numbers: group metrics of a model on the holdout (fairlearn's MetricFrame),
per sensitive column, and the limits of ``evaluation.fairness`` checked against them.

For each sensitive column the holdout is split into its groups; each group's metrics are computed
(:data:`pavedml.config.FAIRNESS_METRICS_BY_TASK`: a classifier's true/false positive rate, selection
rate and accuracy at the decision threshold; a regressor's mean prediction and MAE). Groups with
fewer than ``min_group_rows`` rows are reported with their metrics but left out of the comparison
(too few rows to judge). A limit is violated when the spread of a metric over the judged groups
(largest minus smallest) exceeds its ``max_difference``. A column with fewer than two judged groups
is reported as not judged (``judged`` false when no column was), and a rate over no row (the true
positive rate of a group without positives, the false positive rate of one without negatives) is
undefined, left out of the spread.

Pure (numpy, pandas, fairlearn): no tracking, no I/O.
"""

from __future__ import annotations

import math
from typing import Any

from pavedml.config import Fairness
from pavedml.metrics import DECISION_THRESHOLD, is_regression


def _metric_functions(task: str) -> dict[str, Any]:
    import numpy as np
    from fairlearn.metrics import false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score, mean_absolute_error

    if is_regression(task):
        return {"mean_prediction": lambda y, p: float(np.mean(p)), "mae": mean_absolute_error}
    return {"true_positive_rate": true_positive_rate, "false_positive_rate": false_positive_rate,
            "selection_rate": selection_rate, "accuracy": accuracy_score}


def _finite(value) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def group_labels(column):
    """A sensitive column's values as group names: text, whole numbers without ``.0`` (a 0/1 column
    read back as floats is still groups ``0`` and ``1``), empty values ``__missing__``."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype="float64", na_value=np.nan)
        return np.array(["__missing__" if not np.isfinite(v) else (str(int(v)) if float(v).is_integer() else str(v))
                         for v in values], dtype=object)
    return column.astype("string").fillna("__missing__").to_numpy(dtype=object)


def group_report(df, y, scores, policy: Fairness, task: str = "binary_classification") -> dict[str, Any]:
    """Every sensitive column's groups, their rows and metrics, the spreads and the violations.

    ``df`` holds the sensitive columns (the holdout), ``y`` the labels, ``scores`` the model's
    scores on those rows (:func:`pavedml.metrics.model_scores`)."""
    import numpy as np
    from fairlearn.metrics import MetricFrame

    y = np.asarray(y)
    scores = np.asarray(scores, dtype="float64")
    pred = scores if is_regression(task) else (scores >= DECISION_THRESHOLD).astype(int)
    functions = _metric_functions(task)
    columns: dict[str, Any] = {}
    violations: list[str] = []
    for col in policy.sensitive:
        groups_of = group_labels(df[col])
        frame = MetricFrame(metrics=functions, y_true=y, y_pred=pred, sensitive_features=groups_of)
        sizes = {str(g): int(n) for g, n in zip(*np.unique(groups_of, return_counts=True), strict=True)}
        by_group = frame.by_group
        metrics_of: dict[str, dict[str, float | None]] = {
            g: {m: _finite(by_group.loc[g, m]) for m in functions} for g in sorted(sizes)}
        if not is_regression(task):  # a rate over no row is undefined, not 0 (fairlearn says 0)
            for g in metrics_of:
                labels = y[groups_of == g]
                if not (labels == 1).any():
                    metrics_of[g]["true_positive_rate"] = None
                if not (labels == 0).any():
                    metrics_of[g]["false_positive_rate"] = None
        groups = {g: {"rows": sizes[g], "judged": sizes[g] >= policy.min_group_rows, "metrics": metrics_of[g]}
                  for g in sorted(sizes)}
        judged = [g for g in sorted(sizes) if sizes[g] >= policy.min_group_rows]
        spreads: dict[str, Any] = {}
        if len(judged) >= 2:
            for metric in functions:
                values: dict[str, float] = {g: v for g in judged if (v := metrics_of[g][metric]) is not None}
                if len(values) < 2:
                    continue
                low, high = min(values, key=lambda g: values[g]), max(values, key=lambda g: values[g])
                spread = values[high] - values[low]
                limit = policy.max_difference.get(metric)
                spreads[metric] = {"difference": round(spread, 6), "limit": limit, "highest": high, "lowest": low,
                                   "ok": limit is None or spread <= limit}
                if limit is not None and spread > limit:
                    violations.append(f"fairness: {metric} differs by {spread:.3f} between {col} groups "
                                      f"({high} {values[high]:.3f}, {low} {values[low]:.3f}; allowed {limit})")
        small = [f"{g} ({sizes[g]} rows)" for g in sorted(sizes) if g not in judged]
        columns[col] = {"groups": groups, "spreads": spreads, "judged": len(judged) >= 2,
                        "note": (f"groups under {policy.min_group_rows} rows reported, not judged: {', '.join(small)}"
                                 if small else "")}
    judged_any = any(c["judged"] for c in columns.values())
    return {"columns": columns, "violations": violations, "ok": not violations, "judged": judged_any,
            "limits": dict(policy.max_difference), "min_group_rows": policy.min_group_rows}
