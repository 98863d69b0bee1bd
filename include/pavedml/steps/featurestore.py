"""Feast definitions for a use case, and materialize_features.

The definitions (entity, file source over the offline feature partitions, feature view, and a
feature service named after the registered model) are generated from the use-case config, so
they cannot drift from it; ``feature_repo/definitions.py`` exposes the same objects to the
``feast`` CLI. One Feast project per use case. Local default: file registry and SQLite online
store under ``<data root>/<use case>/feast``; production: ``PAVEDML_FEAST_REGISTRY`` (a SQL URL)
and ``PAVEDML_FEAST_ONLINE_STORE`` (``redis://host:port[/db]``).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
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


def get_store(uc: UseCase, apply: bool = True, *, settings: Settings | None = None, layout: Layout | None = None):
    """A FeatureStore for ``uc`` with its definitions applied (``apply`` is idempotent). Steps pass
    their context's settings and layout; without them, the global settings' ones."""
    from feast import FeatureStore

    store = FeatureStore(config=repo_config(uc, settings, layout))
    defs = definitions(uc, settings, layout)
    if apply:
        store.apply(list(defs.values()))
    return store, defs


def materialize_features(ctx: StepContext) -> MaterializeResult:
    """Write exactly the interval's feature partition into the online store, in bounded chunks.

    Equivalent to ``materialize(interval_start, interval_end)`` over the file source (every row of
    the partition carries the interval's timestamp) but reads the partition in record batches of
    ``features.online_write_chunk_rows`` so memory stays flat whatever the batch size. Into
    Feast's SQLite store the batches go through ``online_sqlite`` (same rows, columnar, one
    transaction per batch, encoding overlapped with SQLite's writes); any other store gets Feast's ``write_to_online_store``.
    """
    import numpy as np
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
    store, defs = get_store(uc, settings=ctx.settings, layout=ctx.layout)
    pfile = pq.ParquetFile(part)
    columns = [uc.entity.key, "event_timestamp", *uc.feature_columns]
    view = defs["feature_view"]
    start = pa.scalar(ctx.interval_start, pa.timestamp("us", tz="UTC"))
    end = pa.scalar(ctx.interval_end, pa.timestamp("us", tz="UTC"))

    def checked_batches():
        for batch in pfile.iter_batches(batch_size=uc.features.online_write_chunk_rows, columns=columns):
            ts = pc.cast(batch.column("event_timestamp"), pa.timestamp("us", tz="UTC"))
            outside = pc.sum(pc.or_(pc.less(ts, start), pc.greater_equal(ts, end))).as_py() or 0
            if outside:
                raise FeatureCheckError(f"{outside} rows of {part} fall outside the interval "
                                        f"[{ctx.interval_start}, {ctx.interval_end})")
            if batch.column(uc.entity.key).null_count:
                raise FeatureCheckError(f"null {uc.entity.key} in {part}; nothing written online")
            bad = [c for c in uc.features.non_null if c in uc.numeric_features
                   and not np.isfinite(batch.column(c).to_numpy(zero_copy_only=False).astype("float64")).all()]
            if bad:
                raise FeatureCheckError(f"non-finite values in {', '.join(bad)} of {part}; nothing written online")
            yield batch

    try:
        rows = online_sqlite.write_batches(store, view, checked_batches(), uc.entity.key)
        writer = "columnar"
    except online_sqlite.UnsupportedLayout as exc:
        log.info("online store writes go through Feast's write_to_online_store (%s)", exc)
        writer, rows = "feast", 0
        for batch in checked_batches():
            store.write_to_online_store(uc.feature_view, batch.to_pandas())
            rows += batch.num_rows
    seconds = time.perf_counter() - started
    log.info("materialized %d rows of %s [%s, %s) into the online store in %.1fs (%s writer)", rows,
             uc.feature_view, ctx.interval_start, ctx.interval_end, seconds, writer)
    extra = {"sha256": source["sha256"], "ds": ds, "rows": rows, "interval_start": ctx.interval_start.isoformat(),
             "interval_end": ctx.interval_end.isoformat()}
    return MaterializeResult(step="materialize_features", use_case=uc.name, ds=ds, sha256=source["sha256"], rows=rows,
                             start=ctx.interval_start.isoformat(), end=ctx.interval_end.isoformat(),
                             feature_view=uc.feature_view, seconds=round(seconds, 3), asset_extra=extra)
