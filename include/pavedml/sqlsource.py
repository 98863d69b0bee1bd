"""A use case's daily batch read from a database (``batches.source``: a SQL query per run).

The query is a template with bound parameters ``:interval_start``, ``:interval_end`` (UTC
timestamps) and ``:ds`` (the date), run through SQLAlchemy's ``text()``: values are never
formatted into the SQL. The database URL is ``batches.source.url`` (no password) or the value of
the environment variable named by ``batches.source.url_env`` (where a password belongs); it is
shown only redacted (:func:`pavedml.redact.redact_urls`).

Errors say who must act:

* the variable ``url_env`` is unset or empty, the URL is not a SQLAlchemy URL or its driver is
  not installed: :class:`~pavedml.errors.ConfigError` (exit 3);
* the database cannot be reached (refused, timed out, the connection dropped):
  :class:`~pavedml.errors.SourceUnavailableError` (exit 1: the task retries by itself);
* the database refuses the query (unknown table or column, a syntax error, a bad cast):
  :class:`~pavedml.errors.SourceQueryError` (exit 3: fix the query), naming its first line.

SQLAlchemy and pandas are imported inside the functions (the core stays light).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from pavedml.config import SQL_PARAM_RE, SqlSource
from pavedml.errors import ConfigError, SourceQueryError, SourceUnavailableError
from pavedml.redact import clip, redact_urls

if TYPE_CHECKING:
    import pandas as pd

#: Seconds to wait for a connection before the database counts as unreachable (drivers that take it).
CONNECT_TIMEOUT = 30
#: Dialects whose driver takes ``connect_timeout`` as a connect argument.
_TIMEOUT_DIALECTS = ("postgresql", "mysql", "mariadb")
#: Rows fetched from the cursor at a time.
FETCH_ROWS = 50_000
#: SQLSTATE classes that mean the query itself is wrong (PostgreSQL and others): 42 syntax error or
#: access rule violation (unknown table/column), 22 data exception (a bad cast), 0A not supported.
_QUERY_SQLSTATES = ("42", "22", "0A")


def resolve_url(source: SqlSource, use_case: str = "") -> str:
    """The source's SQLAlchemy URL: ``url``, or the value of the environment variable ``url_env``.
    An unset or empty variable is a :class:`ConfigError` naming it and the use-case key."""
    if source.url is not None:
        return source.url
    name = source.url_env or ""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(
            f"{_whose(use_case)}batches.source.url_env names the environment variable {name}, which is "
            f"{'empty' if name in os.environ else 'not set'}: set {name} to the database's SQLAlchemy URL "
            "(e.g. postgresql+psycopg2://user@host:5432/db, with the password after the user) in the environment "
            "the steps run in",
            details={"next": f"export {name}=... where the steps run (for Docker steps: the worker's "
                             "environment; the runner passes it to the step privately), then clear the task"})
    return value


def _whose(use_case: str) -> str:
    return f"use case {use_case}: " if use_case else ""


def query_params(interval_start: datetime, interval_end: datetime, ds: date) -> dict[str, Any]:
    """The bound parameters of a run: its data interval (UTC timestamps) and its date."""
    return {"interval_start": interval_start, "interval_end": interval_end, "ds": ds}


def first_line(query: str) -> str:
    """The query's first non-blank line (how an error names it), clipped."""
    line = next((ln.strip() for ln in query.splitlines() if ln.strip()), "")
    return clip(line, 120)


