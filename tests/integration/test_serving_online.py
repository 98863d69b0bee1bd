"""pavedml.serving.online reads what Feast's get_online_features returns, from the SQLite store and
from Redis, for found keys, unknown keys and a mix, and a store that is down fails fast and named.

Real features: two simulated days through ingest -> validate -> build_features ->
materialize_features of a use case of our own (a copy of telco_churn under a random name, so the
Feast project and the Redis keys are ours alone), plus a few rows written by Feast's own writer with
missing values and an event time older than the view's TTL."""

from __future__ import annotations

import os
import secrets
import threading
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from tests.helpers.standalone import free_port
from tests.helpers.steps import run_step
from tests.helpers.use_cases import write_copy

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("PAVEDML_TEST_REDIS", "redis://127.0.0.1:6379")
#: Redis database for this module; only keys of our own random project are ever deleted from it.
REDIS_DB = int(os.environ.get("PAVEDML_TEST_REDIS_DB_SERVING", "14"))
DAYS = [date(2025, 1, 1), date(2025, 1, 2)]
OLD = datetime.now(UTC).replace(microsecond=0) - timedelta(days=400)  # far beyond ttl_days


def _odd_rows(uc) -> pd.DataFrame:
    """Rows Feast's own writer puts online: missing numeric and categorical values, an old event."""
    keys = ["ODD-1", "ODD-2-é", "ODD-3"]
    df = pd.DataFrame({uc.entity.key: keys, "event_timestamp": [OLD] * 3})
    for j, c in enumerate(uc.numeric_features):
        df[c] = [np.nan if j % 2 == 0 else 1.5, -0.0, 1e300]
    for j, c in enumerate(uc.categorical_features):
        df[c] = [None if j % 2 == 0 else "Yes", "ünïcode", None]
    return df


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import redis

    from pavedml.config import get_use_case
    from pavedml.settings import get_settings
    from pavedml.steps.featurestore import get_store
    from pavedml.tools.simulate import simulate

    name = f"srv_{secrets.token_hex(4)}"
    tmp = tmp_path_factory.mktemp("serving_online")
    cases = tmp / "use_cases"
    write_copy(cases, name)
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(tmp / "data"))
    mp.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    mp.delenv("PAVEDML_FEAST_ONLINE_STORE", raising=False)
    get_settings.cache_clear()
    redis_setting = f"{REDIS_URL}/{REDIS_DB}"
    client = redis.Redis.from_url(redis_setting)
    try:
        simulate(name, DAYS[0], len(DAYS), rows_per_day=300)
        for ds in DAYS:
            for step in ("ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features"):
                run_step(step, ds.isoformat(), name)
        uc = get_use_case(name)
        store, _ = get_store(uc, apply=False)
        store.write_to_online_store(uc.feature_view, _odd_rows(uc))
        mp.setenv("PAVEDML_FEAST_ONLINE_STORE", redis_setting)
        for ds in DAYS:
            run_step("materialize_features", ds.isoformat(), name)
        get_settings.cache_clear()
        store, _ = get_store(uc, apply=False)
        store.write_to_online_store(uc.feature_view, _odd_rows(uc))
        mp.delenv("PAVEDML_FEAST_ONLINE_STORE")
        get_settings.cache_clear()
        features = pd.concat([pd.read_parquet(tmp / "data" / name / "features" / f"dt={ds}" / "part-0.parquet")
                              for ds in DAYS])
        yield {"uc": uc, "redis": redis_setting, "keys": sorted(set(features[uc.entity.key])), "client": client}
    finally:
        project = name.encode()
        doomed = [k for k in client.scan_iter(match=b"*" + project, count=1000) if k.endswith(project)]
        if doomed:
            client.delete(*doomed)
        client.close()
        mp.undo()
        get_settings.cache_clear()


def _settings(online: str = ""):
    from pavedml.settings import Settings

    env = dict(os.environ)
    env.pop("PAVEDML_FEAST_ONLINE_STORE", None)
    if online:
        env["PAVEDML_FEAST_ONLINE_STORE"] = online
    return Settings.from_env(env)


