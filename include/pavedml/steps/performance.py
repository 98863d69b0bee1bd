"""Realized performance: predictions joined with their labels once they land.

:func:`labelled_predictions` is the join (one scored day at a time, only the columns it needs):
a day's ``predictions/dt=<d>/part-0.parquet`` and the prediction service's answers on that day's
features (its log, :func:`served_rows`; an entity batch scoring also scored counts once) with the
labels that landed for it. Labels for
snapshot day ``d`` land in the landing-zone partition ``dt = d + label.delay_days`` but may come
later, so every partition ``dt`` in ``[d, d + delay_days + performance.lookback_days]`` (up to the
run's own day) is read
(each validated like training reads it: the labels suite, :func:`label_values`,
:func:`label_timestamps`) and a label is kept only when its time equals a prediction's
``event_timestamp`` for the same entity key. A label delivered twice (a correction in a later
partition) counts once: the newest partition wins.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from pavedml import storage
from pavedml.config import LOWER_IS_BETTER
from pavedml.context import StepContext
from pavedml.errors import SkipStep
from pavedml.layout import PART_FILE
from pavedml.metrics import LABEL, PREDICTION, PROBABILITY
from pavedml.results import PerformanceResult, RetrainRequestResult

log = logging.getLogger(__name__)
#: The columns :func:`labelled_predictions` returns besides the entity key.
JOINED_COLUMNS = ("event_timestamp", LABEL, "champion_version", "champion_score", "challenger_version",
                  "challenger_score", "served_by")
LABEL_TS = "event_timestamp"
#: Beside history.csv: which labels file holds labels of which times (see :class:`LabelsIndex`).
LABELS_INDEX = "labels_index.json"
#: Beside history.csv: the training-holdout metrics of each champion version measured (for the plot).
HOLDOUTS = "holdouts.json"


def label_partitions(ctx: StepContext, ds: date) -> list[str]:
    """The landing-zone labels files that may hold labels of scored day ``ds``: partitions ``dt`` in
    ``[ds, ds + delay_days + lookback_days]`` up to the run's own day (labels known by the end of
    it, as training reads them). Oldest partition first; per day the CSV, else the Parquet file."""
    uc = ctx.use_case
    out = []
    for offset in range(uc.label.delay_days + uc.performance.lookback_days + 1):
        if ds + timedelta(days=offset) > ctx.ds:
            break  # a run on ctx.ds knows the labels landed by then, never later ones (backfills, tests)
        day = (ds + timedelta(days=offset)).isoformat()
        for fmt in ("csv", "parquet"):
            uri = ctx.layout.landing_file(uc.label.dataset, day, fmt)
            if storage.exists(uri):
                out.append(uri)
                break
    return out


def read_labels_file(ctx: StepContext, uri: str, data: bytes | None = None):
    """One landed labels file as (entity key as text, label time UTC, :data:`LABEL`), validated by
    the labels suite (a broken contract stops the step and quarantines the file, naming it)."""
    import pandas as pd

    from pavedml.steps.training import label_values
    from pavedml.steps.validation import validate_labels

    uc = ctx.use_case
    data = storage.read_bytes(uri) if data is None else data
    try:
        df = (pd.read_parquet(io.BytesIO(data)) if uri.endswith(".parquet")
              else pd.read_csv(io.BytesIO(data), dtype=str))
    except Exception as exc:  # a truncated Parquet file, a CSV that is not one
        from pavedml.errors import TrainingDataError

        raise TrainingDataError(f"labels file {uri} is unreadable: {str(exc).splitlines()[0][:300]}",
                                details={"next": f"re-deliver {uri} whole, then clear measure_performance"}) from None
    validate_labels(ctx, uri, data, df)
    return pd.DataFrame({uc.entity.key: df[uc.entity.key].astype(str),
                         LABEL_TS: _label_times(df, uri),
                         LABEL: label_values(uc, df[uc.label.column], uri)},
                        index=df.index)


def _label_times(df, where: str):
    """:func:`label_timestamps`, parsed once per distinct value (a day's labels share a handful of
    snapshot dates or event times: parsing 1M equal strings costs seconds, mapping them does not)."""
    import pandas as pd

    from pavedml.steps.training import label_timestamps

    column = LABEL_TS if LABEL_TS in df.columns else "snapshot_date"
    if column not in df.columns:
        return _utc_ns(label_timestamps(df, where))  # its error names the missing column
    codes, uniques = pd.factorize(df[column], use_na_sentinel=False)
    parsed = _utc_ns(label_timestamps(pd.DataFrame({column: uniques}), where))
    return pd.Series(parsed.array.take(codes), index=df.index)


def _utc_ns(values):
    """A datetime Series as ``datetime64[ns, UTC]`` (zone-less times read as UTC)."""
    import pandas as pd

    values = pd.Series(values)
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        values = pd.to_datetime(values).dt.tz_localize("UTC")
    return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")


def read_scored_day(ctx: StepContext, ds: date):
    """The scored rows of ``ds`` with the columns the join needs, or None when the day is not
    scored. A partition scored before shadow scoring (no ``champion_score``) reads its
    ``probability`` (classifier) / ``prediction`` (regressor) with ``model_version`` as the
    champion's score, and has no challenger."""
    import pandas as pd
    import pyarrow.parquet as pq

    uc = ctx.use_case
    part = ctx.layout.predictions_partition(ds.isoformat())
    path = part / PART_FILE
    served = served_rows(ctx, ds)
    if not ctx.layout.predictions_scored(ds.isoformat()).exists() or not path.exists():
        return served
    names = set(pq.ParquetFile(path).schema_arrow.names)
    key = uc.entity.key
    if "champion_score" in names:
        wanted = [key, "event_timestamp", "champion_version", "champion_score", "challenger_version",
                  "challenger_score", "served_by"]
        df = pq.read_table(path, columns=[c for c in wanted if c in names]).to_pandas()
    else:
        score = PREDICTION if uc.is_regression else next(
            (c for c in (PROBABILITY, "churn_probability") if c in names), PROBABILITY)
        missing = [c for c in (key, "event_timestamp", score, "model_version") if c not in names]
        if missing:
            from pavedml.errors import DriftInputError

            raise DriftInputError(f"predictions {path} lack column(s) {', '.join(missing)}",
                                  details={"next": f"rerun {uc.dag_id('batch_scoring')} for {ds}"})
        df = pq.read_table(path, columns=[key, "event_timestamp", score, "model_version"]).to_pandas()
        df = df.rename(columns={score: "champion_score", "model_version": "champion_version"})
    for col in ("challenger_version", "challenger_score", "served_by"):
        if col not in df.columns:
            df[col] = None if col != "served_by" else "champion"
    df[key] = df[key].astype(str)
    df["event_timestamp"] = _utc_ns(df["event_timestamp"])
    df["champion_version"] = df["champion_version"].astype(str)
    df["champion_score"] = df["champion_score"].astype("float64")
    df["challenger_score"] = pd.to_numeric(df["challenger_score"], errors="coerce").astype("float64")
    df["challenger_version"] = df["challenger_version"].astype("object").where(df["challenger_version"].notna(),
                                                                                None)
    df.loc[df["challenger_version"].notna(), "challenger_version"] = \
        df.loc[df["challenger_version"].notna(), "challenger_version"].astype(str)
    if served is None:
        return df
    # an entity answered online for the same snapshot by the same champion counts once (batch first)
    both = pd.concat([df, served], ignore_index=True)
    return both.drop_duplicates([key, "event_timestamp", "champion_version"], keep="first").reset_index(drop=True)


