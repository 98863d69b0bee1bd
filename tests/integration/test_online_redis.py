"""The columnar Redis writer writes the hashes Feast's own ``write_to_online_store`` writes, Feast
serves them back unchanged, an older day never replaces a newer one, and a corrected re-delivery
of the same day does (the one place it differs from Feast's writer, on purpose)."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pytest

from tests.integration.test_online_sqlite import _frame, _two_use_cases

pytestmark = pytest.mark.integration

REDIS = os.environ.get("PAVEDML_TEST_REDIS", "redis://127.0.0.1:6379")
DB = int(os.environ.get("PAVEDML_TEST_REDIS_DB_ONLINE", "15"))


@pytest.fixture
def redis_db(monkeypatch):
    import redis

    client = redis.Redis.from_url(f"{REDIS}/{DB}")
    client.flushdb()
    monkeypatch.setenv("PAVEDML_FEAST_ONLINE_STORE", f"{REDIS}/{DB}")
    yield client
    client.flushdb()


def _hashes(client) -> dict[bytes, dict[bytes, bytes]]:
    return {key: client.hgetall(key) for key in client.scan_iter(count=1000)}


def _day(uc, ds: str, n: int, shift: float) -> pd.DataFrame:
    df = _frame(uc, n)
    df["event_timestamp"] = pd.Timestamp(ds, tz="UTC") + pd.Timedelta(microseconds=123457)  # nanos survive
    for c in uc.numeric_features:
        df[c] = df[c] + shift
    return df


@pytest.mark.parametrize("case", [0, 1], ids=["telco_churn", "bench_churn"])
def test_columnar_redis_writer_matches_feast(case, tmp_path, monkeypatch, redis_db):
    from pavedml.adapters import online_redis
    from pavedml.settings import get_settings
    from pavedml.steps.featurestore import get_store

    uc = _two_use_cases(tmp_path, monkeypatch)[case]
    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "data"))
    get_settings.cache_clear()
    store, _ = get_store(uc)
    days = [_day(uc, "2025-03-01", 40, 0.0), _day(uc, "2025-03-02", 60, 2.5)]
    days[1].loc[55, "event_timestamp"] = pd.Timestamp("1969-12-31 23:59:58.5", tz="UTC")  # before the epoch
    for df in days:
        store.write_to_online_store(uc.feature_view, df)
    theirs = _hashes(redis_db)
    refs = [f"{uc.feature_view}:{c}" for c in uc.feature_columns]
    rows = {uc.entity.key: list(days[1][uc.entity.key])}
    served = store.get_online_features(features=refs, entity_rows=rows).to_dict()
    redis_db.flushdb()

    from pavedml.steps.featurestore import feature_kinds

    features = feature_kinds(uc)
    plan = online_redis.plan_for(f"{REDIS}/{DB}", uc.name, uc.feature_view, uc.entity.key, features)
    for df in days:
        assert online_redis.write_batches(plan, [pa.RecordBatch.from_pandas(df, preserve_index=False)]) == len(df)
    assert len(theirs) == 60
    assert _hashes(redis_db) == theirs
    assert store.get_online_features(features=refs, entity_rows=rows).to_dict() == served


def test_an_older_day_never_replaces_a_newer_one_and_a_redelivery_does(tmp_path, monkeypatch, redis_db):
    from pavedml.adapters import online_redis
    from pavedml.settings import get_settings
    from pavedml.steps.featurestore import get_store

    uc = _two_use_cases(tmp_path, monkeypatch)[0]
    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "data"))
    get_settings.cache_clear()
    store, _ = get_store(uc)
    from pavedml.steps.featurestore import feature_kinds

    features = feature_kinds(uc)
    plan = online_redis.plan_for(f"{REDIS}/{DB}", uc.name, uc.feature_view, uc.entity.key, features)
    column = uc.numeric_features[1]
    old, new = _day(uc, "2025-03-01", 10, 0.0), _day(uc, "2025-03-02", 10, 0.0)
    old[column], new[column] = 1.0, 2.0

    def online() -> list:
        got = store.get_online_features(features=[f"{uc.feature_view}:{column}"],
                                        entity_rows={uc.entity.key: list(new[uc.entity.key])}).to_dict()
        return got[column]

    batch = pa.RecordBatch.from_pandas
    assert online_redis.write_batches(plan, [batch(new, preserve_index=False)]) == 10
    assert online_redis.write_batches(plan, [batch(old, preserve_index=False)]) == 0  # an operator reruns an old day
    assert online() == [2.0] * 10
    new[column] = 3.0  # the same day delivered again, corrected
    assert online_redis.write_batches(plan, [batch(new, preserve_index=False)]) == 10
    assert online() == [3.0] * 10
    # within one batch, the newest row of a key wins whatever its position
    twice = pd.concat([new.assign(**{column: 5.0}), old.assign(**{column: 4.0})], ignore_index=True)
    twice["event_timestamp"] = [pd.Timestamp("2025-03-03", tz="UTC")] * 10 + [pd.Timestamp("2025-03-02 12:00", tz="UTC")] * 10
    twice[uc.entity.key] = list(new[uc.entity.key]) * 2
    online_redis.write_batches(plan, [batch(twice, preserve_index=False)])
    assert online() == [5.0] * 10


def test_materialize_writes_redis_with_its_own_writer_unless_told_otherwise(tmp_path, monkeypatch, redis_db):
    """The step's Redis path and Feast's (PAVEDML_ONLINE_WRITER=feast) leave the same hashes."""
    import json

    from pavedml.layout import Layout
    from pavedml.settings import get_settings
    from tests.helpers.steps import run_step

    uc = _two_use_cases(tmp_path, monkeypatch)[1]
    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "data"))
    get_settings.cache_clear()
    layout = Layout.for_use_case(uc.name, get_settings())
    df = _day(uc, "2025-03-01", 30, 0.0)
    df["event_timestamp"] = pd.Timestamp("2025-03-01", tz="UTC")
    for c in uc.features.non_null:
        if c in uc.numeric_features:
            df[c] = df[c].fillna(0.0)
    layout.features_partition("2025-03-01").mkdir(parents=True)
    df.to_parquet(layout.features_file("2025-03-01"), index=False)
    layout.features_source("2025-03-01").write_text(json.dumps({"sha256": "cd" * 32}))
    monkeypatch.setenv("PAVEDML_ONLINE_WRITER", "feast")
    assert run_step("materialize_features", "2025-03-01", uc.name).rows == 30
    theirs = _hashes(redis_db)
    redis_db.flushdb()
    monkeypatch.delenv("PAVEDML_ONLINE_WRITER")
    assert run_step("materialize_features", "2025-03-01", uc.name).rows == 30
    assert len(theirs) == 30 and _hashes(redis_db) == theirs


def test_a_dead_redis_fails_the_write_naming_the_server(tmp_path, monkeypatch):
    import socket

    import redis

    from pavedml.adapters import online_redis

    uc = _two_use_cases(tmp_path, monkeypatch)[1]
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from pavedml.steps.featurestore import feature_kinds

    features = feature_kinds(uc)
    plan = online_redis.plan_for(f"redis://127.0.0.1:{port}/0", uc.name, uc.feature_view, uc.entity.key, features)
    batch = pa.RecordBatch.from_pandas(_day(uc, "2025-03-01", 5, 0.0), preserve_index=False)
    with pytest.raises(redis.ConnectionError, match=f"127.0.0.1:{port}"):
        online_redis.write_batches(plan, [batch])
