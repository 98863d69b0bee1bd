from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from pavedml.config import get_use_case
from pavedml.errors import BatchUnreadableError
from pavedml.steps.ingest import normalize, parse_batch
from pavedml.steps.validation import describe, generate_suite

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def uc():
    return get_use_case("telco_churn")


def test_telco_quirks_are_normalized(uc):
    raw = pd.DataFrame({"customerID": ["a", "b"], "SeniorCitizen": ["0", "1"], "tenure": ["0", "12"],
                        "MonthlyCharges": ["20.5", "30"], "TotalCharges": [" ", "360.0"], "gender": ["Male", "Female"]})
    out, errors = normalize(raw, uc.schema_)
    assert errors == {}
    assert str(out["SeniorCitizen"].dtype) == "int64" and out["SeniorCitizen"].tolist() == [0, 1]
    assert str(out["tenure"].dtype) == "int64"
    assert str(out["MonthlyCharges"].dtype) == "float64"
    assert pd.isna(out.loc[0, "TotalCharges"]) and out.loc[1, "TotalCharges"] == 360.0
    assert str(out["gender"].dtype) == "string"


def test_unparseable_numbers_keep_the_column_as_text_and_are_reported(uc):
    raw = pd.DataFrame({"customerID": ["a", "b", "c"], "MonthlyCharges": ["20.5", "n/a", "oops"]})
    out, errors = normalize(raw, uc.schema_)
    assert errors == {"MonthlyCharges": {"count": 2, "examples": ["n/a", "oops"]}}
    assert out["MonthlyCharges"].tolist() == ["20.5", "n/a", "oops"]  # nothing lost


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n\x00\xff\xfe\xfa"])
def test_unreadable_batches_raise_a_named_error(data):
    with pytest.raises(BatchUnreadableError, match="batch s3://b/k.csv"):
        parse_batch(data, "s3://b/k.csv")


def test_content_hash_is_sha256_of_the_delivered_bytes(tmp_path, monkeypatch):
    from pavedml.context import StepContext
    from pavedml.steps.ingest import ingest_raw_batch
    from pavedml.tools.simulate import simulate

    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path))
    from datetime import date

    simulate("telco_churn", date(2025, 1, 1), 1, rows_per_day=300)
    ctx = StepContext.build("telco_churn", "2025-01-01")
    first = ingest_raw_batch(ctx)
    landing = tmp_path / "landing/telco_churn/customers/dt=2025-01-01/customers.csv"
    assert first.sha256 == hashlib.sha256(landing.read_bytes()).hexdigest() and first.created
    again = ingest_raw_batch(ctx)
    assert again.sha256 == first.sha256 and not again.created
    landing.write_bytes(landing.read_bytes().replace(b"Female", b"Male", 1))
    changed = ingest_raw_batch(ctx)
    assert changed.sha256 != first.sha256 and changed.created
    snapshots = sorted(p.name for p in (tmp_path / "telco_churn/raw/dt=2025-01-01").glob("*.parquet"))
    assert snapshots == sorted([f"{first.sha256}.parquet", f"{changed.sha256}.parquet"])  # both kept


def test_suite_is_generated_from_the_schema(uc):
    specs = generate_suite(uc)
    by = {(s["type"], s["kwargs"].get("column")) for s in specs}
    assert ("expect_column_values_to_not_be_null", "customerID") in by
    assert ("expect_column_values_to_be_unique", "customerID") in by
    assert ("expect_column_values_to_be_in_set", "Contract") in by
    assert ("expect_column_values_to_be_between", "tenure") in by
    assert ("expect_table_row_count_to_be_between", None) in by
    total_nulls = [s for s in specs if s["kwargs"].get("column") == "TotalCharges"
                   and s["type"] == "expect_column_values_to_not_be_null"]
    assert total_nulls[0]["kwargs"]["mostly"] == 0.95
    warning = [s for s in specs if s["type"] == "expect_column_mean_to_be_between"]
    assert warning and warning[0]["severity"] == "warning"


