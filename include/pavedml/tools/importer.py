"""``python -m pavedml import-history``: land a table's history the way the pipeline expects it.

The source is one table (a CSV or Parquet file, local or ``s3://``, or a SQL query on a SQLAlchemy
URL) holding the entity key, the features and the label. It is split into daily batches, by the
day of an event-date column (``--date-column``) or into N even slices of its rows in table order
(``--days``, for a table without dates), and landed as:

* ``<landing>/<use case>/<batches.dataset>/dt=<day>/<batches.dataset>.<format>``: the day's rows
  without the label;
* ``<landing>/<use case>/<label.dataset>/dt=<day + label.delay_days>/<label.dataset>.csv``: the
  entity key, the label and ``snapshot_date`` (the batch's day), plus ``event_timestamp`` (the
  row's own time) when the use case takes row times from a column.

Everything is checked before anything is written, so a refusal lands nothing: the key, label and
date columns exist, dates parse, labels hold declared (or numeric) values, labels from a separate
file belong to known keys, each day holds at least ``schema.row_count.min`` rows and there are
enough labelled days for the time split. A rerun with the same input writes nothing (every file
is compared byte for byte); a day that already holds different content is refused unless
``--replace``. Prints what it landed: days, rows, label rate (or mean for regression).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pavedml import storage
from pavedml.config import SqlSource, UseCase, get_use_case
from pavedml.errors import ConfigError
from pavedml.layout import Layout
from pavedml.results import StepResult
from pavedml.settings import get_settings

log = logging.getLogger(__name__)
SNAPSHOT_DATE = "snapshot_date"
EVENT_TIMESTAMP = "event_timestamp"
EXAMPLES = 5


class ImportRefused(ConfigError):
    """The input does not fit the use case: nothing was landed (exit 3, one line)."""

    reason = "import_refused"


@dataclass(frozen=True)
class ImportResult(StepResult):
    days: list[str]
    rows: int
    labelled_rows: int
    label_summary: str
    written: int
    unchanged: int
    replaced: int
    landing: str
    labels_from: str
    labels_to: str
    notes: list[str] = field(default_factory=list)


# -- reading --------------------------------------------------------------------------------------
#: Spellings of a missing value some exporters write into numeric columns (R, pandas, SQL dumps):
#: in a column the schema types as a number they land as empty cells (ingest's missing value).
NA_TOKENS = ("NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "#N/A")
#: Columns the pipeline writes into every snapshot: a table may not bring its own.
RESERVED = ("event_timestamp",)


def read_table(source: str, sql: str | None = None, db_url_env: str | None = None, sep: str = ","):
    """The whole table as a DataFrame. Files are read as text, exactly as delivered (the pipeline's
    ingest decides types); a SQL query keeps the database's types."""
    import pandas as pd

    if sql:
        from pydantic import ValidationError

        from pavedml.sqlsource import read_query

        try:
            spec = SqlSource(url=None if db_url_env else source, url_env=db_url_env, query=sql)
        except ValidationError as exc:
            first = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ImportRefused(f"--sql: {first}" + (" (pass --db-url-env VAR instead of the URL in --from)"
                                                     if "password" in first else "")) from None
        return read_query(spec, {})
    name = source.rsplit("/", 1)[-1]
    try:
        data = storage.read_bytes(source) if storage.is_s3(source) else Path(source).read_bytes()
    except FileNotFoundError:
        raise ImportRefused(f"{source}: no such file") from None
    except OSError as exc:
        raise ImportRefused(f"{source}: cannot be read: {exc}") from None
    except Exception as exc:  # botocore's errors (no such key, access denied, endpoint down)
        if type(exc).__module__.split(".")[0] not in ("botocore", "boto3"):
            raise
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NoSuchBucket"):
            raise ImportRefused(f"{source}: no such object ({code})") from None
        raise ImportRefused(f"{source}: cannot be read: {type(exc).__name__}: {str(exc)[:200]}") from None
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(io.BytesIO(data))
        _check_fields(data, source, name.endswith(".gz"), sep)  # before pandas fills in or shifts fields
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, sep=sep, index_col=False,
                         compression="gzip" if name.endswith(".gz") else None, encoding="utf-8-sig")
    except ImportRefused:
        raise
    except UnicodeDecodeError as exc:
        raise ImportRefused(f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start}): convert it first, e.g. "
                            f"iconv -f cp1252 -t utf-8 {name} > {name.rsplit('.', 1)[0]}.utf8.csv") from None
    except Exception as exc:  # noqa: BLE001 - any parser error is a refusal naming the file
        raise ImportRefused(f"{source} could not be parsed as {'Parquet' if 'parquet' in name else 'CSV'}: "
                            f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if not name.endswith((".parquet", ".pq")):
        if len(df.columns) == 1 and sep == ",":
            for other, label in ((";", "';'"), ("\t", "'\\t'"), ("|", "'|'")):
                if other in str(df.columns[0]):
                    raise ImportRefused(f"{source}: the header is one column {str(df.columns[0])[:60]!r}: the file looks "
                                        f"separated by {label}: pass --sep {label}")
    return df


def _check_fields(data: bytes, source: str, gz: bool, sep: str = ",") -> None:
    """Refuse a CSV whose rows do not have the header's fields: shorter (pandas would fill them in:
    a file cut short) or longer (pandas would shift every column: a trailing or unquoted comma)."""
    import csv
    import gzip

    text = (gzip.decompress(data) if gz else data).decode("utf-8", errors="replace").lstrip("\ufeff")
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header = next(rows, [])
    width = len(header)
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise ImportRefused(f"{source}: the header names {', '.join(map(repr, twice[:5]))} more than once: rename "
                            "the columns so each name is one column")
    short = long = first_short = first_long = 0
    for number, row in enumerate(rows, start=1):
        if row and len(row) < width:
            short += 1
            first_short = first_short or number
        elif len(row) > width:
            long += 1
            first_long = first_long or number
    if short:
        raise ImportRefused(f"{source}: {short} row(s) have fewer fields than the header (first at data row "
                            f"{first_short}; a file cut short?)")
    if long:
        raise ImportRefused(f"{source}: {long} row(s) have more fields than the header's {width} (first at data row "
                            f"{first_long}; a trailing separator, or a value with an unquoted separator?)")


def _require(df, column: str, what: str, where: str) -> None:
    if column not in df.columns:
        cols = ", ".join(map(str, df.columns[:30])) + (" ..." if len(df.columns) > 30 else "")
        raise ImportRefused(f"{where} has no column {column!r} ({what}); its columns: {cols}")


def _examples(values) -> str:
    return ", ".join(repr(v) for v in list(dict.fromkeys(values))[:EXAMPLES])


def parse_times(values, column: str, where: str, date_format: str | None = None):
    """A column as UTC timestamps (naive values are UTC); any value that does not parse refuses, and
    so do day/month spellings that read two ways (01/09/2026) unless ``date_format`` says which."""
    import pandas as pd

    text = values.astype("string").str.strip()
    if text.isna().any() or (text == "").any():
        n = int((text.isna() | (text == "")).sum())
        raise ImportRefused(f"{where}: column {column!r} has {n} empty date value(s): every row needs its date")
    from pavedml.steps.ingest import ZONE_RE, parse_timestamps

    if date_format:
        parsed = pd.to_datetime(text.astype(object), format=date_format, utc=True, errors="coerce")
        bad = parsed.isna()
        if bad.any():
            raise ImportRefused(f"{where}: column {column!r} has {int(bad.sum())} value(s) not in --date-format "
                                f"{date_format!r} (e.g. {_examples(text[bad])})")
        return parsed
    parsed, _ = parse_timestamps(values)  # ISO 8601, as ingest reads it (zone-less values are UTC)
    if parsed is None:
        slashed = text[text.str.match(r"^\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}")]
        if len(slashed):
            first = pd.to_datetime(slashed.astype(object), errors="coerce", format="mixed", dayfirst=False)
            other = pd.to_datetime(slashed.astype(object), errors="coerce", format="mixed", dayfirst=True)
            differ = first.notna() & other.notna() & (first != other)
            if differ.any():
                raise ImportRefused(f"{where}: column {column!r} holds dates that read two ways, day first or month "
                                    f"first (e.g. {_examples(slashed[differ])}): pass --date-format, e.g. "
                                    "'%d/%m/%Y' or '%m/%d/%Y' (add ' %H:%M' for times)")  # other spellings (1/31/2025, 31 Jan 2025): pandas infers each value's format
        parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
        zoned = text.str.contains(ZONE_RE, regex=True, na=False).astype(bool)
        for part in (zoned, ~zoned):
            if part.any():
                parsed[part] = pd.to_datetime(text[part].astype(object), utc=True, errors="coerce", format="mixed")
    bad = parsed.isna()
    if bad.any():
        raise ImportRefused(f"{where}: column {column!r} has {int(bad.sum())} value(s) that are not dates "
                            f"(e.g. {_examples(text[bad])})")
    return parsed


# -- labels ---------------------------------------------------------------------------------------
def label_values(uc: UseCase, labels, where: str):
    """(the labels kept as text, numeric view) after checking them against the use case: declared
    values for a classifier, numbers for a threshold or a regression target."""
    import pandas as pd

    column = uc.label.column
    text = labels.astype("string").str.strip()
    text = text.where(~text.isin(NA_TOKENS), "")  # a missing label: the row is not labelled
    if uc.is_regression or uc.label.threshold is not None:
        number = pd.to_numeric(text, errors="coerce")
        bad = number.isna() & text.notna() & (text != "")
        if bad.any():
            kind = "a regression target" if uc.is_regression else "a thresholded label"
            raise ImportRefused(f"{where}: label column {column!r} holds {int(bad.sum())} value(s) that are not "
                                f"numbers (e.g. {_examples(text[bad])}); {kind} is a number")
        return text, number
    spelling = {_canon(v): str(v) for v in (*uc.label.positive_values, *uc.label.negative_values)}
    canon = text.map(lambda v: _canon(v) if isinstance(v, str) and v != "" else None)
    bad = ~canon.isin(list(spelling)) & canon.notna()
    if bad.any():
        raise ImportRefused(f"{where}: label column {column!r} holds {int(bad.sum())} value(s) outside "
                            f"label.positive {uc.label.positive_values!r} / label.negative "
                            f"{uc.label.negative_values!r} (e.g. {_examples(text[bad])})")
    declared = canon.map(spelling)  # land each label as the use case spells it ("1.0" from a database -> "1")
    positives = {str(v) for v in uc.label.positive_values}
    return declared.astype("string"), declared.isin(positives).astype("float64").where(declared.notna())


def _canon(value) -> str:
    """A label value's identity: booleans by truth (True, "true", "TRUE" are one), numbers by value
    (1, "1", 1.0 and "1.0" are one), text as is."""
    if isinstance(value, bool) or str(value).strip().lower() in ("true", "false"):
        return f"bool:{str(value).strip().lower()}"
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value).strip()


