"""Validation in chunks (bounded memory) decides exactly what one whole-table run decides: the same
success, counts and offending values per expectation, including uniqueness across chunks, the row
count, ``mostly`` thresholds and aggregates."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

pytestmark = pytest.mark.integration
DS = "2025-01-01"


def _day(data_root, rows: int = 900):
    from pavedml.tools.simulate import simulate

    simulate("telco_churn", date(2025, 1, 1), 1, rows_per_day=rows)
    return data_root / f"landing/telco_churn/customers/dt={DS}/customers.csv"


def _both(tmp_path, monkeypatch, chunk: int):
    from pavedml.context import StepContext
    from pavedml.steps.ingest import ingest_raw_batch, latest_snapshot
    from pavedml.steps.validation import generate_suite, validate_snapshot

    ctx = StepContext.build("telco_churn", DS)
    ingest_raw_batch(ctx)
    _, snapshot = latest_snapshot(ctx)
    manifest = ctx.layout.raw_manifest(DS, latest_snapshot(ctx)[0])
    import json

    specs = generate_suite(ctx.use_case, list(pd.read_parquet(snapshot).columns),
                           json.loads(manifest.read_text()).get("type_errors"), ctx.interval_start)
    whole = validate_snapshot(snapshot, specs, tmp_path / "whole", "whole", chunk=10**9)
    chunked = validate_snapshot(snapshot, specs, tmp_path / "chunked", "chunked", chunk=chunk)
    return specs, whole, chunked


def _key(e: dict) -> tuple:
    pct = None if e["unexpected_percent"] is None else round(e["unexpected_percent"], 6)
    return (e["type"], e["column"], e["success"], e["unexpected_count"], pct, sorted(map(str, e["unexpected_values"])))


def test_a_clean_day_in_chunks_passes_like_the_whole(data_root, tmp_path, monkeypatch):
    _day(data_root)
    specs, whole, chunked = _both(tmp_path, monkeypatch, chunk=200)
    assert whole["success"] and chunked["success"]
    # five chunks, five hash buckets for the key's uniqueness, one run for the table's aggregates
    assert whole["chunks"] == 1 and chunked["chunks"] == 5 and len(chunked["chunk_pages"]) == 11
    assert [_key(e) for e in chunked["expectations"]] == [_key(e) for e in whole["expectations"]]


def test_failures_spread_over_chunks_are_counted_like_the_whole(data_root, tmp_path, monkeypatch):
    csv = _day(data_root)
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.loc[850, "customerID"] = df.loc[10, "customerID"]  # a duplicate across chunks 1 and 5
    df.loc[[5, 420, 777], "tenure"] = "-5"  # out of range in three chunks
    df.loc[[3, 640], "gender"] = "Robot"  # not in the allowed set
    df.loc[list(range(0, 900, 30)), "TotalCharges"] = ""  # 30 nulls: 3.3% < max_null_fraction 5%
    df.to_csv(csv, index=False)
    specs, whole, chunked = _both(tmp_path, monkeypatch, chunk=200)
    assert not whole["success"] and not chunked["success"]
    assert [_key(e) for e in chunked["expectations"]] == [_key(e) for e in whole["expectations"]]
    failed = {(e["type"], e["column"]) for e in chunked["expectations"] if not e["success"]}
    assert failed == {("expect_column_values_to_be_unique", "customerID"),
                      ("expect_column_values_to_be_between", "tenure"),
                      ("expect_column_values_to_be_in_set", "gender")}
    assert chunked["data_docs"] in chunked["chunk_pages"] and chunked["data_docs"].endswith(".html")


def test_mostly_is_decided_on_the_totals_not_per_chunk(data_root, tmp_path, monkeypatch):
    """All nulls in one chunk (over 5% there) but 4.4% of the table: passes, as the whole run does."""
    csv = _day(data_root)
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.loc[list(range(0, 40)), "TotalCharges"] = ""
    df.to_csv(csv, index=False)
    specs, whole, chunked = _both(tmp_path, monkeypatch, chunk=200)
    assert whole["success"] and chunked["success"]
    assert [_key(e) for e in chunked["expectations"]] == [_key(e) for e in whole["expectations"]]


def test_the_step_validates_a_big_snapshot_in_chunks(data_root, monkeypatch):
    from pavedml.errors import ValidationFailedError
    from tests.helpers.steps import run_step

    csv = _day(data_root)
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.loc[899, "customerID"] = df.loc[0, "customerID"]
    df.to_csv(csv, index=False)
    monkeypatch.setenv("PAVEDML_VALIDATION_CHUNK_ROWS", "300")
    run_step("ingest_raw_batch", DS)
    with pytest.raises(ValidationFailedError, match="customerID") as err:
        run_step("validate_raw_batch", DS)
    assert any("be_unique" in line and "2 unexpected" in line for line in err.value.details["evidence"])
    assert "/runs/" in err.value.details["report"] and ".tmp-" not in err.value.details["report"]
