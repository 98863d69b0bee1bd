"""Explanations of a fitted pipeline: global permutation importance (how much the task's score drops
when one input column is shuffled) and, for batch scoring, each row's top contributing features.

Permutation importance is model-agnostic and exact for every family pavedml trains (it measures the
pipeline as it scores, preprocessing included), so one method serves all families. Pure (numpy,
pandas, scikit-learn): no tracking, no I/O.
"""

from __future__ import annotations

from typing import Any

#: ``permutation_importance``'s scoring per task (the drop of this score when a feature is permuted)
IMPORTANCE_SCORING = {"binary_classification": ("roc_auc", "ROC AUC drop"),
                      "regression": ("neg_root_mean_squared_error", "RMSE rise")}
REPEATS = 3


def permutation_table(pipeline: Any, X, y, task: str = "binary_classification", rows: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """Permutation importance on (a sample of about ``rows`` of ``X``/``y``, stratified by class for a
    classifier): every column's mean and standard deviation over :data:`REPEATS` shuffles, most
    important first."""
    import numpy as np
    from sklearn.inspection import permutation_importance

    scoring, what = IMPORTANCE_SCORING.get(task, IMPORTANCE_SCORING["binary_classification"])
    y = np.asarray(y)
    n = min(len(X), rows)
    rng = np.random.default_rng(seed)
    if len(X) <= n:
        pick = np.arange(len(X))
    elif task == "regression":
        pick = rng.choice(len(X), size=n, replace=False)
    else:  # stratified: a rare class keeps its share (a one-class sample has no ROC AUC to drop)
        pick = np.concatenate([rng.choice(idx, size=max(1, round(n * len(idx) / len(X))), replace=False)
                               for idx in (np.flatnonzero(y == c) for c in np.unique(y))])
    imp = permutation_importance(pipeline, X.iloc[pick], y[pick], n_repeats=REPEATS, random_state=seed,
                                 scoring=scoring, n_jobs=1)
    order = np.argsort(-imp.importances_mean)
    return {"method": "permutation", "scoring": scoring, "meaning": what, "rows": len(pick), "repeats": REPEATS,
            "features": [{"feature": str(X.columns[i]), "mean": round(float(imp.importances_mean[i]), 6),
                          "std": round(float(imp.importances_std[i]), 6)} for i in order]}


def top_features(table: dict[str, Any], k: int = 5) -> list[str]:
    """The ``k`` most important features of a :func:`permutation_table` (positive importance only)."""
    return [f["feature"] for f in table.get("features", []) if f["mean"] > 0][:k]


def row_contributions(pipeline: Any, X, baseline, task: str = "binary_classification", k: int = 3):
    """Each row's ``k`` top contributing features: for every feature, how much the row's score moves
    when that feature alone is set to its ``baseline`` value (the training median or most frequent
    value), largest absolute move first. Costs one scoring pass per feature.

    Returns a list (one per row) of ``"feature:+0.123"`` strings joined by ``"; "``."""
    import numpy as np

    from pavedml.metrics import model_scores

    base = model_scores(pipeline, X, task)
    moves = np.empty((len(X), len(X.columns)), dtype="float64")
    work = X.copy()  # one copy: each feature is set to its baseline, scored, and put back
    for j, col in enumerate(X.columns):
        original = work[col]
        work[col] = baseline[col]
        moves[:, j] = base - model_scores(pipeline, work, task)
        work[col] = original
    order = np.argsort(-np.abs(moves), axis=1)[:, :k]
    names = np.asarray(X.columns, dtype=object)
    return ["; ".join(f"{names[j]}:{moves[i, j]:+.3f}" for j in order[i]) for i in range(len(X))]


def baseline_values(train, numeric: list[str], categorical: list[str]) -> dict[str, Any]:
    """The reference value of every feature for :func:`row_contributions`: the training median of a
    numeric feature, the most frequent value of a categorical one."""
    out: dict[str, Any] = {}
    for col in numeric:
        out[col] = float(train[col].median())
    for col in categorical:
        mode = train[col].mode(dropna=True)
        out[col] = mode.iloc[0] if len(mode) else "__missing__"
    return out
