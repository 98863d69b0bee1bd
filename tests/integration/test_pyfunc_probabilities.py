"""The logged model's pyfunc returns what its signature declares (#18 item 7): a classifier's class
probabilities, a regressor's values, through ``mlflow.pyfunc.load_model`` and through the same
request path ``mlflow models serve`` runs; ``mlflow.sklearn.load_model`` still gives the pipeline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pavedml.config import load_use_case
from pavedml.metrics import model_scores
from pavedml.settings import DEFAULT_USE_CASES_DIR

pytestmark = pytest.mark.integration
SAMPLE = DEFAULT_USE_CASES_DIR.parent / "pavedml" / "sample_data" / "telco_churn.csv"


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A private MLflow: SQLite tracking store and artifacts in tmp_path, one experiment."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("pyfunc", artifact_location=(tmp_path / "artifacts").as_uri())
    yield exp
    mlflow.set_tracking_uri(None)


def _telco_features(rows: int):
    from pavedml.steps.features import compute_features
    from pavedml.steps.ingest import normalize

    uc = load_use_case(DEFAULT_USE_CASES_DIR / "telco_churn.yaml")
    raw = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False).head(rows)
    df, errors = normalize(raw, uc.schema_)
    assert not errors
    df["event_timestamp"] = pd.Timestamp("2025-01-01", tz="UTC")
    features = compute_features(df, uc).set_index(uc.entity.key).loc[raw[uc.entity.key]].reset_index()
    return uc, features[uc.feature_columns], (raw["Churn"] == "Yes").astype("int64").to_numpy()


def _log(pipeline, example, task: str, exp: str) -> str:
    import mlflow

    from pavedml.adapters.tracking import log_model

    with mlflow.start_run(experiment_id=exp):
        return log_model(pipeline, example, task).model_uri  # what _log_run calls


def _served(model, frame: pd.DataFrame, monkeypatch) -> np.ndarray:
    """The answer of ``mlflow models serve``'s app (in-process) to a dataframe_split request."""
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "false")  # init sets it; restored after the test
    body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
    with TestClient(scoring_server.init(model)) as client:
        response = client.post("/invocations", json=body)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"], dtype="float64")


def test_a_classifier_pyfunc_serves_the_probabilities_its_signature_declares(mlflow_store, monkeypatch):
    import mlflow

    from pavedml.steps.training import make_pipeline

    uc, X, y = _telco_features(1200)
    pipeline, _ = make_pipeline(uc, {"max_iter": 20})
    pipeline.fit(X.iloc[:1000], y[:1000])
    test = X.iloc[1000:].reset_index(drop=True)
    uri = _log(pipeline, X.head(5), uc.task, mlflow_store)

    spec = mlflow.models.get_model_info(uri).signature.outputs.to_dict()[0]["tensor-spec"]
    assert spec["dtype"] == "float64" and list(spec["shape"]) == [-1, 2]
    model = mlflow.pyfunc.load_model(uri)
    out = np.asarray(model.predict(test))
    assert out.dtype == np.float64 and out.shape == (len(test), 2)  # as declared: not class labels
    np.testing.assert_allclose(out[:, 1], model_scores(pipeline, test, uc.task), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert len(np.unique(out[:, 1])) > 2

    served = _served(model, test.head(20), monkeypatch)
    assert served.shape == (20, 2)
    np.testing.assert_allclose(served[:, 1], model_scores(pipeline, test.head(20), uc.task), rtol=0, atol=1e-12)

    # batch scoring and evaluation load the pipeline itself (skops format), unchanged
    loaded = mlflow.sklearn.load_model(uri)
    assert type(loaded).__name__ == "Pipeline"
    np.testing.assert_array_equal(model_scores(loaded, test, uc.task), model_scores(pipeline, test, uc.task))
    assert mlflow.models.Model.load(uri).flavors["sklearn"]["serialization_format"] == "skops"


def test_a_regressor_pyfunc_still_serves_values(mlflow_store, monkeypatch):
    import mlflow

    from pavedml.steps.training import make_pipeline

    uc, X, _ = _telco_features(600)
    uc = uc.model_copy(update={"task": "regression",
                               "model": uc.model.model_copy(update={"family": "ridge", "params": {"alpha": 1.0}})})
    target = X["MonthlyCharges"].to_numpy() * 3.0 + X["tenure"].to_numpy()
    pipeline, _ = make_pipeline(uc)
    pipeline.fit(X, target)
    uri = _log(pipeline, X.head(5), uc.task, mlflow_store)

    spec = mlflow.models.get_model_info(uri).signature.outputs.to_dict()[0]["tensor-spec"]
    assert spec["dtype"] == "float64" and list(spec["shape"]) == [-1]
    out = np.asarray(mlflow.pyfunc.load_model(uri).predict(X))
    assert out.dtype == np.float64 and out.shape == (len(X),)
    np.testing.assert_allclose(out, model_scores(pipeline, X, uc.task), rtol=0, atol=1e-9)
    served = _served(mlflow.pyfunc.load_model(uri), X.head(10), monkeypatch)
    np.testing.assert_allclose(served, model_scores(pipeline, X.head(10), uc.task), rtol=0, atol=1e-9)
