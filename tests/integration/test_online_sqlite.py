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


# -- materialize without Feast once the definitions are applied (#21: a small day's fixed cost)

def _two_use_cases(tmp_path, monkeypatch):
    """telco_churn as shipped and the benchmark's bench_churn (another entity, 18 other features)."""
    import shutil

    from pavedml.config import get_use_case
    from pavedml.settings import get_settings
    from tests.conftest import REPO

    cases = tmp_path / "use_cases"
    cases.mkdir()
    shutil.copy(REPO / "include/use_cases/telco_churn.yaml", cases)
    shutil.copy(REPO / "benchmarks/use_cases/bench_churn.yaml", cases)
    monkeypatch.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    get_settings.cache_clear()
    return get_use_case("telco_churn"), get_use_case("bench_churn")


def _partition(uc, layout, ds: str, n: int, shift: float) -> pd.DataFrame:
    import json

    df = _frame(uc, n)
    df["event_timestamp"] = pd.Timestamp(ds, tz="UTC")
    for c in uc.numeric_features:
        df[c] = df[c] + shift
        if c in uc.features.non_null:
            df[c] = df[c].fillna(shift)
    layout.features_partition(ds).mkdir(parents=True, exist_ok=True)
    df.to_parquet(layout.features_file(ds), index=False)
    layout.features_source(ds).write_text(json.dumps({"sha256": "ab" * 32}))
    return df


@pytest.mark.parametrize("case", [0, 1], ids=["telco_churn", "bench_churn"])
def test_materialize_after_the_first_day_needs_no_feast_and_writes_what_feast_writes(case, tmp_path, monkeypatch):
    from feast.infra.online_stores.sqlite import _table_id

    from pavedml.layout import Layout
    from pavedml.settings import get_settings
    from pavedml.steps import featurestore
    from tests.helpers.steps import run_step

    uc = _two_use_cases(tmp_path, monkeypatch)[case]
    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "ours"))
    get_settings.cache_clear()
    layout = Layout.for_use_case(uc.name, get_settings())
    days = {"2025-03-01": _partition(uc, layout, "2025-03-01", 40, 0.0),
            "2025-03-02": _partition(uc, layout, "2025-03-02", 60, 1.5)}  # 40 keys again, 20 new ones
    run_step("materialize_features", "2025-03-01", uc.name)  # the first day applies the definitions
    assert featurestore.applied_marker_matches(uc) == ""

    def no_feast(*args, **kwargs):
        raise AssertionError("materialize went through Feast although nothing changed")

    monkeypatch.setattr(featurestore, "get_store", no_feast)
    assert run_step("materialize_features", "2025-03-02", uc.name).rows == 60
    # what the checks refuse, on the path without Feast too: nothing of those days is written
    from pavedml.errors import FeatureCheckError

    column = next(c for c in uc.numeric_features if c in uc.features.non_null)
    bad = _partition(uc, layout, "2025-03-03", 10, 9.0)
    bad.loc[3, column] = float("inf")
    bad.to_parquet(layout.features_file("2025-03-03"), index=False)
    with pytest.raises(FeatureCheckError, match=f"non-finite values in {column}"):
        run_step("materialize_features", "2025-03-03", uc.name)
    bad = _partition(uc, layout, "2025-03-04", 10, 9.0)
    bad.loc[[2, 5], "event_timestamp"] = pd.Timestamp("2025-03-05", tz="UTC")
    bad.to_parquet(layout.features_file("2025-03-04"), index=False)
    with pytest.raises(FeatureCheckError, match="2 rows of .* fall outside the interval"):
        run_step("materialize_features", "2025-03-04", uc.name)
    bad.loc[[2, 5], "event_timestamp"] = pd.NaT
    bad.to_parquet(layout.features_file("2025-03-04"), index=False)
    with pytest.raises(FeatureCheckError, match="2 rows of .* have no event_timestamp"):
        run_step("materialize_features", "2025-03-04", uc.name)
    from pavedml.errors import ConfigError

    monkeypatch.setenv("PAVEDML_ONLINE_WRITER", "Feast")
    with pytest.raises(ConfigError, match="PAVEDML_ONLINE_WRITER='Feast'"):
        run_step("materialize_features", "2025-03-02", uc.name)
    monkeypatch.undo()
    monkeypatch.setenv("PAVEDML_USE_CASES_DIR", str(tmp_path / "use_cases"))

    # the same two days through Feast's own writer, in another data root
    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "feast"))
    get_settings.cache_clear()
    feast_store, defs = featurestore.get_store(uc)
    for df in days.values():
        feast_store.write_to_online_store(uc.feature_view, df)
    table = _table_id(uc.name, defs["feature_view"], False)
    theirs = _table_rows(feast_store.config.online_store.path, table)
    ours = _table_rows(str(tmp_path / "ours" / uc.name / "feast" / "online.db"), table)
    assert len(ours) == 60 * len(uc.feature_columns)
    assert ours == theirs


def test_apply_is_skipped_only_while_nothing_changed(tmp_path, monkeypatch):
    """The marker of the last apply is trusted only while the definitions, Feast, the registry file
    and the online table are as that apply left them."""
    from pavedml.adapters import online_sqlite
    from pavedml.layout import Layout
    from pavedml.settings import get_settings
    from pavedml.steps import featurestore

    telco, bench = _two_use_cases(tmp_path, monkeypatch)
    for uc in (telco, bench):
        store, view = _store(uc, tmp_path, monkeypatch)  # applies and writes the marker
        assert featurestore.applied_marker_matches(uc) == ""
        layout = Layout.for_use_case(uc.name, get_settings())
        plan = featurestore._applied_sqlite_plan(uc, get_settings(), layout)
        assert plan == online_sqlite._plan(store, view, uc.entity.key, "event_timestamp")  # same as Feast's
    uc = telco
    longer = uc.model_copy(update={"features": uc.features.model_copy(update={"ttl_days": uc.features.ttl_days + 1})})
    assert "definitions" in featurestore.applied_marker_matches(longer)

    store, defs = featurestore.get_store(uc, apply=False)
    store.apply(list(defs.values()))  # `feast apply` by hand: the registry file is rewritten
    assert "registry" in featurestore.applied_marker_matches(uc)
    featurestore.get_store(uc)
    assert featurestore.applied_marker_matches(uc) == ""

    online = tmp_path / uc.name / "feast" / "online.db"
    online.unlink()  # the online store is gone: apply recreates its table
    assert "no table" in featurestore.applied_marker_matches(uc)
    assert featurestore._applied_sqlite_plan(uc, get_settings(), Layout.for_use_case(uc.name, get_settings())) is None
    featurestore.get_store(uc)
    assert featurestore.applied_marker_matches(uc) == "" and online.exists()

    (tmp_path / uc.name / "feast" / featurestore.APPLIED_MARKER).write_text("{half a marker")
    assert "nothing applied" in featurestore.applied_marker_matches(uc)

    monkeypatch.setenv("PAVEDML_FEAST_REGISTRY", "postgresql+psycopg2://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    assert "shared SQL registry" in featurestore.applied_marker_matches(uc)
    get_settings.cache_clear()
