"""evaluate_challenger: champion and challenger scored on the same holdout, decided by policy.

The policy (use-case ``evaluation``) in order:
1. **Floors**: every floor metric of the challenger must meet its floor, else ``reject``.
2. **No champion yet**: promote when the floors are met.
3. **Uplift**: the challenger must beat the champion on the primary metric by at least
   ``min_uplift`` (and strictly: a tie keeps the champion), else ``keep_champion``. For a
   lower-is-better metric (``config.LOWER_IS_BETTER``: rmse, mae, log_loss, brier) the uplift is the
   reduction, champion minus challenger; a floor on such a metric is a ceiling.
4. **Guardrails**: no guardrail metric may regress by more than its allowance.
5. **Slices**: within each value of each slice column, the primary metric may not regress by
   more than ``max_slice_regression`` (slices under ``MIN_SLICE_ROWS`` rows, or a classifier's slice
   holding one class, are not judged).

With ``require_shadow_days: N`` a challenger that wins here against a champion is not promoted yet:
the outcome is ``shadow`` (its ``evaluation.outcome`` tag), batch scoring scores it in shadow, and
:func:`pavedml.steps.live.judge_live_evidence` decides once it has N labelled shadow days.

Both models are scored on the holdout by :func:`pavedml.metrics.model_scores` (the positive class's
probability, or the predicted value for a regressor) and measured with the task's metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pavedml import storage
from pavedml.config import LOWER_IS_BETTER, Evaluation
from pavedml.context import StepContext
from pavedml.layout import DECISION_FILE, DECISION_PAGE
from pavedml.modelcard import CARD_HTML
from pavedml.results import PromotionDecision

log = logging.getLogger(__name__)
MIN_SLICE_ROWS = 30
#: The challenger's permutation importance, under ``evaluation/`` of its MLflow run.
IMPORTANCE_FILE = "importance.json"
#: Metrics in the target's units (regression): a slice's allowed regression is a fraction of the
#: champion's value there (``max_slice_regression: 0.05`` = 5% worse), not an absolute amount.
RELATIVE_SLICE_METRICS = ("rmse", "mae")


@dataclass(frozen=True)
class Verdict:
    outcome: str  # promote | keep_champion | reject | shadow (won offline, awaiting live evidence)
    reasons: list[str] = field(default_factory=list)

    @property
    def promote(self) -> bool:
        return self.outcome == "promote"


def _worse_by(metric: str, challenger: float, champion: float) -> float:
    """How much worse the challenger is (positive = worse), whatever the metric's direction."""
    return (challenger - champion) if metric in LOWER_IS_BETTER else (champion - challenger)


