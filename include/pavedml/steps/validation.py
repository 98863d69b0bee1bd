"""validate_raw_batch: a Great Expectations 1.x suite generated from the use-case schema.

Per column: exists, type, non-null (or a maximum null fraction), unique, allowed values, range;
per table: row-count bounds and freshness; plus the config's ``extra_expectations``. Every
expectation carries a severity: ``warning`` failures are reported and the run goes on; ``error``
failures stop it. Each run writes a Data Docs HTML page and a JSON result under
``validation/dt=<ds>/<sha>/``. On failure the snapshot, its landing file and the report are
copied to ``quarantine/dt=<ds>/<sha>/``, the task fails with a one-screen summary, and nothing
downstream runs (build_features refuses an unvalidated snapshot).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

from pavedml import storage
from pavedml.config import Schema, UseCase
from pavedml.context import StepContext
from pavedml.errors import ValidationFailedError
from pavedml.layout import QUARANTINE_REASON, VALIDATION_RESULT
from pavedml.results import ValidationSummary

log = logging.getLogger(__name__)
TYPE_LISTS = {
    "int": ["int64", "Int64Dtype", "int32"],
    "float": ["float64", "Float64Dtype"],
    "string": ["StringDtype", "str"],
    "category": ["StringDtype", "str"],
    "bool": ["bool", "boolean"],
    "timestamp": ["datetime64[ns, UTC]", "datetime64[us, UTC]", "datetime64[ns]", "datetime64[us]"],
}
SEVERITY_TO_GX = {"error": "critical", "warning": "warning"}
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 20}
MAX_VALUES = 5
#: The largest finite float: the bound of a numeric column's range when the config leaves it open.
FINITE = sys.float_info.max
SITE = "local_site"


def _exp(type_: str, severity: str = "error", rule: str = "", **kwargs) -> dict:
    spec = {"type": type_, "kwargs": kwargs, "severity": severity}
    if rule:  # a name for the failure summary instead of the GX type
        spec["rule"] = rule
    return spec


#: How the summary names the event-time column's interval check.
OUTSIDE_INTERVAL = "rows outside the run's data interval"


def generate_suite(uc: UseCase, present_columns: list[str] | None = None,
                   type_errors: dict | None = None, interval_start: datetime | None = None) -> list[dict]:
    """The expectation specs for a batch. A missing column gets only its existence check and a
    column with unparseable values only its type check, so the summary names the cause, not its echoes.
    The event-time column (``batches.timestamp.column``) must lie in ``[interval_start,
    interval_end)``: a row of another day never reaches the feature store."""
    schema: Schema = uc.schema_
    present = set(present_columns) if present_columns is not None else set(schema.columns)
    type_errors = type_errors or {}
    rc = schema.row_count
    specs = [_exp("expect_table_row_count_to_be_between", min_value=rc.min, max_value=rc.max)]
    for name, col in schema.columns.items():
        sev = col.severity
        specs.append(_exp("expect_column_to_exist", sev, column=name))
        if name not in present:
            continue
        specs.append(_exp("expect_column_values_to_be_in_type_list", sev, column=name, type_list=TYPE_LISTS[col.type]))
        if name in type_errors:
            continue
        if not col.nullable:
            specs.append(_exp("expect_column_values_to_not_be_null", sev, column=name))
        elif col.max_null_fraction is not None:
            specs.append(_exp("expect_column_values_to_not_be_null", sev, column=name,
                              mostly=round(1 - col.max_null_fraction, 6)))
        if col.unique:
            specs.append(_exp("expect_column_values_to_be_unique", sev, column=name))
        if col.allowed is not None:
            specs.append(_exp("expect_column_values_to_be_in_set", sev, column=name, value_set=list(col.allowed)))
        if col.type in ("int", "float"):  # inf/-inf parse as floats: an open bound is still finite
            specs.append(_exp("expect_column_values_to_be_between", sev, column=name,
                              min_value=-FINITE if col.min is None else col.min,
                              max_value=FINITE if col.max is None else col.max))
        elif col.min is not None or col.max is not None:
            specs.append(_exp("expect_column_values_to_be_between", sev, column=name,
                              min_value=col.min, max_value=col.max))
        if name == uc.timestamp_column and interval_start is not None:
            specs.append(_exp("expect_column_values_to_be_between", "error", rule=OUTSIDE_INTERVAL, column=name,
                              min_value=interval_start, max_value=interval_start + timedelta(days=1),
                              strict_max=True))
    if schema.freshness_days is not None and interval_start is not None and "event_timestamp" in present:
        oldest = interval_start - timedelta(days=schema.freshness_days)
        specs.append(_exp("expect_column_max_to_be_between", column="event_timestamp", min_value=oldest))
    for extra in schema.extra_expectations:
        column = extra.kwargs.get("column")
        if column is None or (column in present and column not in type_errors):
            specs.append(extra.model_dump())
    return specs


def _context(docs_dir: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    # GX passes disable=False to tqdm explicitly, so TQDM_DISABLE alone is not enough.
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    ctx.update_data_docs_site(SITE, {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,  # type: ignore[typeddict-unknown-key]  # read by SiteBuilder, not typed by GX
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    return ctx


def _exception_message(info: dict) -> str | None:
    if not info:
        return None
    if info.get("raised_exception"):
        return info.get("exception_message") or "exception"
    msgs = {v.get("exception_message") or "exception" for v in info.values()
            if isinstance(v, dict) and v.get("raised_exception")}
    return "; ".join(sorted(msgs)) or None


def _naive_utc(value):
    """An aware datetime bound as naive UTC (the form GX compares with; see :func:`run_suite`)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def run_suite(df, specs: list[dict], docs_dir: Path, run_name: str) -> dict:
    """Validate ``df`` against ``specs``; write the Data Docs page; return a plain result dict."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.execution_engine import pandas_execution_engine
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    # GX fingerprints every batch under 1 GB with pd.util.hash_pandas_object, which turns each
    # Arrow-backed text value into a Python object first (+1 GB for 5M keys). The batch's identity
    # is the snapshot's SHA-256 (in the result), so the fingerprint is not needed.
    pandas_execution_engine.HASH_THRESHOLD = 0
    ctx = _context(docs_dir)
    batch_def = (ctx.data_sources.add_pandas("pandas").add_dataframe_asset("batch")
                 .add_batch_definition_whole_dataframe("whole"))
    # all at once: add_expectation compares each one with every one before it (quadratic) and drops
    # an equal one, which then failed the zip below; an extra expectation equal to a generated one
    # now runs and is reported twice
    suite = gx.ExpectationSuite(name="raw_batch", expectations=[ExpectationConfiguration(
        type=spec["type"], kwargs={k: _naive_utc(v) for k, v in spec["kwargs"].items()},
        meta={"severity": spec["severity"]},
        severity=SEVERITY_TO_GX[spec["severity"]]).to_domain_obj()  # type: ignore[arg-type]  # GX coerces the name
        for spec in specs])
    suite = ctx.suites.add(suite)
    vdef = ctx.validation_definitions.add(gx.ValidationDefinition(name="raw_batch", data=batch_def, suite=suite))
    import pandas as pd

    arrow_text = pd.StringDtype("pyarrow")
    python_text = [c for c, t in df.dtypes.items() if isinstance(t, pd.StringDtype) and t.storage != "pyarrow"]
    if python_text:
        df = df.astype(dict.fromkeys(python_text, arrow_text))
    # GX's type check knows numpy's datetime64 but not pandas' zoned DatetimeTZDtype, and a zoned
    # column cannot be compared with a naive bound: every time is UTC here, so GX sees them naive
    zoned = [c for c, t in df.dtypes.items() if isinstance(t, pd.DatetimeTZDtype)]
    if zoned:
        df = df.assign(**{c: df[c].dt.tz_convert("UTC").dt.tz_localize(None) for c in zoned})
    # GX compares a column's dtype with pd.StringDtype(), whose storage is this option: text is
    # Arrow-backed here (see read_for_validation), so the type check must expect the same storage.
    with pd.option_context("mode.string_storage", "pyarrow"):
        vres = vdef.run(batch_parameters={"dataframe": df}, result_format=RESULT_FORMAT,
                        run_id=RunIdentifier(run_name=run_name))
    (key,) = ctx.validation_results_store.list_keys()
    ctx.build_data_docs(site_names=[SITE], resource_identifiers=[key], build_index=False)
    html = ""
    for site in ctx.get_docs_sites_urls(resource_identifier=key, site_name=SITE):
        if site.get("site_url"):
            html = unquote(urlparse(site["site_url"]).path)
    by_id = {r.expectation_config.id: r for r in vres.results}
    out = []
    for spec, exp in zip(specs, suite.expectations, strict=True):
        r = by_id[exp.id]
        res = r.result or {}
        column = spec["kwargs"].get("column")
        exc = _exception_message(r.exception_info)
        if column is not None and column not in df.columns:
            exc = f"column {column!r} not found"
        values = []
        for v in res.get("partial_unexpected_list") or []:
            if isinstance(v, datetime):  # a time is shown as ISO 8601 UTC (naive here: see above)
                v = (v if v.tzinfo else v.replace(tzinfo=UTC)).isoformat()
            if v not in values:
                values.append(v)
            if len(values) >= MAX_VALUES:
                break
        out.append({
            "type": spec["type"], "rule": spec.get("rule", ""), "column": column, "severity": spec["severity"],
            "success": bool(r.success),
            "observed_value": res.get("observed_value"), "unexpected_count": res.get("unexpected_count"),
            "unexpected_percent": res.get("unexpected_percent"), "unexpected_values": values,
            "element_count": res.get("element_count"), "missing_count": res.get("missing_count"),
            "expected": {k: v for k, v in spec["kwargs"].items() if k != "column"}, "exception": exc,
        })
    return {"success": not any(e for e in out if not e["success"] and e["severity"] == "error"),
            "expectations": out, "data_docs": html}


def describe(e: dict) -> str:
    """One line per failed expectation: rule, column, observed versus expected, offending values."""
    rule = e.get("rule") or e["type"].removeprefix("expect_")
    where = f"column {e['column']}" if e["column"] else "table"
    shown = {k: ("finite" if isinstance(v, float) and abs(v) == FINITE else v)
             for k, v in e["expected"].items() if k != "type_list"}
    expected = ", ".join(f"{k}={v}" for k, v in shown.items()) or "-"
    if e["type"].endswith("in_type_list"):
        expected = f"one of {e['expected']['type_list'][:3]}"
    parts = [f"{where}: {rule}"]
    if e["exception"]:
        parts.append(e["exception"])
    elif e["unexpected_count"] is not None and e["unexpected_percent"] is not None:
        parts.append(f"{e['unexpected_count']} unexpected ({e['unexpected_percent']:.1f}%)")
    elif e["unexpected_count"]:
        parts.append(f"{e['unexpected_count']} values do not parse")
    if e["observed_value"] is not None:
        parts.append(f"observed {e['observed_value']}")
    parts.append(f"expected {expected}")
    if e["unexpected_values"]:
        parts.append(f"e.g. {e['unexpected_values']}")
    return "; ".join(parts)


def _headline(e: dict) -> str:
    """A failed expectation in the error's first line: its column (or table), and its rule's name
    when it has one (``event_time (rows outside the run's data interval)``)."""
    where = e["column"] or "table"
    return f"{where} ({e['rule']})" if e.get("rule") else where


def _quarantine(ctx: StepContext, sha: str, snapshot: str, vdir: Path, manifest: dict) -> Path:
    qdir = ctx.layout.quarantine_dir(ctx.ds, sha)
    with storage.atomic_dir(qdir) as tmp:
        shutil.copy2(snapshot, tmp / Path(snapshot).name)
        source = manifest.get("source_uri")
        if source and storage.exists(source):
            (tmp / source.rsplit("/", 1)[-1]).write_bytes(storage.read_bytes(source))
        shutil.copytree(vdir, tmp / "report", ignore=shutil.ignore_patterns(".tmp-*", ".old-*"))
    return qdir


def read_for_validation(snapshot: str):
    """The snapshot as a DataFrame whose text columns are Arrow-backed (``string[pyarrow]``): a
    few bytes per value instead of a Python object each, so peak memory stays near the file's
    size rather than growing by ~60 bytes per text cell (2M rows of the Telco schema peaked at
    4.2 GB with object strings)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow_text = pd.StringDtype("pyarrow")
    mapping = {pa.string(): arrow_text, pa.large_string(): arrow_text}
    return pq.read_table(snapshot).to_pandas(types_mapper=mapping.get, self_destruct=True)


#: Rows validated at a time: a bigger snapshot is validated in chunks so peak memory stays flat.
DEFAULT_CHUNK_ROWS = 250_000


def chunk_rows() -> int:
    return int(os.environ.get("PAVEDML_VALIDATION_CHUNK_ROWS") or DEFAULT_CHUNK_ROWS)


def is_rowwise(spec: dict) -> bool:
    """True if the expectation holds for a table when it holds for every chunk of its rows (and its
    counts add up): per-value checks. Uniqueness, row counts and aggregates (max, mean, ...) are not."""
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )
    from great_expectations.expectations.registry import get_expectation_impl

    if "unique" in spec["type"] or spec["type"].endswith(("_increasing", "_decreasing")):
        return False  # across rows (order-dependent ones too): a chunk boundary would hide a failure
    if spec["type"] == "expect_column_to_exist":
        return True
    try:
        impl = get_expectation_impl(spec["type"])
    except Exception:  # noqa: BLE001 - an unknown type fails in the whole-table run, with GX's message
        return False
    return issubclass(impl, ColumnMapExpectation | ColumnPairMapExpectation | MulticolumnMapExpectation)


def _spec_columns(spec: dict) -> list[str]:
    kw = spec["kwargs"]
    cols = [kw[k] for k in ("column", "column_A", "column_B") if k in kw]
    return cols + list(kw.get("column_list") or [])


def _merge(spec: dict, parts: list[dict]) -> dict:
    """One row-wise expectation's result over the whole table from its per-chunk results."""
    out = dict(parts[0])
    counts = [p["unexpected_count"] for p in parts if p["unexpected_count"] is not None]
    out["exception"] = next((p["exception"] for p in parts if p["exception"]), None)
    values: list = []
    for p in parts:
        for v in p["unexpected_values"]:
            if v not in values and len(values) < MAX_VALUES:
                values.append(v)
    out["unexpected_values"] = values
    if counts:
        unexpected = sum(counts)
        elements = sum(p["element_count"] or 0 for p in parts)
        missing = sum(p["missing_count"] or 0 for p in parts)
        denom = elements if spec["type"] == "expect_column_values_to_not_be_null" else elements - missing
        out.update(unexpected_count=unexpected, element_count=elements, missing_count=missing,
                   unexpected_percent=100.0 * unexpected / denom if denom else 0.0)
        mostly = spec["kwargs"].get("mostly")
        if mostly is not None and not out["exception"]:
            out["success"] = (1 - unexpected / denom if denom else 1.0) >= mostly
        else:
            out["success"] = all(p["success"] for p in parts)
    else:
        out["success"] = all(p["success"] for p in parts)
    return out


def _release() -> None:
    """Free a finished chunk before the next: GX's objects hold the chunk's frame in reference
    cycles (only the cycle collector frees them) and Arrow's pool keeps freed pages otherwise."""
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()


def _hash_buckets(pfile, columns: list[str], buckets: int, mapping):
    """The rows' ``columns`` split into ``buckets`` frames by a hash of their values (equal rows land
    in the same frame), reading the snapshot one row group at a time: memory is the columns in
    Arrow form plus one bucket, not the table."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    pieces: list[list] = [[] for _ in range(buckets)]
    for batch in pfile.iter_batches(columns=columns):
        frame = batch.to_pandas(types_mapper=mapping.get)
        codes = pd.util.hash_pandas_object(frame, index=False).to_numpy() % np.uint64(buckets)
        table = pa.Table.from_batches([batch])
        for b in range(buckets):
            idx = np.flatnonzero(codes == b)
            if len(idx):
                pieces[b].append(table.take(pa.array(idx)))
        del frame, table
    for b in range(buckets):
        if pieces[b]:
            table = pa.concat_tables(pieces[b])
            pieces[b] = []
            yield table.to_pandas(types_mapper=mapping.get, self_destruct=True)


def validate_snapshot(snapshot: str, specs: list[dict], docs_dir: Path, run_name: str, chunk: int) -> dict:
    """Run ``specs`` on a Parquet snapshot with memory bounded by ``chunk`` rows, not by its size.

    A snapshot of at most ``chunk`` rows is one GX run (one Data Docs page). A bigger one: the
    row-wise expectations run chunk by chunk (counts and unexpected values merged, ``mostly``
    decided on the totals), and the rest (row count, uniqueness, aggregates) in one run over only
    the columns they name. The report link is the first failing run's page; every page is listed
    in ``chunk_pages``."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    pfile = pq.ParquetFile(snapshot)
    rows = pfile.metadata.num_rows
    if rows <= chunk:
        result = run_suite(read_for_validation(snapshot), specs, docs_dir, run_name)
        return {**result, "rows": rows, "chunks": 1}
    arrow_text = pd.StringDtype("pyarrow")
    mapping = {pa.string(): arrow_text, pa.large_string(): arrow_text}
    rowwise = [i for i, spec in enumerate(specs) if is_rowwise(spec)]
    whole = [i for i in range(len(specs)) if i not in set(rowwise)]
    parts: dict[int, list[dict]] = {i: [] for i in rowwise}
    pages, failing = [], []
    for k, batch in enumerate(pfile.iter_batches(batch_size=chunk)):
        frame = pa.Table.from_batches([batch]).to_pandas(types_mapper=mapping.get, self_destruct=True)
        res = run_suite(frame, [specs[i] for i in rowwise], docs_dir, f"{run_name}-chunk{k + 1}")
        del frame
        _release()
        pages.append(res["data_docs"])
        if not res["success"]:
            failing.append(res["data_docs"])
        for i, e in zip(rowwise, res["expectations"], strict=True):
            parts[i].append(e)
    merged: dict[int, dict] = {i: _merge(specs[i], parts[i]) for i in rowwise}
    present = set(pfile.schema_arrow.names)
    for i in [i for i in whole if "unique" in specs[i]["type"] and set(_spec_columns(specs[i])) <= present]:
        whole.remove(i)  # duplicates always share a hash bucket: bucket by bucket is exact
        bucket_parts = []
        for b, frame in enumerate(_hash_buckets(pfile, _spec_columns(specs[i]), -(-rows // chunk), mapping)):
            res = run_suite(frame, [specs[i]], docs_dir, f"{run_name}-{specs[i]['type'].removeprefix('expect_')}-{b + 1}")
            del frame
            _release()
            pages.append(res["data_docs"])
            if not res["success"]:
                failing.append(res["data_docs"])
            bucket_parts.append(res["expectations"][0])
        merged[i] = _merge(specs[i], bucket_parts)
    if whole:
        needed = sorted({c for i in whole for c in _spec_columns(specs[i]) if c in present}) or [pfile.schema_arrow.names[0]]
        frame = pq.read_table(snapshot, columns=needed).to_pandas(types_mapper=mapping.get, self_destruct=True)
        res = run_suite(frame, [specs[i] for i in whole], docs_dir, f"{run_name}-table")
        del frame
        pages.append(res["data_docs"])
        if not res["success"]:
            failing.append(res["data_docs"])
        merged.update(zip(whole, res["expectations"], strict=True))
        for i in whole:  # a column the projection left out is missing from the table itself
            col = specs[i]["kwargs"].get("column")
            if col is not None and col not in present:
                merged[i]["exception"] = f"column {col!r} not found"
    out = [merged[i] for i in range(len(specs))]
    return {"success": not any(e for e in out if not e["success"] and e["severity"] == "error"),
            "expectations": out, "data_docs": (failing or pages)[0], "chunk_pages": pages, "rows": rows,
            "chunks": -(-rows // chunk)}


def validate_raw_batch(ctx: StepContext) -> ValidationSummary:

    from pavedml.steps.ingest import latest_snapshot

    os.environ.setdefault("TQDM_DISABLE", "1")
    ds = ctx.ds_iso
    sha, snapshot = latest_snapshot(ctx)
    manifest = storage.read_json(str(ctx.layout.raw_manifest(ds, sha)))
    import pyarrow.parquet as pq

    columns = pq.read_schema(snapshot).names
    specs = generate_suite(ctx.use_case, columns, manifest.get("type_errors"), ctx.interval_start)
    vdir = ctx.layout.validation_dir(ds, sha)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    rundir = vdir / "runs" / stamp  # every run's report is kept; result.json is the latest
    with storage.atomic_dir(rundir) as tmp:
        result = validate_snapshot(snapshot, specs, tmp / "data_docs", f"{ctx.use_case.name}-{ds}-{sha[:12]}",
                                   chunk_rows())
        result["data_docs"] = result["data_docs"].replace(str(tmp.resolve()), str(rundir))
        result["chunk_pages"] = [p.replace(str(tmp.resolve()), str(rundir)) for p in result.get("chunk_pages", [])]
        result.update(sha256=sha, ds=ds, dag_run=ctx.run_id, validated_at=stamp,
                      type_errors=manifest.get("type_errors", {}))
        storage.write_json(str(tmp / VALIDATION_RESULT), result)
    storage.write_json(str(ctx.layout.validation_result(ds, sha)), result)
    for col, info in result["type_errors"].items():
        for e in result["expectations"]:
            if e["column"] == col and e["type"].endswith("in_type_list") and not e["unexpected_values"]:
                e["unexpected_values"] = info["examples"]
                e["unexpected_count"] = info["count"]
    failed = [e for e in result["expectations"] if not e["success"]]
    errors = [e for e in failed if e["severity"] == "error"]
    warnings = [e for e in failed if e["severity"] == "warning"]
    for w in warnings:
        log.warning("validation warning: %s", describe(w))
    log.info("Data Docs: %s", result["data_docs"])
    if errors:
        qdir = _quarantine(ctx, sha, snapshot, vdir, manifest)
        n = len(errors)
        raise ValidationFailedError(
            f"batch {ds} ({sha[:12]}) failed {n} of {len(specs)} expectation{'s' if n > 1 else ''}: "
            + ", ".join(sorted({_headline(e) for e in errors})),
            details={"evidence": [describe(e) for e in errors] + [f"(warning) {describe(w)}" for w in warnings],
                     "report": result["data_docs"], "quarantine": str(qdir),
                     "next": "fix the batch upstream and re-deliver it, then clear ingest_raw_batch"},
        )
    return ValidationSummary(step="validate_raw_batch", use_case=ctx.use_case.name, ds=ds, sha256=sha, success=True,
                             evaluated=len(specs), warnings=[describe(w) for w in warnings],
                             data_docs=result["data_docs"], result_json=str(ctx.layout.validation_result(ds, sha)))


def require_validated(ctx: StepContext, sha: str) -> None:
    """Refuse to build on a snapshot that has not passed validation."""
    path = ctx.layout.validation_result(ctx.ds, sha)
    if not path.exists() or not storage.read_json(str(path)).get("success"):
        raise ValidationFailedError(f"snapshot {sha[:12]} of {ctx.ds} has not passed validation ({path})",
                                    details={"next": "run validate_raw_batch for this interval"})


NUMBER_TYPES = ["float64", "Float64Dtype", "int64", "Int64Dtype"]


def numeric_label(uc: UseCase) -> bool:
    """Whether the label must be a number: a regression target, or a binary label by threshold."""
    return uc.is_regression or uc.label.threshold is not None


def labels_suite(uc: UseCase, present_columns: list[str], type_errors: dict | None = None) -> list[dict]:
    """The labels contract: entity key, label and snapshot date present and non-null; the label one
    of the declared values (``label.positive`` / ``label.negative``, a value or a list each), or a
    finite number (``label.threshold``, or a regression target); with ``batches.timestamp.column``
    an ``event_timestamp`` column (the row's time, ISO 8601) present, non-null and parseable; one
    label per entity and day (per entity and event time, with event times)."""
    key, col = uc.entity.key, uc.label.column
    type_errors = type_errors or {}
    timed = uc.timestamp_column is not None
    specs = []
    for name in (key, col, "snapshot_date", *(("event_timestamp",) if timed else ())):
        specs.append(_exp("expect_column_to_exist", column=name))
        if name in present_columns:
            if name in type_errors:  # only its type check: the summary names the cause, not its echoes
                specs.append(_exp("expect_column_values_to_be_in_type_list", column=name,
                                  type_list=NUMBER_TYPES if name == col else TYPE_LISTS["timestamp"]))
                continue
            specs.append(_exp("expect_column_values_to_not_be_null", column=name))
    if col in present_columns and col not in type_errors:
        if numeric_label(uc):
            specs.append(_exp("expect_column_values_to_be_in_type_list", column=col, type_list=NUMBER_TYPES))
            specs.append(_exp("expect_column_values_to_be_between", column=col, min_value=-FINITE, max_value=FINITE))
        else:
            values = [*uc.label.positive_values, *uc.label.negative_values]
            specs.append(_exp("expect_column_values_to_be_in_set", column=col, value_set=[str(v) for v in values]))
    if timed and "event_timestamp" in present_columns and "event_timestamp" not in type_errors:
        specs.append(_exp("expect_column_values_to_be_in_type_list", column="event_timestamp",
                          type_list=TYPE_LISTS["timestamp"]))
    unique_by = [key, "event_timestamp" if timed else "snapshot_date"]
    if set(unique_by) <= set(present_columns) and not set(unique_by) & set(type_errors):
        specs.append(_exp("expect_compound_columns_to_be_unique", column_list=unique_by))
    if "snapshot_date" in present_columns:
        specs.append(_exp("expect_column_values_to_match_regex", column="snapshot_date",
                          regex=r"^\d{4}-\d{2}-\d{2}"))
    return specs


def _labels_frame(uc: UseCase, df):
    """The labels as the suite reads them, and the columns whose values do not parse: a declared
    value label as text (compared as text with the declared values), a numeric label as numbers,
    ``event_timestamp`` as UTC times (with ``batches.timestamp.column``)."""
    import pandas as pd

    from pavedml.steps.ingest import parse_timestamps

    frame = df.copy()
    label = uc.label.column
    type_errors: dict[str, dict] = {}
    if label in frame.columns:
        if numeric_label(uc):
            col = frame[label]
            if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                text = col.astype("string").str.strip()
                text = text.where(text != "", pd.NA)
                num = pd.to_numeric(text, errors="coerce")
                bad = num.isna() & text.notna()
                if bad.any():
                    type_errors[label] = {"count": int(bad.sum()), "examples": text[bad].unique()[:5].tolist()}
                    frame[label] = text
                else:
                    frame[label] = num.astype("float64")
            else:
                frame[label] = col.astype("float64")
        else:  # compare as text, as the declared values are compared
            frame[label] = frame[label].astype("string")
    if "snapshot_date" in frame.columns:
        frame["snapshot_date"] = frame["snapshot_date"].astype("string")
    if uc.timestamp_column is not None and "event_timestamp" in frame.columns:
        parsed, bad_ts = parse_timestamps(frame["event_timestamp"])
        if bad_ts is not None:
            type_errors["event_timestamp"] = bad_ts
            frame["event_timestamp"] = frame["event_timestamp"].astype("string")
        else:
            frame["event_timestamp"] = parsed
    return frame, type_errors


def _labels_next(uc: UseCase) -> str:
    label = uc.label
    if uc.is_regression:
        what = f"a number in every row of {label.column}"
    elif label.threshold is not None:
        what = f"a number in every row of {label.column} (positive when >= {label.threshold})"
    else:
        what = (f"{label.column} in {[*label.positive_values, *label.negative_values]!r} (or declare the value in "
                "label.positive or label.negative of the use-case file)")
    if uc.timestamp_column is not None:
        what += ", and each row's time in event_timestamp (ISO 8601)"
    return f"re-deliver the labels with {what}, then clear build_training_set"


def validate_labels(ctx: StepContext, uri: str, data: bytes, df) -> None:
    """Run the labels suite on one landed labels file, once per content hash (the result is kept
    under ``validation/labels/dt=<day>/<sha>/``). On failure the file and the report are copied to
    ``quarantine/labels/dt=<day>/<sha>/`` and the step stops: a label outside the declared values
    is never read as a negative, a target that is not a number never trains a regression."""
    import hashlib
    import json
    import re

    uc = ctx.use_case
    # the content and the contract it is checked against: a changed label.* or task re-validates
    contract = json.dumps({"task": uc.task, "label": uc.label.model_dump(mode="json"),
                           "timestamp": uc.timestamp_column, "key": uc.entity.key}, sort_keys=True, default=str)
    sha = hashlib.sha256(data + b"\0" + contract.encode()).hexdigest()
    m = re.search(r"/dt=(\d{4}-\d{2}-\d{2})/", uri)
    day = m.group(1) if m else "unknown"
    vdir = ctx.layout.labels_validation_dir(day, sha)
    result_path = vdir / VALIDATION_RESULT
    if result_path.exists():
        result = storage.read_json(str(result_path))
    else:
        os.environ.setdefault("TQDM_DISABLE", "1")
        frame, type_errors = _labels_frame(uc, df)
        specs = labels_suite(uc, list(frame.columns), type_errors)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        rundir = vdir / "runs" / stamp
        with storage.atomic_dir(rundir) as tmp:
            result = run_suite(frame, specs, tmp / "data_docs", run_name=f"{uc.name}-labels-{day}-{sha[:12]}")
            result["data_docs"] = result["data_docs"].replace(str(tmp.resolve()), str(rundir))
            for col, info in type_errors.items():  # the values that do not parse, as the raw batch shows them
                for e in result["expectations"]:
                    if e["column"] == col and e["type"].endswith("in_type_list") and not e["unexpected_values"]:
                        e.update(unexpected_values=info["examples"], unexpected_count=info["count"])
            result.update(sha256=sha, ds=day, source_uri=uri, dag_run=ctx.run_id, validated_at=stamp,
                          type_errors=type_errors)
            storage.write_json(str(tmp / VALIDATION_RESULT), result)
        storage.write_json(str(result_path), result)
    if result["success"]:
        return
    errors = [e for e in result["expectations"] if not e["success"] and e["severity"] == "error"]
    qdir = ctx.layout.labels_quarantine_dir(day, sha)
    if not (qdir / QUARANTINE_REASON).exists():
        with storage.atomic_dir(qdir) as tmp:
            (tmp / uri.rsplit("/", 1)[-1]).write_bytes(data)
            shutil.copytree(vdir, tmp / "report", ignore=shutil.ignore_patterns(".tmp-*", ".old-*"))
            storage.write_json(str(tmp / QUARANTINE_REASON), {
                "reason": "validation_failed", "what": "labels", "source_uri": uri, "sha256": sha,
                "dag_run": ctx.run_id, "quarantined_at": datetime.now(UTC).isoformat()})
    unparsed = "".join(
        f"; {col} holds {info['count']} value(s) that are not "
        f"{'times' if col == 'event_timestamp' else 'numbers'} (e.g. {', '.join(map(repr, info['examples'][:3]))})"
        for col, info in (result.get("type_errors") or {}).items())
    raise ValidationFailedError(
        f"labels file {uri} ({sha[:12]}) failed {len(errors)} expectation{'s' if len(errors) > 1 else ''}: "
        + ", ".join(sorted({e['column'] or 'table' for e in errors})) + unparsed,
        details={"evidence": [describe(e) for e in errors], "report": result["data_docs"], "quarantine": str(qdir),
                 "next": _labels_next(uc)})
