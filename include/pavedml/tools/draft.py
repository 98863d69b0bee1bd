"""``python -m pavedml draft-use-case``: a first use-case YAML drafted from a table.

Reads the table the way ``import-history`` does and writes a YAML whose schema lists every column
with the type its values parse as (int, float, timestamp for the date column, category with its
allowed values for text of few distinct values, string otherwise), the features (numeric and
categorical columns but the key, label and date), the task (two label values: binary with the
rarer one positive unless ``--positive``; a numeric label of more values: regression) and
defaults sized to the table (``drift.min_samples`` from the rows a day). The draft is validated
as a use case before it is written; review it, then import the history.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from pavedml.config import NAME_RE, UseCase
from pavedml.errors import ConfigError
from pavedml.tools.importer import NA_TOKENS, RESERVED, ImportRefused, _canon, parse_times, read_table

log = logging.getLogger(__name__)
#: Text columns with at most this many distinct values become categories (with allowed values).
MAX_CATEGORIES = 50


def _numeric(text):
    import pandas as pd

    values = text[(text != "") & ~text.isin(NA_TOKENS)]
    number = pd.to_numeric(values, errors="coerce")
    return number if len(values) and number.notna().all() else None


def _numeric_one(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def column_spec(text, name: str, notes: list[str]) -> tuple[dict, str | None]:
    """(schema spec, feature kind "numeric" | "categorical" | None) of one column (as text)."""
    blank = int(((text == "") | text.isin(NA_TOKENS)).sum())
    spec: dict = {}
    number = _numeric(text)
    tokens = sorted(set(text[text.isin(NA_TOKENS)]))
    if number is not None and tokens:
        notes.append(f"{name}: {', '.join(tokens)} read as missing (import-history lands them as empty cells)")
    if number is not None:
        spec["type"] = "int" if (number % 1 == 0).all() else "float"
        kind: str | None = "numeric"
    else:
        distinct = sorted(text[text != ""].unique().tolist())
        sample = text[text != ""].head(200)
        if len(sample) and sample.str.match(r"^\d{4}-\d{2}-\d{2}|^\d{1,2}/\d{1,2}/\d{2,4}").all():
            notes.append(f"{name}: looks like dates; if it is each row's time, draft with --date-column {name}")
        if len(distinct) <= MAX_CATEGORIES:
            spec.update(type="category", allowed=distinct)
            kind = "categorical"
        else:
            spec["type"] = "string"
            kind = None
            notes.append(f"{name}: text with {len(distinct)} distinct values, kept out of the features")
    if blank and spec["type"] in ("int", "float"):
        spec["blank_as_null"] = True  # an empty cell is a missing value, not a parse error
    return spec, kind


def draft(args) -> dict:
    import pandas as pd

    name = args.name
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"--name {name!r}: a use-case name is lowercase letters, digits and underscores "
                          "(2-41 characters, starting with a letter)")
    df = read_table(args.source, args.sql, args.db_url_env, args.sep)
    df.columns = [str(c) for c in df.columns]
    reserved = [c for c in RESERVED if c in df.columns]
    if reserved:
        raise ImportRefused(f"{args.source} has a column {reserved[0]!r}: that name is the pipeline's own (each row's "
                            "event time); rename the column in your table first")
    if args.row_key:
        if args.key in df.columns:
            raise ImportRefused(f"--row-key: {args.source} already has a column {args.key!r}: drop --row-key")
        df.insert(0, args.key, [str(i) for i in range(len(df))])
    for column, what in ((args.key, "--key (or --row-key for a table without one)"), (args.label, "--label"),
                         (args.date_column, "--date-column")):
        if column and column not in df.columns:
            raise ImportRefused(f"{args.source}: no column {column!r} ({what}); its columns: "
                                f"{', '.join(df.columns[:30])}")
    if df[args.key].isna().any() or (df[args.key].astype("string").str.strip() == "").any():
        raise ImportRefused(f"{args.source}: --key {args.key!r} is empty in "
                            f"{int((df[args.key].isna() | (df[args.key].astype('string').str.strip() == '')).sum())} "
                            "row(s): every row needs its key (or use --row-key)")
    text = df.astype("string").fillna("").apply(lambda c: c.str.strip())
    if text[args.key].duplicated().any() and not args.date_column:
        raise ImportRefused(f"{args.source}: --key {args.key!r} repeats ({int(text[args.key].duplicated().sum())} "
                            "duplicates): a table without dates needs one row per key")
    notes: list[str] = []
    label = text[args.label]
    values = sorted(v for v in label.unique().tolist() if v != "")
    number = _numeric(label)
    task = args.task
    if len(values) < 2:
        raise ImportRefused(f"label {args.label!r} holds {len(values)} distinct value(s) ({', '.join(values)}): "
                            "nothing to learn")
    if args.threshold is not None:
        if number is None:
            text_values = [repr(v) for v in values if _numeric_one(v) is None][:5]
            raise ImportRefused(f"--threshold needs a numeric label; {args.label!r} holds text (e.g. "
                                f"{', '.join(text_values)})")
        task = "binary_classification"
    if task == "auto":
        task = "binary_classification" if len(values) == 2 or args.positive else "regression" if number is not None else ""
        if not task:
            raise ImportRefused(f"label {args.label!r} has {len(values)} distinct values ({', '.join(values[:6])}"
                                f"{' ...' if len(values) > 6 else ''}): give --positive VALUE (repeatable) for a "
                                "binary task, or a numeric label for regression")
    spec_label: dict = {"column": args.label, "delay_days": args.label_delay}
    if task == "binary_classification" and args.threshold is not None:
        spec_label["threshold"] = args.threshold
    elif task == "binary_classification":
        if args.positive:
            spelled = {_canon(v): v for v in values}
            unknown = [p for p in args.positive if _canon(p) not in spelled]
            if unknown:
                raise ImportRefused(f"--positive {', '.join(unknown)} is not a value of {args.label!r} "
                                    f"({', '.join(values[:10])}{' ...' if len(values) > 10 else ''})")
            positive = [spelled[_canon(p)] for p in args.positive]
            if len(values) - len(positive) > MAX_CATEGORIES // 5:
                raise ImportRefused(f"label {args.label!r} has {len(values)} values: list them all under "
                                    "--positive, or use --threshold for a numeric label")
        else:
            if len(values) != 2:
                raise ImportRefused(f"label {args.label!r} has {len(values)} distinct values: give --positive")
            counts = label[label != ""].value_counts()
            positive = [counts.index[-1]]  # the rarer value
        negative = [v for v in values if v not in positive]
        spec_label.update(positive=positive if len(positive) > 1 else positive[0],
                          negative=negative if len(negative) > 1 else negative[0])
    elif number is None:
        bad = [v for v in values if _numeric_one(v) is None]
        raise ImportRefused(f"label {args.label!r} holds {len(bad)} value(s) that are not numbers (e.g. "
                            f"{', '.join(repr(v) for v in bad[:5])}): regression needs a number")
    columns: dict = {}
    numeric, categorical = [], []
    for col in df.columns:
        if col == args.label:
            continue
        if col == args.key:
            columns[col] = {"type": "string", "nullable": False, "unique": not args.date_column}
            continue
        if col == args.date_column:
            parse_times(df[col], col, args.source, args.date_format)
            columns[col] = {"type": "timestamp", "nullable": False}
            continue
        spec, kind = column_spec(text[col], col, notes)
        if kind == "numeric" and spec["type"] == "int" and text[col].nunique() == len(text) > 20:
            notes.append(f"{col}: a different whole number in every row (an id?): kept out of the features")
            kind = None
        columns[col] = spec
        if kind == "numeric":
            numeric.append(col)
        elif kind == "categorical":
            categorical.append(col)
    if args.date_column:
        times = parse_times(df[args.date_column], args.date_column, args.source, args.date_format)
        per_day = pd.Series(times.dt.date).value_counts()
        rows_a_day, fewest = int(per_day.median()), int(per_day.min())
    else:
        rows_a_day = fewest = len(df) // max(1, args.days or 30)
    doc: dict = {
        "name": name,
        "description": f"Drafted from {Path(args.source).name if not args.sql else 'a SQL query'}: review me.",
        "owner": "ml-platform",
        "task": task,
        "entity": {"name": args.entity or name.rstrip("s"), "key": args.key},
        "batches": {"dataset": args.dataset,
                    "timestamp": {"column": args.date_column} if args.date_column else "interval_start"},
        "schema": {"row_count": {"min": max(1, fewest // 2)}, "columns": columns},
        "label": spec_label,
        "features": {"numeric": numeric, "categorical": categorical},
        "model": {"registered_name": name, "family": "hist_gradient_boosting", "params": {"random_state": 42},
                  "split": {"holdout_days": 2, "validation_days": 2}, "min_train_rows": 100},
        "evaluation": {"primary_metric": "roc_auc" if task == "binary_classification" else "rmse"},
        "drift": {"min_samples": max(20, min(500, rows_a_day // 2))},
    }
    if args.date_column:
        first = times.min()
        doc["schedules"] = {"start_date": first.date().isoformat()}
    if not numeric and not categorical:
        raise ImportRefused(f"{args.source}: no column besides the key, label and date can be a feature")
    UseCase.model_validate({**doc, "source_file": "<draft>"})  # a draft that does not load is a bug here
    return {"doc": doc, "notes": notes, "rows_a_day": rows_a_day}


def draft_command(args):
    out = draft(args)
    text = yaml.safe_dump(out["doc"], sort_keys=False, width=110, allow_unicode=True, default_flow_style=None)
    header = [f"# Drafted by python -m pavedml draft-use-case from {args.source if not args.sql else 'SQL'}: review "
              "every key (README: Bring your own data).",
              f"# About {out['rows_a_day']} rows a day; drift.min_samples and schema.row_count.min are sized to that."]
    header += [f"# note: {n}" for n in out["notes"]]
    body = "\n".join(header) + "\n" + text
    if args.out:
        path = Path(args.out)
        if path.exists() and not args.force:
            raise ConfigError(f"{path} exists: pass --force to overwrite it")
        if path.stem != args.name:
            raise ConfigError(f"--out {path}: a use-case file is named after its use case ({args.name}.yaml)")
        from pavedml import storage

        with storage.atomic_path(path, suffix=".yaml") as tmp:  # the DAG processor reads this folder
            Path(tmp).write_text(body)
        print(f"wrote {path}: {len(out['doc']['schema']['columns'])} columns, task {out['doc']['task']}, "
              f"{len(out['doc']['features']['numeric'])} numeric and {len(out['doc']['features']['categorical'])} "
              "categorical features")
    else:
        print(body, end="")
    return None