def decide(challenger: dict[str, float], champion: dict[str, float] | None, policy: Evaluation,
           challenger_slices: dict[str, dict[str, float]] | None = None,
           champion_slices: dict[str, dict[str, float]] | None = None,
           fairness_violations: list[str] | None = None) -> Verdict:
    """The decision table. Metrics are plain names (``roc_auc``), slices ``{"Contract=One year": {...}}``,
    ``fairness_violations`` the challenger's (:func:`pavedml.fairness.group_report`): like a floor, any
    one of them rejects it, champion or not."""
    floor_failures = []
    for metric, floor in policy.floors.items():
        value = challenger[metric]
        lower = metric in LOWER_IS_BETTER
        if not (value <= floor if lower else value >= floor):
            floor_failures.append(f"floor not met: {metric} {value:.4f} vs "
                                  + (f"ceiling {floor} (lower is better)" if lower else f"floor {floor}"))
    if floor_failures or fairness_violations:
        return Verdict("reject", [*floor_failures, *(fairness_violations or [])])
    if champion is None:
        return Verdict("promote", ["no champion yet and every floor is met"
                                   + (" and every fairness limit holds" if fairness_violations is not None else "")])
    primary = policy.primary_metric
    import math

    if not math.isfinite(challenger[primary]) or not math.isfinite(champion[primary]):
        return Verdict("keep_champion", [f"{primary} is not a number on this holdout (challenger "
                                         f"{challenger[primary]}, champion {champion[primary]}): no decision can be "
                                         "made on it"])
    # what the challenger gains: a rise, or for a lower-is-better metric a reduction
    uplift = -_worse_by(primary, challenger[primary], champion[primary])
    word = "reduction" if primary in LOWER_IS_BETTER else "uplift"
    if uplift <= 0 or uplift < policy.min_uplift:
        what = "tie" if uplift == 0 else f"{word} {uplift:+.4f}"
        return Verdict("keep_champion", [f"{what} on {primary} ({challenger[primary]:.4f} vs champion "
                                         f"{champion[primary]:.4f}) is below the required {policy.min_uplift}"])
    problems = []
    for metric, allowed in policy.guardrails.items():
        worse = _worse_by(metric, challenger[metric], champion[metric])
        if worse > allowed:
            problems.append(f"guardrail {metric} regressed by {worse:.4f} (allowed {allowed})")
    for name, chal in (challenger_slices or {}).items():
        champ = (champion_slices or {}).get(name)
        if champ is None or primary not in chal or primary not in champ:
            continue
        worse = _worse_by(primary, chal[primary], champ[primary])
        if primary in RELATIVE_SLICE_METRICS:  # in the target's units: the allowance is a fraction of the champion's
            relative = worse / abs(champ[primary]) if champ[primary] else (math.inf if worse > 0 else 0.0)
            if relative > policy.max_slice_regression:
                problems.append(f"slice {name}: {primary} regressed by {worse:.4f} ({relative:.1%} of the champion's; "
                                f"allowed {policy.max_slice_regression:.1%})")
        elif worse > policy.max_slice_regression:
            problems.append(f"slice {name}: {primary} regressed by {worse:.4f} "
                            f"(allowed {policy.max_slice_regression})")
    if problems:
        return Verdict("keep_champion", problems)
    return Verdict("promote", [f"{word} {uplift:+.4f} on {primary} meets the required {policy.min_uplift}; "
                               "guardrails and slices hold"])


def slice_metrics(df, scores, slices: list[str], task: str = "binary_classification") -> dict[str, dict[str, float]]:
    """The task's metrics within each value of each slice column (``{"Contract=One year": {...}}``);
    a slice of fewer than MIN_SLICE_ROWS rows, or a classifier's slice holding one class, is left out."""
    from pavedml.metrics import LABEL, is_regression, task_metrics

    out = {}
    y_all = df[LABEL].to_numpy()
    for col in slices:
        for value, idx in df.groupby(col, observed=True).indices.items():
            y = y_all[idx]
            if len(idx) < MIN_SLICE_ROWS or (not is_regression(task) and len(set(y)) < 2):
                continue
            out[f"{col}={value}"] = task_metrics(task, y, scores[idx])
    return out


def decision_table(record: dict) -> str:
    """A readable Markdown table of the decision."""
    chal, champ = record["challenger"], record.get("champion")
    lines = [f"# Promotion decision: **{record['outcome']}**", "",
             f"{record['model']} challenger v{chal['version']} vs champion "
             f"{'v' + champ['version'] if champ else '(none)'} on holdout of {record['holdout_rows']} rows", "",
             "| metric | challenger | champion | delta |", "|---|---|---|---|"]
    for metric, value in chal["metrics"].items():
        other = champ["metrics"].get(metric) if champ else None
        delta = f"{value - other:+.4f}" if other is not None else ""
        lines.append(f"| {metric}{' (lower is better)' if metric in LOWER_IS_BETTER else ''} | {value:.4f} | {'' if other is None else f'{other:.4f}'} | {delta} |")
    lines += ["", "Reasons:"] + [f"- {r}" for r in record["reasons"]]
    return "\n".join(lines) + "\n"


