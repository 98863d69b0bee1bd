"""The columnar SQLite writer writes exactly what Feast's own ``write_to_online_store`` writes, and
Feast serves it back unchanged (so a Feast upgrade that changes the layout fails here)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

pytestmark = pytest.mark.integration

TS = datetime(2025, 3, 1, tzinfo=UTC)


def _frame(uc, n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    df = pd.DataFrame({uc.entity.key: [f"K-{i:03d}-é" for i in range(n)], "event_timestamp": TS})
    for c in uc.numeric_features:
        v = rng.normal(50, 30, n)
        v[::7] = np.nan  # missing numeric -> empty ValueProto
        v[1] = -0.0
        v[2] = 1e300
        v[3] = 0.1 + 0.2  # shortest repr that round-trips differs from %g
        df[c] = v
    for c in uc.categorical_features:
        vals = rng.choice(["Yes", "No", "Fiber optic", "ünïcode", "x" * 200], n).astype(object)
        vals[::5] = None
        df[c] = vals
    return df


def _table_rows(db: str, table: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(f'SELECT entity_key, feature_name, value, value_text, event_ts, created_ts FROM "{table}" '
                            "ORDER BY entity_key, feature_name").fetchall()


def _store(uc, root, monkeypatch):
    from pavedml.steps.featurestore import get_store

    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(root))
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    store, defs = get_store(uc)
    return store, defs["feature_view"]


def test_columnar_writer_matches_feast_byte_for_byte(tmp_path, monkeypatch):
    from feast.infra.online_stores.sqlite import _table_id

    from pavedml.adapters import online_sqlite
    from pavedml.config import get_use_case

    uc = get_use_case("telco_churn")
    df = _frame(uc)
    feast_store, view = _store(uc, tmp_path / "feast", monkeypatch)
    feast_store.write_to_online_store(uc.feature_view, df)
    ours_store, view = _store(uc, tmp_path / "ours", monkeypatch)
    batch = pa.RecordBatch.from_pandas(df, preserve_index=False)
    assert online_sqlite.write_batch(ours_store, view, batch, uc.entity.key) == len(df)

    table = _table_id(uc.name, view, False)
    expected = _table_rows(feast_store.config.online_store.path, table)
    got = _table_rows(ours_store.config.online_store.path, table)
    assert len(got) == len(df) * len(uc.feature_columns)
    assert got == expected

    # Feast reads our rows back as the values we wrote.
    refs = [f"{uc.feature_view}:{c}" for c in uc.feature_columns]
    keys = {uc.entity.key: list(df[uc.entity.key][:12])}
    theirs = feast_store.get_online_features(features=refs, entity_rows=keys).to_dict()
    ours = ours_store.get_online_features(features=refs, entity_rows=keys).to_dict()
    assert ours == theirs
    assert ours[uc.numeric_features[0]][2] == 1e300 and ours[uc.numeric_features[0]][0] is None


def test_columnar_writer_upserts_on_rerun(tmp_path, monkeypatch):
    from feast.infra.online_stores.sqlite import _table_id

    from pavedml.adapters import online_sqlite
    from pavedml.config import get_use_case

    uc = get_use_case("telco_churn")
    df = _frame(uc, 10)
    store, view = _store(uc, tmp_path, monkeypatch)
    online_sqlite.write_batch(store, view, pa.RecordBatch.from_pandas(df, preserve_index=False), uc.entity.key)
    first = _table_rows(store.config.online_store.path, _table_id(uc.name, view, False))
    online_sqlite.write_batch(store, view, pa.RecordBatch.from_pandas(df, preserve_index=False), uc.entity.key)
    assert _table_rows(store.config.online_store.path, _table_id(uc.name, view, False)) == first
    df[uc.numeric_features[0]] = 1.0
    online_sqlite.write_batch(store, view, pa.RecordBatch.from_pandas(df, preserve_index=False), uc.entity.key)
    got = store.get_online_features(features=[f"{uc.feature_view}:{uc.numeric_features[0]}"],
                                    entity_rows={uc.entity.key: list(df[uc.entity.key])}).to_dict()
    assert got[uc.numeric_features[0]] == [1.0] * 10
    assert len(_table_rows(store.config.online_store.path, _table_id(uc.name, view, False))) == len(first)


def test_columnar_writer_refuses_null_keys(tmp_path, monkeypatch):
    from pavedml.adapters import online_sqlite
    from pavedml.config import get_use_case

    uc = get_use_case("telco_churn")
    df = _frame(uc, 4)
    df.loc[1, uc.entity.key] = None
    store, view = _store(uc, tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=uc.entity.key):
        online_sqlite.write_batch(store, view, pa.RecordBatch.from_pandas(df, preserve_index=False), uc.entity.key)
