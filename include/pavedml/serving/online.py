"""Read a use case's feature rows from Feast's online store without Feast on the request path.

The prediction service needs one entity row in well under a millisecond; Feast's SDK spends
milliseconds per call in protobuf objects and registry lookups. :class:`OnlineFeatures` reads the
same bytes Feast (and :mod:`pavedml.adapters.online_sqlite`) wrote, in one round trip per call
for any number of keys, and decodes them into numpy arrays:

* SQLite (the local default, ``<data root>/<use case>/feast/online.db``): one ``SELECT ... WHERE
  entity_key IN (...)`` on a read-only connection per thread; table ``<project>_<feature view>``,
  entity keys in Feast's serialization v3, values as serialized ``ValueProto``, ``event_ts`` as
  Feast's epoch integer.
* Redis (``PAVEDML_FEAST_ONLINE_STORE=redis://host:port[,password=...][/db]``): one pipeline of
  ``HMGET`` per key; the hash key is the serialized entity key followed by the project name, the
  fields are murmur3 hashes of ``<view>:<feature>`` plus ``_ts:<view>`` (a protobuf Timestamp).

What a read returns equals Feast 0.67's ``get_online_features`` for the same keys
(``tests/integration/test_serving_online.py`` compares them on both stores). Feast 0.67 applies no
feature-view TTL on this path (only to pre-computed vectors, which we do not write), so neither
does this reader: ``event_ts`` lets the caller judge freshness. The store is located exactly as
:func:`pavedml.steps.featurestore.repo_config` locates it.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pavedml.adapters.online_redis import redis_kwargs
from pavedml.config import UseCase
from pavedml.layout import Layout
from pavedml.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: Socket connect/read timeout towards Redis, in seconds: a dead store fails a request fast.
REDIS_TIMEOUT_S = 1.0
#: How long a SQLite read waits for a materialize transaction's lock before it fails.
SQLITE_BUSY_TIMEOUT_S = 2.0
#: Distinct categorical values kept decoded (a cache, cleared when full).
STRING_CACHE_SIZE = 100_000
#: Keys per SQLite statement (SQLite allows 32,766 bound parameters).
SQLITE_MAX_KEYS = 30_000

_STRING_TYPE = 2  # feast ValueType.STRING (entity key serialization v3)
_U32 = struct.Struct("<I").pack
_DOUBLE = struct.Struct("<d").unpack_from
_FLOAT = struct.Struct("<f").unpack_from


class FeatureStoreUnavailable(RuntimeError):
    """The online store cannot be read (down, unreachable, or nothing materialized yet)."""


@dataclass
class OnlineRows:
    """Feature rows for ``keys``, in request order; columns = numeric then categorical features."""

    keys: list[str]
    found: np.ndarray  # bool (n,)
    numeric: np.ndarray  # float64 (n, len(uc.numeric_features)); NaN where missing / not found
    categorical: np.ndarray  # object (n, len(uc.categorical_features)); None where missing
    event_ts: np.ndarray  # float64 (n,) epoch seconds of the row; NaN when not found


def entity_key(join_key: str, value: str) -> bytes:
    """Feast's ``serialize_entity_key`` (version 3) of one string join key."""
    name = join_key.encode("utf8")
    raw = value.encode("utf8")
    return _U32(1) + _U32(_STRING_TYPE) + _U32(len(name)) + name + _U32(_STRING_TYPE) + _U32(len(raw)) + raw


def _unique_entity_keys(join_key: str, keys: list[str]) -> tuple[dict[bytes, int], list[bytes]]:
    """Serialized entity keys once each (a request may repeat a key): position by key, and the keys."""
    pos: dict[bytes, int] = {}
    for k in keys:
        pos.setdefault(entity_key(join_key, k), len(pos))
    return pos, list(pos)


