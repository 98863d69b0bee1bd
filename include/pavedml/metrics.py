"""Classification metrics of a model's probabilities: pure functions (numpy, scikit-learn), no
tracking. Training reports them per split, evaluation per model and slice on the same holdout."""

from __future__ import annotations

from typing import Any

#: The label column of every training split.
LABEL = "label"


def classification_metrics(y, proba, threshold: float = 0.5) -> dict[str, float]:
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


def split_metrics(pipeline: Any, splits: dict[str, Any], features: list[str]) -> dict[str, float]:
    """``<split>_<metric>`` of a fitted pipeline on each named split (``{"holdout": df}``)."""
    out: dict[str, float] = {}
    for name, df in splits.items():
        proba = pipeline.predict_proba(df[features])[:, 1]
        out.update({f"{name}_{k}": v for k, v in classification_metrics(df[LABEL], proba).items()})
    return out
