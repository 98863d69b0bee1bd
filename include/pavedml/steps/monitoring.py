"""check_drift and request_retraining: the PSI drift loop.

``check_drift`` compares the latest scoring window with a reference, streaming the window in
chunks. It writes ``drift/dt=<ds>/`` (report JSON, PSI table, an Evidently HTML report for people,
training reference only) and the PSI history (table + plot). Status: ``waiting`` (the window is not
scored yet: the sensor pokes again), ``insufficient_data`` (fewer rows than ``drift.min_samples`` in
the window or in a time-based reference's period: it refuses to judge and names what is missing),
``no_drift`` or ``drift``.

The reference (``drift.reference``):
- ``training``: bin edges and expected proportions frozen from the champion's training split;
- ``rolling``: the ``drift.reference_days`` days just before the window;
- ``seasonal``: ``drift.reference_days`` days centred on the window's day ``drift.season_days`` ago.
A time-based reference is built from the features partitions of those days (quantile bins of the
period, as training builds its own, :func:`pavedml.drift.build_reference_from_chunks`). A period
without enough rows (less than a season of history, say) is ``insufficient_data``: never silently
replaced by another reference.

Beside the features, two outputs are measured: the model's output (``prediction``: the window's
scores against the training split's scores, or against the reference period's published scores)
and, once labels land, the target (``target``: the labels of the window's days moved back by
``label.delay_days``, the newest known by ds, against the labels of the same reference choice
around those days, or, for the training reference, a classifier's training positive rate from the
version's dataset manifest; a regressor's target is not checked against training). Both
are in the report JSON, the PSI table and the PSI history (rows ``prediction`` and ``target``);
they count toward the verdict only when ``drift.judge_on`` names them (``predictions``,
``target``); ``features`` counts when at least ``drift.min_alert_features`` features alert.

Under a training or rolling reference, each warning/alerting feature gets a seasonality note: its
PSI against the same period one season ago when that period has data ("likely seasonal" when quiet
there).

``request_retraining`` turns a ``drift`` verdict into one retrain request per window (the Asset
event the training DAG is scheduled on, carrying the PSI table, window and data hash), honouring
the cooldown; otherwise it exits with :data:`pavedml.errors.EXIT_SKIP` and the task is skipped (no Asset event).
"""

from __future__ import annotations

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
    from pavedml.drift import drift_window

    return drift_window(ctx.ds, ctx.params.window_days)


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


def verdict(report, policy, outputs: dict, served=None) -> tuple[str, list[str]]:
    """(status, what fired) over what ``policy.judge_on`` names: the features (``min_alert_features``
    alerting, as :func:`judge`), the model's output (``prediction``), the target (``target``), each a
    FeaturePsi or None in ``outputs``, and the served traffic's features (``served``: a DriftReport of
    the prediction service's log, or None; fired as ``served:<feature>``). ``insufficient_data`` when
    nothing named fired and the features (when named) or every named part could not be judged."""
    fired: list[str] = []
    judged_parts = []
    if "features" in policy.judge_on:
        if report.judged:
            judged_parts.append("features")
            if len(report.alerts) >= policy.min_alert_features:
                fired += list(report.alerts)
    if "served" in policy.judge_on and served is not None and served.judged:
        judged_parts.append("served")
        if len(served.alerts) >= policy.min_alert_features:
            fired += [f"served:{name}" for name in served.alerts]
    for part, name in (("predictions", "prediction"), ("target", "target")):
        psi = outputs.get(name)
        if part in policy.judge_on and psi is not None and psi.status != "insufficient_data":
            judged_parts.append(part)
            if psi.status == "alert":
                fired.append(name)
    if fired:
        return "drift", fired
    if not judged_parts or ("features" in policy.judge_on and not report.judged):
        return "insufficient_data", []
    return "no_drift", []