def _varint(b: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = b[i]
        i += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, i
        shift += 7


def decode_value(b: bytes | None) -> Any:
    """A serialized scalar ``ValueProto`` as Python (None when empty), as Feast's ``to_dict`` gives it."""
    if not b:
        return None
    tag = b[0]
    if tag == 0x29 and len(b) == 9:  # double_val
        return _DOUBLE(b, 1)[0]
    if tag == 0x12:  # string_val
        n, i = _varint(b, 1)
        return b[i:i + n].decode("utf8")
    if tag == 0x35 and len(b) == 5:  # float_val
        return _FLOAT(b, 1)[0]
    if tag in (0x18, 0x20):  # int32_val, int64_val (two's complement varint)
        n, _ = _varint(b, 1)
        return n - (1 << 64) if n >= 1 << 63 else n
    if tag == 0x38:  # bool_val
        return bool(_varint(b, 1)[0])
    raise ValueError(f"unsupported ValueProto encoding (first byte 0x{tag:02x}, {len(b)} bytes)")


def _timestamp_seconds(b: bytes | None) -> float:
    """A serialized ``google.protobuf.Timestamp`` as epoch seconds (empty = 0, as Feast reads it)."""
    seconds = nanos = 0
    i = 0
    while b and i < len(b):
        tag = b[i]
        value, i = _varint(b, i + 1)
        if tag == 0x08:
            seconds = value - (1 << 64) if value >= 1 << 63 else value
        elif tag == 0x10:
            nanos = value
    return seconds + nanos / 1e9


def _feast_sqlite_ts(stored: int | float | str) -> float:
    """The event time of a stored ``event_ts``: the epoch seconds as written (materialize_features'
    writer stores the true epoch). Feast's own reader turns it into local time labelled UTC, which is
    the same on a UTC host (where the equality tests run) and off by the host's offset elsewhere: the
    service never copies that, so the logged event times join their labels on any host."""
    return float(stored)


def _columns(uc: UseCase) -> tuple[dict[str, tuple[bool, int]], int, int]:
    cols = {c: (True, j) for j, c in enumerate(uc.numeric_features)}
    cols.update({c: (False, j) for j, c in enumerate(uc.categorical_features)})
    return cols, len(uc.numeric_features), len(uc.categorical_features)


class _SqliteReader:
    def __init__(self, path: Path, table: str, uc: UseCase) -> None:
        self.path = path
        self.label = f"sqlite {path}"
        self.table = table
        self.uc = uc
        self.cols, self.n_num, self.n_cat = _columns(uc)
        quoted = '"' + table.replace('"', '""') + '"'
        self._sql = f"SELECT entity_key, feature_name, value, event_ts FROM {quoted} WHERE entity_key IN "
        self._ping_sql = f"SELECT 1 FROM {quoted} LIMIT 1"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._closed = False
        self._strings: dict[bytes, Any] = {}  # decoded categorical values (few distinct ones)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise FeatureStoreUnavailable(f"{self.label}: the reader is closed")
            if not self.path.exists():
                raise FeatureStoreUnavailable(f"{self.label}: no such file (nothing materialized yet: "
                                              "run materialize_features)")
            try:
                conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, check_same_thread=False,
                                       timeout=SQLITE_BUSY_TIMEOUT_S)
            except sqlite3.Error as exc:
                raise FeatureStoreUnavailable(f"{self.label}: cannot open read-only: {exc}") from exc
            with self._lock:
                self._conns.append(conn)
            self._local.conn = conn
        return conn

    def _execute(self, sql: str, params: Sequence[bytes]) -> list[tuple]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            if "no such table" in str(exc):
                raise FeatureStoreUnavailable(f"{self.label}: no table {self.table} (nothing materialized yet for "
                                              f"feature view {self.uc.feature_view}: run materialize_features)") from exc
            self._drop()
            raise FeatureStoreUnavailable(f"{self.label}: {type(exc).__name__}: {exc}") from exc

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            conn.close()

    def ping(self) -> None:
        self._execute(self._ping_sql, ())

    def read(self, keys: list[str], out: OnlineRows) -> None:
        pos, uniq = _unique_entity_keys(self.uc.entity.key, keys)
        rows: list[tuple] = []
        for start in range(0, len(uniq), SQLITE_MAX_KEYS):
            chunk = uniq[start:start + SQLITE_MAX_KEYS]
            rows += self._execute(self._sql + "(" + ",".join("?" * len(chunk)) + ")", chunk)
        m = len(uniq)
        nan, n_num, n_cat = math.nan, self.n_num, self.n_cat
        num = [[nan] * n_num for _ in range(m)]
        cat: list[list[Any]] = [[None] * n_cat for _ in range(m)]
        stored_ts: list[Any] = [None] * m
        found = [False] * m
        cols, strings = self.cols, self._strings
        for ek, name, blob, stored in rows:
            i = pos[ek]
            found[i] = True
            if stored is not None and (stored_ts[i] is None or stored > stored_ts[i]):
                stored_ts[i] = stored  # the newest of the entity's feature rows (they normally agree)
            where = cols.get(name)
            if where is None or not blob:
                continue
            numeric, j = where
            if numeric:
                num[i][j] = _double(blob, name)
            else:
                cat[i][j] = _cached_text(strings, blob)
        ts = np.array([nan if t is None else _feast_sqlite_ts(t) for t in stored_ts], dtype=np.float64)
        _scatter(out, keys, uniq, pos, self.uc.entity.key, np.array(found, dtype=bool),
                 np.array(num, dtype=np.float64).reshape(m, n_num), _objects(cat, m, n_cat), ts)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
            self._closed = True
        for c in conns:
            c.close()


