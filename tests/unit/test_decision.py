"""The promotion decision table."""

from __future__ import annotations

import pytest

from pavedml.config import Evaluation
from pavedml.steps.evaluation import decide

pytestmark = pytest.mark.unit
POLICY = Evaluation(primary_metric="roc_auc", min_uplift=0.01, floors={"roc_auc": 0.7},
                    guardrails={"log_loss": 0.02}, slices=["Contract"], max_slice_regression=0.03)
BASE = {"roc_auc": 0.80, "pr_auc": 0.6, "f1": 0.5, "precision": 0.5, "recall": 0.5, "log_loss": 0.40, "brier": 0.12}


def m(**kw):
    return {**BASE, **kw}


def test_first_run_promotes_when_floors_are_met():
    v = decide(m(), None, POLICY)
    assert v.outcome == "promote" and v.promote
    assert "no champion yet" in v.reasons[0]


def test_first_run_rejected_below_floor():
    v = decide(m(roc_auc=0.65), None, POLICY)
    assert v.outcome == "reject" and not v.promote
    assert v.reasons == ["floor not met: roc_auc 0.6500 vs floor 0.7"]


def test_win():
    v = decide(m(roc_auc=0.82), m(), POLICY)
    assert v.outcome == "promote"


def test_loss_keeps_champion():
    v = decide(m(roc_auc=0.79), m(), POLICY)
    assert v.outcome == "keep_champion" and "uplift -0.0100 on roc_auc" in v.reasons[0]


def test_tie_keeps_champion():
    v = decide(m(), m(), POLICY)
    assert v.outcome == "keep_champion" and v.reasons[0].startswith("tie on roc_auc")


def test_tie_keeps_champion_even_with_zero_required_uplift():
    v = decide(m(), m(), Evaluation(primary_metric="roc_auc", min_uplift=0.0))
    assert v.outcome == "keep_champion"


def test_uplift_below_requirement_keeps_champion():
    v = decide(m(roc_auc=0.805), m(), POLICY)
    assert v.outcome == "keep_champion" and "below the required 0.01" in v.reasons[0]


def test_floor_not_met_even_if_better_than_champion():
    v = decide(m(roc_auc=0.69), m(roc_auc=0.6), POLICY)
    assert v.outcome == "reject"


def test_guardrail_regression_keeps_champion():
    v = decide(m(roc_auc=0.83, log_loss=0.45), m(), POLICY)
    assert v.outcome == "keep_champion" and v.reasons == ["guardrail log_loss regressed by 0.0500 (allowed 0.02)"]


def test_slice_regression_keeps_champion():
    chal = {"Contract=Month-to-month": m(roc_auc=0.70), "Contract=Two year": m(roc_auc=0.90)}
    champ = {"Contract=Month-to-month": m(roc_auc=0.75), "Contract=Two year": m(roc_auc=0.85)}
    v = decide(m(roc_auc=0.83), m(), POLICY, chal, champ)
    assert v.outcome == "keep_champion"
    assert v.reasons == ["slice Contract=Month-to-month: roc_auc regressed by 0.0500 (allowed 0.03)"]


def test_slice_within_tolerance_promotes():
    chal = {"Contract=Month-to-month": m(roc_auc=0.73)}
    champ = {"Contract=Month-to-month": m(roc_auc=0.75)}
    assert decide(m(roc_auc=0.83), m(), POLICY, chal, champ).outcome == "promote"


# -- a lower-is-better primary metric (regression's rmse): the uplift is the reduction ----------------
RMSE_POLICY = Evaluation(primary_metric="rmse", min_uplift=0.5, floors={"rmse": 10.0, "r2": 0.2},
                         guardrails={"mae": 0.3})
REG = {"rmse": 8.0, "mae": 6.0, "r2": 0.6}


def r(**kw):
    return {**REG, **kw}


def test_rmse_reduction_promotes():
    v = decide(r(rmse=7.0), r(), RMSE_POLICY)
    assert v.outcome == "promote"
    assert v.reasons[0].startswith("reduction +1.0000 on rmse meets the required 0.5")


def test_rmse_rise_keeps_champion():
    """A higher rmse is worse: it must never read as an uplift."""
    v = decide(r(rmse=9.0), r(), RMSE_POLICY)
    assert v.outcome == "keep_champion"
    assert v.reasons == ["reduction -1.0000 on rmse (9.0000 vs champion 8.0000) is below the required 0.5"]


def test_rmse_tie_keeps_champion():
    v = decide(r(), r(), Evaluation(primary_metric="rmse", min_uplift=0.0))
    assert v.outcome == "keep_champion" and v.reasons[0].startswith("tie on rmse")


def test_rmse_reduction_below_requirement_keeps_champion():
    v = decide(r(rmse=7.8), r(), RMSE_POLICY)
    assert v.outcome == "keep_champion" and "reduction +0.2000 on rmse" in v.reasons[0]


def test_rmse_floor_is_a_ceiling():
    v = decide(r(rmse=10.5), None, RMSE_POLICY)
    assert v.outcome == "reject"
    assert v.reasons == ["floor not met: rmse 10.5000 vs ceiling 10.0 (lower is better)"]
    assert decide(r(rmse=10.0), None, RMSE_POLICY).outcome == "promote"  # at the ceiling is allowed


def test_higher_is_better_floor_still_applies_beside_a_ceiling():
    v = decide(r(r2=0.1), None, RMSE_POLICY)
    assert v.outcome == "reject" and v.reasons == ["floor not met: r2 0.1000 vs floor 0.2"]


def test_mae_guardrail_on_a_rmse_win():
    v = decide(r(rmse=7.0, mae=6.5), r(), RMSE_POLICY)
    assert v.outcome == "keep_champion" and v.reasons == ["guardrail mae regressed by 0.5000 (allowed 0.3)"]


def test_rmse_slice_regression_is_a_rise():
    chal = {"region=north": r(rmse=9.0), "region=south": r(rmse=5.0)}
    champ = {"region=north": r(rmse=8.0), "region=south": r(rmse=6.0)}
    policy = Evaluation(primary_metric="rmse", max_slice_regression=0.1)
    v = decide(r(rmse=7.0), r(), policy, chal, champ)
    assert v.outcome == "keep_champion" and v.reasons == [
        "slice region=north: rmse regressed by 1.0000 (12.5% of the champion's; allowed 10.0%)"]


def test_a_primary_metric_that_is_not_a_number_never_promotes():
    policy = Evaluation(primary_metric="rmse")
    verdict = decide({"rmse": float("nan"), "mae": 1.0, "r2": float("nan")},
                     {"rmse": 10.0, "mae": 8.0, "r2": 0.3}, policy)
    assert verdict.outcome == "keep_champion" and "not a number" in verdict.reasons[0]


def test_regression_slices_are_judged_relative_to_the_champion():
    """rmse is in the target's units: 0.05 allows a slice 5% worse, whatever the target's scale."""
    policy = Evaluation(primary_metric="rmse", max_slice_regression=0.05)
    chal, champ = {"rmse": 50.0, "mae": 40.0, "r2": 0.5}, {"rmse": 55.0, "mae": 44.0, "r2": 0.4}
    ok = decide(chal, champ, policy, {"sex=F": {"rmse": 60.0}}, {"sex=F": {"rmse": 58.0}})  # 3.4% worse
    assert ok.outcome == "promote", ok.reasons
    bad = decide(chal, champ, policy, {"sex=F": {"rmse": 63.0}}, {"sex=F": {"rmse": 58.0}})  # 8.6% worse
    assert bad.outcome == "keep_champion" and "8.6% of the champion's" in bad.reasons[0]
