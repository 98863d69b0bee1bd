"""MLflow glue: one run per DAG run (params, metrics, plots, lineage, drift reference, model) and
its registration. Metrics are computed by :mod:`pavedml.metrics`, the drift reference by
:mod:`pavedml.drift`; this module only logs and registers them.

Idempotent per DAG run: the run and the model version carry the tag ``pavedml.dag_run`` and a
retry of the same DAG run finds and reuses them instead of creating a second version.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from pavedml.context import StepContext
from pavedml.errors import RegistryError, TrackingUnavailableError
from pavedml.layout import DATASET_FILE
from pavedml.redact import clip, redact_urls
from pavedml.results import TrainResult, registry_event
from pavedml.settings import Settings

log = logging.getLogger(__name__)
DAG_RUN_TAG = "pavedml.dag_run"
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous_champion"
#: The plots a training run logs under ``plots/<name>.png``, per task.
PLOTS_BY_TASK = {
    "binary_classification": ("roc_curve", "pr_curve", "confusion_matrix", "calibration", "feature_importance"),
    "regression": ("predicted_vs_actual", "residuals", "calibration", "feature_importance"),
}
PLOT_NAMES = PLOTS_BY_TASK["binary_classification"]
#: Where a run keeps the drift reference (the registered version's ``drift_reference`` tag points at
#: it) and the sample of training features beside it (for the Evidently report).
DRIFT_ARTIFACTS = "drift"
DRIFT_REFERENCE = f"{DRIFT_ARTIFACTS}/reference.json"
REFERENCE_SAMPLE = "reference_sample.parquet"


def setup(ctx: StepContext):
    """Point MLflow at the configured server and make sure the use case's experiment exists."""
    return connect(ctx.settings, ctx.use_case.name)


def connect(s: Settings, name: str, wait_s: float | None = None):
    """(MlflowClient, experiment id) of use case ``name`` on the server of settings ``s``.

    A server that does not answer is waited for, up to ``wait_s`` seconds (default: the settings'
    ``PAVEDML_TRACKING_WAIT_SECONDS``), before :class:`TrackingUnavailableError`: a tracking server
    restarting for a minute costs a step a minute, not a failed try (nothing is lost by waiting
    here: the step has done no work yet)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    import mlflow

    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    mlflow.set_registry_uri(s.mlflow_tracking_uri)
    if s.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(s.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + (s.tracking_wait_seconds if wait_s is None else wait_s)
    pause = 2.0
    while True:
        try:
            with unavailable_as_error(s.mlflow_tracking_uri):
                exp = mlflow.get_experiment_by_name(name)
                if exp is None:
                    # A tracking server decides where artifacts go (proxied artifacts authorize by
                    # experiment id); only the embedded profile pins a local artifact folder.
                    location = None if s.mlflow_tracking_uri.startswith(("http://", "https://")) \
                        else f"{s.mlflow_artifact_root.rstrip('/')}/{name}"
                    exp_id = mlflow.create_experiment(name, artifact_location=location)
                else:
                    exp_id = exp.experiment_id
            return mlflow.MlflowClient(), exp_id
        except TrackingUnavailableError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            log.warning("%s; waiting for it, %.0fs left (PAVEDML_TRACKING_WAIT_SECONDS)", exc.message, left)
            time.sleep(min(pause, left))
            pause = min(pause * 2, 15.0)


@contextmanager
def unavailable_as_error(uri: str):
    """Turn connection failures into a retryable error that names the server (its password masked)."""
    import requests

    uri = redact_urls(uri)
    try:
        yield
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise TrackingUnavailableError(f"MLflow tracking server {uri} is unreachable: {type(exc).__name__}",
                                       details={"next": "check the MLflow server; the task retries by itself"}) from None
    except Exception as exc:
        if "ConnectionError" in type(exc).__name__ or "Max retries exceeded" in str(exc):
            raise TrackingUnavailableError(f"MLflow tracking server {uri} is unreachable: {clip(exc, 200)}",
                                           details={"next": "check the MLflow server; the task retries by itself"}) from None
        raise


def git_commit() -> str:
    env = os.environ.get("PAVEDML_GIT_COMMIT")
    if env:
        return env
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _plots(pipeline, features, y, scores, outdir: Path, task: str = "binary_classification") -> list[Path]:
    """The task's plots (:data:`PLOTS_BY_TASK`) of the model's ``scores`` on ``features`` with labels
    ``y`` (the validation split), as PNG files in ``outdir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from pavedml.explain import permutation_table

    paths = []
    y = np.asarray(y)
    scores = np.asarray(scores, dtype="float64")

    def save(name, draw, size=(6, 4.5)):
        fig, ax = plt.subplots(figsize=size)
        draw(ax)
        ax.set_title(name.replace("_", " "))
        fig.tight_layout()
        path = outdir / f"{name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)

    if task == "regression":
        _regression_plots(plt, save, y.astype("float64"), scores, outdir, paths)
    else:
        from sklearn.calibration import CalibrationDisplay
        from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

        save("roc_curve", lambda ax: RocCurveDisplay.from_predictions(y, scores, ax=ax))
        save("pr_curve", lambda ax: PrecisionRecallDisplay.from_predictions(y, scores, ax=ax))
        save("confusion_matrix",
             lambda ax: ConfusionMatrixDisplay.from_predictions(y, (scores >= 0.5).astype(int), ax=ax))
        save("calibration", lambda ax: CalibrationDisplay.from_predictions(y, scores, n_bins=10, ax=ax))
    table = permutation_table(pipeline, features, y, task)
    top = table["features"][:15][::-1]

    def bars(ax):
        ax.barh([f["feature"] for f in top], [f["mean"] for f in top])
        ax.set_xlabel(f"{table['meaning']} when permuted (validation sample)")

    save("feature_importance", bars)
    return paths