def _double(blob: bytes, name: str) -> float:
    """A numeric feature's value: the common double_val encoding read directly, anything else decoded."""
    return _DOUBLE(blob, 1)[0] if len(blob) == 9 and blob[0] == 0x29 else _as_float(blob, name)


def _cached_text(strings: dict, blob: bytes):
    """A categorical feature's value, decoded once per distinct blob (the cache is bounded)."""
    value = strings.get(blob)
    if value is None:
        value = decode_value(blob)
        if len(strings) >= STRING_CACHE_SIZE:
            strings.clear()
        strings[blob] = value
    return value


def _as_float(blob: bytes, name: str) -> float:
    v = decode_value(blob)
    if v is None:
        return math.nan
    if isinstance(v, str):
        raise ValueError(f"feature {name!r} holds a string online ({v[:40]!r}) but is numeric in the use case")
    return float(v)


def _objects(rows: list[list[Any]], m: int, k: int) -> np.ndarray:
    out = np.empty((m, k), dtype=object)
    if m and k:
        out[:] = rows
    return out


def _scatter(out: OnlineRows, keys: list[str], uniq: list[bytes], pos: dict[bytes, int], join_key: str,
             found: np.ndarray, num: np.ndarray, cat: np.ndarray, ts: np.ndarray) -> None:
    """Fill ``out`` from per-unique-key arrays (a key asked twice gets its row twice)."""
    if len(uniq) == len(keys):
        idx = None
    else:
        idx = np.fromiter((pos[entity_key(join_key, k)] for k in keys), dtype=np.intp, count=len(keys))
    out.found = found if idx is None else found[idx]
    out.numeric = num if idx is None else num[idx]
    out.categorical = cat if idx is None else cat[idx]
    out.event_ts = ts if idx is None else ts[idx]


