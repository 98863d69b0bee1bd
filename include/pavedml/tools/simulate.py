"""Demo data: replay the bundled Telco sample as daily landing batches, and synthetic scale batches.

The Telco sample has no timestamps, so each simulated day is a seeded random slice of its
customers, written as that day's customer snapshot. Churn labels for day D land ``label.delay_days``
later, in the labels partition of day D + delay. Optional injections: drift (shifted numeric
distributions from a given day) and bad batches (one per ``KIND@YYYY-MM-DD``).
"""

from __future__ import annotations

import io
import logging
from datetime import date, timedelta
from pathlib import Path

from pavedml import storage
from pavedml.config import get_use_case
from pavedml.errors import ConfigError
from pavedml.layout import Layout
from pavedml.results import SimulateResult
from pavedml.settings import get_settings

log = logging.getLogger(__name__)
SAMPLE_CSV = Path(__file__).resolve().parents[1] / "sample_data" / "telco_churn.csv"
BAD_KINDS = ("missing_column", "wrong_type", "null_key", "duplicate_keys", "empty_file", "unparseable",
             "out_of_range", "unknown_category")


def load_sample():
    import pandas as pd

    # Everything as text, exactly as delivered (keeps the TotalCharges " " quirk for ingest to normalize).
    return pd.read_csv(SAMPLE_CSV, dtype=str, keep_default_na=False)


def apply_drift(df, columns: list[str], rng):
    """Shift named numeric columns (as text) the way a changed customer mix would."""
    import numpy as np
    import pandas as pd

    df = df.copy()
    for col in columns:
        values = pd.to_numeric(df[col].str.strip().replace("", None), errors="coerce")
        if col == "tenure":
            shifted = np.floor(values * 0.35).astype("Int64")  # many more new customers
            df[col] = shifted.astype(str)
        else:
            shifted = values * 1.4 + rng.normal(10, 5, len(values))
            df[col] = shifted.round(2).map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    return df