def served_files(ctx: StepContext, ds: date) -> list:
    """The prediction service's log files holding answers on features of snapshot day ``ds``: among
    those served from ``ds`` up to the run's own day (a feature row is served until a newer one is
    materialized), within ``performance.lookback_days``, the ones whose ``event_timestamp`` range (the
    Parquet footer's statistics) reaches into that day, so a new file changes only the days it holds."""
    start = datetime.combine(ds, datetime.min.time(), UTC).timestamp()
    out = []
    for offset in range(ctx.use_case.performance.lookback_days + 1):
        day = ds + timedelta(days=offset)
        if day > ctx.ds:
            break
        for path in ctx.layout.served_files(day.isoformat()):
            span = _event_span(str(path), path.stat().st_size)
            if span is None or (span[0] < start + 86400 and span[1] >= start):
                out.append(path)
    return out


@lru_cache(maxsize=100_000)
def _event_span(path: str, size: int) -> tuple[float, float] | None:
    """(first, last) ``event_timestamp`` of a log file from its footer, or None when unknown. Log
    files are written once under unique names (``size`` keys the cache all the same)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    try:
        column = meta.schema.to_arrow_schema().get_field_index("event_timestamp")
        if column < 0:
            return None
        spans = []
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max:
                return None
            spans.append((stats.min, stats.max))
    except (KeyError, ValueError):
        return None
    if not spans:
        return None

    def seconds(value) -> float:
        return value.timestamp() if value.tzinfo else value.replace(tzinfo=UTC).timestamp()

    return min(seconds(lo) for lo, _ in spans), max(seconds(hi) for _, hi in spans)


def served_rows(ctx: StepContext, ds: date):
    """The prediction service's answers on features of snapshot day ``ds`` (their ``event_timestamp``
    on that day), in :func:`read_scored_day`'s columns, or None. Answers given with a default
    (unknown entity) or on imputed features are left out."""
    import pandas as pd
    import pyarrow.parquet as pq

    key = ctx.use_case.entity.key
    start = pd.Timestamp(ds, tz="UTC")
    end = start + pd.Timedelta(days=1)
    frames = []
    wanted = [key, "event_timestamp", "champion_version", "champion_score", "challenger_version",
              "challenger_score", "served_by", "default", "imputed", "served_at"]
    for path in served_files(ctx, ds):
        df = pq.read_table(path, columns=wanted).to_pandas()
        df = df[~(df["default"].astype(bool) | df["imputed"].astype(bool)) & df["event_timestamp"].notna()]
        if not len(df):
            continue
        df["event_timestamp"] = _utc_ns(df["event_timestamp"])
        df = df[(df["event_timestamp"] >= start) & (df["event_timestamp"] < end)]
        if len(df):
            frames.append(df.drop(columns=["default", "imputed"]))
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    df[key] = df[key].astype(str)
    df["champion_version"] = df["champion_version"].astype(str)
    df["champion_score"] = df["champion_score"].astype("float64")
    df["challenger_score"] = pd.to_numeric(df["challenger_score"], errors="coerce").astype("float64")
    df["challenger_version"] = df["challenger_version"].astype("object").where(df["challenger_version"].notna(), None)
    # one answer per entity, snapshot and champion: the latest served
    df = df.sort_values("served_at", kind="stable").drop(columns=["served_at"])
    return df.drop_duplicates([key, "event_timestamp", "champion_version"], keep="last").reset_index(drop=True)


def is_scored(ctx: StepContext, ds: date) -> bool:
    """Batch scoring scored day ``ds``, or the prediction service may have answered on its features."""
    return ctx.layout.predictions_scored(ds.isoformat()).exists() or bool(served_files(ctx, ds))


class LabelsIndex:
    """Which labels file holds labels of which times: ``uri -> {sha256, first, last}`` (the
    oldest and newest label time in it), kept in ``performance/labels_index.json`` so a file is
    parsed and validated once per content, and a day is joined only with the files whose label
    times reach into it. Within one run each file is read once for its hash."""

    def __init__(self, ctx: StepContext):
        self.ctx = ctx
        self.path = ctx.layout.performance_history.with_name(LABELS_INDEX)
        self.entries: dict[str, dict] = storage.read_json(str(self.path)) if self.path.exists() else {}
        self._sha: dict[str, str] = {}
        self._frames: dict[str, object] = {}

    def sha(self, uri: str) -> str:
        if uri not in self._sha:
            data = storage.read_bytes(uri)
            self._sha[uri] = hashlib.sha256(data).hexdigest()
            entry = self.entries.get(uri)
            if entry is None or entry["sha256"] != self._sha[uri]:
                labels = read_labels_file(self.ctx, uri, data)
                ts = labels[LABEL_TS]
                self.entries[uri] = {"sha256": self._sha[uri], "rows": len(labels),
                                     "first": ts.min().isoformat() if len(labels) else None,
                                     "last": ts.max().isoformat() if len(labels) else None}
                self._frames[uri] = labels  # the join of this day may read it next: parsed once
        return self._sha[uri]

    def files_for(self, ds: date) -> list[tuple[str, str]]:
        """(uri, sha256) of the labels files holding labels with a time on day ``ds`` (UTC)."""
        import pandas as pd

        start = pd.Timestamp(ds, tz="UTC")
        end = start + pd.Timedelta(days=1)
        out = []
        for uri in label_partitions(self.ctx, ds):
            sha = self.sha(uri)
            entry = self.entries[uri]
            if entry["first"] is not None and pd.Timestamp(entry["first"]) < end and pd.Timestamp(entry["last"]) >= start:
                out.append((uri, sha))
        relevant = {uri for uri, _ in out}
        self._frames = {uri: f for uri, f in self._frames.items() if uri in relevant}  # one day in memory
        return out

    def frame(self, uri: str):
        labels = self._frames.get(uri)
        if labels is None:
            labels = read_labels_file(self.ctx, uri)
            self._frames[uri] = labels
        return labels

    def save(self) -> None:
        storage.write_json(str(self.path), self.entries)


def labelled_predictions(ctx: StepContext, ds: date | str, index: LabelsIndex | None = None):
    """The scored rows of day ``ds`` that have a label, as a DataFrame with columns ``<entity key>``
    (text), ``event_timestamp`` (UTC), ``label`` (:data:`LABEL`: 0/1 or the number),
    ``champion_version``, ``champion_score``, ``challenger_version``, ``challenger_score`` (null
    without a shadow challenger) and ``served_by``; or None when the day is not scored or no label
    for it has landed. Labels are matched on (entity key, label time == ``event_timestamp``); a
    broken labels file stops with the error of the labels suite naming it."""
    import pandas as pd

    day = date.fromisoformat(ds) if isinstance(ds, str) else ds
    if not is_scored(ctx, day):
        return None
    index = index or LabelsIndex(ctx)
    files = index.files_for(day)
    if not files:
        return None
    scored = read_scored_day(ctx, day)
    if scored is None:
        return None
    key = ctx.use_case.entity.key
    times = scored["event_timestamp"]
    lo, hi = times.min(), times.max()
    frames = []
    for uri, _ in files:
        labels = index.frame(uri)
        labels = labels[(labels[LABEL_TS] >= lo) & (labels[LABEL_TS] <= hi)]
        if len(labels):
            frames.append(labels)
    if not frames:
        return None
    labels = pd.concat(frames, ignore_index=True).drop_duplicates([key, LABEL_TS], keep="last")
    joined = _join(scored, labels, key)
    if not len(joined):
        return None
    return joined[[key, *JOINED_COLUMNS]].reset_index(drop=True)


def _join(scored, labels, key: str):
    """Inner join on (key, label time == event_timestamp). Keys are matched by their 64-bit hash
    with the time as an integer (a merge on 1M Python strings costs seconds), then checked equal."""
    import pandas as pd

    def ints(df):
        return pd.DataFrame({"_k": pd.util.hash_array(df[key].to_numpy(dtype=object)),
                             "_t": df[LABEL_TS].to_numpy(dtype="datetime64[ns]").view("int64")})

    left, right = ints(scored), ints(labels)
    left["_l"] = range(len(left))
    right["_r"] = range(len(right))
    pairs = left.merge(right, on=["_k", "_t"], how="inner", validate="many_to_one")
    joined = scored.iloc[pairs["_l"].to_numpy()].reset_index(drop=True)
    matched = labels.iloc[pairs["_r"].to_numpy()].reset_index(drop=True)
    same = joined[key].to_numpy() == matched[key].to_numpy()
    joined[LABEL] = matched[LABEL].to_numpy()
    return joined[same]


def day_digest(ctx: StepContext, ds: date, files: list[tuple[str, str]]) -> str:
    """sha256 over the day's predictions file and the labels files holding its labels: a day whose
    digest is unchanged is not measured again (its metrics.json stays as it is)."""
    h = hashlib.sha256()
    path = ctx.layout.predictions_partition(ds.isoformat()) / PART_FILE
    if path.exists():
        h.update(b"predictions\0" + hashlib.sha256(path.read_bytes()).digest())
    for served in served_files(ctx, ds):  # log files are written once, under unique names
        h.update(f"\0served\0{served.name}\0{served.stat().st_size}".encode())
    for uri, sha in files:
        h.update(f"\0{uri}\0{sha}".encode())
    return h.hexdigest()


# -- the numeric core: realized metrics with confidence intervals (pure numpy / scikit-learn) -------

#: Rows a bootstrap resample draws at most (m-out-of-n; its standard error is scaled by sqrt(m/n)).
BOOTSTRAP_ROWS = 10_000
#: Bins of the expected calibration error (equal width on [0, 1]).
ECE_BINS = 10
CI_METHOD = {
    "roc_auc": "Hanley-McNeil (1982) analytic standard error",
    "brier": "normal interval of the mean per-row loss", "log_loss": "normal interval of the mean per-row loss",
    "mae": "normal interval of the mean absolute error",
    "rmse": "normal interval of the mean squared error (delta method), square-rooted",
    "mean_predicted": "normal interval of the mean", "observed_rate": "normal interval of the mean",
    "pr_auc": f"bootstrap standard error (m-out-of-n: at most {BOOTSTRAP_ROWS} rows a resample, scaled by "
              "sqrt(m/n)), normal interval",
    "ece": "bootstrap standard error (as pr_auc)", "r2": "bootstrap standard error (as pr_auc)",
    "precision": "normal interval of a proportion (of the rows predicted positive)",
    "recall": "normal interval of a proportion (of the rows labelled positive)",
    "f1": "bootstrap standard error (as pr_auc)",
}


def expected_calibration_error(y, p, bins: int = ECE_BINS) -> float:
    """Sum over equal-width probability bins of (share of rows) x |mean predicted - observed rate|."""
    import numpy as np

    y = np.asarray(y, dtype="float64")
    p = np.asarray(p, dtype="float64")
    which = np.minimum((p * bins).astype("int64"), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=p, minlength=bins) - np.bincount(which, weights=y, minlength=bins))
    return float(gap.sum() / max(len(y), 1)) if count.any() else float("nan")


def thresholded_counts(y, s, threshold: float | None = None) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of the 0/1 decision ``s >= threshold``
    (:data:`pavedml.metrics.DECISION_THRESHOLD`, the cut scoring publishes)."""
    import numpy as np

    from pavedml.metrics import DECISION_THRESHOLD

    y = np.asarray(y, dtype="float64") > 0.5
    pred = np.asarray(s, dtype="float64") >= (DECISION_THRESHOLD if threshold is None else threshold)
    tp = int(np.count_nonzero(pred & y))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(y)) - tp