class _RedisReader:
    def __init__(self, setting: str, uc: UseCase) -> None:
        import mmh3
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kwargs, self.label = redis_kwargs(setting)
        kwargs.setdefault("socket_timeout", REDIS_TIMEOUT_S)
        kwargs.setdefault("socket_connect_timeout", REDIS_TIMEOUT_S)
        # one immediate retry reconnects a pooled connection the server dropped; no backoff
        kwargs.setdefault("retry", Retry(NoBackoff(), 1))
        self._secret = str(kwargs.get("password") or "")
        self._errors = (redis.RedisError, OSError)
        self.client = redis.Redis(**kwargs)
        self.uc = uc
        self.project = uc.name.encode("utf8")
        fv = uc.feature_view
        names = [*uc.numeric_features, *uc.categorical_features]

        def field(name: str) -> bytes:  # Feast's _mmh3: murmur3_32 little endian
            return struct.pack("<I", mmh3.hash(f"{fv}:{name}", signed=False))

        self.fields: list[bytes | str] = [field(n) for n in names]
        self.fields.append(f"_ts:{fv}")
        self.n_num, self.n_cat = len(uc.numeric_features), len(uc.categorical_features)
        self.names = names
        self._strings: dict[bytes, Any] = {}  # decoded categorical values (few distinct ones)

    def _fail(self, exc: BaseException) -> FeatureStoreUnavailable:
        msg = f"{type(exc).__name__}: {exc}"
        if self._secret:
            msg = msg.replace(self._secret, "***")
        return FeatureStoreUnavailable(f"{self.label}: {msg}")

    def ping(self) -> None:
        try:
            self.client.ping()
        except self._errors as exc:
            raise self._fail(exc) from exc

    def read(self, keys: list[str], out: OnlineRows) -> None:
        pos, uniq = _unique_entity_keys(self.uc.entity.key, keys)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for ek in uniq:
                    pipe.hmget(ek + self.project, self.fields)  # type: ignore[arg-type]
                replies = pipe.execute()
        except self._errors as exc:
            raise self._fail(exc) from exc
        m, n_num, n_cat, nan = len(uniq), self.n_num, self.n_cat, math.nan
        num = [[nan] * n_num for _ in range(m)]
        cat: list[list[Any]] = [[None] * n_cat for _ in range(m)]
        ts = [nan] * m
        found = [False] * m
        strings = self._strings
        for i, values in enumerate(replies):
            if not any(v is not None for v in values):
                continue
            found[i] = True
            ts[i] = _timestamp_seconds(values[-1])
            row = num[i]
            for j in range(n_num):
                b = values[j]
                if b:
                    row[j] = _double(b, self.names[j])
            row = cat[i]
            for j in range(n_cat):
                b = values[n_num + j]
                if b:
                    row[j] = _cached_text(strings, b)
        _scatter(out, keys, uniq, pos, self.uc.entity.key, np.array(found, dtype=bool),
                 np.array(num, dtype=np.float64).reshape(m, n_num), _objects(cat, m, n_cat),
                 np.array(ts, dtype=np.float64))

    def close(self) -> None:
        self.client.close()


class OnlineFeatures:
    """A use case's online feature rows, one store round trip per :meth:`read`.

    Safe from an event-loop thread and worker threads at once (SQLite: one read-only connection
    per thread; Redis: redis-py's connection pool). Constructing it opens nothing; a store that is
    down or empty raises :class:`FeatureStoreUnavailable` from :meth:`read` / :meth:`ping`.
    """

    def __init__(self, uc: UseCase, settings: Settings | None = None, layout: Layout | None = None) -> None:
        s = settings or get_settings()
        self.uc = uc
        online = s.feast_online_store
        self._reader: _SqliteReader | _RedisReader
        if online.startswith("redis://"):
            self._reader = _RedisReader(online, uc)
        elif not online or online.startswith("sqlite:"):
            from pavedml.steps.featurestore import online_table, sqlite_online_path

            path = sqlite_online_path(uc, s, layout)
            assert path is not None
            self._reader = _SqliteReader(path, online_table(uc), uc)
        else:
            from pavedml.errors import ConfigError

            raise ConfigError(f"PAVEDML_FEAST_ONLINE_STORE={online!r}: expected redis://host:port[/db] "
                              "or sqlite:///path")

    @property
    def store(self) -> str:
        """The store as logs and errors name it (``sqlite <path>`` / ``redis host:port/db``, no password)."""
        return self._reader.label

    def read(self, keys: Sequence[str]) -> OnlineRows:
        """The rows of ``keys`` (request order, repeats allowed) in one round trip to the store.

        Raises:
            FeatureStoreUnavailable: the store is unreachable, or holds no table for the view yet.
        """
        keys = list(keys)
        out = OnlineRows(keys, np.zeros(0, dtype=bool), np.zeros((0, 0)), np.zeros((0, 0), dtype=object),
                         np.zeros(0))
        self._reader.read(keys, out)
        return out

    def ping(self) -> None:
        """Raise :class:`FeatureStoreUnavailable` unless the store answers (and, for SQLite, holds the view's table)."""
        self._reader.ping()

    def close(self) -> None:
        self._reader.close()