def _feast(uc, settings, keys: list[str]) -> dict:
    """Feast's answer for ``keys``: values per feature, event seconds, PRESENT statuses."""
    from feast import FeatureStore

    from pavedml.steps.featurestore import repo_config

    store = FeatureStore(config=repo_config(uc, settings))
    refs = [f"{uc.feature_view}:{c}" for c in uc.feature_columns]
    resp = store.get_online_features(features=refs, entity_rows=[{uc.entity.key: k} for k in keys])
    out = resp.to_dict(include_event_timestamps=True)
    out["_present"] = [s == 1 for s in resp.proto.results[0].statuses]  # FieldStatus.PRESENT
    return out


def _assert_equal(uc, rows, feast: dict, keys: list[str]) -> None:
    assert rows.keys == keys
    assert rows.numeric.shape == (len(keys), len(uc.numeric_features)) and rows.numeric.dtype == np.float64
    assert rows.categorical.shape == (len(keys), len(uc.categorical_features)) and rows.categorical.dtype == object
    for j, c in enumerate(uc.numeric_features):
        want = np.array([np.nan if v is None else v for v in feast[c]], dtype=float)
        np.testing.assert_array_equal(rows.numeric[:, j], want, err_msg=c)
        assert [math_sign(v) for v in rows.numeric[:, j]] == [math_sign(v) for v in want], c  # -0.0 stays -0.0
    for j, c in enumerate(uc.categorical_features):
        assert rows.categorical[:, j].tolist() == feast[c], c
    feast_ts = np.array(feast[f"{uc.numeric_features[0]}__ts"], dtype=float)
    # Feast's answer for a key it does not hold: no timestamp (SQLite) or the epoch (Redis)
    assert rows.found.tolist() == (feast_ts > 0).tolist()
    np.testing.assert_array_equal(np.floor(rows.event_ts[rows.found]), feast_ts[rows.found])
    assert np.isnan(rows.event_ts[~rows.found]).all()
    assert not np.isfinite(rows.numeric[~rows.found]).any()
    assert (rows.categorical[~rows.found] == None).all()  # noqa: E711 - elementwise


def _telco():
    from pavedml.config import get_use_case
    from pavedml.settings import DEFAULT_USE_CASES_DIR

    return get_use_case("telco_churn", DEFAULT_USE_CASES_DIR)


def math_sign(v: float) -> float:
    return np.copysign(1.0, v) if not np.isnan(v) else 0.0


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_read_equals_feast_for_found_unknown_and_mixed_keys(served, store):
    from pavedml.serving.online import OnlineFeatures

    uc, keys = served["uc"], served["keys"]
    settings = _settings(served["redis"] if store == "redis" else "")
    online = OnlineFeatures(uc, settings)
    odd = ["ODD-1", "ODD-2-é", "ODD-3"]
    unknown = ["NOPE-1", "", "ünknown-ключ"]
    cases = {
        "found": keys[:120] + odd,
        "unknown": unknown,
        "mixed": [keys[5], unknown[0], odd[0], keys[5], keys[-1], unknown[2], odd[1]],  # repeats too
        "one": [keys[7]],
    }
    try:
        online.ping()
        for label, ks in cases.items():
            rows = online.read(ks)
            _assert_equal(uc, rows, _feast(uc, settings, ks), ks)
            if label == "found":
                assert rows.found.all() and len(keys) >= 300
            if label == "unknown":
                assert not rows.found.any()
        empty = online.read([])
        assert empty.found.shape == (0,) and empty.numeric.shape == (0, len(uc.numeric_features))
    finally:
        online.close()


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_feast_applies_no_ttl_online_and_neither_do_we(served, store):
    """Feast 0.67 returns a row far older than the view's ttl_days from get_online_features; so
    does the reader (with its event time, for the caller to judge). If a Feast upgrade starts
    expiring rows online, this fails and the reader must follow."""
    from pavedml.serving.online import OnlineFeatures

    uc = served["uc"]
    settings = _settings(served["redis"] if store == "redis" else "")
    feast = _feast(uc, settings, ["ODD-3"])
    assert feast[uc.numeric_features[0]] == [1e300]
    rows = OnlineFeatures(uc, settings).read(["ODD-3"])
    assert rows.found.tolist() == [True] and rows.numeric[0, 0] == 1e300
    assert rows.event_ts[0] == OLD.timestamp() and OLD < datetime.now(UTC) - timedelta(days=uc.features.ttl_days)


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_reads_from_many_threads_at_once_agree(served, store):
    from pavedml.serving.online import OnlineFeatures

    uc, keys = served["uc"], served["keys"]
    online = OnlineFeatures(uc, _settings(served["redis"] if store == "redis" else ""))
    want = online.read(keys)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(40):
                idx = rng.choice(len(keys), 25)
                got = online.read([keys[i] for i in idx])
                np.testing.assert_array_equal(got.numeric, want.numeric[idx])
                assert got.categorical.tolist() == want.categorical[idx].tolist()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    online.close()
    assert not errors, errors[0]