def corrupt(df, kind: str, rng):
    """Return (text bytes of a bad batch, description)."""
    df = df.copy()
    n = max(1, len(df) // 20)
    idx = rng.choice(len(df), n, replace=False)
    if kind == "missing_column":
        return _csv(df.drop(columns=["Contract"])), "column Contract removed"
    if kind == "wrong_type":
        df.loc[df.index[idx], "MonthlyCharges"] = "n/a"
        return _csv(df), f"{n} MonthlyCharges values replaced by 'n/a'"
    if kind == "null_key":
        df.loc[df.index[idx], "customerID"] = ""
        return _csv(df), f"{n} customerID values blanked"
    if kind == "duplicate_keys":
        import pandas as pd

        return _csv(pd.concat([df, df.iloc[idx]])), f"{n} rows duplicated"
    if kind == "empty_file":
        return b"", "zero-byte file"
    if kind == "unparseable":
        return b"\x89PNG\r\n\x1a\n\x00\xff\xfe" + bytes(range(256)) * 4, "binary garbage"
    if kind == "out_of_range":
        df.loc[df.index[idx], "tenure"] = "-5"
        return _csv(df), f"{n} tenure values set to -5"
    if kind == "unknown_category":
        df.loc[df.index[idx], "Contract"] = "Three year"
        return _csv(df), f"{n} Contract values set to 'Three year'"
    raise ConfigError(f"unknown bad-batch kind {kind!r}; known: {', '.join(BAD_KINDS)}")


def _csv(df) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()


def _parse_bad(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        kind, _, day = spec.partition("@")
        if kind not in BAD_KINDS or not day:
            raise ConfigError(f"--bad {spec!r}: expected KIND@YYYY-MM-DD with KIND one of {', '.join(BAD_KINDS)}")
        date.fromisoformat(day)
        out[day] = kind
    return out


IMPORT_HINT = ("land your own history with: python -m pavedml import-history --use-case {name} --from FILE "
               "(--date-column COLUMN | --days N) (README: \"Bring your own data\")")


def sample_columns() -> list[str]:
    with open(SAMPLE_CSV, encoding="utf-8") as fh:
        return fh.readline().strip().split(",")


def check_simulatable(uc) -> None:
    """The simulator replays the Telco sample: a use case whose entity key or label it does not hold
    (or that is not a daily-snapshot classifier) is refused in one line that names the supported
    way in (``import-history``)."""
    have = set(sample_columns())
    # the entity key and the label are what it cannot do without; another schema column it lacks
    # makes a batch the pipeline's validation refuses, as a delivery without that column would be
    missing = [c for c in (uc.entity.key, uc.label.column) if c not in have]
    if missing or uc.task != "binary_classification" or uc.timestamp_column:
        why = (f"needs column(s) {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''} it does not have"
               if missing else "is not a Telco-shaped daily snapshot classifier")
        raise ConfigError(f"simulate replays the bundled Telco sample and use case {uc.name} {why}; "
                          + IMPORT_HINT.format(name=uc.name))


def simulate(use_case: str, start: date, days: int, rows_per_day: int = 2000, drift_from: date | None = None,
             drift_columns: tuple[str, ...] = ("MonthlyCharges", "tenure"), bad: dict[str, str] | None = None,
             seed: int = 7) -> SimulateResult:
    import numpy as np

    from pavedml.tools.importer import has_imports

    uc = get_use_case(use_case)
    check_simulatable(uc)
    layout = Layout.for_use_case(uc.name, get_settings())
    if has_imports(layout):
        raise ConfigError(f"use case {uc.name} has imported history ({layout.imports_log}): simulate would overwrite "
                          "its landing files; run make demo USE_CASE=" + uc.name + " on it, or simulate another "
                          "use case")
    sample = load_sample()
    label_col = uc.label.column
    bad = bad or {}
    written: list[str] = []
    injected: dict[str, str | list[str]] = {}
    rows_per_day = min(rows_per_day, len(sample))
    for i in range(days):
        day = start + timedelta(days=i)
        ds = day.isoformat()
        rng = np.random.default_rng([seed, day.toordinal()])
        batch = sample.iloc[np.sort(rng.choice(len(sample), rows_per_day, replace=False))]
        if drift_from and day >= drift_from:
            batch = apply_drift(batch, list(drift_columns), rng)
            drifted = injected.setdefault("drift", [])
            assert isinstance(drifted, list)
            drifted.append(ds)
        features = batch.drop(columns=[label_col])
        if ds in bad:
            payload, what = corrupt(features, bad[ds], rng)
            injected[ds] = f"{bad[ds]}: {what}"
        else:
            payload = _csv(features)
        storage.write_bytes(layout.landing_file(uc.batches.dataset, ds, "csv"), payload)
        labels = batch[[uc.entity.key, label_col]].assign(snapshot_date=ds)
        known = (day + timedelta(days=uc.label.delay_days)).isoformat()
        storage.write_bytes(layout.landing_file(uc.label.dataset, known, "csv"), _csv(labels))
        written.append(ds)
    log.info("simulated %d days of %s into %s", len(written), uc.name, layout.landing)
    return SimulateResult(step="simulate", use_case=uc.name, ds=None, days=written, landing=layout.landing,
                          injected=injected)


def simulate_command(args) -> SimulateResult:
    return simulate(
        args.use_case, date.fromisoformat(args.start), args.days, args.rows_per_day,
        date.fromisoformat(args.drift_from) if args.drift_from else None,
        tuple(c.strip() for c in args.drift_columns.split(",") if c.strip()), _parse_bad(args.bad), args.seed,
    )


def synthetic_batch(use_case: str, rows: int, seed: int = 11):
    """A synthetic DataFrame (text-free, native dtypes) with the use case's schema, for benchmarks."""
    import numpy as np
    import pandas as pd

    uc = get_use_case(use_case)
    rng = np.random.default_rng(seed)
    data = {}
    for name, spec in uc.schema_.columns.items():
        if name == uc.entity.key:
            data[name] = pd.Series(np.arange(rows)).map("S{:08d}".format)
        elif spec.allowed is not None:
            data[name] = rng.choice(np.array(spec.allowed, dtype=object), rows)
        elif spec.type == "int":
            data[name] = rng.integers(int(spec.min or 0), int(spec.max or 100) + 1, rows)
        elif spec.type == "float":
            lo, hi = spec.min or 0.0, min(spec.max or 1000.0, (spec.min or 0.0) + 200.0)
            data[name] = rng.uniform(lo, hi, rows).round(2)
        else:
            data[name] = rng.choice(np.array(["a", "b", "c"], dtype=object), rows)
    df = pd.DataFrame(data)
    if "TotalCharges" in df and "tenure" in df and "MonthlyCharges" in df:
        df["TotalCharges"] = (df["tenure"] * df["MonthlyCharges"]).round(2)
    return df


def generate_scale_command(args) -> SimulateResult:
    uc = get_use_case(args.use_case)
    df = synthetic_batch(uc.name, args.rows, args.seed)
    layout = Layout.for_use_case(uc.name, get_settings())
    uri = layout.landing_file(uc.batches.dataset, args.ds, args.format)
    buf = io.BytesIO()
    if args.format == "parquet":
        df.to_parquet(buf, index=False)
    else:
        df.to_csv(buf, index=False)
    storage.write_bytes(uri, buf.getvalue())
    return SimulateResult(step="generate_scale", use_case=uc.name, ds=args.ds, days=[args.ds], landing=uri,
                          injected={"rows": args.rows})
