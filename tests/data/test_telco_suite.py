"""The generated suite passes on the real Telco sample and fails on each corrupted variant with
the expected expectation named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pavedml.config import get_use_case
from pavedml.errors import BatchUnreadableError
from pavedml.steps.ingest import normalize, parse_batch
from pavedml.steps.validation import generate_suite, run_suite
from pavedml.tools.simulate import corrupt, load_sample

pytestmark = pytest.mark.data
INTERVAL = pd.Timestamp("2025-01-01", tz="UTC")


@pytest.fixture(scope="module")
def uc():
    return get_use_case("telco_churn")


@pytest.fixture(scope="module")
def features():
    return load_sample().drop(columns=["Churn"])


def _validate(uc, data: bytes, tmp_path):
    df = parse_batch(data, "batch.csv")
    df, type_errors = normalize(df, uc.schema_)
    df["event_timestamp"] = INTERVAL
    specs = generate_suite(uc, list(df.columns), type_errors, INTERVAL.to_pydatetime())
    return run_suite(df, specs, tmp_path / "docs", "test")


def test_suite_passes_on_the_real_sample(uc, features, tmp_path):
    result = _validate(uc, features.to_csv(index=False).encode(), tmp_path)
    failed = [e for e in result["expectations"] if not e["success"]]
    assert result["success"], failed
    assert (tmp_path / "docs").exists() and result["data_docs"].endswith(".html")


@pytest.mark.parametrize("kind,expectation,column", [
    ("missing_column", "expect_column_to_exist", "Contract"),
    ("wrong_type", "expect_column_values_to_be_in_type_list", "MonthlyCharges"),
    ("null_key", "expect_column_values_to_not_be_null", "customerID"),
    ("duplicate_keys", "expect_column_values_to_be_unique", "customerID"),
    ("out_of_range", "expect_column_values_to_be_between", "tenure"),
    ("unknown_category", "expect_column_values_to_be_in_set", "Contract"),
])
def test_suite_fails_on_each_corrupted_variant(uc, features, tmp_path, kind, expectation, column):
    data, _ = corrupt(features, kind, np.random.default_rng(0))
    result = _validate(uc, data, tmp_path)
    failed = {(e["type"], e["column"]) for e in result["expectations"] if not e["success"] and e["severity"] == "error"}
    assert not result["success"]
    assert failed == {(expectation, column)}


@pytest.mark.parametrize("kind", ["empty_file", "unparseable"])
def test_unreadable_variants_are_rejected_before_validation(features, kind):
    data, _ = corrupt(features, kind, np.random.default_rng(0))
    with pytest.raises(BatchUnreadableError):
        parse_batch(data, "batch.csv")
