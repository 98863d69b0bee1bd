"""Every Asset URI the DAGs produce or consume, in one place."""

from __future__ import annotations

from airflow.sdk import Asset


def features(use_case: str) -> Asset:
    """Emitted by materialize_features; extra carries the snapshot hash and interval."""
    return Asset(name=f"{use_case}.features", uri=f"pavedml://{use_case}/features")


def retrain_request(use_case: str) -> Asset:
    """Emitted by the drift monitor; the training DAG is always scheduled on it."""
    return Asset(name=f"{use_case}.retrain_request", uri=f"pavedml://{use_case}/retrain-request")


def predictions(use_case: str) -> Asset:
    return Asset(name=f"{use_case}.predictions", uri=f"pavedml://{use_case}/predictions")


def champion(use_case: str) -> Asset:
    return Asset(name=f"{use_case}.champion", uri=f"pavedml://{use_case}/champion")


def labels(use_case: str) -> Asset:
    """Posted by whoever delivers labels (extra ``{"ds": <label partition day>}``); the performance
    monitor runs on it."""
    return Asset(name=f"{use_case}.labels", uri=f"pavedml://{use_case}/labels")