def check_drift(ctx: StepContext) -> DriftCheckResult:
    from pavedml.drift import PREDICTION, TARGET, PsiAccumulator, reference_period

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
    policy = uc.drift
    period = reference_period(days, policy.reference, policy.reference_days, policy.season_days)
    alert, warn = ctx.params.alert_threshold, ctx.params.warn_threshold
    hashes = [storage.read_json(str(ctx.layout.features_source(d)))["sha256"] for d in days]
    data_hash = hashlib.sha256("".join(hashes).encode()).hexdigest()
    sample_path = None
    reference: dict | None
    if policy.reference == "training":
        reference, sample_path = load_reference(ctx, version)
        reference_info: dict = {"kind": "training", "days": [], "model_version": version}
    else:
        reference, reference_info, missing_reason = _time_reference(ctx, period)
        if reference is None:
            return _insufficient_reference(ctx, days, version, data_hash, period, reference_info, missing_reason,
                                           warn=warn, alert=alert)
    acc = PsiAccumulator(reference)
    for d in days:
        for batch in _iter_batches(ctx.layout.features_file(d), acc.features, policy.chunk_rows):
            acc.update(batch)
    report = acc.result(warn=warn, alert=alert, per_feature=policy.per_feature, min_samples=policy.min_samples)
    notes: dict[str, str] = {}
    prediction = _prediction_psi(ctx, reference, version, days, period, notes, warn=warn, alert=alert)
    target, target_days = _target_psi(ctx, version, days, notes, warn=warn, alert=alert)
    served, served_report = _served_traffic(ctx, reference, days, warn=warn, alert=alert)
    status, fired = verdict(report, policy, {PREDICTION: prediction, TARGET: target}, served_report)
    seasonality = _seasonality_notes(ctx, report, days, warn=warn, alert=alert)
    out = ctx.layout.drift_dir(ds)
    record = {"status": status, "window": days, "model_version": version, "data_hash": data_hash,
              "reference": reference_info, "judge_on": list(policy.judge_on), "alerts": fired,
              "thresholds": {"warn": warn, "alert": alert, "min_alert_features": policy.min_alert_features},
              "report": report.as_dict(), "checked_at": datetime.now(UTC).isoformat(), "dag_run": ctx.run_id}
    for name, psi, part in ((PREDICTION, prediction, "predictions"), (TARGET, target, "target")):
        if psi is not None:
            record[name] = {**psi.as_dict(), "counts_toward_verdict": part in policy.judge_on}
        else:
            record[name] = {"checked": False, "reason": notes.get(name, ""),
                            "counts_toward_verdict": part in policy.judge_on}
    record[TARGET].update(target_days)
    if seasonality:
        record["seasonality"] = seasonality
    if served is not None:
        record["served"] = served
    judged = {name for name, part in ((PREDICTION, "predictions"), (TARGET, "target")) if part in policy.judge_on}
    lines = report.table(prediction, target, judged).splitlines()
    n_outputs = sum(f is not None for f in (prediction, target))
    extra = [note["note"] if name == "*" else f"{name}: {note['note']}" for name, note in seasonality.items()]
    extra += [f"({name}: not checked: {notes.get(name, 'no reference')})"
              for name in (TARGET, PREDICTION) if record[name].get("checked") is False]
    if served is not None:
        top = sorted(served["psi"].items(), key=lambda kv: -kv[1])[:3]
        extra.append(f"served traffic ({served['rows']} rows in {served['files']} log files): {served['status']}"
                     f"{' (counts toward the verdict)' if served['counts_toward_verdict'] else ''}; highest PSI "
                     + ", ".join(f"{k} {v:.4f}" for k, v in top)
                     + (f"; prediction {served['prediction_psi']:.4f}" if served.get("prediction_psi") is not None
                        else ""))
    # the model output's line stays last (make status shows it whatever the feature count)
    lines[len(lines) - n_outputs:len(lines) - n_outputs] = extra
    table = "\n".join([f"reference: {period.describe() if period.days else 'training split of v' + version}",
                        *lines])
    with storage.atomic_dir(out) as tmp:
        storage.write_json(str(tmp / DRIFT_REPORT), record)
        (tmp / PSI_TABLE).write_text(table + "\n")
        wrote_evidently = _evidently_report(ctx, sample_path, days, tmp / EVIDENTLY_REPORT)
    evidently = str(out / EVIDENTLY_REPORT) if wrote_evidently else ""
    _update_history(ctx, ds, [*report.features, *(f for f in (prediction, target) if f is not None)],
                    warn=warn, alert=alert)
    log.info("PSI of %s v%s on window %s (%d rows) against the %s: %s\n%s", uc.model.registered_name, version,
             days, report.n_rows, period.describe(), status, table)
    if evidently:
        log.info("Evidently report: %s", evidently)
    reason = report.reason or ""
    if status == "insufficient_data" and not reason:
        reason = "; ".join(f"{k}: {v}" for k, v in notes.items()) or "nothing named in drift.judge_on was judged"
    return DriftCheckResult(step="check_drift", use_case=uc.name, ds=ds, status=status, window=days,
                            model_version=version, model_name=uc.model.registered_name, data_hash=data_hash,
                            alerts=fired,
                            warnings=list(report.warnings), psi={f.name: round(f.psi, 5) for f in report.features},
                            report=str(ctx.layout.drift_report(ds)), evidently_report=evidently,
                            reason=reason,
                            prediction_psi=None if prediction is None else round(prediction.psi, 5),
                            target_psi=None if target is None else round(target.psi, 5),
                            reference=policy.reference,
                            served_status=None if served is None else served["status"],
                            served_rows=None if served is None else served["rows"])