def _is_positive(uc: UseCase, number):
    if uc.label.threshold is not None:
        return (number >= uc.label.threshold).astype("float64").where(number.notna())
    return number


def attach_labels(df, labels_df, uc: UseCase, date_column: str | None, where: str):
    """Labels from a separate file, matched to the history by key (and date column when both have
    it). A label for a key that is not in the history refuses."""
    key, column = uc.entity.key, uc.label.column
    _require(labels_df, key, "the entity.key", where)
    _require(labels_df, column, "the label.column", where)
    on = [key]
    if date_column and date_column in labels_df.columns:
        on.append(date_column)
    left = df.drop(columns=[column], errors="ignore")
    keys = left[on].astype(str).drop_duplicates()
    lab = labels_df[[*on, column]].astype({c: str for c in on})
    dup = lab.duplicated(on, keep=False)
    if dup.any():
        raise ImportRefused(f"{where}: {int(dup.sum())} rows give a second label for the same "
                            f"{' and '.join(on)} (e.g. {_examples(lab.loc[dup, key])})")
    known = lab.merge(keys, on=on, how="left", indicator=True)
    unknown = known["_merge"] == "left_only"
    if unknown.any():
        raise ImportRefused(f"{where}: {int(unknown.sum())} label(s) for {key} value(s) not in the history "
                            f"(e.g. {_examples(known.loc[unknown, key])})")
    merged = left.astype({c: str for c in on}).merge(lab, on=on, how="left")
    return merged.fillna({column: ""})