def f1_at_threshold(y, s) -> float:
    """F1 of the decision at :data:`pavedml.metrics.DECISION_THRESHOLD` (0 when nothing is predicted
    or labelled positive, as ``sklearn.metrics.f1_score(zero_division=0)``): two counts, no sort."""
    tp, fp, fn = thresholded_counts(y, s)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _proportion_ci(hits: int, total: int, z: float) -> tuple[float, float, float]:
    """A share with its normal (Wald) interval; 0 with no interval when ``total`` is 0."""
    import math

    if total == 0:
        return 0.0, float("nan"), float("nan")
    p = hits / total
    half = z * math.sqrt(p * (1 - p) / total)
    return p, p - half, p + half


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf((1 + confidence) / 2)


def _mean_ci(values, z: float) -> tuple[float, float, float]:
    import numpy as np

    values = np.asarray(values, dtype="float64")
    mean = float(values.mean())
    half = z * float(values.std(ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, mean - half, mean + half


def average_precision(y, s) -> float:
    """Average precision (PR AUC) as scikit-learn's ``average_precision_score`` computes it (ties
    share a threshold), in one sort: the bootstrap calls it hundreds of times, where scikit-learn's
    input checks cost more than the sum itself."""
    import numpy as np

    y = np.asarray(y, dtype="float64")
    s = np.asarray(s, dtype="float64")
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[ss[1:] != ss[:-1], True]  # the last row of each distinct score
    tps = np.cumsum(ys)[last]
    seen = np.arange(1, len(ys) + 1, dtype="float64")[last]
    if not len(tps) or tps[-1] == 0:
        return float("nan")
    precision = tps / seen
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _bootstrap_se(stat, y, s, resamples: int, seed: int) -> float | None:
    import numpy as np

    n = len(y)
    if resamples < 2 or n < 2:
        return None
    m = min(n, BOOTSTRAP_ROWS)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, n, m)
        try:
            v = stat(y[idx], s[idx])
        except ValueError:  # one class only in a tiny resample
            continue
        if np.isfinite(v):
            values.append(v)
    if len(values) < 2:
        return None
    return float(np.std(values, ddof=1)) * float(np.sqrt(m / n))


def _around(value: float, se: float | None, z: float) -> tuple[float | None, float | None]:
    return (value - z * se, value + z * se) if se is not None else (None, None)


def _entry(value, lo=None, hi=None, bounds=(None, None)) -> dict:
    import math

    def clean(v):
        if v is None or not math.isfinite(v):
            return None
        lo_b, hi_b = bounds
        v = max(v, lo_b) if lo_b is not None else v
        v = min(v, hi_b) if hi_b is not None else v
        return round(float(v), 6)

    return {"value": clean(value), "lo": clean(lo), "hi": clean(hi)}


def realized_metrics(task: str, y, scores, *, resamples: int = 200, confidence: float = 0.95,
                     seed: int = 0) -> dict[str, dict]:
    """Metric -> {"value", "lo", "hi"} of ``scores`` against labels ``y`` (intervals at
    ``confidence``; None where undefined, e.g. AUC on a single class). Classification: roc_auc,
    pr_auc, brier, log_loss, and f1, precision, recall of the decision at
    :data:`pavedml.metrics.DECISION_THRESHOLD` (as :func:`pavedml.metrics.classification_metrics`
    computes them, the thresholded ones from two counts rather than scikit-learn's checks, which
    cost seconds at 1M rows; None like the AUCs when the rows hold one class), calibration (mean_predicted, observed_rate, ece over 10 bins). Regression: rmse, mae, r2,
    mean_predicted, observed_rate (the mean target). Intervals: :data:`CI_METHOD` (analytic where
    a formula exists, so 1M rows cost no resampling; a capped bootstrap otherwise)."""
    import numpy as np
    from sklearn import metrics as m

    from pavedml.metrics import is_regression

    y = np.asarray(y, dtype="float64")
    s = np.asarray(scores, dtype="float64")
    z = _z(confidence)
    out: dict[str, dict] = {}
    if is_regression(task):
        err = s - y
        mse, mse_lo, mse_hi = _mean_ci(err ** 2, z)
        out["rmse"] = _entry(np.sqrt(mse), np.sqrt(max(mse_lo, 0.0)), np.sqrt(max(mse_hi, 0.0)))
        out["mae"] = _entry(*_mean_ci(np.abs(err), z), bounds=(0.0, None))
        r2 = float(m.r2_score(y, s)) if len(y) > 1 else float("nan")
        se = _bootstrap_se(m.r2_score, y, s, resamples, seed)
        out["r2"] = _entry(r2, *_around(r2, se, z))
        out["mean_predicted"] = _entry(*_mean_ci(s, z))
        out["observed_rate"] = _entry(*_mean_ci(y, z))
        return out
    two_classes = 0 < y.sum() < len(y)
    point = {"roc_auc": float(m.roc_auc_score(y, s)), "pr_auc": average_precision(y, s)} if two_classes else {}
    n1, n0 = float(y.sum()), float(len(y) - y.sum())
    if two_classes:
        a = point["roc_auc"]
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
        se = float(np.sqrt(max(a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a), 0.0) / (n1 * n0)))
        out["roc_auc"] = _entry(a, a - z * se, a + z * se, bounds=(0.0, 1.0))
        ap = point["pr_auc"]
        se_ap = _bootstrap_se(average_precision, y, s, resamples, seed)
        out["pr_auc"] = _entry(ap, *_around(ap, se_ap, z), bounds=(0.0, 1.0))
        tp, fp, fn = thresholded_counts(y, s)
        out["precision"] = _entry(*_proportion_ci(tp, tp + fp, z), bounds=(0.0, 1.0))
        out["recall"] = _entry(*_proportion_ci(tp, tp + fn, z), bounds=(0.0, 1.0))
        f1 = f1_at_threshold(y, s)
        se_f1 = _bootstrap_se(f1_at_threshold, y, s, resamples, seed + 2)
        out["f1"] = _entry(f1, *_around(f1, se_f1, z), bounds=(0.0, 1.0))
    else:  # one class (or no row): ranking and the thresholded metrics are undefined
        for name in ("roc_auc", "pr_auc", "f1", "precision", "recall"):
            out[name] = _entry(None)
    p = np.clip(s, 1e-15, 1 - 1e-15)
    out["brier"] = _entry(*_mean_ci((s - y) ** 2, z), bounds=(0.0, 1.0))
    out["log_loss"] = _entry(*_mean_ci(-(y * np.log(p) + (1 - y) * np.log(1 - p)), z), bounds=(0.0, None))
    out["mean_predicted"] = _entry(*_mean_ci(s, z), bounds=(0.0, 1.0))
    out["observed_rate"] = _entry(*_mean_ci(y, z), bounds=(0.0, 1.0))
    ece = expected_calibration_error(y, s)
    se_ece = _bootstrap_se(expected_calibration_error, y, s, resamples, seed + 1)
    out["ece"] = _entry(ece, *_around(ece, se_ece, z), bounds=(0.0, 1.0))
    return out