def _iter_batches(path, columns: list[str], chunk_rows: int):
    import pyarrow.parquet as pq

    yield from pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=columns)


def _rows(path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def _time_reference(ctx: StepContext, period) -> tuple[dict | None, dict, str]:
    """(reference built from the features of the period's days, its description, why None): None
    when fewer than ``drift.min_samples`` rows (or no partition at all) exist for the period."""
    from pavedml.drift import build_reference_from_chunks

    uc = ctx.use_case
    columns = uc.feature_columns
    present = [d for d in period.days if ctx.layout.features_file(d).exists()]
    rows = sum(_rows(ctx.layout.features_file(d)) for d in present)
    info = {"kind": period.kind, "days": period.days, "days_with_features": len(present), "rows": rows}
    if rows < uc.drift.min_samples:
        missing = [d for d in period.days if d not in set(present)]
        built = sorted(p.name.removeprefix("dt=") for p in ctx.layout.features_root.glob("dt=*"))
        have = f"features exist for {built[0]} .. {built[-1]}" if built else "no features built at all"
        what = ("no features partition for any of its days" if not present else
                f"only {rows} feature rows on {len(present)} of its {len(period.days)} days "
                f"(drift.min_samples is {uc.drift.min_samples}); days without features: "
                f"{_span(missing)}")
        return None, info, f"{period.describe()}: {what} ({have})"
    reference = build_reference_from_chunks(
        lambda: (b for d in present for b in _iter_batches(ctx.layout.features_file(d), columns, uc.drift.chunk_rows)),
        uc.numeric_features, uc.categorical_features, bins=uc.drift.bins, total_rows=rows)
    return reference, info, ""


def _span(days: list[str]) -> str:
    if not days:
        return "none"
    return days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]} ({len(days)} days)"


def _insufficient_reference(ctx: StepContext, days, version, data_hash, period, info, reason, *, warn, alert):
    """The result (and report) of a check whose time-based reference lacks data: never judged, never
    silently compared with another reference."""
    uc, ds = ctx.use_case, ctx.ds_iso
    log.warning("drift not judged: %s", reason)
    record = {"status": "insufficient_data", "window": days, "model_version": version, "data_hash": data_hash,
              "reference": info, "judge_on": list(uc.drift.judge_on), "alerts": [], "reason": reason,
              "thresholds": {"warn": warn, "alert": alert, "min_alert_features": uc.drift.min_alert_features},
              "report": {"features": [], "n_rows": 0, "judged": False, "min_samples": uc.drift.min_samples,
                         "alerts": [], "warnings": [], "reason": reason},
              "checked_at": datetime.now(UTC).isoformat(), "dag_run": ctx.run_id}
    with storage.atomic_dir(ctx.layout.drift_dir(ds)) as tmp:
        storage.write_json(str(tmp / DRIFT_REPORT), record)
        (tmp / PSI_TABLE).write_text(f"not judged: {reason}\n")
    return DriftCheckResult(step="check_drift", use_case=uc.name, ds=ds, status="insufficient_data", window=days,
                            model_version=version, model_name=uc.model.registered_name, data_hash=data_hash,
                            alerts=[], warnings=[], psi={}, report=str(ctx.layout.drift_report(ds)), reason=reason,
                            reference=uc.drift.reference)


