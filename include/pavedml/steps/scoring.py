"""score_customers: score the interval's customers with ``models:/<model>@champion``.

Each row gets ``prediction`` (a classifier's class, 1 at ``probability >= 0.5``, else 0; a
regressor's predicted value) and, for a classifier, ``probability`` (of the positive class), with
``model_name`` and ``model_version`` (the version whose score was published for the row).

**Shadow challenger.** While the ``challenger`` alias names another version than the champion, and
that version is in shadow (:func:`shadow_challenger`), it scores the same rows: every row carries
``champion_version``/``champion_score`` and ``challenger_version``/``challenger_score`` (a model's
score: the positive class's probability, or the predicted value). The challenger's score is never
the published decision, except on canary rows: with ``evaluation.canary_fraction`` and a
challenger awaiting live evidence, a stable hash of the entity key sends that fraction of entities
to the challenger (``served_by = challenger`` and its ``model_version`` on those rows).

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


#: The challenger's ``evaluation.outcome`` tag while it waits for live evidence (``require_shadow_days``).
AWAITING_LIVE = "shadow"
#: The registered version's tag naming the day its training labels were known by (its run's ds).
TRAINED_THROUGH = "trained_through"
#: Hash key of the canary selection (fixed: an entity stays on the same side from day to day).
CANARY_HASH_KEY = "pavedml-canary-1"


def trained_through(mv) -> str:
    """The day a version's training labels were known by: its ``trained_through`` tag, else (a version
    registered before the tag existed) the day it was registered."""
    tag = (mv.tags or {}).get(TRAINED_THROUGH)
    if tag:
        return str(tag)[:10]
    return datetime.fromtimestamp(int(mv.creation_timestamp) / 1000, UTC).date().isoformat()


def shadow_challenger(ctx: StepContext, client, champion_mv):
    """The ``challenger`` version to score in shadow on ``ds``, or None. In shadow: another version than
    the champion, READY, trained on labels known before ``ds`` (never scored on days it learned from),
    and either awaiting live evidence (its ``evaluation.outcome`` tag is ``shadow``: until decided) or
    registered no more than ``evaluation.shadow_days`` days before ``ds``."""
    from pavedml.adapters.tracking import CHALLENGER, alias_version, unavailable_as_error

    uc = ctx.use_case
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        mv = alias_version(client, uc.model.registered_name, CHALLENGER)
    return mv if in_shadow(uc, mv, champion_mv, ctx.ds) else None


def in_shadow(uc, mv, champion_mv, day) -> bool:
    """Whether challenger ``mv`` is in shadow on ``day`` (see :func:`shadow_challenger`); the
    prediction service asks the same question about today."""
    if mv is None or str(mv.version) == str(champion_mv.version) or mv.status != "READY":
        return False
    since = trained_through(mv)
    if day.isoformat() <= since:
        return False
    if awaiting_live(mv):
        return True
    return (day - datetime.fromisoformat(since).date()).days <= uc.evaluation.shadow_days


def awaiting_live(mv) -> bool:
    """The challenger waits for live evidence (its canary share may be served)."""
    return (mv.tags or {}).get("evaluation.outcome") == AWAITING_LIVE


def canary_rows(keys, fraction: float):
    """A boolean mask: the entities (a stable hash of the key's text) served the challenger's score."""
    import numpy as np
    import pandas as pd

    if fraction <= 0 or len(keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    hashed = pd.util.hash_array(np.asarray(keys.astype(str), dtype=object), hash_key=CANARY_HASH_KEY)
    return hashed < np.uint64(int(fraction * 2**64))


def _holdouts(*versions) -> dict[str, dict[str, float]]:
    """Version -> its training-holdout metrics (its ``holdout_<metric>`` tags), for the performance
    monitor's plot without an MLflow round trip."""
    return {str(mv.version): {k.removeprefix("holdout_"): float(v) for k, v in (mv.tags or {}).items()
                              if k.startswith("holdout_")} for mv in versions if mv is not None}


def score_customers(ctx: StepContext) -> ScoringResult:
    import mlflow
    import numpy as np

    from pavedml.metrics import DECISION_THRESHOLD, model_scores

    uc, ds = ctx.use_case, ctx.ds_iso
    started = time.perf_counter()
    client, mv = champion(ctx)
    name = uc.model.registered_name
    model = mlflow.sklearn.load_model(f"models:/{name}/{mv.version}")
    shadow = shadow_challenger(ctx, client, mv)
    table, sha = read_interval_features(ctx, [uc.entity.key, "event_timestamp", *uc.feature_columns])
    features = table.to_pandas()
    X = features[uc.feature_columns]
    scores = model_scores(model, X, uc.task)
    out = features[[uc.entity.key, "event_timestamp"]].copy()
    published = scores
    served_by = np.full(len(out), "champion", dtype=object)
    versions = np.full(len(out), str(mv.version), dtype=object)
    challenger_scores = np.full(len(out), np.nan)
    canary = np.zeros(len(out), dtype=bool)
    if shadow is not None:
        challenger_model = mlflow.sklearn.load_model(f"models:/{name}/{shadow.version}")
        challenger_scores = model_scores(challenger_model, X, uc.task)
        if awaiting_live(shadow):
            canary = canary_rows(out[uc.entity.key], uc.evaluation.canary_fraction)
        published = np.where(canary, challenger_scores, scores)
        served_by[canary] = "challenger"
        versions[canary] = str(shadow.version)
    if uc.is_regression:
        out[PREDICTION] = published
    else:
        out[PROBABILITY] = published
        out[PREDICTION] = (published >= DECISION_THRESHOLD).astype("int8")
    out["model_name"] = name
    out["model_version"] = versions
    out["served_by"] = served_by
    out["champion_version"] = str(mv.version)
    out["champion_score"] = scores
    out["challenger_version"] = str(shadow.version) if shadow is not None else None
    out["challenger_score"] = challenger_scores
    out["feature_snapshot_sha256"] = sha
    explain_seconds = None
    if uc.scoring.explain:
        explain_seconds = time.perf_counter()
        out["top_features"] = explain_rows(mv, model, X, uc)
        explain_seconds = round(time.perf_counter() - explain_seconds, 3)
        log.info("explained %d rows (top %d features each) in %.1fs", len(out), uc.scoring.explain_top, explain_seconds)
    out["scored_at"] = datetime.now(UTC)
    shadow_version = str(shadow.version) if shadow is not None else None
    partition = ctx.layout.predictions_partition(ds)
    with storage.atomic_dir(partition, staging=ctx.layout.staging) as tmp:
        out.to_parquet(tmp / PART_FILE, index=False)
        storage.write_json(str(tmp / SCORED_FILE), {"model_name": name, "model_version": str(mv.version),
                                                       "challenger_version": shadow_version,
                                                       "canary_fraction": uc.evaluation.canary_fraction
                                                       if canary.any() else 0.0,
                                                       "canary_rows": int(canary.sum()), "rows": len(out),
                                                       "holdouts": _holdouts(mv, shadow),
                                                       "feature_snapshot_sha256": sha, "dag_run": ctx.run_id})
    seconds = time.perf_counter() - started
    mean = round(float(np.mean(out[PREDICTION])), 4) if len(out) else 0.0
    log.info("scored %d rows of %s with %s v%s in %.1fs (%s %.4f)", len(out), ds, name,
             mv.version, seconds, "mean prediction" if uc.is_regression else "positive rate", mean)
    if shadow is not None:
        log.info("challenger v%s scored the same rows in shadow%s", shadow.version,
                 f"; {int(canary.sum())} canary row(s) ({uc.evaluation.canary_fraction:.0%} of entities) were "
                 "served its score" if canary.any() else " (never served)")
    extra = {"ds": ds, "model_version": str(mv.version), "challenger_version": shadow_version, "rows": len(out),
             "canary_rows": int(canary.sum()), "feature_snapshot_sha256": sha}
    return ScoringResult(step="score_customers", use_case=uc.name, ds=ds, model_name=name,
                         model_version=str(mv.version), challenger_version=shadow_version,
                         canary_rows=int(canary.sum()), rows=len(out), partition=str(partition),
                         feature_snapshot_sha256=sha, seconds=round(seconds, 3),
                         positive_rate=None if uc.is_regression else mean,
                         prediction_mean=mean if uc.is_regression else None, asset_extra=extra,
                         explain_seconds=explain_seconds)


def explain_rows(mv, model, X, uc) -> list[str]:
    """Each row's top features for the champion's score (:func:`pavedml.explain.row_contributions`),
    against the baseline of the champion's training sample (its ``drift/reference_sample.parquet``).
    A canary row (served the challenger's score) is explained by the champion's score too."""
    import mlflow
    import pandas as pd

    from pavedml.adapters.tracking import DRIFT_ARTIFACTS, REFERENCE_SAMPLE, unavailable_as_error
    from pavedml.explain import baseline_values, row_contributions

    with unavailable_as_error(str(mlflow.get_tracking_uri())):
        local = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=f"{DRIFT_ARTIFACTS}/{REFERENCE_SAMPLE}")
    sample = pd.read_parquet(local)
    absent = [c for c in X.columns if c not in sample.columns]
    if absent:  # a feature the champion's sample predates: its baseline from this batch instead
        log.warning("the training sample of v%s has no %s: their explanation baseline is this batch's",
                    mv.version, ", ".join(absent))
        sample = sample.assign(**{c: X[c].median() if c in uc.numeric_features else X[c].mode().iloc[0]
                                  for c in absent})
    baseline = baseline_values(sample, uc.numeric_features, uc.categorical_features)
    return row_contributions(model, X, baseline, uc.task, k=uc.scoring.explain_top)