# -- measure_performance ------------------------------------------------------------------------------

def _version_blocks(ctx: StepContext, joined, seed: int) -> list[dict]:
    """One block per (role, model version) of a day's joined rows: n, label mean, metrics."""
    uc = ctx.use_case
    blocks = []
    roles = (("champion", "champion_version", "champion_score"),
             ("challenger", "challenger_version", "challenger_score"))
    for role, vcol, scol in roles:
        rows = joined[joined[scol].notna() & joined[vcol].notna()]
        for version, grp in rows.groupby(vcol, sort=True):
            y = grp[LABEL].to_numpy(dtype="float64")
            blocks.append({"role": role, "model_version": str(version), "n": len(grp),
                           "label_mean": round(float(y.mean()), 6),
                           "metrics": realized_metrics(uc.task, y, grp[scol].to_numpy(dtype="float64"),
                                                       resamples=uc.performance.bootstrap,
                                                       confidence=uc.performance.confidence, seed=seed)})
    return blocks


def measure_performance(ctx: StepContext) -> PerformanceResult:
    """Realized metrics per scored day and model version for every day in ``[ds - lookback_days,
    ds]`` whose labels have landed, one day in memory at a time. Writes
    ``performance/dt=<d>/metrics.json`` (only when the day's predictions or labels files changed:
    the record is keyed by their hash, and holds no clock time, so a rerun leaves it as it is),
    ``performance/history.csv`` and the plot ``performance/history.png``.

    Each record names its knowledge day ``as_of`` (the run's ds: it read the labels partitions
    landed by then). A run never replaces a record of a later ``as_of``: an earlier run (a backfill,
    a labels Asset event re-delivering an old partition, whose run takes the event's ds) cannot see
    the corrections that landed since, so its metrics would revert them; it keeps that record (and
    its history rows) and logs that a newer one exists."""
    uc, ds = ctx.use_case, ctx.ds
    started = time.perf_counter()
    days = [ds - timedelta(days=i) for i in reversed(range(uc.performance.lookback_days + 1))]
    index = LabelsIndex(ctx)
    measured, unchanged, waiting, records = [], [], [], {}
    newer: list[str] = []
    for day in days:
        d = day.isoformat()
        if not is_scored(ctx, day):
            continue
        files = index.files_for(day)
        if not files:
            waiting.append(d)
            continue
        digest = day_digest(ctx, day, files)
        path = ctx.layout.performance_day(d)
        old = storage.read_json(str(path)) if path.exists() else None
        if old is not None and (old.get("digest") == digest or old.get("as_of", "") > ctx.ds_iso):
            if old.get("digest") != digest:
                newer.append(f"{d} (as of {old['as_of']})")
            unchanged.append(d)
            records[d] = old
            continue
        joined = labelled_predictions(ctx, day, index)
        if joined is None:
            waiting.append(d)
            continue
        record = {"ds": d, "as_of": ctx.ds_iso, "use_case": uc.name, "task": uc.task, "digest": digest, "rows": len(joined),
                  "primary_metric": uc.evaluation.primary_metric, "confidence": uc.performance.confidence,
                  "bootstrap": uc.performance.bootstrap, "ci_method": CI_METHOD,
                  "predictions": str(ctx.layout.predictions_partition(d) / PART_FILE),
                  "served_files": len(served_files(ctx, day)),
                  "labels_files": [uri for uri, _ in files],
                  "versions": _version_blocks(ctx, joined, seed=int(digest[:8], 16))}
        del joined
        storage.write_json(str(path), record)
        measured.append(d)
        records[d] = record
    index.save()
    history = _update_history(ctx, {d: records[d] for d in measured}) if measured else _read_history(ctx)
    holdouts = _holdouts(ctx, history)
    plot = _plot(ctx, history, holdouts) if len(history) else ""
    table = _table(ctx, records)
    log.info("realized %s of %s (days x versions; value [CI] n):\n%s", uc.evaluation.primary_metric, uc.name, table)
    if newer:
        log.warning("kept the records of %s: measured by a later run, with labels this run (as of %s) "
                    "cannot see; a run of that day or later measures them again", ", ".join(newer), ctx.ds_iso)
    if waiting:
        log.info("scored days without labels yet: %s (label delay %d day(s))", ", ".join(waiting), uc.label.delay_days)
    newest = _newest_champion(records)
    pm = uc.evaluation.primary_metric
    metric = newest["metrics"].get(pm, {}) if newest else {}
    return PerformanceResult(step="measure_performance", use_case=uc.name, ds=ctx.ds_iso, measured=measured,
                             unchanged=unchanged, waiting=waiting, primary_metric=pm,
                             model_version=newest["model_version"] if newest else None,
                             value=metric.get("value"), lo=metric.get("lo"), hi=metric.get("hi"),
                             n=newest["n"] if newest else 0, newest_day=newest["ds"] if newest else None,
                             history=str(ctx.layout.performance_history), performance_plot=plot,
                             seconds=round(time.perf_counter() - started, 3))


