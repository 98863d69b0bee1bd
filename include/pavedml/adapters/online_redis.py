"""A columnar writer for Feast's Redis online store.

Feast's ``write_to_online_store`` turns every value of a frame into a ``ValueProto`` object and
every row into a Python ``datetime`` before its Redis store writes one hash per entity. This
module writes the same hashes (key: the entity key in Feast's serialization v3 followed by the
project; fields: murmur3 of ``<view>:<feature>`` -> serialized ``ValueProto``, and ``_ts:<view>``
-> serialized ``google.protobuf.Timestamp``) straight from Arrow columns, two pipelined round
trips per batch (read the stored timestamps, write the newer rows), so Feast's
``get_online_features`` and the prediction service read them unchanged.
``tests/integration/test_online_redis.py`` compares the hashes with what Feast writes for the same
frames.

One difference from Feast's writer, on purpose: a row whose event time *equals* the stored one
replaces it (Feast keeps the stored row), so a corrected re-delivery of a day that is
materialized again reaches the online store, as it does in the SQLite store
(:mod:`pavedml.adapters.online_sqlite`). An older row never replaces a newer one, except, as
with Feast's writer, when two materializations of the same entities run at the very same time
(the stored times are read, then the newer rows written); the SQLite writer decides per row in
one statement.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pavedml.adapters.online_sqlite import UnsupportedLayout, _varint, entity_keys, string_values

_MASK64 = (1 << 64) - 1
_DOUBLE_TAG = 0x29  # ValueProto field 5 (double_val), wire type 1


def timestamps(column) -> tuple[list[bytes], list[int]]:
    """Serialized ``Timestamp``s of an Arrow timestamp column (naive = UTC), as Feast's
    ``Timestamp.FromDatetime`` makes them (seconds floored, nanos >= 0; zero fields omitted), and
    each one's epoch nanoseconds."""
    import pyarrow as pa

    micros = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
    blobs, nanos = [], []
    for m in micros:
        if m is None:
            raise ValueError("null event timestamp")
        seconds, us = divmod(m, 1_000_000)
        blob = (b"\x08" + _varint(seconds & _MASK64)) if seconds else b""
        if us:
            blob += b"\x10" + _varint(us * 1000)
        blobs.append(blob)
        nanos.append(m * 1000)
    return blobs, nanos


def stored_nanos(blob: bytes | None) -> int:
    """Epoch nanoseconds of a stored serialized ``Timestamp`` (none stored: 0, as Feast reads it)."""
    seconds = nanos = 0
    i = 0
    while blob and i < len(blob):
        tag = blob[i]
        value, shift, i = 0, 0, i + 1
        while True:
            byte = blob[i]
            value |= (byte & 0x7F) << shift
            i += 1
            if byte < 0x80:
                break
            shift += 7
        if tag == 0x08:
            seconds = value - (1 << 64) if value >= 1 << 63 else value
        elif tag == 0x10:
            nanos = value
    return seconds * 1_000_000_000 + nanos


def double_blobs(column) -> list[bytes]:
    """Serialized ``ValueProto(double_val=...)`` of an Arrow column (null/NaN -> empty value), as
    :func:`pavedml.adapters.online_sqlite.double_values` makes them, packed by NumPy in one pass."""
    import numpy as np
    import pyarrow as pa

    values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    packed = np.empty(len(values), dtype=[("tag", "u1"), ("value", "<f8")])  # 9 bytes a value, no padding
    packed["tag"] = _DOUBLE_TAG
    packed["value"] = values
    buf = packed.tobytes()
    out = [buf[i:i + 9] for i in range(0, 9 * len(values), 9)]
    for i in np.flatnonzero(np.isnan(values)).tolist():
        out[i] = b""
    return out


def _string_blobs(column) -> list[bytes]:
    """:func:`pavedml.adapters.online_sqlite.string_values`' blobs, each distinct value encoded once
    (features' text is mostly categories: a few distinct values a column)."""
    cache: dict = {None: b""}
    out = []
    for value in column.to_pylist():
        blob = cache.get(value)
        if blob is None:
            blob = cache[value] = string_values([value])[0][0]
        out.append(blob)
    return out