def governance_evidence(uc, holdout, scores, model) -> tuple[dict | None, dict | None]:
    """(fairness report, permutation importance) of the challenger on the holdout: the fairness
    gate's numbers when ``evaluation.fairness`` is set (:func:`pavedml.fairness.group_report`), the
    importance of its features unless ``evaluation.importance_rows`` is 0."""
    from pavedml.errors import ConfigError
    from pavedml.explain import permutation_table
    from pavedml.fairness import group_report
    from pavedml.metrics import LABEL

    policy = uc.evaluation.fairness
    sensitive = policy.sensitive if policy else []
    missing = [c for c in sensitive if c not in holdout.columns]
    if missing:
        raise ConfigError(f"evaluation.fairness.sensitive {', '.join(map(repr, missing))} is not in this run's holdout "
                          "(its training set was built before the column was configured)",
                          details={"next": "clear build_training_set of this run (it joins the column from the "
                                           "feature partitions; rebuild their days with the feature pipeline if "
                                           "they predate the column), then the tasks after it"})
    stale = [c for c in sensitive if (holdout[c].astype("string") == "__missing__").all()]
    if stale and len(holdout):
        raise ConfigError(f"evaluation.fairness.sensitive {', '.join(map(repr, stale))} has no value in this run's "
                          "holdout: the feature partitions of its days were built before the column was configured",
                          details={"next": "rerun the feature pipeline for those days (it keeps the column beside the "
                                           "features), then clear build_training_set of this run"})
    fairness = group_report(holdout, holdout[LABEL], scores, policy, uc.task) if policy else None
    importance = None
    if uc.evaluation.importance_rows:
        importance = permutation_table(model, holdout[uc.feature_columns], holdout[LABEL], uc.task,
                                       rows=uc.evaluation.importance_rows)
    return fairness, importance


def metric_intervals(task: str, y, scores) -> dict[str, dict]:
    """95% intervals of the holdout metrics (:func:`pavedml.steps.performance.realized_metrics`)."""
    from pavedml.steps.performance import realized_metrics

    return realized_metrics(task, y, scores, resamples=100)


def evidence_tags(fairness: dict | None, importance: dict | None) -> dict[str, str]:
    """The version tags that answer "was it fair, what drives it" without opening the card."""
    from pavedml.explain import top_features

    tags = {}
    if fairness is not None:
        tags["fairness.ok"] = ("false" if not fairness["ok"] else "true" if fairness.get("judged", True)
                               else "not_judged")
        tags["fairness.violations"] = ("; ".join(fairness["violations"]) or "none")[:4000]
    if importance is not None:
        tags["explain.top_features"] = ", ".join(top_features(importance)) or "none"
    return tags


def publish_card(ctx: StepContext, client, record: dict) -> None:
    """Write the model card of ``record`` (Markdown and HTML) beside the decision record and to the
    challenger's MLflow run (``card/``), and set the version's description to its summary."""
    from pavedml.modelcard import CARD_ARTIFACTS, CARD_HTML, CARD_MD, render, summary

    text, page = render(record)
    folder = ctx.layout.decision(ctx.run_key).parent
    storage.write_bytes(str(folder / CARD_MD), text.encode())
    storage.write_bytes(str(folder / CARD_HTML), page.encode())
    run_id = record["training"]["run_id"]
    client.log_text(run_id, text, f"{CARD_ARTIFACTS}/{CARD_MD}")
    client.log_text(run_id, page, f"{CARD_ARTIFACTS}/{CARD_HTML}")
    client.update_model_version(record["model"], record["challenger"]["version"], description=summary(record))
    client.set_model_version_tag(record["model"], record["challenger"]["version"], "model_card", str(folder / CARD_HTML))


