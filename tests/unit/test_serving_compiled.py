"""The compiled scoring path equals the scikit-learn pipeline: every family of both tasks, on a few
hundred test rows with NaN numerics, unknown and infrequent categories, one row at a time and in
batches; an unsupported pipeline is refused by name and ``scorer`` falls back to the pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pavedml.config import FAMILIES_BY_TASK, load_use_case
from pavedml.metrics import model_scores
from pavedml.serving.compiled import CompiledModel, PipelineScorer, UnsupportedModel, compile_model, scorer
from pavedml.settings import DEFAULT_USE_CASES_DIR
from pavedml.steps.features import compute_features
from pavedml.steps.ingest import normalize
from pavedml.steps.training import make_pipeline

pytestmark = pytest.mark.unit
SAMPLE = DEFAULT_USE_CASES_DIR.parent / "pavedml" / "sample_data" / "telco_churn.csv"
TRAIN_ROWS, TEST_ROWS = 2500, 300
#: Parameters per family: the use case's own for telco's gradient boosting, small fast ones else.
PARAMS = {
    "hist_gradient_boosting": None,
    "random_forest": {"n_estimators": 60, "min_samples_leaf": 2, "random_state": 0, "n_jobs": 1},
    "logistic_regression": {"max_iter": 1000},
    "ridge": {"alpha": 1.0},
}
HOUSES = """
name: house_prices
description: A regression use case for the compiled-scoring tests.
task: regression
entity: {name: house, key: house_id}
batches: {dataset: houses, format: csv, timestamp: interval_start}
schema:
  columns:
    house_id: {type: string, nullable: false, unique: true}
    sqft: {type: float, min: 0, nullable: true}
    rooms: {type: int, min: 1, max: 10}
    age: {type: float, min: 0, nullable: true}
    region: {type: category}
    style: {type: category}
label: {dataset: sales, column: price, delay_days: 0}
features:
  numeric: [sqft, rooms, age]
  categorical: [region, style]
model:
  registered_name: house_prices
  family: hist_gradient_boosting
  params: {max_iter: 150, learning_rate: 0.1, random_state: 0}
  split: {holdout_days: 1, validation_days: 1}
  min_train_rows: 200
evaluation:
  floors: {rmse: 200000}
