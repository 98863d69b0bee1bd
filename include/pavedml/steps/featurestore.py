"""Feast definitions for a use case, and materialize_features.

The definitions (entity, file source over the offline feature partitions, feature view, and a
feature service named after the registered model) are generated from the use-case config, so
they cannot drift from it; ``feature_repo/definitions.py`` exposes the same objects to the
``feast`` CLI. One Feast project per use case. Local default: file registry and SQLite online
store under ``<data root>/<use case>/feast``; production: ``PAVEDML_FEAST_REGISTRY`` (a SQL URL)
and ``PAVEDML_FEAST_ONLINE_STORE`` (``redis://host:port[/db]``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pavedml import storage
from pavedml.config import UseCase
from pavedml.context import StepContext
from pavedml.errors import ConfigError, FeatureCheckError
from pavedml.layout import Layout
from pavedml.results import MaterializeResult
from pavedml.settings import Settings, get_settings

log = logging.getLogger(__name__)


def repo_config(uc: UseCase, settings: Settings | None = None, layout: Layout | None = None):
    from feast import RepoConfig
    from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
    from feast.repo_config import RegistryConfig

    s = settings or get_settings()
    state = (layout or Layout.for_use_case(uc.name, s)).feast_dir
    state.mkdir(parents=True, exist_ok=True)
    if s.feast_registry:
        from feast.infra.registry.sql import SqlRegistryConfig

        registry: RegistryConfig = SqlRegistryConfig(registry_type="sql", path=s.feast_registry, cache_ttl_seconds=60,
                                     sqlalchemy_config_kwargs={"pool_pre_ping": True})
    else:
        registry = RegistryConfig(registry_type="file", path=str(state / "registry.db"), cache_ttl_seconds=60)
    online = s.feast_online_store
    if online.startswith("redis://"):
        from feast.infra.online_stores.redis import RedisOnlineStoreConfig

        hostport, _, db = online.removeprefix("redis://").partition("/")
        conn = hostport + (f",db={db}" if db else "")
        online_cfg: Any = RedisOnlineStoreConfig(connection_string=conn)
    elif not online or online.startswith("sqlite:"):
        from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

        path = online.removeprefix("sqlite:///") if online else str(state / "online.db")
        online_cfg = SqliteOnlineStoreConfig(path=path)
    else:
        raise ConfigError(f"PAVEDML_FEAST_ONLINE_STORE={online!r}: expected redis://host:port[/db] or sqlite:///path")
    return RepoConfig(project=uc.name, provider="local", registry=registry, online_store=online_cfg,
                      offline_store=DaskOfflineStoreConfig(type="file"), entity_key_serialization_version=3,
                      repo_path=str(state))


def definitions(uc: UseCase, settings: Settings | None = None, layout: Layout | None = None) -> dict:
    """Entity, source, feature view and feature service for ``uc`` (names derive from the config)."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, String

    layout = layout or Layout.for_use_case(uc.name, settings or get_settings())
    entity = Entity(name=uc.entity.name, join_keys=[uc.entity.key], value_type=ValueType.STRING,
                    description=f"{uc.name} entity keyed by {uc.entity.key}")
    source = FileSource(name=f"{uc.name}_features_source", path=str(layout.features_root),
                        timestamp_field="event_timestamp",
                        description="daily offline feature partitions written by build_features")
    schema = [Field(name=c, dtype=Float64) for c in uc.numeric_features]
    schema += [Field(name=c, dtype=String) for c in uc.categorical_features]
    view = FeatureView(name=uc.feature_view, entities=[entity], ttl=timedelta(days=uc.features.ttl_days),
                       schema=schema, source=source, online=True, tags={"use_case": uc.name})
    service = FeatureService(name=uc.feature_service, features=[view],
                             description=f"features of model {uc.model.registered_name}")
    return {"entity": entity, "source": source, "feature_view": view, "feature_service": service}


#: In the Feast state folder: what the last ``apply`` there applied (see :func:`applied_marker_matches`).
APPLIED_MARKER = "applied.json"


def sqlite_online_path(uc: UseCase, settings: Settings | None = None, layout: Layout | None = None) -> Path | None:
    """The SQLite online store file the steps' Feast config names (None: the store is not SQLite).
    Resolved as Feast resolves it: a relative path against the repo (state) folder."""
    s = settings or get_settings()
    online = s.feast_online_store
    if online and not online.startswith("sqlite:"):
        return None
    state = (layout or Layout.for_use_case(uc.name, s)).feast_dir
    path = Path(online.removeprefix("sqlite:///")) if online else state / "online.db"
    return path if path.is_absolute() else state / path


def feature_kinds(uc: UseCase) -> list[tuple[str, str]]:
    """The feature view's fields in :func:`definitions`' order, as the online writers take them."""
    return [(c, "float") for c in uc.numeric_features] + [(c, "string") for c in uc.categorical_features]


def online_table(uc: UseCase) -> str:
    """Feast's SQLite table of the use case's feature view (``<project>_<view>``, no versioning)."""
    return f"{uc.name}_{uc.feature_view}"