# -- planning -------------------------------------------------------------------------------------
def split_days(df, uc: UseCase, date_column: str | None, days: int | None, start: date | None, where: str,
               shuffle: int | None = None, date_format: str | None = None):
    """(frame with a ``__day`` column, parsed row times or None). By the date column's UTC day, or
    N even slices of the rows (table order) on consecutive days from ``start``."""
    import numpy as np
    import pandas as pd

    if date_column:
        times = parse_times(df[date_column], date_column, where, date_format)
        out = df.assign(__day=times.dt.strftime("%Y-%m-%d").to_numpy())
        return out, times
    if not days or days < 1:
        raise ImportRefused("give --date-column COLUMN (split by each row's date) or --days N (N even daily "
                            "slices of a table without dates)")
    if days > len(df):
        raise ImportRefused(f"{where}: --days {days} is more than its {len(df)} rows")
    if shuffle is not None:  # a table ordered by its label (or anything else) would give days of one class
        df = df.sample(frac=1.0, random_state=shuffle).reset_index(drop=True)
    first = start or (datetime.now(UTC).date() - timedelta(days=days - 1))
    index = np.repeat(np.arange(days), [len(part) for part in np.array_split(np.arange(len(df)), days)])
    labels = pd.Series([(first + timedelta(days=int(i))).isoformat() for i in range(days)])
    return df.assign(__day=labels.to_numpy()[index]), None