def _prediction_column(uc, path) -> str | None:
    """The model output column of a predictions file: ``champion_score`` (the champion's score on
    every row, canary rows included) when there; else a regressor's ``prediction``, a classifier's
    ``probability`` (``churn_probability`` in partitions scored before the rename)."""
    import pyarrow.parquet as pq

    from pavedml.metrics import PREDICTION, PROBABILITY

    names = set(pq.ParquetFile(path).schema_arrow.names)
    wanted = ("champion_score", PREDICTION) if uc.is_regression else ("champion_score", PROBABILITY,
                                                                      "churn_probability")
    return next((c for c in wanted if c in names), None)


def _scores(ctx: StepContext, days: list[str], version: str | None):
    """Chunks of the model output of ``days``' predictions as one-column frames (``prediction``):
    with ``version``, only the rows that version scored (whose training reference it is)."""
    from pavedml.drift import PREDICTION
    from pavedml.layout import PART_FILE

    uc = ctx.use_case
    for d in days:
        path = ctx.layout.predictions_partition(d) / PART_FILE
        column = _prediction_column(uc, path)
        if column is None:
            raise DriftInputError(f"predictions {path} hold no model output column", details={"file": str(path)})
        by = "champion_version" if column == "champion_score" else "model_version"
        for batch in _iter_batches(path, [column, by], uc.drift.chunk_rows):
            chunk = batch.to_pandas()
            if version is not None:
                chunk = chunk[chunk[by].astype(str) == str(version)]
            yield chunk[[column]].rename(columns={column: PREDICTION})


def _prediction_psi(ctx: StepContext, reference: dict, version: str, days: list[str], period, notes: dict,
                    *, warn: float, alert: float):
    """PSI of the window's model output (a FeaturePsi) or None (why in ``notes["prediction"]``).
    Training reference: the rows scored by ``version`` against the reference's ``prediction`` entry.
    Time-based: the window's published champion scores against those of the reference period's
    scored days (quantile bins of the period)."""
    from pavedml.drift import PREDICTION, PsiAccumulator, build_reference_from_chunks

    uc = ctx.use_case
    try:
        if not period.days:
            ref = reference.get(PREDICTION)
            if ref is None:
                notes[PREDICTION] = ("the drift reference of this version has no prediction distribution (trained "
                                     "before it was recorded)")
                log.info("%s: prediction drift is not checked", notes[PREDICTION])
                return None
        else:
            scored = [d for d in period.days if ctx.layout.predictions_scored(d).exists()]
            from pavedml.layout import PART_FILE

            rows = sum(_rows(ctx.layout.predictions_partition(d) / PART_FILE) for d in scored)
            if rows < uc.drift.min_samples:
                notes[PREDICTION] = (f"{period.describe()}: {rows} scored rows on {len(scored)} of its "
                                     f"{len(period.days)} days (drift.min_samples is {uc.drift.min_samples})")
                log.warning("prediction drift not checked: %s", notes[PREDICTION])
                return None
            ref = build_reference_from_chunks(lambda: _scores(ctx, scored, None), [PREDICTION], [],
                                              bins=uc.drift.bins, total_rows=rows)
        acc = PsiAccumulator(ref)
        for chunk in _scores(ctx, days, version if not period.days else None):
            acc.update(chunk)
    except DriftInputError as err:
        notes[PREDICTION] = err.message if hasattr(err, "message") else str(err)
        log.warning("prediction drift is not checked: %s", notes[PREDICTION])
        return None
    result = acc.result(warn=warn, alert=alert, min_samples=uc.drift.min_samples).features[0]
    if result.status in ("warn", "alert"):
        log.warning("the model's output drifted: PSI %.4f of %s (%s; %s)", result.psi,
                    "prediction" if uc.is_regression else "probability", result.status,
                    "counts toward the verdict" if "predictions" in uc.drift.judge_on
                    else "not part of the verdict")
    return result


