"""check_drift and request_retraining: the PSI drift loop.

``check_drift`` compares the champion's drift reference (bin edges and expected proportions frozen
from its training data) with the latest scoring window, streaming the window in chunks. It writes
``drift/dt=<ds>/`` (report JSON, PSI table, an Evidently HTML report for people) and the PSI history
(table + plot). Status: ``waiting`` (the window is not scored yet: the sensor pokes again),
``insufficient_data`` (fewer rows than ``drift.min_samples``: it refuses to judge), ``no_drift``
or ``drift`` (at least ``drift.min_alert_features`` features at or above their alert threshold).

The model's output is checked too: the PSI of the window's predictions (a classifier's
``probability``, a regressor's ``prediction``) against their distribution on the champion's training
split (the reference's ``prediction`` entry, see :func:`pavedml.drift.build_prediction_reference`)
is recorded in the report JSON, the PSI table and ``DriftCheckResult.prediction_psi`` and logged as a
warning at or above the warn threshold. It does NOT count toward the verdict: retraining is requested
on feature drift only (a shifted output with stable features is a question for people, not a
retrain). A version trained before this check has no such reference: ``prediction_psi`` is None.

``request_retraining`` turns a ``drift`` verdict into one retrain request per window (the Asset
event the training DAG is scheduled on, carrying the PSI table, window and data hash), honouring
the cooldown; otherwise it exits with :data:`pavedml.errors.EXIT_SKIP` and the task is skipped (no Asset event).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pavedml import storage
from pavedml.context import StepContext
from pavedml.errors import DriftInputError, SkipStep
from pavedml.layout import DRIFT_REPORT, EVIDENTLY_REPORT, PSI_TABLE
from pavedml.results import DriftCheckResult, RetrainRequestResult

log = logging.getLogger(__name__)
EVIDENTLY_NOTE = (
    "<div style='font-family:sans-serif;background:#fff4d6;border:1px solid #e0b000;padding:10px;margin:10px'>"
    "<b>pavedml note.</b> The retraining decision uses <b>our PSI</b>: numeric features binned on "
    "<b>quantiles of the training reference</b> (the design doc's definition, frozen with the model version), "
    "categorical features by category plus an 'unseen' bucket; see <code>report.json</code> / "
    "<code>psi_table.txt</code> beside this file. Evidently's PSI below bins the <b>combined</b> reference and "
    "current data with <b>Sturges' rule</b> (equal-width bins), so its values differ and its thresholds are not "
    "interchangeable with ours. This report uses samples of at most {n} rows per side.</div>"
)


def window_days(ctx: StepContext) -> list[str]:
    """The scored days of the drift window: ``window_days`` days ending at ds, oldest first."""
    return [(ctx.ds - timedelta(days=i)).isoformat() for i in reversed(range(ctx.params.window_days))]


def load_reference(ctx: StepContext, version: str) -> tuple[dict, str | None]:
    """(reference dict, local path of the reference sample parquet or None) of a model version."""
    import mlflow

    from pavedml.adapters.tracking import REFERENCE_SAMPLE, setup, unavailable_as_error

    client, _ = setup(ctx)
    name = ctx.use_case.model.registered_name
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        mv = client.get_model_version(name, version)
        uri = mv.tags.get("drift_reference")
        if not uri:
            raise DriftInputError(f"{name} v{version} has no drift_reference tag; retrain it with this version of "
                                  "the pipeline")
        local = mlflow.artifacts.download_artifacts(uri)
        sample = None
        try:
            sample = mlflow.artifacts.download_artifacts(f"{uri.rsplit('/', 1)[0]}/{REFERENCE_SAMPLE}")
        except Exception:  # older versions carry no sample: the Evidently report is skipped
            log.warning("no reference sample for %s v%s: the Evidently report is skipped", name, version)
    return json.loads(Path(local).read_text()), sample


def judge(report, policy) -> str:
    """``insufficient_data`` below the minimum sample size, ``drift`` when at least
    ``min_alert_features`` features alert, else ``no_drift``."""
    if not report.judged:
        return "insufficient_data"
    return "drift" if len(report.alerts) >= policy.min_alert_features else "no_drift"


def check_drift(ctx: StepContext) -> DriftCheckResult:
    import pyarrow.parquet as pq

    from pavedml.drift import PsiAccumulator

    uc, ds = ctx.use_case, ctx.ds_iso
    days = window_days(ctx)
    scored = [d for d in days if ctx.layout.predictions_scored(d).exists()]
    if len(scored) < len(days):
        missing = sorted(set(days) - set(scored))
        log.info("scoring window %s not complete yet (missing %s)", days, missing)
        return DriftCheckResult(step="check_drift", use_case=uc.name, ds=ds, status="waiting", window=days,
                                model_version=None, model_name=uc.model.registered_name, data_hash="",
                                alerts=[], warnings=[], psi={},
                                reason=f"no predictions yet for {', '.join(missing)}")
    versions = {storage.read_json(str(ctx.layout.predictions_scored(d)))["model_version"] for d in days}
    version = max(versions, key=int)  # the champion that scored the latest window
    reference, sample_path = load_reference(ctx, version)
    acc = PsiAccumulator(reference)
    hashes = []
    for d in days:
        part = ctx.layout.features_file(d)
        hashes.append(storage.read_json(str(ctx.layout.features_source(d)))["sha256"])
        for batch in pq.ParquetFile(part).iter_batches(batch_size=uc.drift.chunk_rows, columns=acc.features):
            acc.update(batch)
    data_hash = hashlib.sha256("".join(hashes).encode()).hexdigest()
    alert, warn = ctx.params.alert_threshold, ctx.params.warn_threshold
    report = acc.result(warn=warn, alert=alert, per_feature=uc.drift.per_feature, min_samples=uc.drift.min_samples)
    status = judge(report, uc.drift)
    out = ctx.layout.drift_dir(ds)
    record = {"status": status, "window": days, "model_version": version, "data_hash": data_hash,
              "thresholds": {"warn": warn, "alert": alert, "min_alert_features": uc.drift.min_alert_features},
              "report": report.as_dict(), "checked_at": datetime.now(UTC).isoformat(), "dag_run": ctx.run_id}
    prediction = _prediction_psi(ctx, reference, version, days, warn=warn, alert=alert)
    if prediction is not None:
        record["prediction"] = {**prediction.as_dict(), "counts_toward_verdict": False}
    table = report.table(prediction)
    if prediction is None:
        table += "\n(prediction: no reference for the model's output in this version; not checked)"
    with storage.atomic_dir(out) as tmp:
        storage.write_json(str(tmp / DRIFT_REPORT), record)
        (tmp / PSI_TABLE).write_text(table + "\n")
        wrote_evidently = _evidently_report(ctx, sample_path, days, tmp / EVIDENTLY_REPORT)
    evidently = str(out / EVIDENTLY_REPORT) if wrote_evidently else ""
    _update_history(ctx, ds, report, warn=warn, alert=alert)
    log.info("PSI of %s v%s on window %s (%d rows): %s\n%s", uc.model.registered_name, version, days,
             report.n_rows, status, table)
    if evidently:
        log.info("Evidently report: %s", evidently)
    return DriftCheckResult(step="check_drift", use_case=uc.name, ds=ds, status=status, window=days,
                            model_version=version, model_name=uc.model.registered_name, data_hash=data_hash,
                            alerts=list(report.alerts),
                            warnings=list(report.warnings), psi={f.name: round(f.psi, 5) for f in report.features},
                            report=str(ctx.layout.drift_report(ds)), evidently_report=evidently,
                            reason=report.reason or "",
                            prediction_psi=None if prediction is None else round(prediction.psi, 5))


def _prediction_column(uc, path) -> str | None:
    """The model output column of a predictions file: a regressor's ``prediction``; a classifier's
    ``probability`` (``churn_probability`` in partitions scored before the rename)."""
    import pyarrow.parquet as pq

    from pavedml.metrics import PREDICTION, PROBABILITY

    names = set(pq.ParquetFile(path).schema_arrow.names)
    wanted = (PREDICTION,) if uc.is_regression else (PROBABILITY, "churn_probability")
    return next((c for c in wanted if c in names), None)


def _prediction_psi(ctx: StepContext, reference: dict, version: str, days: list[str], *, warn: float,
                    alert: float):
    """PSI of the window's model output (the rows scored by ``version``, whose reference it is)
    against the reference's ``prediction`` entry (a FeaturePsi), or None when the reference has
    none or a predictions file lacks the output column."""
    import pyarrow.parquet as pq

    from pavedml.drift import PREDICTION, PsiAccumulator
    from pavedml.layout import PART_FILE

    uc = ctx.use_case
    ref = reference.get(PREDICTION)
    if ref is None:
        log.info("the drift reference of this version has no prediction distribution (trained before it was "
                 "recorded): prediction drift is not checked")
        return None
    acc = PsiAccumulator(ref)
    for d in days:
        path = ctx.layout.predictions_partition(d) / PART_FILE
        column = _prediction_column(uc, path)
        if column is None:
            log.warning("predictions %s hold no model output column: prediction drift is not checked", path)
            return None
        for batch in pq.ParquetFile(path).iter_batches(batch_size=uc.drift.chunk_rows,
                                                       columns=[column, "model_version"]):
            chunk = batch.to_pandas()
            chunk = chunk[chunk["model_version"].astype(str) == str(version)]
            acc.update(chunk[[column]].rename(columns={column: PREDICTION}))
    result = acc.result(warn=warn, alert=alert, min_samples=uc.drift.min_samples).features[0]
    if result.status in ("warn", "alert"):
        log.warning("the model's output drifted: PSI %.4f of %s (%s; not part of the verdict, which is on "
                    "features only)", result.psi, "prediction" if uc.is_regression else "probability",
                    result.status)
    return result


def _evidently_report(ctx: StepContext, sample_path: str | None, days: list[str], target: Path) -> bool:
    if not sample_path:
        return False
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    uc = ctx.use_case
    n = uc.drift.report_sample_rows
    reference = pd.read_parquet(sample_path)
    current = pd.concat([pd.read_parquet(ctx.layout.features_file(d), columns=uc.feature_columns)
                         for d in days], ignore_index=True)
    reference = reference.sample(min(n, len(reference)), random_state=0)
    current = current.sample(min(n, len(current)), random_state=0)
    definition = DataDefinition(numerical_columns=uc.numeric_features, categorical_columns=uc.categorical_features)
    snapshot = Report([DataDriftPreset(method="psi")]).run(
        Dataset.from_pandas(current[uc.feature_columns], data_definition=definition),
        Dataset.from_pandas(reference[uc.feature_columns], data_definition=definition))
    snapshot.save_html(str(target))
    html = target.read_text()
    target.write_text(html.replace("<body>", "<body>" + EVIDENTLY_NOTE.format(n=n), 1))
    return True


def _update_history(ctx: StepContext, ds: str, report, *, warn: float, alert: float) -> None:
    """PSI per feature per day (CSV, one row per ds and feature; a rerun replaces its day) + a plot
    with the thresholds this run judged by (``warn``, ``alert``)."""
    import pandas as pd

    path = ctx.layout.drift_history
    rows = pd.DataFrame([{"ds": ds, "feature": f.name, "psi": f.psi, "status": f.status} for f in report.features])
    if path.exists():
        old = pd.read_csv(path, dtype={"ds": str})
        rows = pd.concat([old[old["ds"] != ds], rows], ignore_index=True)
    rows = rows.sort_values(["ds", "feature"]).reset_index(drop=True)
    with storage.atomic_path(path) as tmp:
        rows.to_csv(tmp, index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    top = rows.groupby("feature")["psi"].max().sort_values(ascending=False).head(8).index
    for feature, grp in rows[rows["feature"].isin(top)].groupby("feature"):
        ax.plot(pd.to_datetime(grp["ds"]), grp["psi"], marker="o", label=feature)
    ax.axhline(warn, color="orange", linestyle="--", label="warn")
    ax.axhline(alert, color="red", linestyle="--", label="alert")
    ax.set_ylabel("PSI")
    ax.set_title(f"PSI over time: {ctx.use_case.name}")
    ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    plot = ctx.layout.drift_history_plot
    with storage.atomic_path(plot, suffix=plot.suffix) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def request_retraining(ctx: StepContext) -> RetrainRequestResult:
    uc, ds = ctx.use_case, ctx.ds_iso
    report_path = ctx.layout.drift_report(ds)
    if not report_path.exists():
        raise SkipStep(f"no drift report for {ds}: nothing to request")
    record = storage.read_json(str(report_path))
    if record["status"] != "drift":
        raise SkipStep(f"drift status for window {record['window']} is {record['status']}: no retrain request")
    path = ctx.layout.retrain_requests
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        previous = [json.loads(line) for line in fh.read().splitlines() if line.strip()]
        for p in previous:
            if p["window"] == record["window"] and p["data_hash"] == record["data_hash"]:
                raise SkipStep(f"a retrain request for window {record['window']} was already made at {p['at']}")
        if previous and uc.drift.cooldown_days:
            last = max(previous, key=lambda p: p["ds"])
            until = date.fromisoformat(last["ds"]) + timedelta(days=uc.drift.cooldown_days)
            if ctx.ds < until and ds != last["ds"]:
                raise SkipStep(f"cooldown: last retrain request on {last['ds']}; next one allowed from {until}")
        psi = {f["name"]: round(f["psi"], 5) for f in record["report"]["features"]}
        extra = {"ds": ds, "window": record["window"], "data_hash": record["data_hash"],
                 "model_version": record["model_version"], "alerts": record["report"]["alerts"], "psi": psi,
                 "report": str(report_path)}
        fh.write(json.dumps({"at": datetime.now(UTC).isoformat(), **extra}, sort_keys=True) + "\n")
    log.info("retrain requested for %s (alerts: %s)", record["window"], ", ".join(extra["alerts"]))
    return RetrainRequestResult(step="request_retraining", use_case=uc.name, ds=ds, requested=True,
                                reason=f"PSI alert on {', '.join(extra['alerts'])}", window=record["window"],
                                asset_extra=extra, alert=drift_alert(uc.name, ctx, record, psi, report_path))


def drift_alert(use_case: str, ctx: StepContext, record: dict, psi: dict, report_path) -> dict:
    """The ``drift_detected`` alert whose first line names the drifted features (sent by the task)."""
    alerting = record["report"]["alerts"]
    window = ", ".join(record["window"])
    lines = [f"DRIFT DETECTED [{use_case}] window {window}: PSI alert on {', '.join(alerting)}",
             f"Model version {record['model_version']}; retraining was requested (the training DAG runs on it).",
             "feature                         PSI"]
    for name, value in sorted(psi.items(), key=lambda kv: -kv[1])[:8]:
        lines.append(f"  {name:<28} {value:8.4f}{'  ALERT' if name in alerting else ''}")
    lines.append(f"Report: {report_path}")
    return {"kind": "drift_detected", "dag_id": ctx.dag_id, "task_id": "request_retraining",
            "run_id": ctx.run_id, "summary": "\n".join(lines)}