def _regression_plots(plt, save, y, pred, outdir: Path, paths: list[Path]) -> None:
    """Predicted vs actual, residuals (against the prediction, and their histogram) and a
    calibration-style plot (mean actual per bin of predicted values against the bin's mean prediction)."""
    import numpy as np

    def predicted_vs_actual(ax):
        ax.scatter(y, pred, s=6, alpha=0.4)
        lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", label="perfect")
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.legend(fontsize=7)

    save("predicted_vs_actual", predicted_vs_actual)
    residual = y - pred
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    left.scatter(pred, residual, s=6, alpha=0.4)
    left.axhline(0, color="grey", linestyle="--")
    left.set_xlabel("predicted")
    left.set_ylabel("residual (actual - predicted)")
    right.hist(residual, bins=40)
    right.set_xlabel("residual (actual - predicted)")
    right.set_ylabel("rows")
    fig.suptitle("residuals")
    fig.tight_layout()
    path = outdir / "residuals.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    paths.append(path)

    def calibration(ax):
        edges = np.unique(np.quantile(pred, np.linspace(0, 1, 11)))
        which = np.clip(np.searchsorted(edges, pred, side="right") - 1, 0, max(len(edges) - 2, 0))
        bins = [b for b in range(max(len(edges) - 1, 1)) if (which == b).any()]
        mean_pred = [float(pred[which == b].mean()) for b in bins]
        mean_true = [float(y[which == b].mean()) for b in bins]
        ax.plot(mean_pred, mean_true, marker="o", label="model")
        lo, hi = min(mean_pred + mean_true), max(mean_pred + mean_true)
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", label="perfect")
        ax.set_xlabel("mean predicted (per decile of predictions)")
        ax.set_ylabel("mean actual")
        ax.legend(fontsize=7)

    save("calibration", calibration)


def find_version_for_dag_run(client, name: str, key: str):
    try:
        versions = client.search_model_versions(f"name = '{name}' and tags.`{DAG_RUN_TAG}` = '{key}'")
    except Exception as exc:  # registered model absent on first use
        if "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return None
        raise
    versions = [v for v in versions if v.tags.get(DAG_RUN_TAG) == key]
    return max(versions, key=lambda v: int(v.version)) if versions else None


def _skops_trusted(pipeline) -> list[str]:
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "skops", "pandas", "numpy")]


def reuse_registered(ctx: StepContext, client) -> TrainResult | None:
    """The version this DAG run already registered (a retry), made the challenger again; else None."""
    uc = ctx.use_case
    name = uc.model.registered_name
    key = ctx.dag_run_key
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        existing = find_version_for_dag_run(client, name, key)
        if existing is None:
            return None
        log.info("DAG run %s already registered %s v%s: reusing it", key, name, existing.version)
        supersede_waiting(ctx, client, str(existing.version))
        client.set_registered_model_alias(name, CHALLENGER, existing.version)
        run = client.get_run(existing.run_id)
    return TrainResult(step="train_challenger", use_case=uc.name, ds=ctx.ds_iso, model_name=name,
                       model_version=str(existing.version), run_id=existing.run_id,
                       metrics={k: v for k, v in run.data.metrics.items() if k.startswith("holdout_")},
                       reused=True)