def _newest_champion(records: dict) -> dict | None:
    for d in sorted(records, reverse=True):
        blocks = [b for b in records[d]["versions"] if b["role"] == "champion"]
        if blocks:
            best = max(blocks, key=lambda b: b["n"])
            return {**best, "ds": d}
    return None


HISTORY_COLUMNS = ["ds", "model_version", "role", "metric", "value", "lo", "hi", "n"]


def _read_history(ctx: StepContext):
    import pandas as pd

    path = ctx.layout.performance_history
    if path.exists():
        return pd.read_csv(path, dtype={"ds": str, "model_version": str})
    return pd.DataFrame(columns=HISTORY_COLUMNS)


def _update_history(ctx: StepContext, records: dict):
    """history.csv: one row per ds, model version, role and metric; a measured day replaces its rows."""
    import pandas as pd

    rows = [{"ds": d, "model_version": b["model_version"], "role": b["role"], "metric": name,
             "value": v["value"], "lo": v["lo"], "hi": v["hi"], "n": b["n"]}
            for d, rec in records.items() for b in rec["versions"] for name, v in sorted(b["metrics"].items())]
    new = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    old = _read_history(ctx)
    history = pd.concat([old[~old["ds"].isin(list(records))], new], ignore_index=True) if len(old) else new
    history = history.sort_values(["ds", "role", "model_version", "metric"]).reset_index(drop=True)
    path = ctx.layout.performance_history
    path.parent.mkdir(parents=True, exist_ok=True)
    with storage.atomic_path(path, suffix=".csv") as tmp:
        history.to_csv(tmp, index=False)
    return history


