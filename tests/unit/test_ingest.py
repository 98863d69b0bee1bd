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


# -- event times, SQL extracts and the SQL source's URL (#16)

def _timed_schema():
    from pavedml.config import Schema

    return Schema.model_validate({"columns": {"id": {"type": "string", "nullable": False},
                                              "t": {"type": "timestamp", "nullable": False}}})


def test_timestamp_columns_are_parsed_as_utc():
    raw = pd.DataFrame({"id": ["a", "b", "c", "d"],
                        "t": ["2025-03-05T07:30:00+02:00", "2025-03-05 13:15", "2025-03-05T23:59:59.5Z", " "]},
                       dtype="string")
    out, errors = normalize(raw, _timed_schema())
    assert errors == {}
    assert str(out["t"].dtype) == "datetime64[ns, UTC]"
    assert out["t"].iloc[:3].tolist() == [pd.Timestamp("2025-03-05 05:30", tz="UTC"),
                                          pd.Timestamp("2025-03-05 13:15", tz="UTC"),  # no zone: UTC
                                          pd.Timestamp("2025-03-05 23:59:59.5", tz="UTC")]
    assert pd.isna(out["t"].iloc[3])  # blank is null (the not-null check names it)


def test_unparseable_timestamps_keep_the_column_as_text_and_are_reported():
    raw = pd.DataFrame({"id": ["a", "b", "c"], "t": ["2025-03-05T07:30:00Z", "next tuesday", "2025-13-45"]},
                       dtype="string")
    out, errors = normalize(raw, _timed_schema())
    assert errors == {"t": {"count": 2, "examples": ["next tuesday", "2025-13-45"]}}
    assert out["t"].tolist() == ["2025-03-05T07:30:00Z", "next tuesday", "2025-13-45"]  # nothing lost


def test_the_suite_keeps_event_times_inside_the_runs_interval():
    from datetime import UTC, datetime

    from pavedml.config import UseCase

    uc = UseCase.model_validate({
        "name": "timed", "task": "regression", "entity": {"name": "row", "key": "id"},
        "batches": {"timestamp": {"column": "t"}}, "schema": _timed_schema().model_dump(),
        "label": {"column": "y", "delay_days": 1}, "features": {"numeric": []},
        "model": {"registered_name": "timed", "family": "ridge", "split": {"holdout_days": 1, "validation_days": 1}}})
    start = datetime(2025, 3, 5, tzinfo=UTC)
    (rule,) = [s for s in generate_suite(uc, interval_start=start) if s.get("rule")]
    assert rule == {"type": "expect_column_values_to_be_between", "severity": "error",
                    "rule": "rows outside the run's data interval",
                    "kwargs": {"column": "t", "min_value": start, "max_value": datetime(2025, 3, 6, tzinfo=UTC),
                               "strict_max": True}}
    assert not [s for s in generate_suite(uc, type_errors={"t": {"count": 1}}, interval_start=start) if s.get("rule")]


def test_a_sql_extract_depends_on_the_rows_not_their_order():
    from datetime import UTC, datetime, timedelta, timezone
    from decimal import Decimal

    from pavedml.steps.ingest import sql_extract

    rows = [("C2", datetime(2025, 1, 1, 7, 30, tzinfo=timezone(timedelta(hours=2))), Decimal("20.50"), None),
            ("C1", datetime(2025, 1, 1, 9, 0, 0, 250000), 3.25, 7),  # no zone: UTC
            ("C1", datetime(2025, 1, 1, 8, 0, tzinfo=UTC), None, 5)]
    frame = pd.DataFrame(rows, columns=["id", "t", "amount", "n"], dtype=object)
    data = sql_extract(frame, "id", "t")
    assert data.decode().splitlines() == ["id,t,amount,n",
                                          "C1,2025-01-01T08:00:00Z,,5",
                                          "C1,2025-01-01T09:00:00.250000Z,3.25,7",
                                          "C2,2025-01-01T05:30:00Z,20.50,"]
    assert sql_extract(frame.iloc[::-1].reset_index(drop=True), "id", "t") == data
    assert sql_extract(frame.iloc[[1, 0, 2]], "id", "t") == data


def test_the_source_url_comes_from_the_file_or_the_named_variable(monkeypatch):
    from pavedml.config import SqlSource
    from pavedml.errors import ConfigError
    from pavedml.sqlsource import resolve_url

    assert resolve_url(SqlSource(url="sqlite:////tmp/x.db", query="SELECT 1")) == "sqlite:////tmp/x.db"
    source = SqlSource(url_env="SHOP_DB", query="SELECT 1")
    monkeypatch.setenv("SHOP_DB", "postgresql://app:pw@db/shop")
    assert resolve_url(source) == "postgresql://app:pw@db/shop"
    monkeypatch.setenv("SHOP_DB", " ")
    with pytest.raises(ConfigError, match="names the environment variable SHOP_DB, which is empty"):
        resolve_url(source, "shop")
    monkeypatch.delenv("SHOP_DB")
    with pytest.raises(ConfigError, match=r"^use case shop: batches\.source\.url_env names the environment "
                                          r"variable SHOP_DB, which is not set") as err:
        resolve_url(source, "shop")
    assert "\n" not in err.value.message


def test_a_sqlite_source_compares_its_text_times_with_the_interval(tmp_path):
    """SQLite keeps times as text: the bounds are bound as text that sorts right against them."""
    import sqlite3
    from datetime import UTC, date, datetime

    from pavedml.config import SqlSource
    from pavedml.errors import SourceQueryError
    from pavedml.sqlsource import count_rows, query_params, read_query

    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id TEXT, ts TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [("a", "2025-01-01 05:00:00"), ("b", "2025-01-02 00:00:00"),
                                                          ("c", "2025-01-01T23:59:59"), ("d", "2024-12-31 23:59:59")])
    conn.close()
    params = query_params(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC), date(2025, 1, 1))
    source = SqlSource(url=f"sqlite:///{db}", query="SELECT * FROM t WHERE ts >= :interval_start AND ts < :interval_end;")
    assert count_rows(source, params) == 2
    assert sorted(read_query(source, params)["id"]) == ["a", "c"]
    with pytest.raises(SourceQueryError, match=r"\(SELECT \* FROM nope \.\.\.\): no such table: nope") as err:
        read_query(SqlSource(url=f"sqlite:///{db}", query="SELECT * FROM nope"), params, "shop")
    assert err.value.exit_code == 3
