"""build_training_set and train_challenger.

Labels (entity, label timestamp, label) are joined point-in-time with Feast historical features:
a feature row is used only if its timestamp is at or before the label's timestamp (and within the
feature view's ttl). A label's timestamp is its ``event_timestamp`` when the labels file has one
(use cases whose batches carry an event-time column), else the start of its ``snapshot_date``; its
value is the task's target (:func:`label_values`: 0/1 for a classifier, the number for a regressor). The split is by time: the most recent labelled snapshot days are the holdout,
the days before them the validation set, the rest the training set. Everything a run produces
lives under ``training/<run key>/`` so a retry of the same DAG run reuses it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
from datetime import UTC, datetime, timedelta

from pavedml import storage
from pavedml.config import UseCase
from pavedml.context import StepContext
from pavedml.errors import ConfigError, TrainingDataError
from pavedml.layout import DATASET_FILE, Layout, split_file
from pavedml.metrics import LABEL
from pavedml.results import StepResult

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "holdout")
LABEL_TS = "event_timestamp"
#: Families fitted on standardized numeric features.
LINEAR_FAMILIES = ("logistic_regression", "ridge")
#: A time of day followed by a zone (``12:00Z``, ``12:00:00.5+02:00``): a zone-aware ISO 8601 time.
ZONED_TIME = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def frame_digest(df) -> str:
    """Order-sensitive content digest of a DataFrame (independent of the Parquet writer)."""
    import pandas as pd

    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()


def load_labels(ctx: StepContext, window_days: int):
    """Labels known by the end of ``ds``: every labels partition dt <= ds within the window, as
    (entity key, label timestamp, :data:`LABEL`) rows (see :func:`label_values` and
    :func:`label_timestamps`), and the files they came from."""
    import pandas as pd

    from pavedml.steps.validation import validate_labels

    uc = ctx.use_case
    ds = ctx.ds
    frames, sources = [], []
    for offset in range(window_days + uc.label.delay_days + 1):
        day = ds - timedelta(days=offset)
        for fmt in ("csv", "parquet"):
            uri = ctx.layout.landing_file(uc.label.dataset, day.isoformat(), fmt)
            if storage.exists(uri):
                data = storage.read_bytes(uri)
                df = pd.read_parquet(io.BytesIO(data)) if fmt == "parquet" else pd.read_csv(io.BytesIO(data), dtype=str)
                validate_labels(ctx, uri, data, df)  # stops (and quarantines) on a broken contract
                out = pd.DataFrame({uc.entity.key: df[uc.entity.key].astype(str),
                                    LABEL_TS: label_timestamps(df, uri),
                                    LABEL: label_values(uc, df[uc.label.column], uri)}, index=df.index)
                frames.append(out)
                sources.append({"uri": uri, "sha256": hashlib.sha256(data).hexdigest()})
                break
    if not frames:
        raise TrainingDataError(
            f"no labels known by {ds} in the last {window_days} days under {ctx.layout.landing}/{uc.label.dataset}; "
            + labels_found(ctx),
            details={"next": "trigger the run with a logical date on or after the newest labels, widen "
                             "training_window_days, or wait for labels to arrive"})
    labels = pd.concat(frames, ignore_index=True)
    oldest = pd.Timestamp(ds - timedelta(days=window_days), tz="UTC")
    labels = labels[labels[LABEL_TS] >= oldest]
    # partitions were read newest first: a label delivered again later (a correction) wins
    labels = labels.drop_duplicates([uc.entity.key, LABEL_TS], keep="first")
    return labels.sort_values([LABEL_TS, uc.entity.key]).reset_index(drop=True), sources


def label_values(uc: UseCase, column, where: str = "the labels"):
    """The label column as training targets. Binary classification: 1 for a value among
    ``label.positive`` (compared as text, as the labels suite compares), else 0; or, with
    ``label.threshold``, 1 when the numeric label is ``>= threshold``. Regression: the numeric
    value (float64). A value that is not a number where one is needed is a TrainingDataError
    naming ``where`` (the file) and the column."""
    import numpy as np
    import pandas as pd

    label = uc.label
    if uc.is_regression or label.threshold is not None:
        numeric = pd.to_numeric(column, errors="coerce").astype("float64")
        # a regression target may be empty here (build_training_set names the count); a threshold
        # label may not (an empty label would silently count as a negative)
        bad = column[numeric.isna() & (column.notna() | (label.threshold is not None))]
        if len(bad):
            examples = ", ".join(repr(v) for v in bad.astype(str).unique()[:5])
            raise TrainingDataError(
                f"{where}: label column {label.column!r} holds {len(bad)} value(s) that are not numbers "
                f"(e.g. {examples}); a {'regression target' if uc.is_regression else 'label.threshold'} "
                "needs numeric labels",
                details={"next": f"re-deliver the labels with a numeric {label.column}, then clear build_training_set"})
        if label.threshold is None:  # regression
            return numeric.to_numpy()
        return (numeric.to_numpy() >= label.threshold).astype("int64")
    positives = [str(v) for v in label.positive_values]
    return np.asarray(column.astype(str).isin(positives), dtype="int64")


def label_timestamps(df, where: str = "the labels"):
    """Each label's time (UTC): its ``event_timestamp`` (ISO 8601, the row's own event time, for
    use cases whose batches carry a timestamp column) when the file has one, else the start of its
    ``snapshot_date``."""
    import pandas as pd

    column = LABEL_TS if LABEL_TS in df.columns else "snapshot_date"
    values = df[column]
    try:
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            return pd.Series(pd.to_datetime(values, utc=True), index=df.index)
        # times with and without a zone parsed apart: pandas applies the first offset it meets to
        # the zone-less times after it
        text = values.astype("string").str.strip()
        aware = text.str.contains(ZONED_TIME, regex=True).fillna(False).astype(bool)
        out = pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]")
        if aware.any():
            out[aware] = pd.to_datetime(text[aware], utc=True, format="ISO8601")
        if (~aware).any():
            out[~aware] = pd.to_datetime(text[~aware], format="ISO8601").dt.tz_localize("UTC")
        return out
    except (ValueError, TypeError) as exc:
        raise TrainingDataError(f"{where}: column {column!r} is not an ISO 8601 time: {str(exc).splitlines()[0]}",
                                details={"next": f"re-deliver the labels with {column} as ISO 8601 "
                                                 "(2025-01-31 or 2025-01-31T12:00:00Z)"}) from None


def label_days(ctx: StepContext) -> list[str]:
    """The ``dt=`` partitions of the labels dataset in the landing zone (sorted)."""
    prefix = storage.join(ctx.layout.landing, ctx.use_case.label.dataset)
    days = {m.group(1) for f in storage.list_prefix(prefix) if (m := re.search(r"/dt=(\d{4}-\d{2}-\d{2})/", f))}
    return sorted(days)


def labels_found(ctx: StepContext) -> str:
    """What is there instead, for an error: "labels known: 12 days, 2025-01-03 .. 2025-01-14"."""
    days = label_days(ctx)
    if not days:
        return f"no labels have landed at all under {storage.join(ctx.layout.landing, ctx.use_case.label.dataset)}"
    return f"labels known: {len(days)} day(s), oldest {days[0]}, newest {days[-1]}"


def point_in_time_join(uc: UseCase, entity_df, layout: Layout, settings=None):
    """Feast historical features for every label row (rows without a feature row at or before
    their timestamp are reported and dropped: they cannot be trained on)."""
    import numpy as np
    import pandas as pd

    from pavedml.steps.featurestore import get_store

    key = uc.entity.key
    store, defs = get_store(uc, settings=settings, layout=layout)
    features_root = layout.features_root
    known = set()
    if features_root.exists():
        import pyarrow.dataset as pads

        table = pads.dataset(str(features_root), format="parquet", partitioning="hive").to_table(columns=[key])
        known = set(table.column(key).to_pylist())
    e = entity_df.reset_index(drop=True).assign(__row_id=np.arange(len(entity_df)))
    # Feast's file store fails on keys absent from every partition: ask only for known keys.
    sub = e[e[key].isin(known)]
    if sub.empty:
        return e.iloc[0:0], len(e)
    hist = store.get_historical_features(entity_df=sub, features=defs["feature_service"]).to_df()
    joined = e.merge(hist.drop(columns=[c for c in e.columns if c != "__row_id"]), on="__row_id", how="inner")
    joined = joined.sort_values("__row_id").drop(columns="__row_id").reset_index(drop=True)
    joined = joined.dropna(subset=[f for f in uc.feature_columns if f in uc.features.non_null], how="any")
    if uc.evaluation_columns:
        joined = join_evaluation_columns(uc, joined, layout)
    return pd.DataFrame(joined), len(e) - len(joined)


def join_evaluation_columns(uc: UseCase, labels, layout: Layout):
    """``labels`` with the use case's evaluation-only columns (not model features: fairness groups,
    slices) from the offline partitions, point in time like Feast's join: each row gets the values
    of its entity's newest partition row at or before its timestamp (within the feature ttl). A row
    without one, or a partition written before the column was configured, gets ``__missing__``."""
    import pandas as pd
    import pyarrow.parquet as pq

    key, cols = uc.entity.key, uc.evaluation_columns
    frames = []
    times = pd.to_datetime(labels[LABEL_TS], utc=True)
    first = (times.min() - pd.Timedelta(days=uc.features.ttl_days)).date().isoformat() if len(labels) else ""
    for part in sorted(layout.features_root.glob("dt=*/*.parquet")):
        day = part.parent.name.removeprefix("dt=")
        if day < first:
            continue  # older than any label row can reach (a later partition may hold late, earlier rows)
        have = [c for c in cols if c in pq.read_schema(part).names]
        df = pq.read_table(part, columns=[key, "event_timestamp", *have]).to_pandas()
        frames.append(df.assign(__dt=day, **{c: "__missing__" for c in cols if c not in have}))
    if not frames:
        return labels.assign(**{c: "__missing__" for c in cols})
    side = pd.concat(frames, ignore_index=True)
    side["event_timestamp"] = pd.to_datetime(side["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    side[key] = side[key].astype(str)
    left = labels.reset_index(drop=True).assign(__row=lambda d: range(len(d)))
    left["__ts"] = pd.to_datetime(left[LABEL_TS], utc=True).astype("datetime64[ns, UTC]")
    left[key] = left[key].astype(str)
    # equal times: the row of the latest partition last, so the backward match takes it (a redelivery)
    side = side.sort_values(["event_timestamp", "__dt"], kind="stable").drop(columns="__dt")
    merged = pd.merge_asof(left.drop(columns=[c for c in cols if c in left.columns]).sort_values("__ts", kind="stable"),
                           side.rename(columns={"event_timestamp": "__ts"}),
                           on="__ts", by=key, direction="backward", tolerance=pd.Timedelta(days=uc.features.ttl_days))
    merged[cols] = merged[cols].fillna("__missing__")
    return merged.sort_values("__row").drop(columns=["__row", "__ts"]).reset_index(drop=True)


def time_split(df, uc: UseCase):
    days = sorted(df[LABEL_TS].dt.normalize().unique())
    need = uc.model.split.holdout_days + uc.model.split.validation_days + 1
    if len(days) < need:
        raise TrainingDataError(
            f"only {len(days)} labelled snapshot day(s) in the window; the split needs at least {need} "
            f"(holdout_days={uc.model.split.holdout_days}, validation_days={uc.model.split.validation_days}, 1 to train)",
            details={"next": "widen training_window_days or wait for more labelled days"})
    holdout_from = days[-uc.model.split.holdout_days]
    validation_from = days[-(uc.model.split.holdout_days + uc.model.split.validation_days)]
    day = df[LABEL_TS].dt.normalize()
    return {"train": df[day < validation_from], "validation": df[(day >= validation_from) & (day < holdout_from)],
            "holdout": df[day >= holdout_from]}


def _snapshot_hashes(ctx: StepContext, days) -> dict[str, str]:
    out = {}
    for d in days:
        src = ctx.layout.features_source(d)
        if src.exists():
            out[d] = storage.read_json(str(src))["sha256"]
    return out


def build_training_set(ctx: StepContext) -> StepResult:
    uc = ctx.use_case
    window = ctx.params.training_window_days
    out_dir = ctx.layout.training_dir(ctx.run_key)
    manifest_path = ctx.layout.training_manifest(ctx.run_key)
    if manifest_path.exists():
        log.info("training set of this DAG run already built: %s", out_dir)
        return _dataset_result(ctx, storage.read_json(str(manifest_path)))
    labels, label_sources = load_labels(ctx, window)
    joined, dropped = point_in_time_join(uc, labels, ctx.layout, ctx.settings)
    if joined.empty:
        feature_days = sorted(p.name.removeprefix("dt=") for p in ctx.layout.features_root.glob("dt=*"))
        have = (f"features built for {len(feature_days)} day(s), {feature_days[0]} .. {feature_days[-1]}"
                if feature_days else "no features built yet")
        raise TrainingDataError(f"none of the {len(labels)} labels in the window has features at or before its time "
                                f"({have}; {labels_found(ctx)})",
                                details={"next": "run the feature pipeline for the labelled days first"})
    if uc.is_regression:
        import numpy as np

        target = joined[LABEL].to_numpy(dtype="float64")
        bad = int((~np.isfinite(target)).sum())
        if bad:
            raise TrainingDataError(f"{bad} of {len(joined)} label rows have no finite {uc.label.column} "
                                    "(empty, NaN or infinite): a regression target must be a number",
                                    details={"next": f"re-deliver those labels with a numeric {uc.label.column}"
                                                     ", then clear build_training_set"})
    else:
        classes = sorted(joined[LABEL].unique().tolist())
        if len(classes) < 2:
            raise TrainingDataError(f"the training window holds a single class ({classes[0]}) in {len(joined)} rows; "
                                    "a classifier needs both", details={"next": "widen training_window_days"})
    try:
        splits = time_split(joined, uc)
    except TrainingDataError as err:
        err.message = f"{err.message}; {labels_found(ctx)}"
        raise
    for name, part in splits.items():
        if part.empty:
            raise TrainingDataError(f"the {name} split holds no rows")
        if not uc.is_regression and part[LABEL].nunique() < 2:
            raise TrainingDataError(f"the {name} split ({len(part)} rows) does not hold both classes")
    if len(splits["train"]) < uc.model.min_train_rows:
        raise TrainingDataError(f"only {len(splits['train'])} training rows; model.min_train_rows is "
                                f"{uc.model.min_train_rows}")
    days = sorted({d.date().isoformat() for d in joined[LABEL_TS].dt.normalize()})
    manifest = {"rows": {k: len(v) for k, v in splits.items()}, "dropped_without_features": int(dropped),
                "labels": label_sources, "window_days": window, "snapshot_days": days,
                "feature_snapshots": _snapshot_hashes(ctx, days),
                "ranges": {k: [str(v[LABEL_TS].min()), str(v[LABEL_TS].max())] for k, v in splits.items()},
                ("label_mean" if uc.is_regression else "positive_rate"):
                    {k: round(float(v[LABEL].mean()), 4) for k, v in splits.items()},
                "digests": {}, "dag_run": ctx.run_id, "built_at": datetime.now(UTC).isoformat()}
    with storage.atomic_dir(out_dir) as tmp:
        for name, part in splits.items():
            part = part.reset_index(drop=True)
            part.to_parquet(tmp / split_file(name), index=False)
            manifest["digests"][name] = frame_digest(part)
        storage.write_json(str(tmp / DATASET_FILE), manifest)
    if dropped:
        log.warning("%d label rows had no feature row at or before their timestamp and were left out", dropped)
    log.info("training set: %s rows (train/validation/holdout), digests %s", manifest["rows"],
             {k: v[:12] for k, v in manifest["digests"].items()})
    return _dataset_result(ctx, manifest)


def _dataset_result(ctx: StepContext, manifest: dict) -> StepResult:
    from pavedml.results import DatasetResult

    return DatasetResult(step="build_training_set", use_case=ctx.use_case.name, ds=ctx.ds_iso,
                         path=str(ctx.layout.training_dir(ctx.run_key)), rows=manifest["rows"],
                         digests=manifest["digests"], dropped_without_features=manifest["dropped_without_features"])


def load_split(ctx: StepContext, name: str):
    import pandas as pd

    path = ctx.layout.training_split(ctx.run_key, name)
    if not path.exists():
        raise TrainingDataError(f"no {name} split at {path}", details={"next": "run build_training_set first"})
    return pd.read_parquet(path)


# -- model ------------------------------------------------------------------------------------------
def check_hyperparameters(uc: UseCase, estimator, overrides: dict) -> None:
    """scikit-learn's own parameter check, before any data is read or fitted: a wrong type or
    value (``max_depth: "deep"`` typed into the trigger form) is bad input (exit 3, no retry)
    named by parameter, value and where it came from, not a traceback minutes into the fit."""
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        estimator._validate_params()
    except InvalidParameterError as exc:
        text = str(exc)
        name = text.split("'", 2)[1] if text.count("'") >= 2 else "?"
        where = "the trigger form's hyperparameters" if name in overrides else f"model.params of {uc.name}"
        raise ConfigError(f"hyper-parameter {name}={overrides.get(name, uc.model.params.get(name))!r} from {where} "
                          f"is invalid for {uc.model.family}: {text}",
                          details={"next": f"fix {name} in {where}, then trigger again"}) from None


def make_pipeline(uc: UseCase, overrides: dict | None = None):
    """Preprocessing + the estimator named in the config (hyper-parameters merged with overrides)."""
    import importlib

    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    target, allowed = uc.families[uc.model.family]
    params = {**uc.model.params, **(overrides or {})}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown hyper-parameter(s) {', '.join(unknown)} for {uc.model.family}")
    module, cls = target.split(":")
    estimator = getattr(importlib.import_module(module), cls)(**params)
    check_hyperparameters(uc, estimator, overrides or {})
    numeric = [("impute", SimpleImputer(strategy="median"))]
    if uc.model.family in LINEAR_FAMILIES:
        numeric.append(("scale", StandardScaler()))
    pre = ColumnTransformer([
        ("num", Pipeline(numeric), uc.numeric_features),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False, min_frequency=5), uc.categorical_features),
    ], verbose_feature_names_out=False)
    return Pipeline([("preprocess", pre), ("model", estimator)]), params


def drift_reference(uc: UseCase, train, pipeline=None) -> tuple[dict, object]:
    """The champion-to-be's drift reference (quantile bins and proportions of the training data, see
    :func:`pavedml.drift.build_reference`; with the fitted ``pipeline`` also the distribution of its
    output on the training split under ``"prediction"``, :func:`pavedml.drift.build_prediction_reference`)
    and a sample of its training features for people's reports."""
    from pavedml.drift import PREDICTION, build_prediction_reference, build_reference
    from pavedml.metrics import model_scores

    reference = build_reference(train, uc.numeric_features, uc.categorical_features, bins=uc.drift.bins)
    if pipeline is not None:
        scores = model_scores(pipeline, train[uc.feature_columns], uc.task)
        reference[PREDICTION] = build_prediction_reference(scores, bins=uc.drift.bins)
    sample = train[uc.feature_columns].sample(min(len(train), uc.drift.report_sample_rows), random_state=0)
    return reference, sample