def _served_traffic(ctx: StepContext, reference: dict, days: list[str], *, warn: float, alert: float):
    """The prediction service's traffic of ``days`` (its log, :mod:`pavedml.serving.predlog`) against
    the same reference as the batch window: (record, DriftReport), or (None, None) without traffic.
    Rows answered with a default (unknown entity) or on imputed features are left out (no features);
    one entity's feature row counts once however often it was asked about."""
    import pyarrow.parquet as pq

    from pavedml.drift import PREDICTION, PsiAccumulator

    policy = ctx.use_case.drift
    files = [f for d in days for f in ctx.layout.served_files(d)]
    if not files:
        return None, None
    acc = PsiAccumulator(reference)
    ref = reference.get(PREDICTION)
    scores = PsiAccumulator(ref) if ref is not None else None
    import pandas as pd

    key = ctx.use_case.entity.key
    columns = [key, "event_timestamp", *acc.features, "champion_score", "default", "imputed"]
    df = pd.concat([pq.read_table(path, columns=columns).to_pandas() for path in files], ignore_index=True)
    keep = ~(df["default"].astype(bool) | df["imputed"].astype(bool))
    skipped = int((~keep).sum())
    # an entity asked about again and again (a dashboard polling one key) counts once per feature row
    df = df[keep].drop_duplicates([key, "event_timestamp"], keep="last")
    for start in range(0, len(df), policy.chunk_rows):
        chunk = df.iloc[start:start + policy.chunk_rows]
        acc.update(chunk[acc.features])
        if scores is not None:
            scores.update(chunk[["champion_score"]].rename(columns={"champion_score": PREDICTION}))
    report = acc.result(warn=warn, alert=alert, per_feature=policy.per_feature, min_samples=policy.min_samples)
    prediction = scores.result(warn=warn, alert=alert, min_samples=policy.min_samples).features[0] \
        if scores is not None else None
    record = {"rows": report.n_rows, "files": len(files), "left_out": skipped,
              "days": sorted({p.parent.name.removeprefix("dt=") for p in files}),
              "status": judge(report, policy), "alerts": list(report.alerts), "warnings": list(report.warnings),
              "psi": {f.name: round(f.psi, 5) for f in report.features},
              "prediction_psi": None if prediction is None else round(prediction.psi, 5),
              "counts_toward_verdict": "served" in policy.judge_on, "reason": report.reason}
    log.info("served traffic of %s: %d rows in %d log file(s): %s", days, report.n_rows, len(files), record["status"])
    return record, report


def _labels_of_days(ctx: StepContext, days: list[str]):
    """The labels (:data:`pavedml.metrics.LABEL` values) whose label time falls on one of ``days``,
    from the landing partitions where they are due (``dt`` from the first day to the last day plus
    ``label.delay_days``, never after ds; a label landing later than that is not looked for),
    validated as training reads them. An empty frame when none landed."""
    import io

    import pandas as pd

    from pavedml.metrics import LABEL
    from pavedml.steps.training import label_timestamps, label_values
    from pavedml.steps.validation import validate_labels

    uc = ctx.use_case
    wanted = set(days)
    first, last = date.fromisoformat(min(days)), date.fromisoformat(max(days))
    frames = []
    for offset in range((last - first).days + uc.label.delay_days + 1):
        if first + timedelta(days=offset) > ctx.ds:  # a task reads what is known by its day
            break
        day = (first + timedelta(days=offset)).isoformat()
        for fmt in ("csv", "parquet"):
            uri = ctx.layout.landing_file(uc.label.dataset, day, fmt)
            if not storage.exists(uri):
                continue
            data = storage.read_bytes(uri)
            df = pd.read_parquet(io.BytesIO(data)) if fmt == "parquet" else pd.read_csv(io.BytesIO(data), dtype=str)
            validate_labels(ctx, uri, data, df)
            stamps = label_timestamps(df, uri)
            keep = stamps.dt.strftime("%Y-%m-%d").isin(wanted).to_numpy()
            if not keep.any():
                break
            frames.append(pd.DataFrame({
                uc.entity.key: df[uc.entity.key].astype(str).to_numpy()[keep],
                "label_time": stamps.to_numpy()[keep],
                LABEL: label_values(uc, df[uc.label.column], uri)[keep]}))
            break
    if not frames:
        return pd.DataFrame({LABEL: []})
    labels = pd.concat(frames, ignore_index=True).drop_duplicates([uc.entity.key, "label_time"], keep="last")
    return labels[[LABEL]].rename(columns={LABEL: "target"}).reset_index(drop=True)


