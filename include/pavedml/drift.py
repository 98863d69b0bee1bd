"""Population Stability Index (PSI) drift: a frozen reference from training data, streamed counts
from new data, and a report of PSI per feature with warn/alert thresholds.

PSI follows the design doc's seed formula on bucket proportions::

    psi = sum((e + eps - a - eps) * ln((e + eps) / (a + eps)))    # eps = 1e-6

Numeric buckets are quantile bins of the reference. Unlike ``np.histogram`` (used by the seed, which
DROPS values outside the first/last edge), the outer bins here are open: values below the reference
minimum count in the first bin and values above the maximum in the last. Drift beyond the training
range therefore raises PSI instead of disappearing. Values inside the range land in the same bins as
with ``np.histogram`` (``[e_i, e_i+1)``, last bin closed), so on in-range data both agree exactly.
NaN counts in its own ``missing`` bucket. Categorical buckets are the reference categories, plus
``missing`` and ``__unseen__`` (categories absent from the reference, expected proportion 0).

Counting is vectorized, column by column, and chunked (``PsiAccumulator.update``), so data larger than
memory can be streamed, e.g. ``for b in pq.ParquetFile(path).iter_batches(columns=cols): acc.update(b)``.

The model's output drifts too: at training the distribution of the fitted model's scores on the
training split (the positive class's probability, or the predicted value for a regressor) is frozen
under the reference's ``"prediction"`` key (:func:`build_prediction_reference`, a reference of one
numeric feature named ``prediction``), and the drift check reports its PSI on the window's
predictions beside the features' (:meth:`DriftReport.table`). Whether it counts toward the verdict is
the use case's choice (``drift.judge_on``); by default only features do.

What the window is compared with is a choice (``drift.reference``): the reference frozen at
training, or one built from a period of the pipeline's own days (:func:`reference_period`):
``rolling`` (the days just before the window) or ``seasonal`` (the same period one season ago, so a
seasonal input compares July with last July, not with the months the model was trained on). A
time-based reference is built from that period's data exactly as the training one is (quantile bins
of the period, :func:`build_reference`; :func:`build_reference_from_chunks` for periods larger than
memory). The target (labels, once they land) is compared the same way under the name ``target``.

Only the standard library is imported at module level (DAG files import this module); numpy and
pandas are imported inside the functions that need them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pavedml.config import PSI_ALERT, PSI_MIN_SAMPLES, PSI_WARN
from pavedml.errors import DriftInputError

log = logging.getLogger(__name__)

REFERENCE_FORMAT = "pavedml.psi_reference/1"
#: The key of a drift reference holding the model output's reference, and its one feature's name.
PREDICTION = "prediction"
#: The name under which the target's (the labels') PSI is reported.
TARGET = "target"
#: What a window can be compared with (``drift.reference``).
REFERENCE_KINDS = ("training", "rolling", "seasonal")
EPSILON = 1e-6
MISSING = "missing"
UNSEEN = "__unseen__"
Kind = Literal["numeric", "categorical"]
Status = Literal["ok", "warn", "alert", "insufficient_data"]
_JSON_SCALARS = (str, int, float, bool)
_COMPARE_MAX_CUTS = 16  # up to this many cuts, count by comparisons instead of searchsorted

__all__ = [
    "EPSILON",
    "MISSING",
    "PREDICTION",
    "REFERENCE_FORMAT",
    "REFERENCE_KINDS",
    "TARGET",
    "UNSEEN",
    "DriftReport",
    "FeaturePsi",
    "PsiAccumulator",
    "ReferencePeriod",
    "build_prediction_reference",
    "build_reference",
    "build_reference_from_chunks",
    "compute_psi",
    "psi_from_proportions",
    "reference_period",
    "select_days",
]


# ----------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FeaturePsi:
    """PSI of one feature, with the bucket proportions it was computed from.

    ``bins`` labels the buckets; ``expected`` and ``actual`` are proportions in the same order (the
    last numeric bucket is ``missing``; categoricals end with ``missing`` and ``__unseen__``).
    """

    name: str
    kind: Kind
    psi: float
    status: Status
    n_actual: int
    bins: list[str]
    expected: list[float]
    actual: list[float]
    warn: float
    alert: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    """PSI for every reference feature over ``n_rows`` rows of new data.

    ``judged`` is False when there were fewer than ``min_samples`` rows: every status is then
    ``insufficient_data``, ``alerts``/``warnings`` are empty and ``reason`` says why.
    """

    features: list[FeaturePsi]
    n_rows: int
    judged: bool
    min_samples: int
    alerts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self, prediction: FeaturePsi | None = None, target: FeaturePsi | None = None,
              judged: Iterable[str] = ()) -> str:
        """Fixed-width text table (feature, kind, psi, status), highest PSI first; then the PSI of
        the target (``target``) and of the model's output (``prediction``, always the last line),
        each marked as counting toward the verdict when named in ``judged``, else as reported only."""
        judged = set(judged)
        rows = sorted(self.features, key=lambda f: (-f.psi, f.name))
        outputs = [(f, kind, what) for f, kind, what in ((target, "target", "the target"),
                                                          (prediction, "output", "the model's output"))
                   if f is not None]
        width = max([len("feature"), *(len(f.name) for f in rows), *(len(f.name) for f, _, _ in outputs)])
        lines = [f"{'feature':<{width}}  {'kind':<11}  {'psi':>8}  status"]
        lines += [f"{f.name:<{width}}  {f.kind:<11}  {f.psi:>8.4f}  {f.status}" for f in rows]
        for f, kind, what in outputs:
            note = (f"({what}: counts toward the verdict, drift.judge_on)" if f.name in judged
                    else f"({what}: reported, not part of the verdict)")
            lines.append(f"{f.name:<{width}}  {kind:<11}  {f.psi:>8.4f}  {f.status}  {note}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------- formula


def psi_from_proportions(expected: Sequence[float], actual: Sequence[float],
                         epsilon: float = EPSILON) -> float:
    """PSI of two proportion vectors (the seed formula); finite even when buckets are empty.

    Raises:
        DriftInputError: the vectors differ in length, are empty, or hold negative/non-finite values.
    """
    import numpy as np

    e = np.asarray(expected, dtype="float64")
    a = np.asarray(actual, dtype="float64")
    if e.ndim != 1 or e.shape != a.shape or e.size == 0:
        raise DriftInputError(
            f"expected and actual proportions must be non-empty vectors of equal length, got shapes "
            f"{e.shape} and {a.shape}", details={"expected_shape": e.shape, "actual_shape": a.shape})
    if not (np.isfinite(e).all() and np.isfinite(a).all()) or (e < 0).any() or (a < 0).any():
        raise DriftInputError("proportions must be finite and non-negative",
                              details={"expected": e.tolist(), "actual": a.tolist()})
    if not epsilon > 0:
        raise DriftInputError(f"epsilon must be positive, got {epsilon}", details={"epsilon": epsilon})
    e = e + epsilon
    a = a + epsilon
    return float(np.sum((e - a) * np.log(e / a)))


# -------------------------------------------------------------------------------------- reference


def build_reference(df, numeric: list[str], categorical: list[str], bins: int = 10) -> dict[str, Any]:
    """Freeze a JSON-serializable PSI reference from training data.

    Numeric features get quantile bin edges (``np.unique`` of the quantiles at ``linspace(0, 1,
    bins + 1)`` over finite values, so ties and constant columns work), the interior ``cuts`` used
    for binning (outer bins open), and expected proportions per bin plus ``missing``. Categorical features get their categories and expected proportions plus
    ``missing`` and ``__unseen__`` (always 0). ``n`` and each feature's ``null_fraction`` are recorded.

    Raises:
        DriftInputError: empty data, unknown/duplicate/non-numeric columns, a numeric column with no
            finite value, or categories that are not JSON scalars.
    """
    import numpy as np

    if not isinstance(bins, int) or bins < 1:
        raise DriftInputError(f"bins must be a positive integer, got {bins!r}", details={"bins": bins})
    names = [*numeric, *categorical]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DriftInputError(f"features listed more than once: {', '.join(duplicated)}",
                              details={"duplicated": duplicated})
    if not names:
        raise DriftInputError("no features given for the drift reference", details={})
    _require_columns(list(df.columns), names)
    n = len(df)
    if n == 0:
        raise DriftInputError("cannot build a drift reference from 0 rows", details={"rows": 0})

    features: dict[str, dict[str, Any]] = {}
    for name in numeric:
        x = _numeric_values(df[name], name)
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            raise DriftInputError(f"numeric feature {name} has no finite value in the reference data",
                                  details={"feature": name, "rows": n})
        raw = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1))
        edges = np.unique(raw)
        # The interior edges are the bin boundaries ("cuts"). When the maximum alone holds >= 1/bins
        # of the data (the top quantiles repeat, e.g. a 0/1 column) it keeps its own bin, as
        # np.histogram's closed last bin [max, max] would, instead of merging into the bin below.
        # A constant column gets bins below / at / above the constant, so any change shows.
        if edges.size == 1:
            cuts = np.array([edges[0], np.nextafter(edges[0], np.inf)])
        elif raw[-2] == raw[-1]:
            cuts = edges[1:]
        else:
            cuts = edges[1:-1]
        counts, n_missing = _count_numeric(x, cuts)
        features[name] = {
            "kind": "numeric",
            "edges": [float(v) for v in edges],
            "cuts": [float(v) for v in cuts],
            "expected": [int(c) / n for c in counts] + [n_missing / n],
            "null_fraction": n_missing / n,
        }
    for name in categorical:
        vc = df[name].value_counts(dropna=True, sort=False)
        vc = vc[vc > 0]
        categories = _sorted_categories(vc.index.tolist(), name)
        counts = vc.reindex(categories) if categories else vc
        n_missing = n - int(counts.sum())
        features[name] = {
            "kind": "categorical",
            "categories": categories,
            "expected": [int(c) / n for c in counts.tolist()] + [n_missing / n, 0.0],
            "null_fraction": n_missing / n,
        }
    log.info("built PSI reference over %d rows: %d numeric, %d categorical feature(s), %d bins",
             n, len(numeric), len(categorical), bins)
    return {"format": REFERENCE_FORMAT, "bins": bins, "epsilon": EPSILON, "n": n, "features": features}


def build_prediction_reference(scores, bins: int = 10) -> dict[str, Any]:
    """The reference of a model's output (one numeric feature, :data:`PREDICTION`): quantile bins
    of its scores on the training split, as :func:`build_reference` freezes a feature. Stored in
    the drift reference under the key :data:`PREDICTION`; its PSI is reported, never judged."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({PREDICTION: np.asarray(scores, dtype="float64")})
    return build_reference(frame, [PREDICTION], [], bins=bins)