def definitions_fingerprint(uc: UseCase, settings: Settings | None = None, layout: Layout | None = None) -> str:
    """A digest of everything :func:`definitions` and :func:`repo_config` put into the registry and the
    online store's tables, plus the Feast version: equal digests, equal ``apply``."""
    from importlib.metadata import version

    s = settings or get_settings()
    layout = layout or Layout.for_use_case(uc.name, s)
    facts = {"feast": version("feast"), "project": uc.name, "entity": [uc.entity.name, uc.entity.key],
             "source": str(layout.features_root), "view": uc.feature_view, "ttl_days": uc.features.ttl_days,
             "numeric": list(uc.numeric_features), "categorical": list(uc.categorical_features),
             "service": uc.feature_service, "model": uc.model.registered_name,
             "registry": s.feast_registry or str(layout.feast_dir / "registry.db"),
             "online": s.feast_online_store or str(layout.feast_dir / "online.db"),
             # this module builds the definitions and the repo config: any change to it applies again
             "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _registry_stamp(path: Path) -> list | None:
    """The registry file as it is: mtime, size and content digest (Feast rewrites it in place, and a
    coarse file-system clock can leave the mtime unchanged)."""
    try:
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None
    return [st.st_mtime_ns, st.st_size, digest]


def applied_marker_matches(uc: UseCase, settings: Settings | None = None, layout: Layout | None = None) -> str:
    """Empty when this use case's definitions are applied as they are now, else why not.

    Only the local file registry is trusted this way: the marker records the definitions' digest
    and the registry file as the ``apply`` left it (mtime, size, inode), so any other writer of the
    registry (``feast apply`` by hand, a deleted file, another Feast version, a changed config)
    makes the next step apply again. A shared SQL registry is always applied."""
    s = settings or get_settings()
    if s.feast_registry:
        return "the registry is a shared SQL registry"
    layout = layout or Layout.for_use_case(uc.name, s)
    try:
        marker = json.loads((layout.feast_dir / APPLIED_MARKER).read_text())
    except (OSError, ValueError):
        return "nothing applied here yet"
    if marker.get("fingerprint") != definitions_fingerprint(uc, s, layout):
        return "the definitions (or Feast) changed since the last apply"
    if marker.get("registry") != _registry_stamp(layout.feast_dir / "registry.db"):
        return "the registry file changed since the last apply"
    path = sqlite_online_path(uc, s, layout)
    if path is not None and not _has_table(path, online_table(uc)):
        return f"the online store {path} has no table {online_table(uc)}"
    return ""


def _has_table(path: Path, table: str) -> bool:
    import sqlite3

    if not path.exists():
        return False
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                (table,)).fetchone() is not None
    except sqlite3.Error:
        return False


def _write_marker(uc: UseCase, settings: Settings | None, layout: Layout | None) -> None:
    s = settings or get_settings()
    if s.feast_registry:
        return
    layout = layout or Layout.for_use_case(uc.name, s)
    stamp = _registry_stamp(layout.feast_dir / "registry.db")
    if stamp is None:
        return
    marker = {"fingerprint": definitions_fingerprint(uc, s, layout), "registry": stamp}
    with storage.atomic_path(layout.feast_dir / APPLIED_MARKER) as tmp:
        Path(tmp).write_text(json.dumps(marker))


def get_store(uc: UseCase, apply: bool = True, *, settings: Settings | None = None, layout: Layout | None = None):
    """A FeatureStore for ``uc`` with its definitions applied (``apply`` is idempotent, and skipped when
    :func:`applied_marker_matches`). Steps pass their context's settings and layout; without them,
    the global settings' ones."""
    from feast import FeatureStore

    store = FeatureStore(config=repo_config(uc, settings, layout))
    defs = definitions(uc, settings, layout)
    if apply:
        why = applied_marker_matches(uc, settings, layout)
        if why:
            log.debug("feast apply for %s: %s", uc.name, why)
            store.apply(list(defs.values()))
            _write_marker(uc, settings, layout)
    return store, defs


def _applied_sqlite_plan(uc: UseCase, settings: Settings, layout: Layout):
    """The columnar writer's plan without importing Feast, when the definitions are applied as they
    are now and the store is SQLite with its table in place; else None (the caller goes through Feast)."""
    from pavedml.adapters import online_sqlite

    path = sqlite_online_path(uc, settings, layout)
    if path is None or applied_marker_matches(uc, settings, layout):
        return None
    return online_sqlite.plan_for(str(path), online_table(uc), uc.entity.key, feature_kinds(uc))