def log_and_register(ctx: StepContext, pipeline, params: dict, manifest: dict, splits: dict, metrics: dict,
                     reference: dict, reference_sample, seconds: dict[str, float]) -> TrainResult:
    """Log the fitted pipeline of this DAG run to MLflow and register it as the challenger.

    One MLflow run per DAG run (a retry resumes the run tagged with the DAG run): params, the
    metrics given (computed by :mod:`pavedml.metrics`), dataset lineage, the drift reference and
    its sample (built by the training step), plots and the model; then a registered version tagged
    with the DAG run, its drift reference and the holdout metrics, alias ``challenger``.
    ``seconds`` (``fit``, ``evaluate``) is reported with the plots' and the logging's own time.
    """
    uc = ctx.use_case
    name = uc.model.registered_name
    _, exp_id = setup(ctx)
    t_log = time.perf_counter()
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        run_id, model_uri, plot_seconds = _log_run(ctx, exp_id, pipeline, params, manifest, splits, metrics,
                                                   reference, reference_sample, seconds["fit"])
        version = _register(ctx, model_uri, run_id, metrics)
    log_seconds = time.perf_counter() - t_log
    log.info("registered %s v%s (run %s) as %s", name, version, run_id, CHALLENGER)
    holdout = {k: round(v, 6) for k, v in metrics.items() if k.startswith("holdout_")}
    event = registry_event("registered", ctx, version, None, None,
                           f"{uc.model.family} trained through {ctx.ds_iso} ({ctx.reason}); holdout "
                           + ", ".join(f"{k.removeprefix('holdout_')} {v:.4f}" for k, v in holdout.items()))
    return TrainResult(step="train_challenger", use_case=uc.name, ds=ctx.ds_iso, model_name=name, model_version=version,
                       run_id=run_id, metrics=holdout, registry_event=event,
                       reused=False, seconds={"fit": round(seconds["fit"], 3), "evaluate": round(seconds["evaluate"], 3),
                                              "plots": round(plot_seconds, 3),
                                              "mlflow_logging_and_registration": round(log_seconds - plot_seconds, 3)})


def _log_run(ctx: StepContext, exp_id: str, pipeline, params: dict, manifest: dict, splits: dict, metrics: dict,
             reference: dict, reference_sample, fit_seconds: float) -> tuple[str, str, float]:
    """The DAG run's MLflow run (resumed on a retry): (run id, model URI, seconds spent on plots)."""
    import mlflow

    from pavedml.metrics import LABEL, model_scores

    uc = ctx.use_case
    key = ctx.dag_run_key
    X = uc.feature_columns
    train, validation = splits["train"], splits["validation"]
    tags = {DAG_RUN_TAG: key, "airflow.dag_id": ctx.dag_id, "airflow.run_id": ctx.run_id,
            "airflow.logical_date": ctx.ds_iso, "airflow.try_number": str(ctx.try_number),
            "git_commit": git_commit(), "use_case": uc.name, "mlflow.runName": f"{uc.name}-{ctx.ds_iso}",
            "reason": ctx.reason}
    runs = mlflow.search_runs([exp_id], filter_string=f"tags.`{DAG_RUN_TAG}` = '{key}'", output_format="list")
    resume = runs[0].info.run_id if runs else None
    with mlflow.start_run(run_id=resume, experiment_id=None if resume else exp_id, tags=tags) as run:
        mlflow.log_params({"task": uc.task, "model_family": uc.model.family, **{f"model.{k}": v for k, v in params.items()},
                           "features.numeric": ",".join(uc.numeric_features),
                           "features.categorical": ",".join(uc.categorical_features),
                           "training_window_days": manifest["window_days"],
                           **{f"rows.{k}": v for k, v in manifest["rows"].items()}})
        mlflow.log_metrics(metrics)
        mlflow.log_metric("fit_seconds", fit_seconds)
        mlflow.set_tags({f"dataset.{k}.digest": v for k, v in manifest["digests"].items()})
        mlflow.set_tag("raw_snapshot_hashes", json.dumps(manifest["feature_snapshots"], sort_keys=True)[:5000])
        for split_name in ("train", "validation", "holdout"):
            dataset = _dataset(splits[split_name], source=str(ctx.layout.training_split(ctx.run_key, split_name)),
                               name=f"{uc.name}-{split_name}", digest=manifest["digests"][split_name][:32])
            mlflow.log_input(dataset, context=split_name)
        mlflow.log_dict(manifest, f"dataset/{DATASET_FILE}")
        mlflow.log_dict(reference, DRIFT_REFERENCE)
        with tempfile.TemporaryDirectory() as tmp:  # a sample of the training features for people's reports
            reference_sample.to_parquet(Path(tmp) / REFERENCE_SAMPLE, index=False)
            mlflow.log_artifact(str(Path(tmp) / REFERENCE_SAMPLE), DRIFT_ARTIFACTS)
        with tempfile.TemporaryDirectory() as tmp:
            plot_seconds = time.perf_counter()
            for path in _plots(pipeline, validation[X], validation[LABEL].to_numpy(),
                               model_scores(pipeline, validation[X], uc.task), Path(tmp), uc.task):
                mlflow.log_artifact(str(path), "plots")
            plot_seconds = time.perf_counter() - plot_seconds
        info = log_model(pipeline, train[X].head(5), uc.task)
        return run.info.run_id, info.model_uri, plot_seconds