def champion_holdout(ctx: StepContext, version: str) -> dict[str, float]:
    """``{metric: value}`` of a model version on its training holdout (``holdout_<metric>`` of its
    registry tags, else of its MLflow run); empty when the registry does not know it. A version the
    performance monitor already knows (``holdouts.json``, from the scoring runs' records) is not
    looked up again."""
    cache = ctx.layout.performance_history.with_name(HOLDOUTS)
    if cache.exists():
        known = storage.read_json(str(cache)).get(str(version))
        if known:
            return {k: float(v) for k, v in known.items()}
    from pavedml.adapters.tracking import setup, unavailable_as_error

    client, _ = setup(ctx)
    name = ctx.use_case.model.registered_name
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        try:
            mv = client.get_model_version(name, str(version))
        except Exception as exc:  # noqa: BLE001 - an unknown version: MlflowException(RESOURCE_DOES_NOT_EXIST)
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and "not found" not in str(exc).lower():
                raise
            log.warning("%s v%s is not in the registry: its training holdout is unknown", name, version)
            return {}
        out = {k.removeprefix("holdout_"): float(v) for k, v in (mv.tags or {}).items() if k.startswith("holdout_")}
        if not out and mv.run_id:
            run = client.get_run(mv.run_id)
            out = {k.removeprefix("holdout_"): float(v) for k, v in run.data.metrics.items()
                   if k.startswith("holdout_")}
    return out


def _holdouts(ctx: StepContext, history) -> dict[str, float]:
    """Champion version -> its training-holdout primary metric (for the plot; best effort: an
    unavailable registry leaves the line out, the step does not fail for a picture)."""
    pm = ctx.use_case.evaluation.primary_metric
    out: dict[str, float] = {}
    if not len(history):
        return out
    # a version's holdout metrics never change: kept beside the history; the scoring runs recorded them
    # in _SCORED.json (no MLflow import for the plot); MLflow asked once per version otherwise
    path = ctx.layout.performance_history.with_name(HOLDOUTS)
    known: dict[str, dict] = storage.read_json(str(path)) if path.exists() else {}
    before = len(known)
    # the lookback window's days only (what this run pulled from the lake): the earlier runs read theirs
    first = (ctx.ds - timedelta(days=ctx.use_case.performance.lookback_days)).isoformat()
    for day in sorted(d for d in set(history["ds"].astype(str)) if first <= d <= ctx.ds_iso):
        scored = ctx.layout.predictions_scored(day)
        if scored.exists():
            for version, metrics in (storage.read_json(str(scored)).get("holdouts") or {}).items():
                if metrics:
                    known.setdefault(str(version), metrics)
    if len(known) != before:
        storage.write_json(str(path), known)
    for version in sorted(set(history.loc[history["role"] == "champion", "model_version"].astype(str))):
        if version not in known:
            try:
                found = champion_holdout(ctx, version)
            except Exception as exc:  # noqa: BLE001 - the plot goes without the line
                log.warning("training holdout of v%s unknown (%s): the plot leaves its line out", version,
                            str(exc).splitlines()[0][:200])
                break
            if not found:
                continue
            known[version] = found
            storage.write_json(str(path), known)
        if pm in known[version]:
            out[version] = known[version][pm]
    return out