def materialize_features(ctx: StepContext) -> MaterializeResult:
    """Write exactly the interval's feature partition into the online store, in bounded chunks.

    Equivalent to ``materialize(interval_start, interval_end)`` over the file source (every row of
    the partition carries the interval's timestamp) but reads the partition in record batches of
    ``features.online_write_chunk_rows`` so memory stays flat whatever the batch size. Into
    Feast's SQLite store the batches go through ``online_sqlite`` (same rows, columnar, one
    transaction per batch, encoding overlapped with SQLite's writes); any other store gets Feast's ``write_to_online_store``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pavedml.adapters import online_sqlite

    uc, ds = ctx.use_case, ctx.ds_iso
    partition = ctx.layout.features_partition(ds)
    part = ctx.layout.features_file(ds)
    if not part.exists():
        raise FeatureCheckError(f"no feature partition for {ds} at {partition}",
                                details={"next": "run build_features for this interval first"})
    source = storage.read_json(str(ctx.layout.features_source(ds)))
    started = time.perf_counter()
    # Applied as it is now, into SQLite: no Feast import at all (its import alone is ~3 s of a small day)
    plan = _applied_sqlite_plan(uc, ctx.settings, ctx.layout)
    store = defs = None
    if plan is None:
        store, defs = get_store(uc, settings=ctx.settings, layout=ctx.layout)
    pfile = pq.ParquetFile(part)
    columns = [uc.entity.key, "event_timestamp", *uc.feature_columns]
    # compared as epoch microseconds: a timestamp scalar makes pyarrow import pandas (~0.2 s of a small day)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    start, end = ((t - epoch) // timedelta(microseconds=1) for t in (ctx.interval_start, ctx.interval_end))

    def checked_batches():
        for batch in pfile.iter_batches(batch_size=uc.features.online_write_chunk_rows, columns=columns):
            ts = pc.cast(pc.cast(batch.column("event_timestamp"), pa.timestamp("us", tz="UTC")), pa.int64())
            if ts.null_count:
                raise FeatureCheckError(f"{ts.null_count} rows of {part} have no event_timestamp; nothing written online")
            bounds = pc.min_max(ts)  # the usual case in pyarrow alone: Python scalars make it import pandas
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            outside = 0
            if low is not None and (low < start or high >= end):
                micros = ts.to_numpy(zero_copy_only=False)
                outside = int(((micros < start) | (micros >= end)).sum())
            if outside:
                raise FeatureCheckError(f"{outside} rows of {part} fall outside the interval "
                                        f"[{ctx.interval_start}, {ctx.interval_end})")
            if batch.column(uc.entity.key).null_count:
                raise FeatureCheckError(f"null {uc.entity.key} in {part}; nothing written online")
            bad = [c for c in uc.features.non_null if c in uc.numeric_features
                   and (batch.column(c).null_count
                        or not pc.all(pc.is_finite(pc.cast(batch.column(c), pa.float64()))).as_py())]
            if bad:
                raise FeatureCheckError(f"non-finite values in {', '.join(bad)} of {part}; nothing written online")
            yield batch

    counted = [0]

    def counted_batches():
        for batch in checked_batches():
            counted[0] += batch.num_rows
            yield batch

    online = ctx.settings.feast_online_store
    chosen = os.environ.get("PAVEDML_ONLINE_WRITER") or "pavedml"
    if chosen not in ("pavedml", "feast"):
        raise ConfigError(f"PAVEDML_ONLINE_WRITER={chosen!r}: expected pavedml (the default) or feast")
    own_writer = chosen == "pavedml"
    try:
        if not own_writer:
            raise online_sqlite.UnsupportedLayout("PAVEDML_ONLINE_WRITER=feast")
        if plan is not None:
            online_sqlite.write_planned(plan, counted_batches())
            writer = "columnar, definitions applied before"
        elif online.startswith("redis://"):
            from pavedml.adapters import online_redis

            newer = online_redis.write_batches(
                online_redis.plan_for(online, uc.name, uc.feature_view, uc.entity.key, feature_kinds(uc)),
                counted_batches())
            writer = f"columnar Redis, {newer} rows newer than the stored ones"
        else:
            assert defs is not None
            online_sqlite.write_batches(store, defs["feature_view"], counted_batches(), uc.entity.key)
            writer = "columnar"
    except online_sqlite.UnsupportedLayout as exc:
        log.info("online store writes go through Feast's write_to_online_store (%s)", exc)
        writer = "feast"
        if store is None:
            store, defs = get_store(uc, settings=ctx.settings, layout=ctx.layout)
        for batch in counted_batches():
            store.write_to_online_store(uc.feature_view, batch.to_pandas())
    rows = counted[0]
    seconds = time.perf_counter() - started
    log.info("materialized %d rows of %s [%s, %s) into the online store in %.1fs (%s writer)", rows,
             uc.feature_view, ctx.interval_start, ctx.interval_end, seconds, writer)
    extra = {"sha256": source["sha256"], "ds": ds, "rows": rows, "interval_start": ctx.interval_start.isoformat(),
             "interval_end": ctx.interval_end.isoformat()}
    return MaterializeResult(step="materialize_features", use_case=uc.name, ds=ds, sha256=source["sha256"], rows=rows,
                             start=ctx.interval_start.isoformat(), end=ctx.interval_end.isoformat(),
                             feature_view=uc.feature_view, seconds=round(seconds, 3), asset_extra=extra)