def _csv_bytes(df) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode()


def _batch_bytes(df, fmt: str) -> bytes:
    if fmt == "csv":
        return _csv_bytes(df)
    buf = io.BytesIO()
    df.reset_index(drop=True).to_parquet(buf, index=False)
    return buf.getvalue()


def _iso(times) -> list[str]:
    return [t.isoformat() for t in times]


def plan_files(args, uc: UseCase, layout: Layout) -> tuple[dict[str, bytes], dict]:
    """Every file to land (URI -> bytes) and the figures to print, or ImportRefused."""
    import numpy as np
    import pandas as pd

    where = args.sql.splitlines()[0][:80] if args.sql else args.source
    df = read_table(args.source, args.sql, args.db_url_env, args.sep)
    if df.empty:
        raise ImportRefused(f"{where} holds no rows")
    df.columns = [str(c) for c in df.columns]
    key, column = uc.entity.key, uc.label.column
    reserved = [c for c in RESERVED if c in df.columns]
    if reserved:
        raise ImportRefused(f"{where} has a column {reserved[0]!r}: that name is the pipeline's own (each row's event "
                            "time); rename the column in your table (and the use case)")
    if args.row_key:
        if key in df.columns:
            raise ImportRefused(f"--row-key: {where} already has a column {key!r} (the entity.key): drop --row-key")
        df.insert(0, key, [f"{i:0{len(str(len(df)))}d}" for i in range(len(df))])  # stable: the table's row order
    elif key in df.columns and df[key].dtype.kind == "f" and (df[key].dropna() % 1 == 0).all():
        df[key] = df[key].astype("Int64")  # a database or Parquet typed the key as float: 100000, not 100000.0
    for name, spec in uc.schema_.columns.items():  # missing-value spellings in numeric columns: empty cells
        if spec.type in ("int", "float") and name in df.columns and df[name].dtype == object:
            df[name] = df[name].where(~df[name].isin(NA_TOKENS), "")
    ts_col = uc.timestamp_column
    date_column = args.date_column or ts_col
    if ts_col and args.date_column and args.date_column != ts_col:
        raise ImportRefused(f"use case {uc.name} takes each row's time from {ts_col!r} "
                            f"(batches.timestamp.column): import with --date-column {ts_col}")
    if ts_col and args.days:
        raise ImportRefused(f"use case {uc.name} takes each row's time from column {ts_col!r}: its history "
                            f"splits by that column (--date-column {ts_col}), not into --days slices")
    if key not in df.columns:
        _require(df, key, "the entity.key; a table without a key column can take the row number: --row-key", where)
    if date_column:
        _require(df, date_column, "the --date-column" if not ts_col else "batches.timestamp.column", where)
    if args.labels:
        labels_df = read_table(args.labels)
        df = attach_labels(df, labels_df, uc, date_column, args.labels)
    else:
        _require(df, column, "the label.column", where)
    missing_key = df[key].isna() | (df[key].astype("string").str.strip() == "")
    if missing_key.any():
        raise ImportRefused(f"{where}: {int(missing_key.sum())} row(s) have no {key} (the entity key)")
    frame, times = split_days(df, uc, date_column, args.days, args.start, where, args.shuffle, args.date_format)
    if ts_col:
        frame[ts_col] = _iso(times)  # one unambiguous spelling for ingest and the labels
    text, number = label_values(uc, frame[column], args.labels or where)
    labelled = (text.notna() & (text != "")).to_numpy()
    frame[column] = text.fillna("").to_numpy()
    frame["__labelled"] = labelled
    target = _is_positive(uc, number) if not uc.is_regression else number

    once = [key, ts_col or "__day"]  # the labels contract: one label per key and day (or event time)
    dup = frame[labelled].duplicated(once, keep=False)
    if dup.any():
        raise ImportRefused(f"{where}: {int(dup.sum())} labelled rows share their {key} and "
                            f"{ts_col or 'day'} with another (e.g. {_examples(frame[labelled].loc[dup, key])}): a label "
                            f"is one per {key} and {'event time' if ts_col else 'day'}")
    if uc.schema_.columns[key].unique:
        dup = frame.duplicated(["__day", key], keep=False)
        if dup.any():
            raise ImportRefused(f"{where}: {int(dup.sum())} rows share a {key} with another row of the same day "
                                f"(e.g. {_examples(frame.loc[dup, key])}) but schema.columns.{key} is unique: true")
    days = sorted(frame["__day"].unique())
    per_day = frame.groupby("__day").size()
    floor = uc.schema_.row_count.min
    small = per_day[per_day < floor]
    if len(small):
        raise ImportRefused(f"{len(small)} of {len(days)} day(s) hold fewer rows than schema.row_count.min={floor} "
                            f"(e.g. {small.index[0]}: {int(small.iloc[0])} rows), so validation would refuse them: "
                            "lower schema.row_count.min" + (" or import fewer --days" if args.days else ""))
    labelled_days = sorted(set(frame.loc[labelled, "__day"]))
    split = uc.model.split
    need = split.holdout_days + split.validation_days + 1
    if len(labelled_days) < need:
        raise ImportRefused(f"{len(labelled_days)} labelled day(s) of history; the time split needs at least {need} "
                            f"(model.split.holdout_days={split.holdout_days}, validation_days={split.validation_days}, "
                            "1 to train): import more days")
    window = uc.model.training_window_days
    recent = [d for d in labelled_days
              if date.fromisoformat(d) > date.fromisoformat(labelled_days[-1]) - timedelta(days=window)]
    if len(recent) < need:
        raise ImportRefused(f"only {len(recent)} labelled day(s) fall within model.training_window_days={window} of the "
                            f"newest ({labelled_days[-1]}); the time split needs {need}: your dates are "
                            f"{'far apart' if len(labelled_days) >= need else 'too few'} for daily training")
    if not uc.is_regression:
        by_day = pd.Series(np.asarray(target)[labelled],
                           index=frame.loc[labelled, "__day"].to_numpy()).groupby(level=0).mean()
        tail = [d for d in labelled_days[-need + 1:]]
        for block, block_days in (("holdout", tail[-split.holdout_days:]),
                                  ("validation", tail[:split.validation_days])):
            rates = by_day.loc[block_days]
            if (rates == 0).all() or (rates == 1).all():
                cls = "positive" if (rates == 1).all() else "negative"
                raise ImportRefused(f"the first training's {block} days ({', '.join(block_days)}) hold only {cls} "
                                    f"labels (the whole table: label rate {float(target[labelled].mean()):.3f}): "
                                    "is the table ordered by its label? " + ("pass --shuffle SEED to slice it in a "
                                                                            "random order" if args.days else
                                                                            "a classifier needs both classes there"))
    files: dict[str, bytes] = {}
    batch_cols = [c for c in frame.columns if c not in (column, "__day", "__labelled")]
    delay = timedelta(days=uc.label.delay_days)
    for day, part in frame.groupby("__day", sort=True):
        if uc.batches.source is None:  # a SQL source's runs extract their own day from the database
            files[layout.landing_file(uc.batches.dataset, day, uc.batches.format)] = _batch_bytes(
                part[batch_cols], uc.batches.format)
        lab_rows = part[part["__labelled"]]
        if lab_rows.empty:
            continue
        lab = pd.DataFrame({key: lab_rows[key].astype(str).to_numpy(), column: lab_rows[column].to_numpy(),
                            SNAPSHOT_DATE: day})
        if ts_col:
            lab[EVENT_TIMESTAMP] = lab_rows[ts_col].to_numpy()
        known_on = (date.fromisoformat(day) + delay).isoformat()
        files[layout.landing_file(uc.label.dataset, known_on, "csv")] = _csv_bytes(lab)
    if uc.is_regression:
        summary = f"label mean {float(target[labelled].mean()):.4g} (min {float(target[labelled].min()):.4g}, " \
                  f"max {float(target[labelled].max()):.4g})"
    else:
        summary = f"label rate {float(target[labelled].mean()):.3f} (positive share of labelled rows)"
    figures = {"days": days, "rows": len(frame), "labelled": int(labelled.sum()), "summary": summary,
               "rows_per_day": (int(per_day.min()), int(per_day.max())),
               "labels_from": (date.fromisoformat(labelled_days[0]) + delay).isoformat(),
               "labels_to": (date.fromisoformat(labelled_days[-1]) + delay).isoformat()}
    return files, figures