def _plot(ctx: StepContext, history, holdouts: dict[str, float]) -> str:
    """history.png: the realized primary metric per day (champion and shadow challenger, with their
    intervals), the floor and the champion's training-holdout line; under it the score PSI per day
    (``drift/psi_history.csv`` rows for the model output, and the target's once labels land) when the
    drift monitor recorded it."""
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    uc = ctx.use_case
    pm = uc.evaluation.primary_metric
    psi = None
    if ctx.layout.drift_history.exists():
        drift = pd.read_csv(ctx.layout.drift_history, dtype={"ds": str})
        psi = drift[drift["feature"].isin(["prediction", "probability", "target"])]
        psi = psi if len(psi) else None
    fig, axes = plt.subplots(2 if psi is not None else 1, 1, figsize=(8, 6 if psi is not None else 4.5),
                             sharex=True, squeeze=False)
    ax = axes[0][0]
    rows = history[history["metric"] == pm]
    for (role, version), grp in rows.groupby(["role", "model_version"]):
        grp = grp.sort_values("ds")
        x = pd.to_datetime(grp["ds"])
        line = ax.plot(x, grp["value"], marker="o" if role == "champion" else "s",
                       linestyle="-" if role == "champion" else "--",
                       label=f"{'champion' if role == 'champion' else 'shadow challenger'} v{version}")[0]
        ax.fill_between(x, grp["lo"].astype(float), grp["hi"].astype(float), color=line.get_color(), alpha=0.15)
    floor = uc.performance_floors.get(pm)
    if floor is not None:
        ax.axhline(floor, color="red", linestyle="--", label=f"{'ceiling' if pm in LOWER_IS_BETTER else 'floor'} {floor}")
    for version, value in holdouts.items():
        ax.axhline(value, color="grey", linestyle=":", label=f"training holdout v{version} {value:.4f}")
    ax.set_ylabel(f"realized {pm}")
    ax.set_title(f"Realized performance: {uc.name}")
    ax.legend(fontsize=7, loc="best")
    if psi is not None:
        ax2 = axes[1][0]
        for feature, grp in psi.groupby("feature"):
            ax2.plot(pd.to_datetime(grp["ds"]), grp["psi"], marker="o",
                     label="target PSI" if feature == "target" else "score PSI")
        ax2.axhline(uc.drift.warn, color="orange", linestyle="--", label="warn")
        ax2.axhline(uc.drift.alert, color="red", linestyle="--", label="alert")
        ax2.set_ylabel("PSI (score, target)")
        ax2.legend(fontsize=7, loc="upper left")
    from matplotlib.dates import AutoDateLocator, DateFormatter

    axes[-1][0].xaxis.set_major_locator(AutoDateLocator(minticks=2, maxticks=10))
    axes[-1][0].xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))
    fig.autofmt_xdate()
    fig.tight_layout()
    plot = ctx.layout.performance_plot
    with storage.atomic_path(plot, suffix=plot.suffix) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return str(plot)


def _table(ctx: StepContext, records: dict) -> str:
    """Days x (role, version): ``value [lo, hi] n=<rows>`` of the primary metric."""
    pm = ctx.use_case.evaluation.primary_metric
    cols = sorted({(b["role"], b["model_version"]) for r in records.values() for b in r["versions"]})
    if not cols:
        return "(no labelled scored day in the lookback window)"

    def fmt(v):
        return "-" if v is None else f"{v:.4f}"

    head = "day         " + "".join(f"{role + ' v' + version:<34}" for role, version in cols)
    lines = [head]
    for d in sorted(records):
        cells = {(b["role"], b["model_version"]): b for b in records[d]["versions"]}
        row = f"{d}  "
        for col in cols:
            b = cells.get(col)
            if b is None:
                row += f"{'':<34}"
                continue
            m = b["metrics"].get(pm, {})
            row += f"{fmt(m.get('value'))} [{fmt(m.get('lo'))}, {fmt(m.get('hi'))}] n={b['n']:<8}"[:33].ljust(34)
        lines.append(row.rstrip())
    return "\n".join(lines)


# -- request_performance_retraining ---------------------------------------------------------------

def measured_days(ctx: StepContext) -> list[str]:
    """The labelled scored days of the lookback window ending at ds with a metrics record (oldest first)."""
    uc, ds = ctx.use_case, ctx.ds
    days = [(ds - timedelta(days=i)).isoformat() for i in reversed(range(uc.performance.lookback_days + 1))]
    return [d for d in days if ctx.layout.performance_day(d).exists()]


def due_days(days: list[str], ds: date, delay_days: int) -> list[str]:
    """The days of ``days`` whose labels are due by ``ds``: ``d <= ds - delay_days`` (their normal
    labels partition has landed by the run's day). A newer day holding only a few early labels is
    not one to judge the champion on; its late labels are still measured."""
    last = ds - timedelta(days=delay_days)
    return [d for d in days if date.fromisoformat(d) <= last]


def unjudgeable(uc, metrics: dict[str, dict], y, where: str) -> str | None:
    """Why the judge cannot judge (None: it can): a metric with a floor, or the primary metric,
    has no value on the pooled labelled rows (one class: AUCs and the thresholded metrics are
    undefined). Never "within its floors" for a metric nobody could compute."""
    import numpy as np

    judged = sorted({*uc.performance_floors, uc.evaluation.primary_metric})
    missing = [name for name in judged if (metrics.get(name) or {}).get("value") is None]
    if not missing:
        return None
    y = np.asarray(y, dtype="float64")
    names = ", ".join(missing)
    if not uc.is_regression and len(y) and (y.min() == y.max()):
        return (f"the labelled rows of {where} hold one class ({int(y[0])}, {len(y)} rows): {names} "
                f"cannot be judged")
    if not len(y):
        return f"no labelled rows for {where}: {names} cannot be judged"
    return f"{names} could not be computed on the {len(y)} labelled rows of {where}: cannot be judged"


def judge_realized(uc, metrics: dict[str, dict], holdout: dict[str, float]) -> list[str]:
    """What is wrong with the champion's realized metrics (empty: nothing): a metric below its floor
    (above it for a lower-is-better metric: a ceiling), or the primary metric worse than the
    training holdout by more than ``performance.max_drop`` (absolute; for rmse/mae a fraction)."""
    out = []
    for name, floor in sorted(uc.performance_floors.items()):
        value = (metrics.get(name) or {}).get("value")
        if value is None:
            continue
        if name in LOWER_IS_BETTER and value > floor:
            out.append(f"{name} {value:.4f} above its ceiling {floor}")
        elif name not in LOWER_IS_BETTER and value < floor:
            out.append(f"{name} {value:.4f} below its floor {floor}")
    pm = uc.evaluation.primary_metric
    value, base = (metrics.get(pm) or {}).get("value"), holdout.get(pm)
    drop = uc.performance.max_drop
    if value is not None and base is not None:
        if pm in ("rmse", "mae"):
            worse = (value - base) / base if base > 0 else 0.0
            if worse > drop:
                out.append(f"{pm} {value:.4f} is {worse:.1%} worse than the training holdout {base:.4f} "
                           f"(max_drop {drop:.0%})")
        else:
            worse = value - base if pm in LOWER_IS_BETTER else base - value
            if worse > drop:
                out.append(f"{pm} {value:.4f} is {worse:.4f} worse than the training holdout {base:.4f} "
                           f"(max_drop {drop})")
    return out