def _training_target_reference(ctx: StepContext, version: str) -> tuple[dict | None, str]:
    """A classifier's target reference from the positive rate of ``version``'s training split
    (recorded in its dataset manifest): the target is binary, so its rate is its distribution.
    A regressor's training split records only its mean: (None, why)."""
    from pavedml.drift import EPSILON, REFERENCE_FORMAT, TARGET

    uc = ctx.use_case
    if uc.is_regression:
        return None, ("training reference: only the mean of the training target is recorded for a regressor; "
                      "use drift.reference rolling or seasonal to watch the target")
    import mlflow

    from pavedml.adapters.tracking import setup, unavailable_as_error

    client, _ = setup(ctx)
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        mv = client.get_model_version(uc.model.registered_name, version)
        try:
            local = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="dataset/dataset.json")
        except Exception:  # noqa: BLE001 - an older run without the manifest: reported, not fatal
            return None, f"v{version}'s run has no dataset manifest (dataset/dataset.json)"
    rate = (json.loads(Path(local).read_text()).get("positive_rate") or {}).get("train")
    if rate is None:
        return None, f"v{version}'s dataset manifest records no training positive rate"
    rate = float(rate)
    return {"format": REFERENCE_FORMAT, "bins": 2, "epsilon": EPSILON, "n": None, "features": {
        TARGET: {"kind": "categorical", "categories": [0, 1], "expected": [1.0 - rate, rate, 0.0, 0.0],
                 "null_fraction": 0.0}}}, ""


def _target_psi(ctx: StepContext, version: str, days: list[str], notes: dict, *, warn: float, alert: float):
    """(PSI of the target or None with the reason in ``notes["target"]``, the days it covers).

    Labels land ``label.delay_days`` after their day, so the target is watched on the window moved
    back by that delay (the newest labels known by ds, read from landing partitions dt <= ds: a
    rerun gives the same answer) against the same reference choice around those days: their
    rolling/seasonal period's labels, or, for the training reference, the training split's
    positive rate (a classifier)."""
    from pavedml.drift import TARGET, PsiAccumulator, build_reference, reference_period

    uc = ctx.use_case
    delay = uc.label.delay_days
    label_days = [(date.fromisoformat(d) - timedelta(days=delay)).isoformat() for d in days]
    period = reference_period(label_days, uc.drift.reference, uc.drift.reference_days, uc.drift.season_days)
    covers = {"days": label_days, "reference_days": period.days}
    window = _labels_of_days(ctx, label_days)
    if window.empty:
        notes[TARGET] = (f"no labels have landed for {_span(label_days)} (the window moved back by "
                         f"label.delay_days={delay})")
        log.info("target drift not checked: %s", notes[TARGET])
        return None, covers
    window = window.astype("int64" if not uc.is_regression else "float64")
    if not period.days:
        ref, why = _training_target_reference(ctx, version)
        if ref is None:
            notes[TARGET] = why
            return None, covers
    else:
        labels = _labels_of_days(ctx, period.days)
        if len(labels) < uc.drift.min_samples:
            notes[TARGET] = (f"{period.describe()}: {len(labels)} labels landed for its days "
                             f"(drift.min_samples is {uc.drift.min_samples})")
            log.warning("target drift not checked: %s", notes[TARGET])
            return None, covers
        labels = labels.astype(window.dtypes[TARGET])
        numeric, categorical = ([TARGET], []) if uc.is_regression else ([], [TARGET])
        ref = build_reference(labels, numeric, categorical, bins=uc.drift.bins)
    acc = PsiAccumulator(ref)
    acc.update(window)
    result = acc.result(warn=warn, alert=alert, min_samples=uc.drift.min_samples).features[0]
    if result.status in ("warn", "alert"):
        log.warning("the target drifted on %s: PSI %.4f (%s; %s)", _span(label_days), result.psi, result.status,
                    "counts toward the verdict" if "target" in uc.drift.judge_on else "not part of the verdict")
    return result, covers