def record_import(layout: Layout, args, uc: UseCase, fig: dict, written: int, replaced: int) -> None:
    """Append to ``<data root>/<use case>/imports.jsonl``: the demo runs on imported history rather than
    simulating over it, and ``simulate`` refuses to overwrite it."""
    import fcntl
    import json

    from pavedml.redact import redact_urls

    path = layout.imports_log
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"at": datetime.now(UTC).isoformat(), "source": redact_urls(args.source or f"${args.db_url_env}"),
             "sql": args.sql, "labels": args.labels, "days": [fig["days"][0], fig["days"][-1]],
             "n_days": len(fig["days"]), "rows": fig["rows"], "written": written, "replaced": replaced}
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(entry, sort_keys=True) + "\n")


def imported_days(uc, layout) -> list[str]:
    """The days whose batch has landed (by ``import-history`` or a delivery), oldest first."""
    import re

    from pavedml import storage

    prefix = storage.join(layout.landing, uc.batches.dataset)
    found = {m.group(1) for f in storage.list_prefix(prefix) if (m := re.search(r"/dt=(\d{4}-\d{2}-\d{2})/", f))}
    return sorted(found)


def has_imports(layout: Layout) -> bool:
    return layout.imports_log.exists() and layout.imports_log.stat().st_size > 0