def test_the_store_is_located_as_the_steps_locate_it(served, tmp_path):
    """Same SQLite path and same Redis connection arguments as pavedml.steps.featurestore.repo_config."""
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    from pavedml.serving.online import OnlineFeatures, redis_kwargs
    from pavedml.steps.featurestore import repo_config

    uc = served["uc"]
    for setting in ("", f"sqlite:///{tmp_path}/elsewhere.db", "sqlite:///relative.db"):
        s = _settings(setting)
        assert OnlineFeatures(uc, s).store == f"sqlite {SqliteOnlineStore._get_db_path(repo_config(uc, s))}"
    for setting in ("redis://h.example:6390", "redis://h.example:6390/3", "redis://h:1,password=s3cret,ssl=true/2"):
        cfg = repo_config(uc, _settings(setting)).online_store
        nodes, params = RedisOnlineStore._parse_connection_string(cfg.connection_string)
        kwargs, label = redis_kwargs(setting)
        assert kwargs == {**params, "host": nodes[0]["host"], "port": int(nodes[0]["port"])}
        assert "s3cr" not in label and label.startswith(f"redis {nodes[0]['host']}:{nodes[0]['port']}/")


def test_a_dead_redis_fails_fast_and_names_the_server_not_the_password():
    from pavedml.serving.online import FeatureStoreUnavailable, OnlineFeatures

    uc = _telco()
    port = free_port()
    online = OnlineFeatures(uc, _settings(f"redis://127.0.0.1:{port},password=PLANTEDpw/{REDIS_DB}"))
    for call in (online.ping, lambda: online.read(["a", "b"])):
        started = time.perf_counter()
        with pytest.raises(FeatureStoreUnavailable, match=f"127.0.0.1:{port}") as err:
            call()
        assert time.perf_counter() - started < 2.0
        assert "PLANTED" not in str(err.value) and "onnect" in str(err.value)
    online.close()


def test_a_blackholed_redis_times_out_within_two_seconds():
    """A server that accepts the connection but never answers: the socket timeout ends the read."""
    import socket

    from pavedml.serving.online import FeatureStoreUnavailable, OnlineFeatures

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        online = OnlineFeatures(_telco(), _settings(f"redis://127.0.0.1:{port}"))
        started = time.perf_counter()
        with pytest.raises(FeatureStoreUnavailable, match=f"127.0.0.1:{port}"):
            online.read(["a"])
        elapsed = time.perf_counter() - started
        online.close()
    assert elapsed < 2.5, elapsed  # 1 s socket timeout, one immediate retry


def test_a_missing_sqlite_store_or_table_is_unavailable_not_a_crash(tmp_path):
    import sqlite3

    from pavedml.serving.online import FeatureStoreUnavailable, OnlineFeatures

    uc = _telco()
    db = tmp_path / "nothing-yet" / "online.db"
    online = OnlineFeatures(uc, _settings(f"sqlite:///{db}"))
    for call in (online.ping, lambda: online.read(["a"])):
        started = time.perf_counter()
        with pytest.raises(FeatureStoreUnavailable, match="nothing materialized yet") as err:
            call()
        assert str(db) in str(err.value) and time.perf_counter() - started < 2.0
    assert not db.exists()  # a reader never creates the store
    db.parent.mkdir()
    sqlite3.connect(db).close()  # an empty database: Feast never applied / materialized
    with pytest.raises(FeatureStoreUnavailable, match=f"no table {uc.name}_{uc.feature_view}"):
        online.read(["a"])
    online.close()