def train_challenger(ctx: StepContext):
    """Fit the configured pipeline on the run's training split, compute its validation and holdout
    metrics and drift reference, and log and register it in MLflow as the challenger (a retry of
    the same DAG run reuses the version it registered)."""
    from pavedml.adapters import tracking
    from pavedml.metrics import split_metrics

    client, _ = tracking.setup(ctx)  # fail fast (TrackingUnavailableError, exit 1) before minutes of fitting
    uc = ctx.use_case
    overrides = ctx.params.hyperparameters
    make_pipeline(uc, overrides)  # checks the hyper-parameters before the data is read
    train, validation, holdout = (load_split(ctx, s) for s in SPLITS)
    manifest = storage.read_json(str(ctx.layout.training_manifest(ctx.run_key)))
    pipeline, params = make_pipeline(uc, overrides)
    started = time.perf_counter()
    pipeline.fit(train[uc.feature_columns], train[LABEL])
    fit_seconds = time.perf_counter() - started
    log.info("fitted %s on %d rows in %.1fs", uc.model.family, len(train), fit_seconds)
    started = time.perf_counter()
    reused = tracking.reuse_registered(ctx, client)
    if reused is not None:
        return reused
    metrics = split_metrics(pipeline, {"validation": validation, "holdout": holdout}, uc.feature_columns, uc.task)
    evaluate_seconds = time.perf_counter() - started
    reference, sample = drift_reference(uc, train, pipeline)
    return tracking.log_and_register(ctx, pipeline, params, manifest,
                                     {"train": train, "validation": validation, "holdout": holdout}, metrics,
                                     reference, sample, {"fit": fit_seconds, "evaluate": evaluate_seconds})
