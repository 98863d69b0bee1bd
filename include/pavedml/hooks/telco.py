"""Derived features for the Telco churn use case."""

from __future__ import annotations

SERVICE_COLUMNS = ("PhoneService", "MultipleLines", "OnlineSecurity", "OnlineBackup", "DeviceProtection",
                   "TechSupport", "StreamingTV", "StreamingMovies")


def derive_features(df):
    """``avg_monthly_spend``: total charges per month of tenure (monthly charges for new customers);
    ``services_count``: how many optional services the customer has."""
    import numpy as np

    out = df.copy()
    tenure = out["tenure"].astype("float64")
    total = out["TotalCharges"].astype("float64")
    out["avg_monthly_spend"] = np.where(tenure > 0, total / tenure.where(tenure > 0, 1.0),
                                        out["MonthlyCharges"].astype("float64"))
    out["services_count"] = sum((out[c] == "Yes").astype("int64") for c in SERVICE_COLUMNS).astype("float64")
    return out