def _db_message(exc: BaseException) -> str:
    """The database's own message (the DBAPI error under SQLAlchemy's wrapper), one line."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip() or type(orig).__name__
    return clip(next(ln.strip() for ln in text.splitlines() if ln.strip()), 400)


def _engine(url: str, use_case: str):
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        # never echo a value that does not parse: without a scheme redact_urls cannot find its password
        raise ConfigError(f"{_whose(use_case)}the batches.source URL is not a SQLAlchemy URL (its value is not shown: "
                          "it may hold a password)",
                          details={"next": "write it as dialect+driver://user:password@host:port/db"}) from None
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() in _TIMEOUT_DIALECTS and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    try:
        return sa.create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    except (sa.exc.NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        raise ConfigError(
            f"{_whose(use_case)}batches.source URL {redact_urls(url)!r}: the dialect or its driver is not "
            f"installed: {exc}",
            details={"next": "install the driver in the task image (e.g. psycopg2 for postgresql+psycopg2), "
                             "or name an installed one in the URL"}) from None


def _unavailable(url: str, exc: BaseException) -> SourceUnavailableError:
    return SourceUnavailableError(
        f"database {redact_urls(url)} is unreachable: {_db_message(exc)}",
        details={"evidence": [f"{type(exc).__name__}: {_db_message(exc)}"],
                 "next": "check that the database is up and reachable from the worker (host, port, network, "
                         "credentials); the task retries by itself"})


def _query_failed(url: str, query: str, exc: BaseException, use_case: str) -> SourceQueryError:
    where = f" of use case {use_case}" if use_case else ""
    return SourceQueryError(
        f"batches.source.query{where} failed on {redact_urls(url)} ({first_line(query)} ...): {_db_message(exc)}",
        details={"evidence": [f"query: {clip(query, 600)}", f"{type(exc).__name__}: {_db_message(exc)}"],
                 "next": "fix batches.source.query in the use-case file (the table, the column names, the SQL), "
                         "then clear the task"})


def _is_query_error(exc: BaseException, dialect: str) -> bool:
    """Whether a failed execute is the query's fault (retrying cannot help) or the connection's."""
    import sqlalchemy as sa

    if getattr(exc, "connection_invalidated", False):
        return False
    orig = getattr(exc, "orig", None)
    code = str(getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None) or "")
    if code:
        return code.startswith(_QUERY_SQLSTATES)
    if isinstance(exc, sa.exc.ProgrammingError | sa.exc.DataError | sa.exc.IntegrityError | sa.exc.NotSupportedError):
        return True
    if isinstance(exc, sa.exc.OperationalError) and dialect == "sqlite":
        # SQLite reports "no such table", "no such column" and syntax errors as OperationalError;
        # only a locked or busy database is worth a retry
        return not any(word in str(exc.orig).lower() for word in ("locked", "busy", "unable to open"))
    return False


def _bind(query: str, params: Mapping[str, Any], dialect: str):
    """``text(query)`` with the parameters it uses, typed (each dialect renders a timestamp and a
    date its own way), and the values of those parameters. SQLite has no time type: its timestamps
    are text, compared as text, so the bounds are bound as ``YYYY-MM-DD HH:MM:SS`` (UTC), which
    sorts right against ``YYYY-MM-DD HH:MM:SS[.ffffff]`` and ``YYYY-MM-DDTHH:MM:SS`` values."""
    import sqlalchemy as sa

    used = set(SQL_PARAM_RE.findall(query))
    if dialect == "sqlite":
        return sa.text(query), {k: _sqlite_text(v) for k, v in params.items() if k in used}
    types: dict[str, Any] = {"interval_start": sa.DateTime(timezone=True),
                             "interval_end": sa.DateTime(timezone=True), "ds": sa.Date()}
    stmt = sa.text(query)
    binds: list[Any] = [sa.bindparam(name, type_=types[name]) for name in sorted(used) if name in types]
    if binds:
        stmt = stmt.bindparams(*binds)
    return stmt, {k: v for k, v in params.items() if k in used}


@contextmanager
def _connection(source: SqlSource, use_case: str) -> Iterator[tuple[Any, str]]:
    """A connection to the source's database (PostgreSQL sessions in UTC, so a ``timestamp``
    column compares with the interval's UTC bounds as UTC), and the URL it used."""
    import sqlalchemy as sa

    url = resolve_url(source, use_case)
    engine = _engine(url, use_case)
    try:
        try:
            conn = engine.connect()
        except sa.exc.DBAPIError as exc:
            raise _unavailable(url, exc) from None
        except (ModuleNotFoundError, ImportError) as exc:  # the driver is imported on first connect
            raise ConfigError(f"{_whose(use_case)}batches.source URL {redact_urls(url)!r}: the driver is not "
                              f"installed: {exc}") from None
        try:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TIME ZONE 'UTC'")
            elif engine.dialect.name in ("mysql", "mariadb"):  # TIMESTAMP values in and out in UTC
                conn.exec_driver_sql("SET time_zone = '+00:00'")
            yield conn, url
        finally:
            conn.close()
    finally:
        engine.dispose()


def _execute(conn, url: str, query: str, stmt, values: dict, use_case: str, source_query: str):
    import sqlalchemy as sa

    try:
        return conn.execute(stmt, values)
    except sa.exc.DBAPIError as exc:
        if _is_query_error(exc, conn.dialect.name):
            raise _query_failed(url, source_query, exc, use_case) from None
        raise _unavailable(url, exc) from None
    except sa.exc.StatementError as exc:  # a parameter SQLAlchemy could not bind: the query's fault
        raise _query_failed(url, source_query, exc, use_case) from None


def _sqlite_text(value: Any) -> Any:
    from datetime import UTC

    if isinstance(value, datetime):
        utc = value.astimezone(UTC) if value.tzinfo else value
        return utc.strftime("%Y-%m-%d %H:%M:%S") + (f".{utc.microsecond:06d}" if utc.microsecond else "")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _strip(query: str) -> str:
    return query.strip().rstrip(";").rstrip()


def read_query(source: SqlSource, params: Mapping[str, Any], use_case: str = "") -> pd.DataFrame:
    """The query's rows for ``params`` (see :func:`query_params`) as a DataFrame of the values the
    driver returned (object columns: nothing is converted here)."""
    import pandas as pd
    import sqlalchemy as sa

    query = _strip(source.query)
    with _connection(source, use_case) as (conn, url):
        stmt, values = _bind(query, params, conn.dialect.name)
        result = _execute(conn, url, query, stmt, values, use_case, source.query)
        columns = list(result.keys())
        frames = []
        try:
            while rows := result.fetchmany(FETCH_ROWS):
                frames.append(pd.DataFrame([tuple(r) for r in rows], columns=columns, dtype=object))
        except sa.exc.DBAPIError as exc:
            if _is_query_error(exc, conn.dialect.name):
                raise _query_failed(url, source.query, exc, use_case) from None
            raise _unavailable(url, exc) from None
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise SourceQueryError(f"{_whose(use_case)}batches.source.query returns the column(s) {dup} more than "
                               f"once ({first_line(source.query)} ...)",
                               details={"next": "give each selected column its own name (AS ...)"})
    if not frames:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def count_rows(source: SqlSource, params: Mapping[str, Any], use_case: str = "") -> int:
    """How many rows the query returns for ``params`` (``SELECT count(*)`` around it: nothing is
    fetched)."""
    query = _strip(source.query)
    counted = f"SELECT count(*) FROM (\n{query}\n) AS pavedml_source_rows"
    with _connection(source, use_case) as (conn, url):
        stmt, values = _bind(counted, params, conn.dialect.name)
        result = _execute(conn, url, counted, stmt, values, use_case, source.query)
        return int(result.scalar_one())