def log_model(pipeline, example, task: str):
    """Log the fitted pipeline as the active run's ``model`` (sklearn flavor, skops format) so
    that its pyfunc (``mlflow models serve``, ``mlflow.pyfunc.load_model``) returns what its
    signature declares: a classifier's class probabilities (``predict_proba``: float64 (n, 2),
    the positive class second), a regressor's predicted values (float64 (n,)).
    ``mlflow.sklearn.load_model`` still gives the pipeline itself."""
    import mlflow
    from mlflow.models import infer_signature

    from pavedml.metrics import is_regression

    predict_fn = "predict" if is_regression(task) else "predict_proba"
    output = getattr(pipeline, predict_fn)(example)
    return mlflow.sklearn.log_model(pipeline, name="model", signature=infer_signature(example, output),
                                    input_example=example, pyfunc_predict_fn=predict_fn,
                                    pip_requirements=_pip_requirements(), skops_trusted_types=_skops_trusted(pipeline))


def governance_tags(uc) -> dict[str, str]:
    """The use case's ``governance:`` as ``governance.*`` version tags (empty fields left out; the
    owner and data classification always there) and the pending approval status when approval is required."""
    g = uc.governance
    tags = {"governance.owner": uc.governance_owner, "governance.data_classification": g.data_classification,
            "governance.business_unit": g.business_unit, "governance.regulatory_context": g.regulatory_context,
            "governance.intended_use": g.intended_use, "governance.limitations": g.limitations}
    tags = {k: clip(v, 4000) for k, v in tags.items() if v}
    tags["approval.status"] = "pending" if uc.evaluation.require_approval else "not_required"
    return tags


def _register(ctx: StepContext, model_uri: str, run_id: str, metrics: dict) -> str:
    """Register the run's model (tagged with the DAG run), wait until READY, alias it ``challenger``."""
    import mlflow

    name = ctx.use_case.model.registered_name
    client = mlflow.MlflowClient()
    mv = mlflow.register_model(model_uri, name, tags={**governance_tags(ctx.use_case),
                                                      DAG_RUN_TAG: ctx.dag_run_key, "use_case": ctx.use_case.name,
                                                      "trained_through": ctx.ds_iso, "task": ctx.use_case.task,
                                                      "drift_reference": f"runs:/{run_id}/{DRIFT_REFERENCE}",
                                                      **{k: f"{v:.6f}" for k, v in metrics.items()
                                                         if k.startswith("holdout_")}})
    _wait_ready(client, name, mv.version)
    supersede_waiting(ctx, client, str(mv.version))
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return str(mv.version)


def supersede_waiting(ctx: StepContext, client, new_version: str) -> None:
    """Before ``challenger`` moves to ``new_version``: a challenger still waiting for live evidence
    (``evaluation.outcome`` = ``shadow``) leaves shadow undecided, said in its tags and the ledger
    (never silently dropped)."""
    from pavedml.ledger import append_ledger

    name = ctx.use_case.model.registered_name
    current = alias_version(client, name, CHALLENGER)
    if current is None or str(current.version) == str(new_version):
        return
    if (current.tags or {}).get("evaluation.outcome") != "shadow":
        return
    old = str(current.version)
    client.set_model_version_tag(name, old, "evaluation.outcome", "superseded")
    client.set_model_version_tag(name, old, "evaluation.superseded_by", str(new_version))
    champion = alias_version(client, name, CHAMPION)
    champ_v = str(champion.version) if champion else None
    append_ledger(ctx, {"action": "superseded", "model": name, "from_version": champ_v, "to_version": champ_v,
                        "challenger_version": old,
                        "reason": f"{ctx.reason}: challenger v{new_version} was registered while v{old} waited for "
                                  f"live evidence; v{old} leaves shadow undecided"})
    log.warning("%s v%s waited for live evidence and is superseded by v%s (ledger entry written)", name, old,
                new_version)


def _dataset(df, source: str, name: str, digest: str):
    """An MLflow dataset for lineage (source, digest, schema, row count) whose schema is inferred from
    a sample: MLflow infers it value by value, which costs a minute per million rows."""
    from mlflow.data.pandas_dataset import PandasDataset

    class SampledSchemaDataset(PandasDataset):
        @property
        def profile(self):
            return {"num_rows": len(df), "num_elements": int(df.size)}

    from mlflow.data.dataset_source_registry import resolve_dataset_source

    return SampledSchemaDataset(df=df.head(1000), source=resolve_dataset_source(source), targets="label", name=name,
                                digest=digest)


def _wait_ready(client, name: str, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        mv = client.get_model_version(name, version)
        if mv.status == "READY":
            return
        if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RegistryError(f"{name} v{version} did not become READY (status {mv.status})")
        time.sleep(0.5)


def alias_version(client, name: str, alias: str):
    """The version an alias points to, or None."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            return None
        raise