def field_of(view: str, feature: str) -> bytes:
    """Feast's ``_mmh3``: murmur3_32 of ``<view>:<feature>``, little endian."""
    import mmh3

    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def redis_kwargs(setting: str) -> tuple[dict[str, Any], str]:
    """redis-py arguments for ``redis://host:port[,k=v...][/db]`` parsed as ``repo_config`` and
    Feast's ``RedisOnlineStore`` parse it, and a password-free label (``host:port/db``)."""
    import json

    hostport, _, db = setting.removeprefix("redis://").partition("/")
    conn = hostport + (f",db={db}" if db else "")  # what repo_config hands Feast
    nodes = [c for c in conn.split(",") if "=" not in c]
    if not nodes or ":" not in nodes[0]:
        from pavedml.errors import ConfigError

        raise ConfigError("PAVEDML_FEAST_ONLINE_STORE: expected redis://host:port[/db], got a value without host:port")
    host, port = nodes[0].rsplit(":", 1)
    kwargs: dict[str, Any] = {}
    for part in conn.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            try:
                kwargs[k] = json.loads(v)
            except json.JSONDecodeError:
                kwargs[k] = v
    kwargs.update(host=host, port=int(port))
    label = f"redis {host}:{port}/{kwargs.get('db', 0)}"
    return kwargs, label


@dataclass
class RedisPlan:
    setting: str  # redis://host:port[/db]
    project: bytes
    join_key: str
    timestamp_field: str
    ts_field: bytes
    encoders: list  # (feature name, field, encoder)


def plan_for(setting: str, project: str, view: str, join_key: str, features: list[tuple[str, str]],
             timestamp_field: str = "event_timestamp") -> RedisPlan:
    encoders = []
    for name, kind in features:
        if kind not in ("float", "string"):
            raise UnsupportedLayout(f"feature {name!r} has type {kind}; only float and string")
        encoders.append((name, field_of(view, name), double_blobs if kind == "float" else _string_blobs))
    return RedisPlan(setting, project.encode("utf8"), join_key, timestamp_field, f"_ts:{view}".encode(), encoders)


def _roundtrip(client, commands: list[bytes]) -> list:
    """Send packed commands in one write on one pooled connection and read exactly their replies
    (hiredis' reader in bulk: redis-py's pipeline spends more time in Python per command than
    Redis spends executing it). A connection that failed mid-way is dropped, never reused."""
    import hiredis

    conn = client.connection_pool.get_connection()
    try:
        conn.connect()
        sock = conn._sock
        sock.sendall(b"".join(commands))
        reader = hiredis.Reader()
        replies: list = []
        while len(replies) < len(commands):
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("Redis closed the connection before answering every command")
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                if isinstance(reply, Exception):
                    raise reply
                replies.append(reply)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        client.connection_pool.release(conn)
    return replies


def write_batches(plan: RedisPlan, batches: Iterable, client=None) -> int:
    """Write Arrow ``RecordBatch``es; returns the entity rows written (rows older than the stored
    ones are skipped, not counted). Exceptions raised by ``batches`` propagate after the batches
    before them are written; a batch is written whole or, if Redis fails mid-way, partly (each
    entity's hash is one ``HSET``: never half an entity)."""
    from typing import cast

    import hiredis

    pack_command = cast(Callable[[tuple], bytes], hiredis.pack_command)  # its stub types one argument only
    if client is None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kwargs, _ = redis_kwargs(plan.setting)
        kwargs.setdefault("socket_connect_timeout", 5)
        kwargs.setdefault("socket_timeout", 60)  # a server that stalls fails the step instead of hanging it
        kwargs.setdefault("retry", Retry(NoBackoff(), 1))  # a dead server fails the step now, not after backoffs
        kwargs["protocol"] = 2  # _roundtrip counts replies: no RESP3 push frames among them
        client = owned = redis.Redis(**kwargs)
    else:
        owned = None
    try:
        return _write(plan, batches, client, pack_command)
    finally:
        if owned is not None:
            owned.close()


def _write(plan: RedisPlan, batches: Iterable, client, pack_command) -> int:
    written = 0
    ts_field = plan.ts_field
    fields = [f for _, f, _ in plan.encoders]
    for batch in batches:
        if not batch.num_rows:
            continue
        keys = [k + plan.project for k in entity_keys(plan.join_key, batch.column(plan.join_key).to_pylist())]
        ts_blobs, nanos = timestamps(batch.column(plan.timestamp_field))
        values = [encode(batch.column(name)) for name, _, encode in plan.encoders]
        stored = _roundtrip(client, [pack_command((b"HGET", key, ts_field)) for key in keys])
        latest: dict[bytes, int] = {}
        commands = []
        for i, (key, *row) in enumerate(zip(keys, *values, strict=True)):
            seen = max(stored_nanos(stored[i]), latest.get(key, 0))
            if seen and nanos[i] < seen:
                continue
            latest[key] = nanos[i]
            args = [b"HSET", key, ts_field, ts_blobs[i]]
            for field, value in zip(fields, row, strict=True):
                args += (field, value)
            commands.append(pack_command(tuple(args)))
        if commands:
            _roundtrip(client, commands)
        written += len(commands)
    return written
