"""The MLflow registry the current data root's steps use, for tests to read back."""

from __future__ import annotations


def mlflow_client():
    """An MlflowClient on the settings' tracking URI (both mlflow globals set too: an earlier
    in-process step of another module's data root may have set the registry URI)."""
    import mlflow

    from pavedml.settings import get_settings

    get_settings.cache_clear()
    uri = get_settings().mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
