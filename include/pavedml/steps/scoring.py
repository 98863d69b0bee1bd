"""score_customers: score the interval's customers with ``models:/<model>@champion``.

Each row gets ``prediction`` (a classifier's class, 1 at ``probability >= 0.5``, else 0; a
regressor's predicted value) and, for a classifier, ``probability`` (of the positive class), with
``model_name`` and ``model_version``.

Features come from Feast's offline store for the interval: the feature view's batch source
filtered to the interval's partition, which is exactly what ``get_historical_features`` returns
for entity timestamps at the interval start (a test checks that equality) without a point-in-time
join over all history. Predictions are written to ``predictions/dt=<ds>/`` with the model version
and the feature-snapshot hash; a rerun replaces the partition atomically (never duplicates).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from pavedml import storage
from pavedml.context import StepContext
from pavedml.errors import FeatureCheckError, RegistryError
from pavedml.layout import PART_FILE, SCORED_FILE
from pavedml.metrics import PREDICTION, PROBABILITY
from pavedml.results import ScoringResult

log = logging.getLogger(__name__)


def read_interval_features(ctx: StepContext, columns: list[str] | None = None):
    """The interval's rows of the feature view's batch source (the Feast offline store)."""
    import pyarrow.dataset as pads

    ds = ctx.ds_iso
    part = ctx.layout.features_file(ds)
    if not part.exists():
        raise FeatureCheckError(f"no offline features for {ds} at {part.parent}",
                                details={"next": f"run {ctx.use_case.dag_id('feature_pipeline')} for {ds} first"})
    source = storage.read_json(str(ctx.layout.features_source(ds)))
    table = pads.dataset(str(part), format="parquet").to_table(columns=columns)
    return table, source["sha256"]


def champion(ctx: StepContext):
    from pavedml.adapters.tracking import CHAMPION, alias_version, setup, unavailable_as_error

    client, _ = setup(ctx)
    name = ctx.use_case.model.registered_name
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        mv = alias_version(client, name, CHAMPION)
    if mv is None:
        raise RegistryError(f"{name} has no champion yet",
                            details={"next": f"run {ctx.use_case.dag_id('training_pipeline')} first"})
    return client, mv


def score_customers(ctx: StepContext) -> ScoringResult:
    import mlflow
    import numpy as np

    from pavedml.metrics import DECISION_THRESHOLD, model_scores

    uc, ds = ctx.use_case, ctx.ds_iso
    started = time.perf_counter()
    client, mv = champion(ctx)
    model = mlflow.sklearn.load_model(f"models:/{uc.model.registered_name}/{mv.version}")
    table, sha = read_interval_features(ctx, [uc.entity.key, "event_timestamp", *uc.feature_columns])
    features = table.to_pandas()
    scores = model_scores(model, features[uc.feature_columns], uc.task)
    out = features[[uc.entity.key, "event_timestamp"]].copy()
    if uc.is_regression:
        out[PREDICTION] = scores
    else:
        out[PROBABILITY] = scores
        out[PREDICTION] = (scores >= DECISION_THRESHOLD).astype("int8")
    out["model_name"] = uc.model.registered_name
    out["model_version"] = str(mv.version)
    out["feature_snapshot_sha256"] = sha
    out["scored_at"] = datetime.now(UTC)
    partition = ctx.layout.predictions_partition(ds)
    with storage.atomic_dir(partition, staging=ctx.layout.staging) as tmp:
        out.to_parquet(tmp / PART_FILE, index=False)
        storage.write_json(str(tmp / SCORED_FILE), {"model_name": uc.model.registered_name,
                                                       "model_version": str(mv.version), "rows": len(out),
                                                       "feature_snapshot_sha256": sha, "dag_run": ctx.run_id})
    seconds = time.perf_counter() - started
    mean = round(float(np.mean(out[PREDICTION])), 4) if len(out) else 0.0
    log.info("scored %d rows of %s with %s v%s in %.1fs (%s %.4f)", len(out), ds, uc.model.registered_name,
             mv.version, seconds, "mean prediction" if uc.is_regression else "positive rate", mean)
    extra = {"ds": ds, "model_version": str(mv.version), "rows": len(out), "feature_snapshot_sha256": sha}
    return ScoringResult(step="score_customers", use_case=uc.name, ds=ds, model_name=uc.model.registered_name,
                         model_version=str(mv.version), rows=len(out), partition=str(partition),
                         feature_snapshot_sha256=sha, seconds=round(seconds, 3),
                         positive_rate=None if uc.is_regression else mean,
                         prediction_mean=mean if uc.is_regression else None, asset_extra=extra)
