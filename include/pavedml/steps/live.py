"""judge_live_evidence: promote a challenger in shadow only on live evidence (``require_shadow_days``).

A challenger that won offline against a champion while ``evaluation.require_shadow_days: N`` is set
waits in shadow (its ``evaluation.outcome`` tag is ``shadow``): batch scoring scores it beside the
champion on every row (:mod:`pavedml.steps.scoring`). Each run of the performance monitor calls this
step. Once the challenger has N scored days *after the day it was trained through* whose labels have
had ``label.delay_days`` to land by the run's day (rows scored by both it and the current champion;
the first N such days, so the decision does not depend on when the judge runs), it is decided, once,
on those rows (rows without a score are left out, logged):

1. the use case's policy (:func:`pavedml.steps.evaluation.decide`: floors, ``min_uplift`` on the
   primary metric with a tie keeping the champion, guardrails) on the pooled live metrics of both
   models over the same rows (slices are not judged live: predictions carry no slice columns);
2. confidence: the lower bound of the ``evaluation.live_confidence`` interval of the uplift (a paired
   bootstrap over rows: both models' scores of a row stay together) must be above ``min_uplift``.
   An uplift the interval cannot separate from ``min_uplift`` keeps the champion.

Promote: the champion moves by the same compare-and-set as every promotion
(:func:`pavedml.steps.registry.move_champion`, ledger entry) and the task succeeds (the champion Asset
is emitted). Keep: a ledger entry, the challenger leaves shadow, and the task is skipped (nothing
moved). Either way the decision record (``registry/live/v<version>.json``, also logged to the
challenger's MLflow run) shows the offline evidence (holdout metrics, offline reasons) beside the live
one (days, rows, metrics of both, the uplift and its interval). Not enough labelled shadow days or
rows yet: skipped with what is missing; the challenger stays in shadow. A judge that loses a race
(another run or a rollback moved the champion meanwhile) moves nothing, writes no record and is
skipped: the next run judges against the new champion. A newer challenger registered while one waits
supersedes it (its tag becomes ``superseded``, with a ledger entry: :mod:`pavedml.adapters.tracking`).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from pavedml import storage
from pavedml.context import StepContext
from pavedml.errors import SkipStep
from pavedml.pullset import MAX_SHADOW_DAYS  # shadow days looked at, at most (and pulled)
from pavedml.results import PromotionResult

log = logging.getLogger(__name__)
#: Bootstrap resamples of the live uplift, and the most rows one resample draws from.
LIVE_BOOTSTRAP, LIVE_BOOTSTRAP_MAX_ROWS = 300, 100_000


def paired_uplift_interval(task: str, metric: str, y, champion, challenger, confidence: float,
                           resamples: int = LIVE_BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """The two-sided ``confidence`` interval of the challenger's gain on ``metric`` (a rise, or a
    reduction for a lower-is-better metric) over the champion on the same rows: a paired bootstrap
    (rows resampled together; a classifier's resample holding one class is drawn again). Only the
    one metric is computed per resample."""
    import numpy as np

    from pavedml.config import LOWER_IS_BETTER

    y, champion, challenger = (np.asarray(a) for a in (y, champion, challenger))
    measure = _metric_function(task, metric)
    rng = np.random.default_rng(seed)
    n = len(y)
    size = min(n, LIVE_BOOTSTRAP_MAX_ROWS)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    classifier = task != "regression"
    gains = []
    for _ in range(resamples):
        idx = rng.integers(0, n, size)
        yi = y[idx]
        if classifier and (yi.min() == yi.max()):
            continue
        gains.append(sign * (measure(yi, challenger[idx]) - measure(yi, champion[idx])))
    if not gains:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(gains, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _metric_function(task: str, metric: str):
    """``f(y, scores) -> float`` for one of the task's metrics (as :func:`pavedml.metrics.task_metrics`
    computes it), without the others."""
    from pavedml.metrics import task_metrics

    def measure(y, scores):
        return task_metrics(task, y, scores)[metric]

    from sklearn import metrics as m

    fast = {"roc_auc": m.roc_auc_score, "pr_auc": m.average_precision_score,
            "brier": m.brier_score_loss, "mae": m.mean_absolute_error,
            "rmse": lambda y, p: float(((y - p) ** 2).mean() ** 0.5)}
    return fast.get(metric, measure)


def labelled_shadow_days(ctx: StepContext, since: str) -> list[str]:
    """The days a challenger trained through ``since`` can be judged on by ``ds``: after ``since``
    (never a day it learned from) and no later than ``ds - label.delay_days`` (the day's labels have
    had their time to land: a day holding a first few early labels is not judged on them)."""
    last = ctx.ds - timedelta(days=ctx.use_case.label.delay_days)
    first = max(date.fromisoformat(since) + timedelta(days=1), last - timedelta(days=MAX_SHADOW_DAYS - 1))
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def shadow_rows(ctx: StepContext, champion_version: str, challenger_version: str, days: list[str],
                need: int):
    """The labelled rows scored by both versions on the first ``need`` of ``days`` that hold any (one
    day in memory at a time while reading), and those days. Rows whose score is not a number are
    left out and counted in the log, naming the day and version."""
    import pandas as pd

    from pavedml.steps.performance import LabelsIndex, labelled_predictions

    index = LabelsIndex(ctx)
    frames, used = [], []
    for day in days:
        df = labelled_predictions(ctx, day, index)
        if df is None or not len(df):
            continue
        both = df[(df["challenger_version"].astype("string") == challenger_version)
                  & (df["champion_version"].astype("string") == champion_version)]
        scores = both[["champion_score", "challenger_score"]]
        bad = scores.isna().any(axis=1)
        if bad.any():
            log.warning("%s: %d labelled row(s) of the shadow scoring have no champion v%s or challenger v%s "
                        "score (not a number): left out", ctx.layout.predictions_partition(day), int(bad.sum()),
                        champion_version, challenger_version)
            both = both[~bad]
        if len(both):
            frames.append(both[["label", "champion_score", "challenger_score"]])
            used.append(day)
            if len(used) == need:
                break
    rows = pd.concat(frames, ignore_index=True) if frames else None
    return rows, used


def _offline(mv) -> dict:
    tags = mv.tags or {}
    return {"outcome": tags.get("evaluation.outcome"), "reasons": tags.get("evaluation.reasons", ""),
            "holdout": {k.removeprefix("holdout_"): float(v) for k, v in tags.items() if k.startswith("holdout_")}}


def judge_live_evidence(ctx: StepContext) -> PromotionResult:
    import numpy as np

    from pavedml.adapters.tracking import CHALLENGER, CHAMPION, alias_version, setup, unavailable_as_error
    from pavedml.ledger import append_ledger
    from pavedml.metrics import task_metrics
    from pavedml.steps.evaluation import Verdict, decide
    from pavedml.steps.registry import ChampionChanged, move_champion
    from pavedml.steps.scoring import AWAITING_LIVE, trained_through

    uc = ctx.use_case
    name = uc.model.registered_name
    policy = uc.evaluation
    client, _ = setup(ctx)
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        champion = alias_version(client, name, CHAMPION)
        challenger = alias_version(client, name, CHALLENGER)
    if (challenger is None or champion is None or str(challenger.version) == str(champion.version)
            or (challenger.tags or {}).get("evaluation.outcome") != AWAITING_LIVE):
        raise SkipStep(f"no {name} challenger awaits live evidence")
    chal_v, champ_v = str(challenger.version), str(champion.version)
    approval = (challenger.tags or {}).get("approval.status")
    if policy.require_approval and approval != "approved":
        raise SkipStep(f"challenger v{chal_v} waits for live evidence but its promotion is not approved (approval "
                       f"{approval or 'not answered'}; evaluation.require_approval): it is never promoted on live "
                       "evidence alone")
    need = max(1, policy.require_shadow_days)
    since = trained_through(challenger)
    candidates = labelled_shadow_days(ctx, since)
    rows, days = shadow_rows(ctx, champ_v, chal_v, candidates, need)
    if len(days) < need:
        raise SkipStep(f"challenger v{chal_v} has {len(days)} of {need} labelled shadow day(s) beside champion "
                       f"v{champ_v} ({', '.join(days) or 'none yet'}; days after {since} whose labels had "
                       f"{uc.label.delay_days} day(s) to land by {ctx.ds_iso}); it stays in shadow")
    assert rows is not None
    y = rows["label"].to_numpy()
    if len(rows) < policy.live_min_rows or (not uc.is_regression and len(np.unique(y)) < 2):
        raise SkipStep(f"challenger v{chal_v}: {len(rows)} labelled shadow row(s) over {len(days)} day(s)"
                       + (" hold one class" if len(rows) >= policy.live_min_rows else
                          f", fewer than evaluation.live_min_rows ({policy.live_min_rows})")
                       + "; it stays in shadow")
    live = {"challenger": task_metrics(uc.task, y, rows["challenger_score"].to_numpy()),
            "champion": task_metrics(uc.task, y, rows["champion_score"].to_numpy())}
    primary = policy.primary_metric
    lo, hi = paired_uplift_interval(uc.task, primary, y, rows["champion_score"], rows["challenger_score"],
                                    policy.live_confidence)
    verdict = decide(live["challenger"], live["champion"], policy)
    interval = f"{policy.live_confidence:.0%} interval [{lo:+.4f}, {hi:+.4f}]"
    if verdict.promote and not lo > policy.min_uplift:
        verdict = Verdict("keep_champion", [f"live gain on {primary} is not confident: its {interval} reaches "
                                            f"down to the required {policy.min_uplift}"])
    elif verdict.promote:
        verdict = Verdict("promote", [*verdict.reasons, f"live gain {interval} clears {policy.min_uplift}"])
    reasons = [f"live evidence over {len(days)} day(s) ({days[0]} .. {days[-1]}), {len(rows)} labelled row(s) "
               "scored by both", *verdict.reasons]
    record = {"model": name, "outcome": verdict.outcome, "promote": verdict.promote, "reasons": reasons,
              "challenger": {"version": chal_v, "trained_through": since, "offline": _offline(challenger),
                             "live": live["challenger"]},
              "champion": {"version": champ_v, "offline": _offline(champion), "live": live["champion"]},
              "live": {"days": days, "rows": len(rows), "primary_metric": primary, "gain": _gain(primary, live),
                       "interval": [lo, hi], "confidence": policy.live_confidence},
              "policy": policy.model_dump(), "dag_run": ctx.dag_run_key, "decided_at": datetime.now(UTC).isoformat()}
    why = "; ".join(reasons)
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        if verdict.promote:
            try:
                result = move_champion(ctx, client, chal_v, champ_v, "promoted", f"{ctx.reason}: {why}",
                                       live["challenger"])
            except ChampionChanged:
                # another judge or a rollback moved the champion meanwhile: this decision is void
                now = alias_version(client, name, CHAMPION)
                now_v = str(now.version) if now else None
                if now_v == chal_v:
                    raise SkipStep(f"challenger v{chal_v} already is the champion (another run decided it)") from None
                raise SkipStep(f"the champion moved to v{now_v} while v{chal_v} was judged against v{champ_v}: "
                               "nothing moved; the next run judges it against the new champion") from None
        else:
            append_ledger(ctx, {"action": "keep_champion", "model": name, "from_version": champ_v,
                                "to_version": champ_v, "challenger_version": chal_v, "reason": f"{ctx.reason}: {why}",
                                "metrics": live["challenger"]})
        # the record of what was done (after the move: a judge that lost a race leaves none)
        storage.write_json(str(ctx.layout.live_decision(chal_v)), record)
        client.log_dict(challenger.run_id, record, "evaluation/live_decision.json")
        client.set_model_version_tag(name, chal_v, "evaluation.outcome",
                                     "promoted_live" if verdict.promote else "kept_live")
        client.set_model_version_tag(name, chal_v, "evaluation.live_reasons", why[:4000])
    log.info("live decision for %s v%s vs champion v%s: %s (%s)", name, chal_v, champ_v, verdict.outcome, why)
    if not verdict.promote:
        raise SkipStep(f"champion v{champ_v} kept over challenger v{chal_v} on live evidence: {why}; record "
                       f"{ctx.layout.live_decision(chal_v)}")
    return PromotionResult(**{**result.as_dict(), "step": "judge_live_evidence"})


def _gain(metric: str, live: dict) -> float:
    """The challenger's live gain on ``metric`` (a reduction for a lower-is-better one)."""
    from pavedml.config import LOWER_IS_BETTER

    diff = live["challenger"][metric] - live["champion"][metric]
    return float(-diff if metric in LOWER_IS_BETTER else diff)