def import_history(args) -> ImportResult:
    uc = get_use_case(args.use_case)
    if uc.batches.source is not None:
        log.info("%s reads each run's batch with its SQL query (batches.source): the import lands the history's "
                 "labels and batch files; a run's ingest re-extracts its own day from the database", uc.name)
    layout = Layout.for_use_case(uc.name, get_settings())
    files, fig = plan_files(args, uc, layout)
    written = unchanged = replaced = 0
    conflicts = []
    stale = sorted(set(imported_days(uc, layout)) - set(fig["days"]))
    existing: dict[str, bool] = {}
    for uri, data in files.items():
        if storage.exists(uri):
            same = storage.read_bytes(uri) == data
            existing[uri] = same
            if not same:
                conflicts.append(uri)
    if conflicts and not args.replace:
        raise ImportRefused(f"{len(conflicts)} landing file(s) already hold different content (e.g. {conflicts[0]}); "
                            "nothing was written: pass --replace to overwrite them (snapshots already ingested are "
                            "kept)")
    for uri, data in files.items():
        if existing.get(uri) is True:
            unchanged += 1
            continue
        storage.write_bytes(uri, data)
        if uri in existing:
            replaced += 1
        else:
            written += 1
    days = fig["days"]
    if written or replaced:
        record_import(layout, args, uc, fig, written, replaced)
    notes = []
    first_day, last_day = date.fromisoformat(days[0]), date.fromisoformat(days[-1])
    gaps = (last_day - first_day).days + 1 - len(days)
    if gaps:
        notes.append(f"{gaps} day(s) between {days[0]} and {days[-1]} have no rows: a scheduled run for such a day "
                     "waits for its batch and then fails as batch_missing")
    if stale:
        notes.append(f"{len(stale)} landed day(s) are not part of this import ({stale[0]} .. {stale[-1]}) and stay as "
                     "they are; remove their dt= folders if they should go (make demo runs the newest landed days)")
    start = uc.schedules.start_date
    if date.fromisoformat(days[0]) < start:
        notes.append(f"schedules.start_date is {start}, after the first imported day {days[0]}: set "
                     f"schedules.start_date: {days[0]} in {uc.source_file} so Airflow runs these days")
    print(f"import-history {uc.name}: {len(days)} day(s) {days[0]} .. {days[-1]}, {fig['rows']} rows "
          f"({fig['rows_per_day'][0]}-{fig['rows_per_day'][1]} a day), {fig['labelled']} labelled, {fig['summary']}")
    where_batches = ("batches read by each run from its SQL query (batches.source), not landed"
                     if uc.batches.source is not None else
                     f"batches at {storage.join(layout.landing, uc.batches.dataset)}/dt=<day>/")
    print(f"  {where_batches}; labels at "
          f"{storage.join(layout.landing, uc.label.dataset)}/dt=<day + {uc.label.delay_days}>/ "
          f"({fig['labels_from']} .. {fig['labels_to']})")
    print(f"  files: {written} written, {replaced} replaced, {unchanged} unchanged")
    for note in notes:
        print(f"  note: {note}")
    return ImportResult(step="import-history", use_case=uc.name, ds=None, days=days, rows=fig["rows"],
                        labelled_rows=fig["labelled"], label_summary=fig["summary"], written=written,
                        unchanged=unchanged, replaced=replaced, landing=layout.landing,
                        labels_from=fig["labels_from"], labels_to=fig["labels_to"], notes=notes)


def import_command(args) -> ImportResult:
    if args.date_column and args.days:
        raise ImportRefused("give either --date-column or --days, not both")
    if args.shuffle is not None and not args.days:
        raise ImportRefused("--shuffle goes with --days (it orders the rows before slicing them into days)")
    if args.sql:
        if args.db_url_env is None and "://" not in (args.source or ""):
            raise ImportRefused(f"--sql needs a database: --from <SQLAlchemy URL> or --db-url-env VAR "
                                f"(got {args.source!r})")
    elif not args.source:
        raise ImportRefused("give --from FILE (CSV or Parquet, local or s3://) or --sql QUERY with a database")
    return import_history(args)