def _seasonality_notes(ctx: StepContext, report, days: list[str], *, warn: float, alert: float) -> dict:
    """For each warning/alerting feature (under a training or rolling reference): its PSI against
    the same period one season ago, when that period has enough feature rows. Quiet there: "likely
    seasonal"; drifted there too: "not only seasonal". Cheap: only those features are re-counted."""
    from pavedml.drift import PsiAccumulator, build_reference_from_chunks, reference_period

    uc = ctx.use_case
    flagged = [f.name for f in report.features if f.status in ("warn", "alert")]
    if uc.drift.reference == "seasonal" or not flagged or not report.judged:
        return {}
    period = reference_period(days, "seasonal", uc.drift.reference_days, uc.drift.season_days)
    present = [d for d in period.days if ctx.layout.features_file(d).exists()]
    rows = sum(_rows(ctx.layout.features_file(d)) for d in present)
    if rows < uc.drift.min_samples:  # one note for all: no season behind the window yet
        return {"*": {"seasonal_psi": None, "period": period.days,
                      "note": f"seasonal: no comparison for {', '.join(flagged)} "
                              f"({period.describe()} holds {rows} feature rows)"}}
    numeric = [n for n in flagged if n in uc.numeric_features]
    categorical = [n for n in flagged if n in uc.categorical_features]
    reference = build_reference_from_chunks(
        lambda: (b for d in present for b in _iter_batches(ctx.layout.features_file(d), flagged, uc.drift.chunk_rows)),
        numeric, categorical, bins=uc.drift.bins, total_rows=rows)
    acc = PsiAccumulator(reference)
    for d in days:
        for batch in _iter_batches(ctx.layout.features_file(d), flagged, uc.drift.chunk_rows):
            acc.update(batch)
    out = {}
    for f in acc.result(warn=warn, alert=alert, per_feature=uc.drift.per_feature, min_samples=0).features:
        verdict_ = "likely seasonal" if f.status == "ok" else "not only seasonal"
        out[f.name] = {"seasonal_psi": round(f.psi, 5), "period": period.days,
                       "note": f"seasonal: PSI {f.psi:.4f} vs same period last season "
                               f"({period.days[0]} .. {period.days[-1]}): {verdict_}"}
    return out


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


def _update_history(ctx: StepContext, ds: str, features, *, warn: float, alert: float) -> None:
    """PSI per feature per day (CSV, one row per ds and feature, the model's output as ``prediction``
    and the target as ``target``; a rerun replaces its day) + a plot with the thresholds this run
    judged by (``warn``, ``alert``)."""
    import pandas as pd

    path = ctx.layout.drift_history
    rows = pd.DataFrame([{"ds": ds, "feature": f.name, "psi": f.psi, "status": f.status} for f in features])
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
    from pavedml.retrain import record_request

    psi = {f["name"]: round(f["psi"], 5) for f in record["report"]["features"]}
    for name in ("prediction", "target"):  # the outputs judged by drift.judge_on
        if record.get(name, {}).get("counts_toward_verdict") and "psi" in record[name]:
            psi[name] = round(record[name]["psi"], 5)
    alerts = record.get("alerts", record["report"]["alerts"])
    extra = {"ds": ds, "window": record["window"], "data_hash": record["data_hash"],
             "model_version": record["model_version"], "alerts": alerts, "psi": psi,
             "report": str(report_path)}
    # one file, one lock, one cooldown shared with the performance monitor; once per window and data
    record_request(ctx, {"window": record["window"], "data_hash": record["data_hash"]}, extra, source="drift")
    log.info("retrain requested for %s (alerts: %s)", record["window"], ", ".join(extra["alerts"]))
    return RetrainRequestResult(step="request_retraining", use_case=uc.name, ds=ds, requested=True,
                                reason=f"PSI alert on {', '.join(extra['alerts'])}", window=record["window"],
                                asset_extra=extra, alert=drift_alert(uc.name, ctx, record, psi, report_path))


def drift_alert(use_case: str, ctx: StepContext, record: dict, psi: dict, report_path) -> dict:
    """The ``drift_detected`` alert whose first line names the drifted features (sent by the task)."""
    alerting = record.get("alerts", record["report"]["alerts"])
    window = ", ".join(record["window"])
    lines = [f"DRIFT DETECTED [{use_case}] window {window}: PSI alert on {', '.join(alerting)}",
             f"Model version {record['model_version']}; retraining was requested (the training DAG runs on it).",
             "feature                         PSI"]
    for name, value in sorted(psi.items(), key=lambda kv: -kv[1])[:8]:
        lines.append(f"  {name:<28} {value:8.4f}{'  ALERT' if name in alerting else ''}")
    lines.append(f"Report: {report_path}")
    return {"kind": "drift_detected", "dag_id": ctx.dag_id, "task_id": "request_retraining",
            "run_id": ctx.run_id, "summary": "\n".join(lines)}
