"""A use case whose daily batch is a SQL query (``batches.source``) against the real PostgreSQL
server on this machine (trust auth; a database of its own, dropped afterwards): the interval's rows
and only those become the snapshot, a rerun with the same rows is a no-op whatever the database's
row order, a changed row makes a new snapshot, and each failure (no URL, a bad query, a dead
server) is named in one line, retried only when a retry can help, without the password."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest
import yaml

from pavedml.errors import (
    EXIT_NO_RETRY,
    EXIT_RETRY,
    BatchMissingError,
    ConfigError,
    SourceQueryError,
    SourceUnavailableError,
)
from tests.conftest import REPO
from tests.helpers.standalone import free_port
from tests.helpers.steps import FEATURE_STEPS, run_step

pytestmark = pytest.mark.integration
PG = {"host": "127.0.0.1", "port": int(os.environ.get("PAVEDML_TEST_PGPORT", "5432")), "user": "postgres"}
UC = "sql_shop"
URL_ENV = "SHOP_DB_URL"  # not a PAVEDML_ name: only the runner passes it to a step
PLANTED = "planted-pw-" + secrets.token_hex(4)  # trust auth ignores it; it must never show
QUERY = ("SELECT customer_id, plan, tenure, monthly\n"
         "FROM customers\n"
         "WHERE snapshot_at >= :interval_start AND snapshot_at < :interval_end")
DAY = datetime(2025, 1, 1, tzinfo=UTC)


def use_case(name: str = UC, query: str = QUERY, **source) -> dict:
    return {
        "name": name, "task": "binary_classification",
        "entity": {"name": "customer", "key": "customer_id"},
        "batches": {"dataset": "customers", "wait_timeout_seconds": 0,
                    "source": {"query": query, **(source or {"url_env": URL_ENV})}},
        "schedules": {"start_date": "2025-01-01"},
        "schema": {"row_count": {"min": 1}, "columns": {
            "customer_id": {"type": "string", "nullable": False, "unique": True},
            "plan": {"type": "category", "allowed": ["basic", "pro"]},
            "tenure": {"type": "int", "min": 0},
            "monthly": {"type": "float", "min": 0}}},
        "label": {"column": "churned", "positive": "yes", "negative": "no", "delay_days": 1},
        "features": {"numeric": ["tenure", "monthly"], "categorical": ["plan"]},
        "model": {"registered_name": name, "family": "logistic_regression",
                  "split": {"holdout_days": 1, "validation_days": 1}},
    }


def _admin(sql: str, db: str = "postgres") -> None:
    import psycopg2

    conn = psycopg2.connect(dbname=db, connect_timeout=5, **PG)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def execute(db: str, sql: str, rows: list[tuple] | None = None) -> None:
    import psycopg2

    conn = psycopg2.connect(dbname=db, connect_timeout=5, **PG)
    try:
        with conn, conn.cursor() as cur:
            if rows is None:
                cur.execute(sql)
            else:
                cur.executemany(sql, rows)
    finally:
        conn.close()


#: (customer_id, plan, tenure, monthly, snapshot_at): two days, and rows just outside the first
ROWS = [
    ("C-003", "pro", 12, Decimal("70.25"), DAY + timedelta(hours=23, minutes=59, seconds=59)),
    ("C-001", "basic", 3, Decimal("20.50"), DAY),
    ("C-010", "pro", None, Decimal("99.00"), DAY + timedelta(hours=7, minutes=30)),
    ("C-002", "basic", 40, Decimal("25.00"), DAY + timedelta(hours=12)),
    ("C-099", "pro", 1, Decimal("10.00"), DAY - timedelta(seconds=1)),  # the day before
    ("C-100", "basic", 2, Decimal("11.00"), DAY + timedelta(days=1)),  # the next day: its first row
    ("C-101", "pro", 5, Decimal("12.00"), DAY + timedelta(days=1, hours=5)),
]
INSERT = "INSERT INTO customers VALUES (%s, %s, %s, %s, %s)"


@pytest.fixture(scope="module")
def database():
    try:
        _admin("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL is not reachable at {PG['host']}:{PG['port']} ({exc}); start it (.ci/run does)")
    db = f"pavedml_t_sql_{secrets.token_hex(4)}"
    _admin(f'CREATE DATABASE "{db}"')
    try:
        execute(db, "CREATE TABLE customers (customer_id text, plan text, tenure int, monthly numeric(8, 2), "
                    "snapshot_at timestamptz)")
        execute(db, INSERT, ROWS)
        yield db
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture(scope="module")
def shop(database, tmp_path_factory):
    """The data root, the use-case folder and the URL variable (with a planted password)."""
    base = tmp_path_factory.mktemp("sql_source")
    cases = base / "use_cases"
    cases.mkdir()
    (cases / f"{UC}.yaml").write_text(yaml.safe_dump(use_case()))
    (cases / "sql_shop_typo.yaml").write_text(yaml.safe_dump(use_case(
        "sql_shop_typo", "SELECT customer_id, plan\nFROM customerz WHERE snapshot_at >= :interval_start")))
    (cases / "sql_shop_down.yaml").write_text(yaml.safe_dump(use_case("sql_shop_down", url_env="SHOP_DEAD_DB_URL")))
    timed = use_case("sql_shop_timed", "SELECT customer_id, plan, tenure, monthly, snapshot_at\nFROM customers\n"
                                       "WHERE snapshot_at >= :interval_start AND snapshot_at < :interval_end")
    timed["batches"]["timestamp"] = {"column": "snapshot_at"}
    timed["schema"]["columns"]["snapshot_at"] = {"type": "timestamp", "nullable": False}
    (cases / "sql_shop_timed.yaml").write_text(yaml.safe_dump(timed))
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(base / "data"))
    mp.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    mp.setenv(URL_ENV, f"postgresql+psycopg2://{PG['user']}:{PLANTED}@{PG['host']}:{PG['port']}/{database}")
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    yield {"root": base / "data", "cases": cases, "db": database}
    mp.undo()
    get_settings.cache_clear()


def _snapshot(result) -> pd.DataFrame:
    return pd.read_parquet(result.uri)


def test_the_intervals_rows_and_only_those_become_the_snapshot(shop):
    ds = "2025-01-01"
    check = run_step("check_landing_batch", ds, UC)
    assert check.status == "ready" and PLANTED not in check.uri and ":***@" in check.uri
    results = {step: run_step(step, ds, UC) for step in FEATURE_STEPS}
    snap = results["ingest_raw_batch"]
    assert snap.rows == 4 and snap.created
    df = _snapshot(snap)
    assert df["customer_id"].tolist() == ["C-001", "C-002", "C-003", "C-010"]  # ordered: not the table's order
    assert df["monthly"].tolist() == [20.5, 25.0, 70.25, 99.0]
    assert df["tenure"].isna().tolist() == [False, False, False, True]
    assert (df["event_timestamp"] == pd.Timestamp(ds, tz="UTC")).all()  # a daily snapshot: the interval start
    landing = shop["root"] / f"landing/{UC}/customers/dt={ds}/customers.csv"
    assert snap.source_uri == str(landing)
    assert landing.read_text().splitlines()[:2] == ["customer_id,plan,tenure,monthly", "C-001,basic,3,20.50"]
    manifest = pd.read_json(snap.manifest, typ="series")
    source = manifest["source"]
    assert source["kind"] == "sql" and source["query"] == QUERY
    assert PLANTED not in source["url"] and source["url"].endswith(f"@{PG['host']}:{PG['port']}/{shop['db']}")
    assert source["params"] == {"interval_start": "2025-01-01T00:00:00+00:00",
                                "interval_end": "2025-01-02T00:00:00+00:00", "ds": "2025-01-01"}
    assert results["validate_raw_batch"].success
    features = pd.read_parquet(shop["root"] / f"{UC}/features/dt={ds}/part-0.parquet")
    assert sorted(features["customer_id"]) == df["customer_id"].tolist()
    assert results["materialize_features"] is not None


def test_each_rows_time_from_a_timestamp_column_becomes_its_event_time(shop):
    ds = "2025-01-01"
    snap = run_step("ingest_raw_batch", ds, "sql_shop_timed")
    landing = shop["root"] / f"landing/sql_shop_timed/customers/dt={ds}/customers.csv"
    assert landing.read_text().splitlines()[1] == "C-001,basic,3,20.50,2025-01-01T00:00:00Z"
    df = _snapshot(snap)
    inside = sorted(r for r in ROWS if DAY <= r[4] < DAY + timedelta(days=1))
    assert df["customer_id"].tolist() == [r[0] for r in inside]
    assert df["event_timestamp"].tolist() == [pd.Timestamp(r[4]) for r in inside]
    assert run_step("validate_raw_batch", ds, "sql_shop_timed").success


def test_a_rerun_with_the_same_rows_is_a_no_op_and_a_changed_row_a_new_snapshot(shop):
    ds = "2025-01-01"
    first = run_step("ingest_raw_batch", ds, UC)
    # the same rows in another physical order: the same bytes, the same hash
    execute(shop["db"], "DELETE FROM customers")
    execute(shop["db"], INSERT, list(reversed(ROWS)))
    again = run_step("ingest_raw_batch", ds, UC)
    assert again.sha256 == first.sha256 and not again.created
    execute(shop["db"], "UPDATE customers SET monthly = 21.00 WHERE customer_id = 'C-001'")
    try:
        changed = run_step("ingest_raw_batch", ds, UC)
        assert changed.sha256 != first.sha256 and changed.created
        assert _snapshot(changed).loc[0, "monthly"] == 21.0
        latest = shop["root"] / f"{UC}/raw/dt={ds}/LATEST.json"
        assert changed.sha256 in latest.read_text()
        assert os.path.exists(first.uri), "the earlier snapshot is kept"
    finally:
        execute(shop["db"], "UPDATE customers SET monthly = 20.50 WHERE customer_id = 'C-001'")


def test_a_day_without_rows_waits_and_ingest_names_it(shop):
    ds = "2025-01-05"
    check = run_step("check_landing_batch", ds, UC)
    assert check.status == "waiting" and check.reason == f"query returned no rows for {ds}"
    assert check.on_timeout == "batch_missing" and any("FROM customers" in e for e in check.evidence)
    with pytest.raises(BatchMissingError, match=f"query returned no rows for {ds}") as err:
        run_step("ingest_raw_batch", ds, UC)
    assert err.value.exit_code == EXIT_RETRY
    assert not (shop["root"] / f"landing/{UC}/customers/dt={ds}").exists()


def test_an_unset_url_variable_is_a_one_line_config_error(shop, monkeypatch):
    monkeypatch.delenv(URL_ENV)
    for step in ("check_landing_batch", "ingest_raw_batch"):
        with pytest.raises(ConfigError) as err:
            run_step(step, "2025-01-01", UC)
        message = err.value.message
        assert "\n" not in message and err.value.exit_code == EXIT_NO_RETRY
        assert f"use case {UC}: batches.source.url_env names the environment variable {URL_ENV}, which is not set" \
            in message


def test_a_query_on_a_missing_table_is_refused_naming_the_query(shop):
    with pytest.raises(SourceQueryError) as err:
        run_step("ingest_raw_batch", "2025-01-01", "sql_shop_typo")
    exc = err.value
    assert exc.exit_code == EXIT_NO_RETRY and exc.reason == "source_query_failed"
    assert "(SELECT customer_id, plan ...)" in exc.message and 'relation "customerz" does not exist' in exc.message
    assert PLANTED not in exc.message and PLANTED not in str(exc.details)
    with pytest.raises(SourceQueryError, match="customerz"):
        run_step("check_landing_batch", "2025-01-01", "sql_shop_typo")


def test_a_dead_server_is_retryable_and_never_shows_the_password(shop, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("SHOP_DEAD_DB_URL", f"postgresql+psycopg2://app:{PLANTED}@127.0.0.1:{port}/shop")
    with pytest.raises(SourceUnavailableError) as err:
        run_step("ingest_raw_batch", "2025-01-01", "sql_shop_down")
    exc = err.value
    assert exc.exit_code == EXIT_RETRY and exc.reason == "source_unavailable"
    assert f"database postgresql+psycopg2://app:***@127.0.0.1:{port}/shop is unreachable" in exc.message
    assert PLANTED not in exc.message and PLANTED not in str(exc.details)
    # the step as a runtime runs it: exit 1 (retried), the summary names the reason, no password anywhere
    proc = subprocess.run([sys.executable, "-m", "pavedml", "ingest_raw_batch", "--use-case", "sql_shop_down",
                           "--ds", "2025-01-01"], env=dict(os.environ), capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == EXIT_RETRY, proc.stderr
    assert "source_unavailable" in proc.stderr and f"127.0.0.1:{port}" in proc.stderr
    assert PLANTED not in proc.stdout + proc.stderr


def test_only_the_source_steps_get_the_url_variable_and_privately(shop):
    from pavedml.airflow.runners import LocalRunner, source_environment

    url = os.environ[URL_ENV]
    assert source_environment("check_landing_batch", UC) == {URL_ENV: url}
    assert source_environment("ingest_raw_batch", UC) == {URL_ENV: url}
    assert source_environment("build_features", UC) == {} and source_environment("ingest_raw_batch", "nope") == {}
    runner = LocalRunner("ingest_raw_batch", UC)
    public, private = runner.with_source({"PAVEDML_DATA_ROOT": "/d", URL_ENV: url}, {"AWS_SECRET_ACCESS_KEY": "k"})
    assert public == {"PAVEDML_DATA_ROOT": "/d"} and private == {"AWS_SECRET_ACCESS_KEY": "k", URL_ENV: url}


def test_the_feature_pipeline_dag_runs_on_the_sql_source(shop, airflow_db):
    """wait_for_batch and ingest_raw_batch run as subprocesses of the worker (the local runtime),
    which get the URL variable privately from the runner; the rest as for a landed file."""
    from tests.helpers.dagrun import dagbag, run_dag

    dagbag.cache_clear()  # this module's use-case folder, not an earlier test's DAGs
    try:
        state, tasks, xcoms = run_dag(f"{UC}_feature_pipeline", "2025-01-02")
    finally:
        dagbag.cache_clear()
    assert state == "success", tasks
    assert set(tasks.values()) == {"success"}, tasks
    assert xcoms["wait_for_batch"]["status"] == "ready" and PLANTED not in xcoms["wait_for_batch"]["uri"]
    assert xcoms["ingest_raw_batch"]["rows"] == 2
    df = pd.read_parquet(xcoms["ingest_raw_batch"]["uri"])
    assert df["customer_id"].tolist() == ["C-100", "C-101"]
    assert (shop["root"] / f"{UC}/features/dt=2025-01-02/part-0.parquet").exists()
