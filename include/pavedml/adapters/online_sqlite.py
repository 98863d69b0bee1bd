"""A columnar writer for Feast's SQLite online store.

Feast's ``write_to_online_store`` turns every value into a ``ValueProto`` object, then the SQLite
store upserts one (entity, feature) row per ``execute`` call: about 2k entity rows/s for 18
features here, so a 1M-row day took 7-8 minutes. This module writes the *same rows* (same table,
same columns, same bytes: entity keys in Feast's serialization v3, values as serialized
``ValueProto``, ``value_text``, epoch ``event_ts``) straight from Arrow columns: one staging row
per entity that SQLite fans out into the feature rows (double-buffered, so encoding in Python
overlaps SQLite's writes on the second core), which Feast's own ``online_read`` / ``get_online_features`` then
serve unchanged. ``tests/integration/test_online_sqlite.py`` compares the table byte for byte with
what Feast writes for the same frame, so a Feast upgrade that changes the layout fails there.

Only what the use-case configs produce is supported: one string join key, Float64 and String
features, no created-timestamp column, no vector columns; anything else raises and the caller
falls back to Feast's own path.
"""

from __future__ import annotations

import math
import os
import queue
import shutil
import sqlite3
import struct
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass

_U32 = struct.Struct("<I").pack
_DOUBLE = struct.Struct("<d").pack
_STRING_TYPE = 2  # feast ValueType.STRING
_DOUBLE_TAG = b")"  # ValueProto field 5 (double_val), wire type 1 (64-bit)
_STRING_TAG = b"\x12"  # ValueProto field 2 (string_val), wire type 2 (length-delimited)


#: SQLite page cache of the writer's connection, in KiB.
CACHE_KIB = 256 * 1024


_DONE = object()
#: Staging folders in the temp dir: ``pavedml-online-stage-<host id>-<pid>-<random>``.
STAGE_PREFIX = "pavedml-online-stage-"


class UnsupportedLayout(ValueError):
    """The feature view or store uses something this writer does not implement."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def entity_keys(join_key: str, values: Iterable[str]) -> list[bytes]:
    """Feast's ``serialize_entity_key`` (version 3) for a single string join key, per value."""
    name = join_key.encode("utf8")
    prefix = _U32(1) + _U32(_STRING_TYPE) + _U32(len(name)) + name + _U32(_STRING_TYPE)
    out = []
    for v in values:
        if v is None:
            raise ValueError(f"null entity key in column {join_key!r}")
        b = v.encode("utf8")
        out.append(prefix + _U32(len(b)) + b)
    return out


def double_values(values: list) -> tuple[list[bytes], list[str | None]]:
    """Serialized ``ValueProto(double_val=...)`` and Feast's ``value_text``; NaN/None -> empty value."""
    blobs: list[bytes] = []
    texts: list[str | None] = []
    for x in values:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            blobs.append(b"")
            texts.append(None)
        else:
            x = float(x)
            blobs.append(_DOUBLE_TAG + _DOUBLE(x))
            texts.append(str(x))
    return blobs, texts


def string_values(values: list) -> tuple[list[bytes], list[str | None]]:
    """Serialized ``ValueProto(string_val=...)`` and ``value_text``; None -> empty value."""
    blobs = []
    for s in values:
        if s is None:
            blobs.append(b"")
        else:
            b = s.encode("utf8")
            blobs.append(_STRING_TAG + _varint(len(b)) + b)
    return blobs, list(values)


def epoch_seconds(column) -> list[int]:
    """Feast's ``int(datetime.timestamp())`` of an Arrow timestamp column (naive = UTC): truncated
    toward zero, as Arrow's unchecked cast to seconds does (no NumPy round trip: that makes pyarrow
    import pandas, ~0.2 s of a small day)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    seconds = pc.cast(column.cast(pa.timestamp("us", tz="UTC")), pa.timestamp("s", tz="UTC"), safe=False)
    return seconds.cast(pa.int64()).to_pylist()


@dataclass
class _Plan:
    db_path: str
    join_key: str
    timestamp_field: str
    encoders: list  # (feature name, encoder)
    table: str


def _plan(store, feature_view, join_key: str, timestamp_field: str) -> _Plan:
    """Check the store and view are what this writer implements."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStore, _quote_id, _table_id
    from feast.types import Float64, String

    config = store.config
    online = store._get_provider().online_store
    if type(online) is not SqliteOnlineStore:
        raise UnsupportedLayout(f"online store is {type(online).__name__}, not SqliteOnlineStore")
    if config.entity_key_serialization_version != 3:
        raise UnsupportedLayout("entity_key_serialization_version must be 3")
    if config.online_store.vector_enabled or getattr(config.online_store, "enable_openai_compatible_store", False):
        raise UnsupportedLayout("vector / value_num columns are not supported")
    if feature_view.batch_source is not None and feature_view.batch_source.created_timestamp_column:
        raise UnsupportedLayout("created timestamp columns are not supported")
    encoders = []
    for field in feature_view.features:
        if field.dtype == Float64:
            encoders.append((field.name, double_values))
        elif field.dtype == String:
            encoders.append((field.name, string_values))
        else:
            raise UnsupportedLayout(f"feature {field.name!r} has type {field.dtype}; only Float64 and String")
    table = _quote_id(_table_id(config.project, feature_view, config.registry.enable_online_feature_view_versioning))
    return _Plan(online._get_db_path(config), join_key, timestamp_field, encoders, table)


