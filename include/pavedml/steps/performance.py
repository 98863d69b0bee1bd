"""Realized performance: predictions joined with their labels once they land.

:func:`labelled_predictions` is the join (one scored day at a time, only the columns it needs):
a day's ``predictions/dt=<d>/part-0.parquet`` with the labels that landed for it. Labels for
snapshot day ``d`` land in the landing-zone partition ``dt = d + label.delay_days`` but may come
later, so every partition ``dt`` in ``[d, d + delay_days + performance.lookback_days]`` is read
(each validated like training reads it: the labels suite, :func:`label_values`,
:func:`label_timestamps`) and a label is kept only when its time equals a prediction's
``event_timestamp`` for the same entity key. A label delivered twice (a correction in a later
partition) counts once: the newest partition wins.
"""

from __future__ import annotations

import hashlib
import io
import logging
from datetime import date, timedelta

from pavedml import storage
from pavedml.context import StepContext
from pavedml.layout import PART_FILE
from pavedml.metrics import LABEL, PREDICTION, PROBABILITY

log = logging.getLogger(__name__)
#: The columns :func:`labelled_predictions` returns besides the entity key.
JOINED_COLUMNS = ("event_timestamp", LABEL, "champion_version", "champion_score", "challenger_version",
                  "challenger_score", "served_by")
LABEL_TS = "event_timestamp"


def label_partitions(ctx: StepContext, ds: date) -> list[str]:
    """The landing-zone labels files that may hold labels of scored day ``ds`` (oldest partition
    first; per day the CSV, else the Parquet file, as training reads them)."""
    uc = ctx.use_case
    out = []
    for offset in range(uc.label.delay_days + uc.performance.lookback_days + 1):
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

    from pavedml.steps.training import label_timestamps, label_values
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
                         LABEL_TS: _utc_ns(label_timestamps(df, uri)),
                         LABEL: label_values(uc, df[uc.label.column], uri)},
                        index=df.index)


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
    if not ctx.layout.predictions_scored(ds.isoformat()).exists() or not path.exists():
        return None
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
    return df


def labelled_predictions(ctx: StepContext, ds: date | str):
    """The scored rows of day ``ds`` that have a label, as a DataFrame with columns ``<entity key>``
    (text), ``event_timestamp`` (UTC), ``label`` (:data:`LABEL`: 0/1 or the number),
    ``champion_version``, ``champion_score``, ``challenger_version``, ``challenger_score`` (null
    without a shadow challenger) and ``served_by``; or None when the day is not scored or no label
    for it has landed. Labels are matched on (entity key, label time == ``event_timestamp``)."""
    import pandas as pd

    day = date.fromisoformat(ds) if isinstance(ds, str) else ds
    scored = read_scored_day(ctx, day)
    if scored is None:
        return None
    key = ctx.use_case.entity.key
    times = scored["event_timestamp"]
    lo, hi = times.min(), times.max()
    frames = []
    for uri in label_partitions(ctx, day):
        labels = read_labels_file(ctx, uri)
        labels = labels[(labels[LABEL_TS] >= lo) & (labels[LABEL_TS] <= hi)]
        if len(labels):
            frames.append(labels)
    if not frames:
        return None
    labels = pd.concat(frames, ignore_index=True).drop_duplicates([key, LABEL_TS], keep="last")
    joined = scored.merge(labels, on=[key, LABEL_TS], how="inner", validate="many_to_one")
    if not len(joined):
        return None
    return joined[[key, *JOINED_COLUMNS]].reset_index(drop=True)


def files_digest(ctx: StepContext, ds: date) -> str:
    """sha256 over the day's predictions file and every labels file that may hold its labels: a
    day whose digest is unchanged need not be measured again."""
    h = hashlib.sha256()
    path = ctx.layout.predictions_partition(ds.isoformat()) / PART_FILE
    h.update(str(path).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    for uri in label_partitions(ctx, ds):
        h.update(uri.encode() + b"\0" + hashlib.sha256(storage.read_bytes(uri)).digest())
    return h.hexdigest()
