"""ingest_raw_batch: landing batch -> immutable raw snapshot named by the SHA-256 of its content.

The hash is taken over the landing file's bytes as delivered, so it does not depend on the
Parquet writer. Re-ingesting identical content is a no-op returning the same hash; a changed file
for the same day makes a new snapshot and both are kept (``LATEST.json`` names the current one).
An unreadable batch is copied to quarantine before the step fails.

A use case with a SQL source (``batches.source``) runs its query for the interval instead and
writes the rows as a CSV extract to the landing file's path (rows in a fixed order, timestamps in
ISO 8601 UTC: the same rows always give the same bytes, so the same hash), then ingests that
extract exactly like a delivered file. Each row's event time is the interval's start, or the
column named by ``batches.timestamp.column``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import shutil
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pavedml import storage
from pavedml.config import SqlSource
from pavedml.context import StepContext
from pavedml.errors import BatchMissingError, BatchUnreadableError, LandingUnavailableError
from pavedml.layout import QUARANTINE_REASON
from pavedml.redact import redact_urls
from pavedml.results import LandingCheckResult, SnapshotResult

log = logging.getLogger(__name__)
TEXT_TYPES = ("string", "category")
#: Rows per Parquet row group of a snapshot: readers that stream it (chunked validation) decode one
#: group at a time instead of the whole file.
ROW_GROUP_ROWS = 100_000


#: Bytes read at a time when hashing, and from the head and tail of a CSV when checking it.
HASH_CHUNK = 8 << 20
#: Bytes per block of the CSV reader.
CSV_BLOCK_BYTES = 16 << 20
TAIL_BYTES = 64 << 10


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, streamed (the batch is never held in memory to hash it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def local_copy(uri: str, staging: Path):
    """A local path holding the landing file: the file itself, or an object streamed from S3 into
    ``staging`` (removed afterwards; a killed step's copy is removed by the next one)."""
    if not storage.is_s3(uri):
        yield Path(uri)
        return
    import tempfile

    staging.mkdir(parents=True, exist_ok=True)
    storage.sweep_leftovers(staging, ".tmp-landing-")
    fd, name = tempfile.mkstemp(prefix=f".tmp-landing-{storage.owner_tag()}-", dir=staging)
    os.close(fd)
    try:
        storage.download(uri, name)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def landing_candidates(ctx: StepContext, dataset: str | None = None) -> list[str]:
    """Where the interval's batch may land: the configured format first, then the other one."""
    uc = ctx.use_case
    dataset = dataset or uc.batches.dataset
    formats = [uc.batches.format, *(f for f in ("csv", "parquet") if f != uc.batches.format)]
    return [ctx.layout.landing_file(dataset, ctx.ds_iso, fmt) for fmt in formats]


def _landed(uri: str) -> bool:
    """Whether ``uri`` exists; an unreachable landing store is ``landing_unavailable`` (retried), named."""
    if not uri.startswith("s3://"):
        return storage.exists(uri)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return storage.exists(uri)
    except (BotoCoreError, ClientError) as exc:
        raise LandingUnavailableError(
            f"landing zone unreachable while looking for {uri}: {type(exc).__name__}: {exc}",
            details={"next": "check the S3 endpoint and credentials (AWS_*) of PAVEDML_LANDING_URI; the "
                             "task retries by itself"}) from exc


def find_batch(ctx: StepContext, dataset: str | None = None) -> str:
    """The landing URI of the interval's batch, looked for once (never waits: the feature
    pipeline's ``wait_for_batch`` sensor waits for it, see :func:`check_landing_batch`)."""
    candidates = landing_candidates(ctx, dataset)
    for uri in candidates:
        if _landed(uri):
            return uri
    raise BatchMissingError(
        f"no batch for {ctx.ds_iso} at {candidates[0]}",
        details={"evidence": [f"looked for: {u}" for u in candidates],
                 "next": "deliver the file (or rerun the simulator), then clear the task to rerun"},
    )


def sql_params(ctx: StepContext) -> dict[str, Any]:
    """The bound parameters of the interval's source query."""
    from pavedml.sqlsource import query_params

    return query_params(ctx.interval_start, ctx.interval_end, ctx.ds)


def _no_rows(ctx: StepContext, source: SqlSource, url: str) -> BatchMissingError:
    from pavedml.redact import clip

    return BatchMissingError(
        f"query returned no rows for {ctx.ds_iso}",
        details={"evidence": [f"database: {redact_urls(url)}", f"query: {clip(' '.join(source.query.split()))}",
                              f"interval: [{ctx.interval_start.isoformat()}, {ctx.interval_end.isoformat()})"],
                 "next": "load the interval's rows into the database (or fix batches.source.query), then clear "
                         "the task to rerun"})


def check_landing_batch(ctx: StepContext) -> LandingCheckResult:
    """One look for the interval's landing batch (a poke of the ``wait_for_batch`` sensor):
    ``status`` ``ready`` with its ``uri``, or ``waiting`` with the ``batch_missing`` reason, the
    paths looked at (``evidence``) and the next step, which the sensor's timeout alert quotes.
    With a SQL source: ready when the interval's query returns rows (counted, not fetched); its
    ``uri`` is the database's URL, redacted."""
    uc, ds = ctx.use_case.name, ctx.ds_iso
    source = ctx.use_case.batches.source
    if source is not None:
        from pavedml.sqlsource import count_rows, resolve_url

        url = redact_urls(resolve_url(source, uc))
        rows = count_rows(source, sql_params(ctx), uc)
        if rows > 0:
            log.info("query returns %d rows for %s at %s", rows, ds, url)
            return LandingCheckResult(step="check_landing_batch", use_case=uc, ds=ds, status="ready", uri=url)
        exc = _no_rows(ctx, source, url)
        log.info("%s", exc.message)
        return LandingCheckResult(step="check_landing_batch", use_case=uc, ds=ds, status="waiting",
                                  reason=exc.message, uri=url, evidence=exc.details["evidence"],
                                  next=exc.details["next"], on_timeout=exc.reason)
    try:
        uri = find_batch(ctx)
    except BatchMissingError as exc:
        log.info("%s", exc.message)
        return LandingCheckResult(step="check_landing_batch", use_case=uc, ds=ds, status="waiting",
                                  reason=exc.message, uri=landing_candidates(ctx)[0],
                                  evidence=exc.details["evidence"], next=exc.details["next"], on_timeout=exc.reason)
    log.info("batch for %s landed at %s", ds, uri)
    return LandingCheckResult(step="check_landing_batch", use_case=uc, ds=ds, status="ready", uri=uri)


class BatchIncompleteError(BatchUnreadableError):
    """The delivery is cut short or split: a partial upload, or more files than the one batch."""

    reason = "batch_incomplete"


#: Names in a ``dt=`` folder that are not data: hidden files (uploads in progress) and markers.
IGNORED_PREFIXES = (".", "_")


def check_delivery(uri: str, path: str | Path, require_final_newline: bool = True) -> None:
    """Refuse a batch that is not whole: other data files beside it in its ``dt=`` folder (a
    ``customers_part2.csv``, or a ``.parquet`` beside the ``.csv``: reading one would silently drop
    the rest), or a CSV cut inside its last row (no final line break, or a last row with fewer
    fields than the header). Reads only the file's head and tail (``path``: its local copy)."""
    folder, _, name = uri.rpartition("/")
    others = [f for f in storage.list_prefix(folder)
              if f != uri and not any(part.startswith(IGNORED_PREFIXES) for part in f[len(folder):].split("/") if part)]
    if others:
        names = sorted(f[len(folder) + 1:] for f in others)
        raise BatchIncompleteError(
            f"batch folder {folder} holds {len(others) + 1} data files ({name}, {', '.join(names)}); "
            f"a batch is exactly one file, {name}",
            details={"evidence": [f"unexpected file: {folder}/{n}" for n in names],
                     "next": f"deliver the day as one file {name} (merge the parts upstream), remove the others, "
                             "then clear ingest_raw_batch"})
    size = os.path.getsize(path)
    if uri.endswith(".parquet") or not size:
        return
    with open(path, "rb") as fh:
        header = fh.read(TAIL_BYTES).split(b"\n", 1)[0]
        fh.seek(max(0, size - TAIL_BYTES))
        tail = fh.read()
    try:
        header.decode("utf-8")
    except UnicodeDecodeError:
        return  # not text at all: parsing names that
    if b"\x00" in header:
        return
    last = tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
    if require_final_newline and not tail.endswith(b"\n"):
        raise BatchIncompleteError(
            f"batch {uri} does not end with a line break: it looks cut inside its last row "
            f"({size} bytes, last row {last[:120]!r})",
            details={"evidence": ["the last byte is not a line break (a partial upload or an interrupted copy)"],
                     "next": "re-deliver the whole file, then clear ingest_raw_batch (if your exporter never "
                             "writes a final line break, set batches.require_final_newline: false)"})
    if b'"' not in header and b'"' not in last and last.count(b",") < header.count(b","):
        raise BatchIncompleteError(
            f"batch {uri}: the last row has {last.count(b',') + 1} fields, the header {header.count(b',') + 1}: "
            "it looks cut inside its last row",
            details={"evidence": [f"last row: {last[:200]!r}"],
                     "next": "re-deliver the whole file, then clear ingest_raw_batch"})


def parse_batch(source: bytes | str | Path, uri: str):
    """A batch (its bytes, or the path of its local copy) -> DataFrame. CSV is read as text,
    Arrow-backed (normalization decides types; nothing is read as missing); Parquet keeps its types."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv

    data = source if isinstance(source, bytes | bytearray) else None
    if (len(data) if data is not None else os.path.getsize(source)) == 0:
        raise BatchUnreadableError(f"batch {uri} is empty (0 bytes)", details={"evidence": ["file has no content"]})
    stream = io.BytesIO(data) if data is not None else str(source)
    try:
        if uri.endswith(".parquet"):
            return pd.read_parquet(stream)
        with (io.BytesIO(data) if data is not None else open(source, "rb")) as fh:
            first = b""
            while not first.strip() and (line := fh.readline(1 << 20)):
                first = line  # the header is the first non-blank line (pyarrow skips blank ones)
        names = next(csv.reader([first.decode("utf-8").lstrip("\ufeff")]), [])
        if not any(n.strip() for n in names):
            raise ValueError("no header row")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names in the header: {sorted({n for n in names if names.count(n) > 1})}")
        table = pacsv.read_csv(
            stream, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            # a quoted value may hold a line break (pandas read those; a block boundary must not split one)
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
        arrow_text = pd.StringDtype("pyarrow")
        return table.to_pandas(types_mapper={pa.string(): arrow_text}.get, self_destruct=True)
    except (UnicodeDecodeError, pa.ArrowInvalid, pd.errors.ParserError, OSError, ValueError, StopIteration) as exc:
        raise BatchUnreadableError(f"batch {uri} could not be parsed: {type(exc).__name__}: {str(exc)[:200]}",
                                   details={"evidence": [f"{type(exc).__name__}: {str(exc)[:300]}"]}) from None


def _as_text(col):
    """A column as pandas text, keeping Arrow-backed text Arrow-backed (``astype("string")`` would
    turn every value into a Python object: ~60 bytes per cell)."""
    import pandas as pd

    return col if isinstance(col.dtype, pd.StringDtype) else col.astype("string")


def normalize(df, schema) -> tuple[Any, dict[str, dict]]:
    """Cast columns to the schema's types. Values that do not parse keep the column as text and are
    reported (validation then names the column), so nothing from the delivery is lost."""
    import pandas as pd

    type_errors: dict[str, dict] = {}
    out = df.copy()
    for name, spec in schema.columns.items():
        if name not in out.columns:
            continue
        col = out[name]
        if spec.type in ("int", "float"):
            if col.dtype == object or pd.api.types.is_string_dtype(col):
                text = _as_text(col).str.strip()
                if spec.blank_as_null:
                    text = text.replace("", pd.NA)
                num = pd.to_numeric(text, errors="coerce")
                bad = num.isna() & text.notna() & (text != "")
                if bad.any():
                    type_errors[name] = {"count": int(bad.sum()), "examples": text[bad].unique()[:5].tolist()}
                    out[name] = text
                    continue
                num = num.where(text != "", pd.NA) if not spec.blank_as_null else num
                col = num
            if spec.type == "int":
                as_float = pd.to_numeric(col, errors="coerce")
                if as_float.notna().all() and (as_float % 1 == 0).all():
                    out[name] = as_float.astype("int64")
                elif ((as_float.dropna() % 1) == 0).all():
                    out[name] = as_float.astype("Int64")
                else:
                    out[name] = as_float.astype("float64")
            else:
                out[name] = pd.to_numeric(col, errors="coerce").astype("float64")
        elif spec.type in TEXT_TYPES:
            text = _as_text(col)
            out[name] = text.replace("", pd.NA) if not spec.nullable or spec.blank_as_null else text
        elif spec.type == "timestamp":
            parsed, bad = parse_timestamps(col)
            if bad is not None:
                type_errors[name] = bad
                out[name] = _as_text(col)
                continue
            out[name] = parsed
    return out, type_errors


#: An ISO 8601 time that ends in a zone: ``Z`` or an offset after the time of day.
ZONE_RE = r"(?i)(?:\d{2}:?\d{2}(?::?\d{2}(?:[.,]\d+)?)?\s*(?:[+-]\d{2}(?::?\d{2})?|Z))$"


def parse_timestamps(col) -> tuple[Any, dict | None]:
    """A column as ``datetime64[ns, UTC]``: ISO 8601 text (a value without a zone is UTC; an
    offset is converted), or datetimes already. Blank text is null. Returns ``(parsed, None)``, or
    ``(None, {"count", "examples"})`` when some values do not parse (nothing is dropped)."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(col):
        return (col.dt.tz_localize("UTC") if col.dt.tz is None else col.dt.tz_convert("UTC")), None
    text = _as_text(col).str.strip()
    text = text.where(text != "", pd.NA)
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    # values with a zone and values without are parsed apart: pandas (2.x) would read a value
    # without a zone that follows one with an offset in that offset, not in UTC
    zoned = text.str.contains(ZONE_RE, regex=True, na=False).astype(bool)
    for part in (zoned, ~zoned & text.notna()):
        if part.any():
            try:
                parsed[part] = pd.to_datetime(text[part].astype(object), utc=True, errors="coerce", format="ISO8601")
            except (ValueError, TypeError, OverflowError):
                pass  # stays NaT: reported below
    bad = parsed.isna() & text.notna()
    if bad.any():
        return None, {"count": int(bad.sum()), "examples": text[bad].unique()[:5].tolist()}
    return parsed.astype("datetime64[ns, UTC]"), None


def _quarantine_unreadable(ctx: StepContext, path: Path, uri: str, sha: str, exc: BatchUnreadableError) -> str:
    qdir = ctx.layout.quarantine_dir(ctx.ds, sha)
    with storage.atomic_path(qdir / uri.rsplit("/", 1)[-1]) as tmp:
        shutil.copyfile(path, tmp)
    folder = uri.rpartition("/")[0]
    for other in storage.list_prefix(folder):  # every part of a split delivery is kept with it
        rel = other[len(folder) + 1:]
        if other != uri and not rel.startswith(IGNORED_PREFIXES):
            storage.write_bytes(str(qdir / "delivery" / rel), storage.read_bytes(other))
    storage.write_json(str(qdir / QUARANTINE_REASON), {"reason": exc.reason, "message": exc.message, "source_uri": uri,
                                                   "sha256": sha, "dag_run": ctx.run_id,
                                                   "quarantined_at": datetime.now(UTC).isoformat()})
    return str(qdir)


def ingest_raw_batch(ctx: StepContext) -> SnapshotResult:
    source = ctx.use_case.batches.source
    if source is not None:
        return _ingest_sql(ctx, source)
    uri = find_batch(ctx)
    with local_copy(uri, ctx.layout.staging) as path:
        return _ingest(ctx, uri, path)


def _iso_utc(values) -> Any:
    """Datetimes -> ISO 8601 UTC text (``2025-01-01T05:30:00Z``, microseconds only when set); a
    value without a zone is UTC."""
    import pandas as pd

    ts = pd.to_datetime(values, utc=True)
    text = ts.dt.strftime("%Y-%m-%dT%H:%M:%S")
    micro = ts.dt.microsecond
    return (text.where(micro == 0, text + "." + micro.astype(str).str.zfill(6)) + "Z").astype(object)


def sql_extract(df, key: str, timestamp_column: str | None) -> bytes:
    """The query's rows as CSV bytes that depend on the rows only, never on the database's row
    order: timestamps as ISO 8601 UTC, nulls as empty cells, rows sorted by the entity key, the
    timestamp column and then every other column (as text)."""
    import pandas as pd

    text = pd.DataFrame(index=df.index)
    for name in df.columns:
        col = df[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            cells = pd.Series(None, index=col.index, dtype=object)
            cells[col.notna()] = _iso_utc(col[col.notna()])
        else:
            cells = col.astype(object)
            stamps = cells.map(lambda v: isinstance(v, datetime)).astype(bool)
            if stamps.any():
                cells = cells.copy()
                cells[stamps] = _iso_utc(pd.Series(list(cells[stamps]), index=cells[stamps].index))
            cells = cells.map(lambda v: None if v is None or v is pd.NaT or (isinstance(v, float) and v != v)
                              else str(v))
        text[name] = cells
    order = [c for c in (key, timestamp_column) if c and c in text.columns]
    order += [c for c in text.columns if c not in order]
    if len(text) > 1 and order:
        text = text.sort_values(by=order, key=lambda c: c.fillna(""), kind="mergesort")
    return text.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _ingest_sql(ctx: StepContext, source: SqlSource) -> SnapshotResult:
    """Run the interval's query, land its rows as the day's CSV extract, ingest that."""
    from pavedml.sqlsource import read_query, resolve_url

    uc = ctx.use_case
    url = resolve_url(source, uc.name)  # a missing variable fails here, before any connection
    params = sql_params(ctx)
    df = read_query(source, params, uc.name)
    if df.empty:
        raise _no_rows(ctx, source, url)
    data = sql_extract(df, uc.entity.key, uc.timestamp_column)
    del df
    uri = ctx.layout.landing_file(uc.batches.dataset, ctx.ds_iso, "csv")
    storage.write_bytes(uri, data)
    log.info("query returned %d bytes for %s from %s: landed at %s", len(data), ctx.ds_iso, redact_urls(url), uri)
    del data
    record = {"kind": "sql", "url": redact_urls(url), "query": source.query,
              "params": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in params.items()}}
    with local_copy(uri, ctx.layout.staging) as path:
        return _ingest(ctx, uri, path, source=record)


def _ingest(ctx: StepContext, uri: str, path: Path, source: dict | None = None) -> SnapshotResult:
    ds, uc = ctx.ds_iso, ctx.use_case
    sha = sha256_file(path)
    snapshot, manifest = ctx.layout.raw_snapshot(ds, sha), ctx.layout.raw_manifest(ds, sha)
    storage.sweep_leftovers(ctx.layout.raw_dir(ds), ".tmp-")  # of an earlier ingest that was killed
    try:
        check_delivery(uri, path, uc.batches.require_final_newline)
    except BatchUnreadableError as exc:
        where = _quarantine_unreadable(ctx, path, uri, sha, exc)
        exc.details.update(quarantine=where)
        raise
    created = False
    if manifest.exists() and snapshot.exists():
        log.info("snapshot %s already exists for %s: nothing to do", sha[:12], ds)
        rows = storage.read_json(str(manifest))["rows"]
    else:
        try:
            df = parse_batch(path, uri)
        except BatchUnreadableError as exc:
            where = _quarantine_unreadable(ctx, path, uri, sha, exc)
            exc.details.update(quarantine=where, next="fix the landing file, then clear ingest_raw_batch to rerun")
            raise
        df, type_errors = normalize(df, uc.schema_)
        import pandas as pd

        ts_col = uc.timestamp_column
        if ts_col and ts_col in df.columns and pd.api.types.is_datetime64_any_dtype(df[ts_col]):
            df["event_timestamp"] = df[ts_col]  # UTC (normalize); validation keeps it inside the interval
        else:  # a daily snapshot (or a missing/unparseable time column: validation names and refuses it)
            df["event_timestamp"] = pd.Timestamp(ctx.interval_start).tz_convert("UTC")
        with storage.atomic_path(snapshot) as tmp:
            df.to_parquet(tmp, index=False, row_group_size=ROW_GROUP_ROWS)
        rows = len(df)
        storage.write_json(str(manifest), {
            "sha256": sha, "rows": rows, "source_uri": uri, "source_bytes": os.path.getsize(path),
            "schema": {c: str(t) for c, t in df.dtypes.items()}, "type_errors": type_errors,
            "source": source or {"kind": "file", "uri": uri},
            "dag_id": ctx.dag_id, "dag_run": ctx.run_id, "ds": ds,
            "ingested_at": datetime.now(UTC).isoformat(),
        })
        created = True
        log.info("wrote snapshot %s (%d rows) from %s", snapshot, rows, uri)
    storage.write_json(str(ctx.layout.raw_latest(ds)), {"sha256": sha, "source_uri": uri})
    return SnapshotResult(step="ingest_raw_batch", use_case=uc.name, ds=ds, sha256=sha, uri=str(snapshot),
                          manifest=str(manifest), rows=rows, source_uri=uri, created=created)


def latest_snapshot(ctx: StepContext) -> tuple[str, str]:
    """(sha256, snapshot path) of the interval's current raw snapshot."""
    ds = ctx.ds_iso
    pointer = ctx.layout.raw_latest(ds)
    if not pointer.exists():
        raise BatchMissingError(f"no raw snapshot for {ds} under {pointer.parent}",
                                details={"next": "run ingest_raw_batch for this interval first"})
    sha = storage.read_json(str(pointer))["sha256"]
    return sha, str(ctx.layout.raw_snapshot(ds, sha))
