"""The prediction service's small parts: the bearer token's sources, and the prediction log's
writes (whole files only, unique names per process, a failed write keeps its rows, nothing twice)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pavedml.serving.app import token_from_env
from pavedml.serving.predlog import PredictionLog

pytestmark = pytest.mark.unit
COLUMNS = ["customerID", "event_timestamp", "probability", "served_at"]


def test_the_token_comes_from_the_environment_or_an_airflow_connection():
    assert token_from_env({}) == ""
    assert token_from_env({"PAVEDML_SERVING_TOKEN": "t0k"}) == "t0k"
    uri = {"PAVEDML_SERVING_TOKEN_CONN": "serving_api", "AIRFLOW_CONN_SERVING_API": "http://:s%2Fcret@host"}
    assert token_from_env(uri) == "s/cret"
    as_json = {"PAVEDML_SERVING_TOKEN_CONN": "serving_api",
               "AIRFLOW_CONN_SERVING_API": json.dumps({"conn_type": "http", "password": "j-s0n"})}
    assert token_from_env(as_json) == "j-s0n"
    with pytest.raises(ValueError, match="no AIRFLOW_CONN_SERVING_API"):
        token_from_env({"PAVEDML_SERVING_TOKEN_CONN": "serving_api"})
    with pytest.raises(ValueError, match="has no password"):
        token_from_env({"PAVEDML_SERVING_TOKEN_CONN": "serving_api", "AIRFLOW_CONN_SERVING_API": "http://host"})


def rows(n: int, start: float) -> list[tuple]:
    return [(f"k{i}", start - 3600, i / n, start + i) for i in range(n)]


def read(root: Path) -> list:
    out = []
    for f in sorted(root.glob("dt=*/part-*.parquet")):
        out += pq.read_table(f).to_pylist()
    return out


def test_the_log_writes_whole_files_per_day_with_unique_names(tmp_path):
    day = 86400 * 20000  # 2024-10-04 00:00 UTC
    logs = [PredictionLog(lambda d: tmp_path / f"dt={d}", COLUMNS, flush_seconds=3600, flush_rows=10**9)
            for _ in range(2)]  # two processes (or hosts) writing the same partition
    logs[0].append(rows(3, day - 2))  # straddles midnight: two days' partitions
    logs[1].append(rows(2, day + 10))
    assert [log.flush() for log in logs] == [3, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dt=2024-10-03", "dt=2024-10-04"]
    got = read(tmp_path)
    assert len(got) == 5 and len({f.name for f in tmp_path.glob("dt=*/*")}) == 3
    assert {str(r["served_at"].date()) for r in got} == {"2024-10-03", "2024-10-04"}
    assert got[0]["event_timestamp"].tzinfo is not None
    assert not list(tmp_path.glob("dt=*/.*"))  # no temporary name left where readers look


def test_a_failed_write_keeps_its_rows_and_writes_them_once_later(tmp_path):
    blocker = tmp_path / "served"
    blocker.write_text("a file where the partition folder goes: every write fails")  # like a full disk
    log = PredictionLog(lambda d: blocker / f"dt={d}", COLUMNS, flush_seconds=3600, flush_rows=10**9)
    now = time.time()
    log.append(rows(4, now))
    assert log.flush() == 0 and log.written == 0
    blocker.unlink()
    log.append(rows(1, now + 1))
    assert log.flush() == 5
    assert log.flush() == 0  # nothing twice
    assert len(read(blocker)) == 5


def test_past_the_buffer_limit_the_oldest_rows_are_dropped_and_counted(tmp_path):
    blocker = tmp_path / "served"
    blocker.write_text("x")
    dropped = []
    log = PredictionLog(lambda d: blocker / f"dt={d}", COLUMNS, flush_seconds=3600, flush_rows=10**9, max_buffer=3,
                        on_drop=dropped.append)
    log.append(rows(5, time.time()))
    log.flush()
    assert log.dropped == 2 and dropped == [2]
    blocker.unlink()
    assert log.flush() == 3
    assert [r["customerID"] for r in read(blocker)] == ["k2", "k3", "k4"]


def test_close_flushes_what_is_buffered(tmp_path):
    log = PredictionLog(lambda d: tmp_path / f"dt={d}", COLUMNS, flush_seconds=3600, flush_rows=10**9).start()
    log.append(rows(7, time.time()))
    log.close()
    assert len(read(tmp_path)) == 7


def test_rows_that_cannot_be_encoded_are_dropped_and_counted_and_the_writer_goes_on(tmp_path):
    dropped = []
    log = PredictionLog(lambda d: tmp_path / f"dt={d}", COLUMNS, flush_seconds=0.05, flush_rows=10**9,
                        on_drop=dropped.append).start()
    now = time.time()
    log.append([("a", now, 0.5, now), (1, now, 0.5, now)])  # an int among the keys' strings: not one column
    deadline = time.monotonic() + 5
    while not dropped and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dropped == [2]
    log.append(rows(3, time.time()))  # the writer thread is alive: later rows are written
    log.close()
    assert len(read(tmp_path)) == 3


def test_the_buffer_is_bounded_even_before_a_write_fails(tmp_path):
    log = PredictionLog(lambda d: tmp_path / f"dt={d}", COLUMNS, flush_seconds=3600, flush_rows=10**9, max_buffer=4)
    log.append(rows(6, time.time()))
    assert log.dropped == 2 and log.flush() == 4
