"""Model metrics per task: pure functions (numpy, scikit-learn), no tracking. Training reports them
per split, evaluation per model and slice on the same holdout.

A model's *scores* are what its metrics and its drift are computed on: the probability of the
positive class for a binary classifier, the predicted value for a regressor (:func:`model_scores`).
"""

from __future__ import annotations

from typing import Any

#: The label column of every training split.
LABEL = "label"
#: Tasks whose model predicts a value (scores are predictions, not probabilities).
REGRESSION = "regression"
#: The prediction columns a scoring run writes: every model's ``prediction`` (a classifier's class, a
#: regressor's value) and a classifier's ``probability`` (of the positive class) beside it.
PREDICTION, PROBABILITY = "prediction", "probability"
#: The probability cut a classifier's 0/1 prediction is made at.
DECISION_THRESHOLD = 0.5


def classification_metrics(y, proba, threshold: float = DECISION_THRESHOLD) -> dict[str, float]:
    """ROC AUC, PR AUC, F1, precision, recall (at ``threshold``), log loss and Brier score."""
    import numpy as np
    from sklearn import metrics as m

    y = np.asarray(y)
    pred = (proba >= threshold).astype(int)
    return {
        "roc_auc": float(m.roc_auc_score(y, proba)),
        "pr_auc": float(m.average_precision_score(y, proba)),
        "f1": float(m.f1_score(y, pred, zero_division=0)),
        "precision": float(m.precision_score(y, pred, zero_division=0)),
        "recall": float(m.recall_score(y, pred, zero_division=0)),
        "log_loss": float(m.log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "brier": float(m.brier_score_loss(y, proba)),
    }


def regression_metrics(y, pred) -> dict[str, float]:
    """Root mean squared error, mean absolute error and R² of predicted values."""
    import numpy as np
    from sklearn import metrics as m

    y = np.asarray(y, dtype="float64")
    pred = np.asarray(pred, dtype="float64")
    return {
        "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
        "mae": float(m.mean_absolute_error(y, pred)),
        "r2": float(m.r2_score(y, pred)) if len(y) > 1 else float("nan"),
    }


def is_regression(task: str) -> bool:
    return task == REGRESSION


def model_scores(pipeline: Any, X, task: str):
    """The model's output per row as float64: the positive class's probability for a classifier,
    the predicted value for a regressor."""
    import numpy as np

    if is_regression(task):
        return np.asarray(pipeline.predict(X), dtype="float64")
    return np.asarray(pipeline.predict_proba(X)[:, 1], dtype="float64")


def task_metrics(task: str, y, scores) -> dict[str, float]:
    """The task's metrics (``config.METRICS_BY_TASK``) of scores from :func:`model_scores`."""
    return regression_metrics(y, scores) if is_regression(task) else classification_metrics(y, scores)


def split_metrics(pipeline: Any, splits: dict[str, Any], features: list[str],
                  task: str = "binary_classification") -> dict[str, float]:
    """``<split>_<metric>`` of a fitted pipeline on each named split (``{"holdout": df}``)."""
    out: dict[str, float] = {}
    for name, df in splits.items():
        scores = model_scores(pipeline, df[features], task)
        out.update({f"{name}_{k}": v for k, v in task_metrics(task, df[LABEL], scores).items()})
    return out