drift: {min_samples: 100}
"""


def _with_family(uc, family: str):
    params = PARAMS[family]
    if params is None:
        return uc
    return uc.model_copy(update={"model": uc.model.model_copy(update={"family": family, "params": params})})


def _telco():
    """Telco features (compute_features) with rare and missing values planted: the training rows
    hold a payment method 3 times (infrequent: min_frequency=5) and NaN SeniorCitizen; the test
    rows add NaNs in every numeric feature, that rare method, and categories never seen (unknown)."""
    uc = load_use_case(DEFAULT_USE_CASES_DIR / "telco_churn.yaml")
    raw = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    raw = raw.iloc[: TRAIN_ROWS + TEST_ROWS].reset_index(drop=True)
    rng = np.random.default_rng(18)
    raw.loc[[10, 20, 30], "PaymentMethod"] = "Crypto"  # infrequent in training
    raw.loc[[40, 50], "MultipleLines"] = ""  # -> null -> "__missing__", infrequent too
    test = np.arange(TRAIN_ROWS, TRAIN_ROWS + TEST_ROWS)
    raw.loc[rng.choice(test, 25, replace=False), "PaymentMethod"] = "Crypto"
    raw.loc[rng.choice(test, 25, replace=False), "Contract"] = "Three year"  # unknown
    raw.loc[rng.choice(test, 25, replace=False), "gender"] = ""  # -> "__missing__", unknown
    raw.loc[rng.choice(test, 15, replace=False), "MultipleLines"] = ""
    df, errors = normalize(raw, uc.schema_)
    assert not errors
    df["event_timestamp"] = pd.Timestamp("2025-01-01", tz="UTC")
    order = df["customerID"]
    features = compute_features(df, uc).set_index("customerID").loc[order].reset_index()
    X = features[uc.feature_columns].copy()
    # NaN where features are not non_null (SeniorCitizen), and in a few test rows everywhere (a
    # full feature row posted to the service may lack any value)
    X.loc[rng.choice(len(X), 80, replace=False), "SeniorCitizen"] = np.nan
    for col in uc.numeric_features:
        X.loc[rng.choice(test, 5, replace=False), col] = np.nan
    y = (raw["Churn"] == "Yes").astype("int64").to_numpy()
    return uc, X.iloc[:TRAIN_ROWS], y[:TRAIN_ROWS], X.iloc[TRAIN_ROWS:].reset_index(drop=True)


def _houses(tmp_path_factory):
    """A regression use case: prices in the hundreds of thousands (a tight test for atol=1e-9)."""
    folder = tmp_path_factory.mktemp("houses")
    (folder / "house_prices.yaml").write_text(HOUSES)
    uc = load_use_case(folder / "house_prices.yaml")
    rng = np.random.default_rng(7)
    n = TRAIN_ROWS + TEST_ROWS
    df = pd.DataFrame({"house_id": [f"h{i:05d}" for i in range(n)], "event_timestamp": pd.Timestamp("2025-01-01", tz="UTC"),
                       "sqft": rng.uniform(500, 3000, n).round(1), "rooms": rng.integers(1, 8, n).astype("int64"),
                       "age": rng.uniform(0, 60, n).round(1),
                       "region": rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1]),
                       "style": rng.choice(["ranch", "colonial", "modern"], n)})
    df.loc[rng.choice(n, 100, replace=False), "sqft"] = np.nan
    df.loc[rng.choice(n, 100, replace=False), "age"] = np.nan
    df.loc[[5, 6, 7], "style"] = "igloo"  # infrequent in training
    df.loc[rng.choice(np.arange(TRAIN_ROWS, n), 20, replace=False), "style"] = "igloo"
    df.loc[rng.choice(np.arange(TRAIN_ROWS, n), 20, replace=False), "region"] = "orbit"  # unknown
    df.loc[rng.choice(np.arange(TRAIN_ROWS, n), 20, replace=False), "region"] = None  # -> "__missing__"
    price = (120 * df["sqft"].fillna(1500) + 8000 * df["rooms"] - 500 * df["age"].fillna(30)
             + df["region"].map({"north": 30000, "east": 10000}).fillna(0) + rng.normal(0, 8000, n))
    X = compute_features(df, uc)[uc.feature_columns]
    return uc, X.iloc[:TRAIN_ROWS], price.to_numpy()[:TRAIN_ROWS], X.iloc[TRAIN_ROWS:].reset_index(drop=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return {"binary_classification": _telco(), "regression": _houses(tmp_path_factory)}


CASES = [(task, family) for task, families in FAMILIES_BY_TASK.items() for family in families]


@pytest.fixture(scope="module", params=CASES, ids=[f"{t}-{f}" for t, f in CASES])
def fitted(request, data):
    task, family = request.param
    uc, X, y, test = data[task]
    uc = _with_family(uc, family)  # gradient boosting: the use case's own parameters
    pipeline, _ = make_pipeline(uc)
    pipeline.fit(X, y)
    return uc, pipeline, test


def test_the_test_rows_hold_nan_unknown_and_infrequent_values(fitted):
    uc, pipeline, test = fitted
    encoder = pipeline.named_steps["preprocess"].named_transformers_["cat"]
    infrequent = {c for cats in encoder.infrequent_categories_ if cats is not None for c in cats}
    assert infrequent & {"Crypto", "igloo"}
    seen = {c for cats in encoder.categories_ for c in cats}
    unknown = {v for col in uc.categorical_features for v in test[col]} - seen
    assert unknown & {"Three year", "orbit", "__missing__"}
    assert test[uc.numeric_features].isna().any().any()


def test_compiled_equals_the_pipeline_on_every_row(fitted):
    uc, pipeline, test = fitted
    model = compile_model(pipeline, uc)
    assert isinstance(model, CompiledModel) and model.task == uc.task
    assert model.numeric == uc.numeric_features and model.categorical == uc.categorical_features
    expected = model_scores(pipeline, test[uc.feature_columns], uc.task)
    numeric = test[uc.numeric_features].to_numpy(dtype="float64")
    categorical = test[uc.categorical_features].to_numpy(dtype=object)
    got = model.score(numeric, categorical)
    assert got.dtype == np.float64 and got.shape == (len(test),)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.score_frame(test), expected, rtol=0, atol=1e-9)
    # one row at a time, and a batch of rows beyond the chunk size
    one_by_one = np.concatenate([model.score(numeric[i:i + 1], categorical[i:i + 1]) for i in range(40)])
    np.testing.assert_allclose(one_by_one, expected[:40], rtol=0, atol=1e-9)
    if uc.task == "binary_classification":
        np.testing.assert_array_equal((got > 0.5).astype("int64"), pipeline.predict(test[uc.feature_columns]))
        assert 0 <= got.min() and got.max() <= 1


def test_many_rows_are_scored_in_chunks_like_few(fitted):
    uc, pipeline, test = fitted
    model = compile_model(pipeline, uc)
    many = pd.concat([test] * 3, ignore_index=True)  # 900 rows: several chunks
    np.testing.assert_allclose(model.score_frame(many), np.tile(model.score_frame(test), 3), rtol=0, atol=0)


def test_infinity_is_refused_as_the_pipeline_refuses_it(fitted):
    uc, pipeline, test = fitted
    model = compile_model(pipeline, uc)
    bad = test.head(3).copy()
    col = uc.numeric_features[0]
    bad.loc[1, col] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        model_scores(pipeline, bad[uc.feature_columns], uc.task)
    with pytest.raises(ValueError, match=f"{col}.*infinity"):
        model.score_frame(bad)


def test_wrong_shapes_are_refused(data):
    uc, X, y, test = data["binary_classification"]
    pipeline, _ = make_pipeline(_with_family(uc, "logistic_regression"))
    pipeline.fit(X, y)
    model = compile_model(pipeline, uc)
    with pytest.raises(ValueError, match="expected numeric"):
        model.score(np.zeros((1, 2)), np.zeros((1, len(uc.categorical_features)), dtype=object))


@pytest.mark.parametrize("family,params", [
    ("hist_gradient_boosting", {"max_iter": 30, "max_leaf_nodes": 120, "min_samples_leaf": 2}),  # > 64 leaves
    ("random_forest", {"n_estimators": 20, "max_leaf_nodes": 40, "random_state": 1}),  # <= 64 leaves
])
def test_both_tree_walks_equal_the_pipeline(data, family, params):
    """Trees of more than 64 leaves are walked level by level, smaller ones by leaf masks: each
    engine on the other family."""
    uc, X, y, test = data["binary_classification"]
    uc = uc.model_copy(update={"model": uc.model.model_copy(update={"family": family, "params": params})})
    pipeline, _ = make_pipeline(uc)
    pipeline.fit(X, y)
    model = compile_model(pipeline, uc)
    trees = model._head.trees
    assert (trees.m_cleared is None) == (family == "hist_gradient_boosting")
    np.testing.assert_allclose(model.score_frame(test), model_scores(pipeline, test[uc.feature_columns], uc.task),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("estimator", ["hgb", "hgb_deep", "rf"])
def test_trees_send_nan_where_scikit_learn_does(estimator):
    """The pipelines impute before the model, so the trees never see NaN there; the compiled trees
    still follow missing_go_to_left as scikit-learn does (a model fitted on NaNs directly)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    from pavedml.serving.compiled import _head

    rng = np.random.default_rng(3)
    X = rng.normal(size=(1500, 4))
    y = (X[:, 0] + np.where(np.isnan(X[:, 1]), 1.0, X[:, 1]) > 0.3).astype(int)
    X[rng.random(X.shape) < 0.2] = np.nan
    y[np.isnan(X[:, 2])] = 1
    est = {"hgb": HistGradientBoostingClassifier(max_iter=40, random_state=0),
           "hgb_deep": HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=100, min_samples_leaf=2),
           "rf": RandomForestClassifier(n_estimators=20, random_state=0)}[estimator].fit(X, y)
    test = rng.normal(size=(400, 4))
    test[rng.random(test.shape) < 0.3] = np.nan
    np.testing.assert_allclose(_head(est, "binary_classification")(test), est.predict_proba(test)[:, 1],
                               rtol=0, atol=1e-9)