def build_reference_from_chunks(read_chunks: Callable[[], Iterable[Any]], numeric: list[str],
                                categorical: list[str], bins: int = 10, *, total_rows: int | None = None,
                                max_sample_rows: int = 1_000_000) -> dict[str, Any]:
    """:func:`build_reference` over data streamed in chunks (``read_chunks()`` returns a fresh
    iterator of pandas DataFrames or pyarrow batches each time it is called).

    Up to ``max_sample_rows`` rows the chunks are gathered and :func:`build_reference` runs on them
    (identical result). Beyond, the quantile cuts come from every k-th row (``k = ceil(total_rows /
    max_sample_rows)``) and the categories from all rows; a second pass counts the expected
    proportions of every row in those buckets, so memory stays bounded by the sample.

    Raises:
        DriftInputError: as :func:`build_reference`.
    """
    import pandas as pd

    def frames():
        for chunk in read_chunks():
            if hasattr(chunk, "to_pandas") and hasattr(chunk, "schema"):
                _require_columns(list(chunk.schema.names), [*numeric, *categorical])
                chunk = chunk.select([*numeric, *categorical]).to_pandas()
            yield chunk

    if total_rows is None or total_rows <= max_sample_rows:
        parts = list(frames())
        data = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*numeric, *categorical])
        return build_reference(data, numeric, categorical, bins=bins)
    stride = -(-total_rows // max_sample_rows)
    samples: list[Any] = []
    categories: dict[str, set[Any]] = {name: set() for name in categorical}
    offset = 0
    for chunk in read_chunks():  # first pass: only the sampled numeric rows become pandas
        start = (-offset) % stride  # every stride-th row of the whole stream
        if hasattr(chunk, "to_pandas") and hasattr(chunk, "schema"):
            import pyarrow.compute as pc

            _require_columns(list(chunk.schema.names), [*numeric, *categorical])
            rows = _row_positions(start, chunk.num_rows, stride)
            samples.append(chunk.select(numeric).take(rows).to_pandas())
            for name in categorical:
                categories[name].update(v for v in pc.unique(chunk.column(name)).to_pylist() if v is not None)
        else:
            samples.append(chunk[numeric].iloc[start::stride])
            for name in categorical:
                categories[name].update(chunk[name].dropna().unique().tolist())
        offset += len(chunk)
    sample = pd.concat(samples, ignore_index=True)
    skeleton: dict[str, Any] = build_reference(sample, numeric, [], bins=bins) if numeric else {
        "format": REFERENCE_FORMAT, "bins": bins, "epsilon": EPSILON, "features": {}}
    for name in categorical:
        cats = _sorted_categories(list(categories[name]), name)
        skeleton["features"][name] = {"kind": "categorical", "categories": cats,
                                      "expected": [0.0] * (len(cats) + 2)}
    acc = PsiAccumulator(skeleton)
    for chunk in frames():
        acc.update(chunk)
    n = acc.n_rows
    if n == 0:
        raise DriftInputError("cannot build a drift reference from 0 rows", details={"rows": 0})
    for name, counts in acc.counts().items():
        spec = skeleton["features"][name]
        spec["expected"] = [c / n for c in counts]
        spec["null_fraction"] = counts[-1 if spec["kind"] == "numeric" else -2] / n
    skeleton["n"] = n
    log.info("built PSI reference over %d streamed rows (quantiles from every %d-th row)", n, stride)
    return skeleton


def _row_positions(start: int, stop: int, step: int):
    """Row positions ``start, start + step, ... < stop`` as an array for ``pyarrow`` ``take``."""
    import numpy as np

    return np.arange(start, stop, step, dtype="int64")


# ------------------------------------------------------------------------------------ time periods


@dataclass(frozen=True)
class ReferencePeriod:
    """The days a window is compared with: empty for ``training`` (the reference frozen with the
    model version), else ``reference_days`` consecutive days, oldest first."""

    kind: str
    days: list[str]

    def describe(self) -> str:
        """``seasonal reference 2024-01-05 .. 2024-02-01 (28 days)``."""
        if not self.days:
            return f"{self.kind} reference (frozen at training)"
        return f"{self.kind} reference {self.days[0]} .. {self.days[-1]} ({len(self.days)} days)"


def drift_window(ds: Any, days: int) -> list[str]:
    """The ``days`` days ending at ``ds`` (a ``date``), oldest first, as ISO dates: a drift check's window."""
    from datetime import timedelta

    return [(ds - timedelta(days=i)).isoformat() for i in reversed(range(days))]


def reference_period(window: Sequence[Any], kind: str, reference_days: int = 28,
                     season_days: int = 365) -> ReferencePeriod:
    """The reference days of a window (ISO dates or ``date`` objects, any order).

    ``rolling``: the ``reference_days`` days just before the window's first day. ``seasonal``:
    ``reference_days`` days centred on the window's middle day ``season_days`` back (for the usual
    one-day window, its end), i.e. the same period one season ago; with an even count the extra day
    is before the centre. ``training``: no days.

    Raises:
        DriftInputError: an unknown kind, an empty window, or non-positive day counts.
    """
    from datetime import date, timedelta

    if kind not in REFERENCE_KINDS:
        raise DriftInputError(f"unknown drift reference {kind!r}; expected one of {', '.join(REFERENCE_KINDS)}",
                              details={"reference": kind, "next": "set drift.reference in the use case"})
    if kind == "training":
        return ReferencePeriod(kind, [])
    if not window:
        raise DriftInputError("the drift window holds no day", details={"window": []})
    if reference_days < 1 or season_days < 1:
        raise DriftInputError(f"reference_days ({reference_days}) and season_days ({season_days}) must be positive",
                              details={"reference_days": reference_days, "season_days": season_days})
    days = sorted(d if isinstance(d, date) else date.fromisoformat(str(d)) for d in window)
    if kind == "rolling":
        start = days[0] - timedelta(days=reference_days)
    else:
        centre = days[(len(days) - 1) // 2] - timedelta(days=season_days)
        start = centre - timedelta(days=reference_days // 2)
    return ReferencePeriod(kind, [(start + timedelta(days=i)).isoformat() for i in range(reference_days)])


def select_days(frame, days: Iterable[Any], column: str | None = None):
    """The rows of a DataFrame keyed by day (a ``DatetimeIndex``, or a datetime ``column``) whose
    day is one of ``days`` (ISO dates or ``date`` objects): how a reference period or a window is
    cut from a plain table."""
    import pandas as pd

    wanted = pd.DatetimeIndex(sorted({pd.Timestamp(str(d)) for d in days}))
    keys = frame.index if column is None else frame[column]
    stamps = pd.DatetimeIndex(pd.to_datetime(keys))
    if stamps.tz is not None:
        stamps = stamps.tz_convert("UTC").tz_localize(None)
    return frame[stamps.normalize().isin(wanted)]


# ------------------------------------------------------------------------------------- accumulator


class PsiAccumulator:
    """Streams bucket counts for every reference feature; ``result()`` turns them into a DriftReport.

    Example:
        acc = PsiAccumulator(reference)
        for batch in pyarrow.parquet.ParquetFile(path).iter_batches(columns=list(reference["features"])):
            acc.update(batch)
        report = acc.result(warn=uc.drift.warn, alert=uc.drift.alert)
    """

    def __init__(self, reference: Mapping[str, Any]) -> None:
        import numpy as np
        import pandas as pd

        self._features = _validated_features(reference)
        self._epsilon = float(reference.get("epsilon", EPSILON))
        self._cuts: dict[str, Any] = {}
        self._index: dict[str, Any] = {}
        self._counts: dict[str, Any] = {}
        self._unseen_examples: dict[str, list[Any]] = {}
        for name, spec in self._features.items():
            if spec["kind"] == "numeric":
                self._cuts[name] = np.asarray(spec["cuts"], dtype="float64")
            else:
                self._index[name] = pd.Index(spec["categories"], dtype=object)
                self._unseen_examples[name] = []
            self._counts[name] = np.zeros(len(spec["expected"]), dtype="int64")
        self.n_rows = 0

    @property
    def features(self) -> list[str]:
        """Reference feature names, in reference order."""
        return list(self._features)

    def update(self, chunk) -> None:
        """Add the bucket counts of one chunk (pandas DataFrame, or pyarrow Table/RecordBatch).

        Raises:
            DriftInputError: the chunk lacks a reference feature, or a numeric feature is not numeric.
        """
        names = list(self._features)
        if hasattr(chunk, "to_pandas") and hasattr(chunk, "schema"):  # pyarrow: convert only what is needed
            _require_columns(list(chunk.schema.names), names)
            chunk = chunk.select(names).to_pandas()
        if not hasattr(chunk, "columns") or not hasattr(chunk, "iloc"):
            raise DriftInputError(f"cannot count drift on a {type(chunk).__name__}; pass a DataFrame",
                                  details={"type": type(chunk).__name__})
        _require_columns(list(chunk.columns), names)
        n = len(chunk)
        for name, spec in self._features.items():
            column = chunk[name]
            if column.ndim != 1:
                raise DriftInputError(f"column {name} appears more than once in the data",
                                      details={"feature": name})
            if spec["kind"] == "numeric":
                counts, n_missing = _count_numeric(_numeric_values(column, name), self._cuts[name])
                self._counts[name][:-1] += counts
                self._counts[name][-1] += n_missing
            else:
                self._count_categorical(name, column)
        self.n_rows += n
        log.debug("PSI accumulator: +%d rows (%d total)", n, self.n_rows)

    def _count_categorical(self, name: str, column) -> None:
        import numpy as np
        import pandas as pd

        vc = column.value_counts(dropna=False, sort=False)  # one hash pass; few uniques afterwards
        vc = vc[vc.to_numpy() > 0]
        keys = vc.index
        values = vc.to_numpy(dtype="int64")
        null = np.asarray(pd.isna(keys), dtype=bool)
        position = self._index[name].get_indexer(keys)
        unseen = (position < 0) & ~null
        counts = self._counts[name]
        n_cat = len(self._index[name])
        seen = position >= 0
        np.add.at(counts, position[seen], values[seen])  # one entry per distinct value in the chunk
        counts[n_cat] += int(values[null].sum())
        counts[n_cat + 1] += int(values[unseen].sum())
        examples = self._unseen_examples[name]
        if unseen.any() and len(examples) < 5:
            examples.extend(keys[unseen].tolist()[: 5 - len(examples)])

    def counts(self) -> dict[str, list[int]]:
        """Raw bucket counts so far, per feature (same order as the report's ``bins``)."""
        return {name: c.tolist() for name, c in self._counts.items()}

    def result(self, *, warn: float = PSI_WARN, alert: float = PSI_ALERT,
               per_feature: Mapping[str, Mapping[Any, float]] | None = None,
               min_samples: int = PSI_MIN_SAMPLES) -> DriftReport:
        """PSI per feature with status ``ok``/``warn``/``alert`` (PSI >= threshold).

        ``per_feature={"tenure": {"alert": 0.3}}`` overrides thresholds for one feature. With fewer
        than ``min_samples`` rows nothing is judged (status ``insufficient_data``).

        Raises:
            DriftInputError: invalid thresholds or overrides.
        """
        thresholds = _thresholds(list(self._features), warn, alert, per_feature)
        if not isinstance(min_samples, int) or min_samples < 0:
            raise DriftInputError(f"min_samples must be a non-negative integer, got {min_samples!r}",
                                  details={"min_samples": min_samples})
        judged = self.n_rows >= min_samples
        results: list[FeaturePsi] = []
        for name, spec in self._features.items():
            counts = self._counts[name]
            actual = (counts / self.n_rows).tolist() if self.n_rows else [0.0] * len(counts)
            psi = psi_from_proportions(spec["expected"], actual, self._epsilon)
            f_warn, f_alert = thresholds[name]
            status: Status = "insufficient_data"
            if judged:
                status = "alert" if psi >= f_alert else "warn" if psi >= f_warn else "ok"
            results.append(FeaturePsi(
                name=name, kind=spec["kind"], psi=psi, status=status, n_actual=self.n_rows,
                bins=_bin_labels(spec), expected=[float(v) for v in spec["expected"]], actual=actual,
                warn=f_warn, alert=f_alert))
            if self._unseen_examples.get(name):
                log.warning("feature %s: %d row(s) in categories unseen in the reference, e.g. %s",
                            name, int(counts[-1]), self._unseen_examples[name])
        reason = None
        if not judged:
            reason = f"only {self.n_rows} rows, fewer than the minimum {min_samples}"
            log.warning("PSI not judged: %s", reason)
        report = DriftReport(
            features=results, n_rows=self.n_rows, judged=judged, min_samples=min_samples,
            alerts=[f.name for f in results if f.status == "alert"],
            warnings=[f.name for f in results if f.status == "warn"], reason=reason)
        log.info("PSI over %d rows: %d alert(s) %s, %d warning(s) %s", report.n_rows,
                 len(report.alerts), report.alerts, len(report.warnings), report.warnings)
        return report


def compute_psi(reference: Mapping[str, Any], df, *, warn: float = PSI_WARN, alert: float = PSI_ALERT,
                per_feature: Mapping[str, Mapping[Any, float]] | None = None, min_samples: int = PSI_MIN_SAMPLES,
                chunk_rows: int = 1_000_000) -> DriftReport:
    """PSI of an in-memory DataFrame against a reference, counted in chunks of ``chunk_rows`` rows.

    Raises:
        DriftInputError: malformed reference, missing/non-numeric columns or invalid thresholds.
    """
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise DriftInputError(f"chunk_rows must be a positive integer, got {chunk_rows!r}",
                              details={"chunk_rows": chunk_rows})
    acc = PsiAccumulator(reference)
    if len(df) == 0:
        acc.update(df)  # still checks the columns
    for start in range(0, len(df), chunk_rows):
        acc.update(df.iloc[start:start + chunk_rows])  # row slices are views, no copy of the frame
    return acc.result(warn=warn, alert=alert, per_feature=per_feature, min_samples=min_samples)


# ----------------------------------------------------------------------------------------- helpers


def _require_columns(present: Iterable[str], names: Sequence[str]) -> None:
    have = set(present)
    missing = [n for n in names if n not in have]
    if missing:
        raise DriftInputError(f"data lacks drift feature column(s): {', '.join(missing)}",
                              details={"missing": missing})


def _numeric_values(column, name: str):
    """The column as a float64 array (a view when already float64); NA becomes NaN."""
    import numpy as np
    import pandas as pd

    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype) or (
            pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)):
        if isinstance(dtype, np.dtype):
            return np.asarray(column.to_numpy(), dtype="float64")
        return column.to_numpy(dtype="float64", na_value=np.nan)
    raise DriftInputError(f"numeric feature {name} has non-numeric dtype {dtype}",
                          details={"feature": name, "dtype": str(dtype)})


def _count_numeric(x, cuts, *, compare_max_cuts: int | None = None):
    """Counts per bin (``len(cuts) + 1`` bins, outer bins open) and the number of NaN values.

    Bin i holds ``cuts[i-1] <= x < cuts[i]``, i.e. the bin index is ``np.searchsorted(cuts, x,
    side="right")``: below the first cut is bin 0; from the last cut upwards (including beyond the
    reference maximum and +inf) is the last bin. NaN sorts after everything in searchsorted, so it
    lands in the last bin and is moved out. For the usual few cuts the same counts come ~5x faster
    from one ``x >= cut`` comparison per cut (NaN compares False) and differences of those counts.
    """
    import numpy as np

    n_bins = len(cuts) + 1
    n_missing = int(np.count_nonzero(np.isnan(x)))
    limit = _COMPARE_MAX_CUTS if compare_max_cuts is None else compare_max_cuts
    if len(cuts) <= limit:
        at_least = np.empty(n_bins + 1, dtype="int64")  # at_least[i] = #{x >= cuts[i-1]}, non-NaN
        at_least[0] = len(x) - n_missing
        at_least[-1] = 0
        buf = np.empty(len(x), dtype=bool)
        for i, cut in enumerate(cuts, start=1):
            at_least[i] = np.count_nonzero(np.greater_equal(x, cut, out=buf))
        counts = at_least[:-1] - at_least[1:]
        counts[-1] = at_least[-2]
        return counts, n_missing
    counts = np.bincount(np.searchsorted(cuts, x, side="right"), minlength=n_bins)
    counts[-1] -= n_missing
    return counts.astype("int64"), n_missing


def _sorted_categories(values: list[Any], name: str) -> list[Any]:
    bad = [v for v in values if not isinstance(v, _JSON_SCALARS)]
    if bad:
        raise DriftInputError(
            f"categorical feature {name} has values that are not str/int/float/bool "
            f"(e.g. {bad[0]!r} of type {type(bad[0]).__name__}); cast the column first",
            details={"feature": name, "type": type(bad[0]).__name__})
    try:
        return sorted(values)
    except TypeError:  # mixed types: order by type name, then text
        return sorted(values, key=lambda v: (type(v).__name__, str(v)))


def _bin_labels(spec: Mapping[str, Any]) -> list[str]:
    if spec["kind"] == "categorical":
        return [str(c) for c in spec["categories"]] + [MISSING, UNSEEN]
    cuts = [float(c) for c in spec["cuts"]]
    if not cuts:
        return ["all", MISSING]
    inner = [f"= {lo:.6g}" if hi == math.nextafter(lo, math.inf) else f"[{lo:.6g}, {hi:.6g})"
             for lo, hi in zip(cuts, cuts[1:], strict=False)]
    return [f"< {cuts[0]:.6g}", *inner, f">= {cuts[-1]:.6g}", MISSING]


def _validated_features(reference: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    if not isinstance(reference, Mapping) or reference.get("format") != REFERENCE_FORMAT:
        got = reference.get("format") if isinstance(reference, Mapping) else type(reference).__name__
        raise DriftInputError(f"not a PSI reference (format {got!r}, expected {REFERENCE_FORMAT!r}); "
                              "build one with build_reference()",
                              details={"format": got, "expected": REFERENCE_FORMAT})
    features = reference.get("features")
    if not isinstance(features, Mapping) or not features:
        raise DriftInputError("PSI reference has no features", details={})
    for name, spec in features.items():
        kind = spec.get("kind")
        expected = spec.get("expected")
        if kind == "numeric":
            cuts = spec.get("cuts")
            ok = (isinstance(cuts, list) and all(isinstance(c, int | float) and math.isfinite(c) for c in cuts)
                  and all(a < b for a, b in zip(cuts, cuts[1:], strict=False))
                  and isinstance(expected, list) and len(expected) == len(cuts) + 2)
        elif kind == "categorical":
            cats = spec.get("categories")
            ok = (isinstance(cats, list) and len({(type(c), c) for c in cats}) == len(cats)
                  and isinstance(expected, list) and len(expected) == len(cats) + 2)
        else:
            ok = False
        if not ok:
            raise DriftInputError(f"PSI reference entry for feature {name} is malformed",
                                  details={"feature": name, "kind": kind})
    return {str(name): dict(spec) for name, spec in features.items()}


def _thresholds(names: list[str], warn: float, alert: float,
                per_feature: Mapping[str, Mapping[Any, float]] | None) -> dict[str, tuple[float, float]]:
    per_feature = per_feature or {}
    unknown = sorted(set(per_feature) - set(names))
    if unknown:
        log.warning("PSI threshold overrides for features not in the reference: %s", unknown)
    out: dict[str, tuple[float, float]] = {}
    for name in names:
        override = dict(per_feature.get(name, {}))
        bad_keys = sorted(set(override) - {"warn", "alert"})
        if bad_keys:
            raise DriftInputError(f"unknown PSI threshold key(s) for {name}: {', '.join(bad_keys)}",
                                  details={"feature": name, "keys": bad_keys})
        f_warn = float(override.get("warn", warn))
        f_alert = float(override.get("alert", alert))
        if not (0 < f_warn < f_alert) or not math.isfinite(f_alert):
            raise DriftInputError(f"PSI thresholds for {name} need 0 < warn < alert, got warn={f_warn} "
                                  f"alert={f_alert}", details={"feature": name, "warn": f_warn, "alert": f_alert})
        out[name] = (f_warn, f_alert)
    return out