def plan_for(db_path: str, table: str, join_key: str, features: list[tuple[str, str]],
             timestamp_field: str = "event_timestamp") -> _Plan:
    """The plan :func:`_plan` derives from a Feast store and view, from plain facts (no Feast import):
    the store's file, Feast's table name (``<project>_<view>``, unquoted), and the features in the
    view's order as ``(name, "float" | "string")``. ``tests/integration/test_online_sqlite.py``
    checks it equals Feast's for the use cases' views."""
    encoders = []
    for name, kind in features:
        if kind not in ("float", "string"):
            raise UnsupportedLayout(f"feature {name!r} has type {kind}; only float and string")
        encoders.append((name, double_values if kind == "float" else string_values))
    return _Plan(db_path, join_key, timestamp_field, encoders, '"' + table.replace('"', '""') + '"')


def _encode(plan: _Plan, batch) -> list[list]:
    columns: list[list] = [entity_keys(plan.join_key, batch.column(plan.join_key).to_pylist()),
               epoch_seconds(batch.column(plan.timestamp_field))]
    for name, encode in plan.encoders:
        columns += encode(batch.column(name).to_pylist())
    return columns


def write_batches(store, feature_view, batches: Iterable, join_key: str,
                  timestamp_field: str = "event_timestamp") -> int:
    """Upsert Arrow ``RecordBatch``es of ``feature_view`` into ``store``'s SQLite online store.

    Two staging files, double-buffered: this thread encodes a batch and binds it into one
    staging table (Python, one row per entity) while a writer thread fans the previous batch
    out into Feast's one-row-per-feature table (one ``INSERT ... SELECT`` per feature, in C with
    the GIL released; one transaction per batch, so a killed step leaves whole batches only).
    Exceptions raised by ``batches`` (the caller's checks) propagate after the batches before
    them are written. Returns the entity rows written. Raises ``UnsupportedLayout`` before
    consuming anything when the store or view is not one this writer implements.
    """
    return write_planned(_plan(store, feature_view, join_key, timestamp_field), batches)


def write_planned(plan: _Plan, batches: Iterable) -> int:
    """:func:`write_batches` with a plan made before (:func:`plan_for`)."""
    n_params = 2 + 2 * len(plan.encoders)
    cols = ", ".join(f"v{i} BLOB, t{i} TEXT" for i in range(len(plan.encoders)))
    from pavedml.storage import owner_tag, sweep_leftovers

    sweep_leftovers(tempfile.gettempdir(), STAGE_PREFIX)  # a killed materialize's staging files
    scratch = tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{owner_tag()}-")
    stager = sqlite3.connect(":memory:", check_same_thread=False)
    writer = sqlite3.connect(plan.db_path, check_same_thread=False, timeout=60)
    # A day's (entity_key, feature_name) index is far larger than SQLite's 2 MiB default page
    # cache; a larger cache keeps the fan-out in memory.
    writer.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    for k in (0, 1):
        path = os.path.join(scratch, f"stage{k}.db")
        stager.execute(f"ATTACH DATABASE ? AS s{k}", (path,))
        stager.execute(f"PRAGMA s{k}.journal_mode = OFF")  # scratch data: no durability needed
        stager.execute(f"PRAGMA s{k}.synchronous = OFF")
        stager.execute(f"CREATE TABLE s{k}.stage (entity_key BLOB, event_ts INTEGER, {cols})")
        writer.execute(f"ATTACH DATABASE ? AS s{k}", (path,))
    stager.commit()
    fan_out = {
        k: [f"INSERT INTO main.{plan.table} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
            f"SELECT entity_key, ?, v{i}, t{i}, event_ts, NULL FROM s{k}.stage WHERE true "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts "
            # an older day never replaces a newer one (re-materializing day 1 after day 12)
            "WHERE excluded.event_ts >= event_ts"
            for i in range(len(plan.encoders))]
        for k in (0, 1)
    }
    free = [threading.Semaphore(1), threading.Semaphore(1)]
    handoff: queue.Queue = queue.Queue()
    failure: list[BaseException] = []

    def fan_out_loop() -> None:
        while (k := handoff.get()) is not _DONE:
            try:
                with writer:
                    for (name, _), sql in zip(plan.encoders, fan_out[k], strict=True):
                        writer.execute(sql, (name,))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                failure.append(exc)
                free[k].release()
                return
            free[k].release()

    def acquire(k: int) -> None:
        while not free[k].acquire(timeout=0.5):
            if failure:
                raise failure[0]

    thread = threading.Thread(target=fan_out_loop, name="online-fan-out", daemon=True)
    thread.start()
    rows, n = 0, 0
    try:
        for batch in batches:
            if not batch.num_rows:
                continue
            columns = _encode(plan, batch)
            k = n % 2
            acquire(k)
            with stager:
                stager.execute(f"DELETE FROM s{k}.stage")
                stager.executemany(f"INSERT INTO s{k}.stage VALUES ({', '.join('?' * n_params)})",
                                   zip(*columns, strict=True))
            handoff.put(k)
            rows += batch.num_rows
            n += 1
    finally:
        handoff.put(_DONE)
        thread.join()
        stager.close()
        writer.close()
        shutil.rmtree(scratch, ignore_errors=True)
    if failure:
        raise failure[0]
    return rows


def write_batch(store, feature_view, batch, join_key: str, timestamp_field: str = "event_timestamp") -> int:
    """Upsert one Arrow ``RecordBatch`` (see :func:`write_batches`)."""
    return write_batches(store, feature_view, [batch], join_key, timestamp_field)