def evaluate_challenger(ctx: StepContext) -> PromotionDecision:
    import mlflow

    from pavedml.adapters.tracking import (
        CHAMPION,
        alias_version,
        find_version_for_dag_run,
        setup,
        unavailable_as_error,
    )
    from pavedml.errors import RegistryError
    from pavedml.metrics import LABEL, model_scores, task_metrics
    from pavedml.steps.training import load_split

    uc = ctx.use_case
    name = uc.model.registered_name
    holdout = load_split(ctx, "holdout")
    client, _ = setup(ctx)
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        challenger = find_version_for_dag_run(client, name, ctx.dag_run_key)
        if challenger is None:
            raise RegistryError(f"no {name} version registered by DAG run {ctx.dag_run_key}",
                                details={"next": "run train_challenger first"})
        champion = alias_version(client, name, CHAMPION)
        X = uc.feature_columns
        scored: dict[str, dict[str, Any]] = {}
        models: dict[str, Any] = {}
        for role, mv in (("challenger", challenger), ("champion", champion)):
            if mv is None:
                continue
            model = models[role] = mlflow.sklearn.load_model(f"models:/{name}/{mv.version}")
            scores = model_scores(model, holdout[X], uc.task)
            scored[role] = {"version": str(mv.version), "metrics": task_metrics(uc.task, holdout[LABEL], scores),
                            "slices": slice_metrics(holdout, scores, uc.evaluation.slices, uc.task),
                            "scores": scores}
        run = client.get_run(challenger.run_id)
    fairness, importance = governance_evidence(uc, holdout, scored["challenger"]["scores"], models["challenger"])
    scored["challenger"]["metrics_ci"] = metric_intervals(uc.task, holdout[LABEL], scored["challenger"]["scores"])
    for role in scored:
        del scored[role]["scores"]
    same = champion is not None and str(champion.version) == str(challenger.version)
    if same:
        verdict = Verdict("keep_champion", [f"v{challenger.version} already is the champion"])
    else:
        verdict = decide(scored["challenger"]["metrics"], scored.get("champion", {}).get("metrics"), uc.evaluation,
                         scored["challenger"]["slices"], scored.get("champion", {}).get("slices"),
                         fairness["violations"] if fairness else None)
    need = uc.evaluation.require_shadow_days
    if verdict.promote and champion is not None and need and not ctx.params.force_promote:
        verdict = Verdict("shadow", [*verdict.reasons,
                                     f"awaiting live evidence: scored in shadow beside champion v{champion.version} and "
                                     f"promoted only if it beats it on the same rows over {need} labelled day(s) "
                                     "(evaluation.require_shadow_days)"])
    manifest = storage.read_json(str(ctx.layout.training_manifest(ctx.run_key)))
    record = {"model": name, "use_case": uc.name, "description": uc.description, "outcome": verdict.outcome,
              "promote": verdict.promote, "reasons": verdict.reasons,
              "policy": uc.evaluation.model_dump(), "holdout_rows": len(holdout),
              "challenger": scored["challenger"], "champion": scored.get("champion"),
              "fairness": fairness, "importance": importance,
              "governance": {**uc.governance.model_dump(), "owner": uc.governance_owner},
              "features": {"numeric": uc.numeric_features, "categorical": uc.categorical_features,
                           "evaluation_only": uc.evaluation_columns},
              "training": {"family": uc.model.family, "run_id": challenger.run_id,
                           "params": {k.removeprefix("model."): v for k, v in run.data.params.items()
                                      if k.startswith("model.")},
                           "git_commit": run.data.tags.get("git_commit", "")},
              # a manifest of an older version lacks some keys: left out, not None (the card says "?")
              "dataset": {k: manifest[k] for k in ("window_days", "snapshot_days", "feature_snapshots", "ranges",
                                                   "rows", "digests", "dropped_without_features")
                          if manifest.get(k) is not None},
              "trained_through": challenger.tags.get("trained_through", ctx.ds_iso),
              "dag_run": ctx.dag_run_key, "decided_at": datetime.now(UTC).isoformat()}
    decision = ctx.layout.decision(ctx.run_key)
    storage.write_json(str(decision), record)
    storage.write_bytes(str(ctx.layout.decision_page(ctx.run_key)), decision_table(record).encode())
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        client.log_dict(challenger.run_id, record, f"evaluation/{DECISION_FILE}")
        client.log_text(challenger.run_id, decision_table(record), f"evaluation/{DECISION_PAGE}")
        if importance:
            client.log_dict(challenger.run_id, importance, f"evaluation/{IMPORTANCE_FILE}")
        client.set_model_version_tag(name, challenger.version, "evaluation.outcome", verdict.outcome)
        client.set_model_version_tag(name, challenger.version, "evaluation.reasons", "; ".join(verdict.reasons)[:4000])
        for key, value in evidence_tags(fairness, importance).items():
            client.set_model_version_tag(name, challenger.version, key, value)
        if champion is not None and not same:
            client.set_model_version_tag(name, champion.version, f"evaluation.vs_v{challenger.version}",
                                         "lost" if verdict.promote else "kept")
        publish_card(ctx, client, record)
    log.info("decision for %s v%s: %s (%s)", name, challenger.version, verdict.outcome, "; ".join(verdict.reasons))
    return PromotionDecision(step="evaluate_challenger", use_case=uc.name, ds=ctx.ds_iso, outcome=verdict.outcome,
                             promote=verdict.promote, reasons=verdict.reasons, model_name=name,
                             challenger_version=str(challenger.version),
                             champion_version=str(champion.version) if champion else None,
                             metrics={role: v["metrics"] for role, v in scored.items()},
                             record=str(decision), card=str(decision.parent / CARD_HTML))