def test_suite_skips_echoes_of_a_missing_or_mistyped_column(uc):
    cols = [c for c in uc.schema_.columns if c != "Contract"]
    specs = generate_suite(uc, cols, {"MonthlyCharges": {"count": 1}})
    contract = [s["type"] for s in specs if s["kwargs"].get("column") == "Contract"]
    assert contract == ["expect_column_to_exist"]
    monthly = [s["type"] for s in specs if s["kwargs"].get("column") == "MonthlyCharges"]
    assert monthly == ["expect_column_to_exist", "expect_column_values_to_be_in_type_list"]


def test_describe_names_rule_column_observed_expected_and_values():
    line = describe({"type": "expect_column_values_to_be_in_set", "column": "Contract", "severity": "error",
                     "success": False, "observed_value": None, "unexpected_count": 3, "unexpected_percent": 1.5,
                     "unexpected_values": ["Three year"], "expected": {"value_set": ["One year"]}, "exception": None})
    assert line == ("column Contract: column_values_to_be_in_set; 3 unexpected (1.5%); "
                    "expected value_set=['One year']; e.g. ['Three year']")


def test_a_leading_blank_line_still_reads_every_column_as_text():
    """Identifiers like 0012 must stay text: with an empty header line no column was pinned to text."""
    df = parse_batch(b"\n\ncustomerID,tenure\n0012,5\n0013,7\n", "b.csv")
    assert df["customerID"].tolist() == ["0012", "0013"] and df["tenure"].tolist() == ["5", "7"]


def test_a_quoted_line_break_across_reader_blocks_is_one_value(monkeypatch):
    import pavedml.steps.ingest as ingest

    monkeypatch.setattr(ingest, "CSV_BLOCK_BYTES", 64)
    rows = "".join(f'C{i:03d},"line one\nline two {i}"\n' for i in range(40))
    df = parse_batch(("customerID,note\n" + rows).encode(), "b.csv")
    assert len(df) == 40 and df["note"].iloc[39] == "line one\nline two 39"


@pytest.mark.parametrize("data", [b"\n\n\n", b"a,b\n1,2,3\n", b"a,b\n1\n2,3\n"])
def test_malformed_csv_is_unreadable_with_the_reason(data):
    with pytest.raises(BatchUnreadableError, match="could not be parsed"):
        parse_batch(data, "b.csv")


def test_the_landing_check_looks_once_and_says_waiting_or_ready(tmp_path, monkeypatch):
    """check_landing_batch (each poke of wait_for_batch) never sleeps: waiting with the paths it
    looked at and the batch_missing reason while nothing landed, ready with the URI once it has;
    the ingest step itself looks once too (a batch gone after the check is still batch_missing)."""
    import time

    from pavedml.context import StepContext
    from pavedml.errors import BatchMissingError
    from pavedml.settings import get_settings
    from pavedml.steps.ingest import check_landing_batch, ingest_raw_batch

    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path))
    get_settings.cache_clear()
    ctx = StepContext.build("telco_churn", "2025-03-04")
    assert ctx.use_case.batches.wait_timeout_seconds > 10  # the shipped wait: never spent inside a step
    folder = tmp_path / "landing/telco_churn/customers/dt=2025-03-04"
    started = time.monotonic()
    waiting = check_landing_batch(ctx).as_dict()
    assert time.monotonic() - started < 5
    assert waiting["status"] == "waiting" and waiting["on_timeout"] == "batch_missing"
    assert waiting["reason"] == f"no batch for 2025-03-04 at {folder}/customers.csv"
    assert waiting["evidence"] == [f"looked for: {folder}/customers.csv", f"looked for: {folder}/customers.parquet"]
    assert waiting["ds"] == "2025-03-04" and waiting["use_case"] == "telco_churn" and waiting["next"]
    started = time.monotonic()
    with pytest.raises(BatchMissingError, match="no batch for 2025-03-04"):
        ingest_raw_batch(ctx)
    assert time.monotonic() - started < 5
    folder.mkdir(parents=True)
    (folder / "customers.parquet").write_bytes(b"PAR1")  # the other format is found too
    assert check_landing_batch(ctx).as_dict() == {
        "step": "check_landing_batch", "use_case": "telco_churn", "ds": "2025-03-04", "status": "ready",
        "uri": f"{folder}/customers.parquet", "reason": "", "evidence": [], "next": "", "on_timeout": ""}
    (folder / "customers.csv").write_text("customerID\n")
    assert check_landing_batch(ctx).uri == f"{folder}/customers.csv"  # the configured format first