def _with_extra_step(pipeline):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    pre, model = pipeline.steps
    return Pipeline([pre, ("clip", FunctionTransformer(lambda Z: np.clip(Z, -5, 1e9))), model])


def test_an_extra_step_is_refused_by_name_and_scorer_falls_back(data, caplog):
    uc, X, y, test = data["binary_classification"]
    pipeline = _with_extra_step(make_pipeline(_with_family(uc, "logistic_regression"))[0])
    pipeline.fit(X, y)
    with pytest.raises(UnsupportedModel, match="'clip'"):
        compile_model(pipeline, uc)
    with caplog.at_level("WARNING", logger="pavedml.serving.compiled"):
        fallback = scorer(pipeline, uc)
    assert isinstance(fallback, PipelineScorer) and "'clip'" in fallback.reason
    assert [r.getMessage() for r in caplog.records if "scikit-learn per call" in r.getMessage()]
    expected = model_scores(pipeline, test[uc.feature_columns], uc.task)
    np.testing.assert_allclose(fallback.score_frame(test), expected, rtol=0, atol=1e-9)
    got = fallback.score(test[uc.numeric_features].to_numpy(dtype="float64"),
                         test[uc.categorical_features].to_numpy(dtype=object))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_scorer_compiles_what_it_can(data):
    uc, X, y, _ = data["regression"]
    uc = uc.model_copy(update={"model": uc.model.model_copy(update={"family": "ridge", "params": {"alpha": 1.0}})})
    pipeline, _ = make_pipeline(uc)
    pipeline.fit(X, y)
    assert isinstance(scorer(pipeline, uc), CompiledModel)


def test_an_unknown_model_is_refused_by_name(data):
    from sklearn.ensemble import ExtraTreesRegressor

    uc, X, y, _ = data["regression"]
    pipeline, _ = make_pipeline(uc)
    pipeline.steps[-1] = ("model", ExtraTreesRegressor(n_estimators=3, random_state=0))
    pipeline.fit(X, y)
    with pytest.raises(UnsupportedModel, match="step 'model' \\(ExtraTreesRegressor\\)"):
        compile_model(pipeline, uc)