def request_performance_retraining(ctx: StepContext) -> RetrainRequestResult:
    """Judge the champion over the newest ``performance.judge_days`` labelled days, pooled (the
    metric recomputed on the joined rows, not an average of days). A day counts as labelled only
    once its labels are due (:func:`due_days`: ``d <= ds - label.delay_days``): a newer day with a
    few early labels would judge the champion on a handful of rows. A metric with a floor, or the
    primary metric, that cannot be computed (one class) skips saying so (:func:`unjudgeable`). Degraded (:func:`judge_realized`)
    with at least ``performance.min_rows`` rows: a ``performance_degraded`` alert and, with
    ``performance.request_retraining``, a retrain request (the drift monitor's Asset, file, dedup and
    cooldown: :func:`pavedml.retrain.record_request`; the dedup key is the judged days and the hash
    of their data). Otherwise :class:`SkipStep` saying why (no Asset event). A degradation whose
    request the cooldown holds back (or that may not request) is still recorded as an alert (the
    alerts file; the task is skipped, so no mail)."""
    import pandas as pd

    from pavedml.alerts import send
    from pavedml.retrain import record_request

    uc, ds = ctx.use_case, ctx.ds_iso
    perf = uc.performance
    pm = uc.evaluation.primary_metric
    days = measured_days(ctx)
    if not days:
        raise SkipStep(f"no labelled scored day in the {perf.lookback_days} days up to {ds} "
                       f"(label delay {uc.label.delay_days} day(s)): nothing to judge")
    due = due_days(days, ctx.ds, uc.label.delay_days)
    if not due:
        raise SkipStep(f"no measured day up to {ctx.ds - timedelta(days=uc.label.delay_days)} (ds {ds} - label "
                       f"delay {uc.label.delay_days} day(s)) in the {perf.lookback_days} days up to {ds}: "
                       f"the labels of {', '.join(days)} are not all due yet; nothing to judge")
    judged = due[-perf.judge_days:]
    index = LabelsIndex(ctx)
    frames = [f for d in judged if (f := labelled_predictions(ctx, d, index)) is not None]
    if not frames:
        raise SkipStep(f"no labelled rows for {', '.join(judged)}: nothing to judge")
    version = str(frames[-1]["champion_version"].mode().iloc[0])
    pooled = pd.concat([f.loc[f["champion_version"] == version, [LABEL, "champion_score"]] for f in frames],
                       ignore_index=True)
    n = len(pooled)
    where = f"{', '.join(judged)}"
    if n < perf.min_rows:
        raise SkipStep(f"too few labelled rows to judge champion v{version}: {n} over {where} < "
                       f"performance.min_rows {perf.min_rows}")
    data_hash = hashlib.sha256("".join(storage.read_json(str(ctx.layout.performance_day(d)))["digest"]
                                       for d in judged).encode()).hexdigest()
    metrics = realized_metrics(uc.task, pooled[LABEL].to_numpy(dtype="float64"),
                               pooled["champion_score"].to_numpy(dtype="float64"), resamples=perf.bootstrap,
                               confidence=perf.confidence, seed=int(data_hash[:8], 16))
    holdout = champion_holdout(ctx, version)
    breaches = judge_realized(uc, metrics, holdout)
    reason = unjudgeable(uc, metrics, pooled[LABEL].to_numpy(dtype="float64"), where)
    if reason and not breaches:  # a breach of a metric that could be computed still alerts
        raise SkipStep(f"champion v{version}: {reason}")
    m = metrics.get(pm) or {}
    value = m.get("value")
    shown = "n/a" if value is None else f"{value:.4f} [{m.get('lo')}, {m.get('hi')}]"
    if not breaches:
        raise SkipStep(f"champion v{version} realized {pm} {shown} on {n} labelled rows of {where}: within its "
                       f"floors and {perf.max_drop} of its training holdout {holdout.get(pm, 'unknown')}")
    floor = uc.performance_floors.get(pm)
    first = (f"PERFORMANCE DEGRADED [{uc.name}] champion v{version} realized {pm} {shown} vs "
             f"floor {floor if floor is not None else 'none'} / training holdout "
             f"{'unknown' if pm not in holdout else format(holdout[pm], '.4f')} on {n} labelled rows of {where}")
    plot = str(ctx.layout.performance_plot)
    lines = [first, *[f"  - {b}" for b in breaches], "metric          value     CI"]
    for name, v in metrics.items():
        if v["value"] is not None:
            lines.append(f"  {name:<14} {v['value']:<9.4f} [{v['lo']}, {v['hi']}]")
    lines.append(f"Plot: {plot}")
    alert = {"kind": "performance_degraded", "dag_id": ctx.dag_id, "task_id": "request_performance_retraining",
             "run_id": ctx.run_id, "summary": "\n".join(lines)}
    key = {"judged_days": judged, "data_hash": data_hash}
    extra = {"ds": ds, "model_version": version, "metric": pm, "value": value, "holdout": holdout.get(pm),
             "floor": floor, "breaches": breaches, "rows": n, "report": plot}
    if not perf.request_retraining:
        send({**alert, "summary": alert["summary"] + "\nNo retrain request: performance.request_retraining is false."})
        raise SkipStep(f"{first}; no retrain request (performance.request_retraining: false); alert recorded")
    try:
        record_request(ctx, key, extra, source="performance")
    except SkipStep as exc:
        if exc.message.startswith("cooldown"):
            send({**alert, "summary": alert["summary"] + f"\nNo retrain request: {exc.message}."})
        raise
    lines.insert(1, "Retraining was requested (the training DAG runs on it).")
    alert["summary"] = "\n".join(lines)
    log.warning("%s", alert["summary"])
    return RetrainRequestResult(step="request_performance_retraining", use_case=uc.name, ds=ds, requested=True,
                                reason="; ".join(breaches), window=judged,
                                asset_extra={**key, **extra, "source": "performance"}, alert=alert)
