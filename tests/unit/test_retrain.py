"""The retrain-request file shared by the drift and performance monitors: dedup per source and one
cooldown across sources (a drift request and a performance request on the same day do not both
go through: one retraining answers both monitors)."""

from __future__ import annotations

import dataclasses

import pytest

from pavedml.context import StepContext
from pavedml.errors import SkipStep
from pavedml.retrain import previous_requests, record_request

UC = "telco_churn"


def ctx_on(ds: str, cooldown: int = 3) -> StepContext:
    ctx = StepContext.build(UC, ds)
    drift = ctx.use_case.drift.model_copy(update={"cooldown_days": cooldown})
    return dataclasses.replace(ctx, use_case=ctx.use_case.model_copy(update={"drift": drift}))


def test_same_day_requests_of_two_sources_are_one_retraining(data_root):
    day = ctx_on("2025-03-16")
    record_request(day, {"window": ["2025-03-10", "2025-03-16"], "data_hash": "a"}, {"ds": "2025-03-16"},
                   source="drift")
    with pytest.raises(SkipStep, match=r"^cooldown: .*2025-03-16 \(drift, at .*one retraining answers both"):
        record_request(day, {"judged_days": ["2025-03-14"], "data_hash": "b"}, {"ds": "2025-03-16"},
                       source="performance")
    # the same monitor may still ask again that day for another window (its own exemption)
    record_request(day, {"window": ["2025-03-09", "2025-03-15"], "data_hash": "c"}, {"ds": "2025-03-16"},
                   source="drift")
    with pytest.raises(SkipStep, match="already made"):
        record_request(day, {"window": ["2025-03-10", "2025-03-16"], "data_hash": "a"}, {"ds": "2025-03-16"},
                       source="drift")
    # within the cooldown the next day, either source is refused; after it, a request goes through
    with pytest.raises(SkipStep, match="next one allowed from 2025-03-19"):
        record_request(ctx_on("2025-03-17"), {"judged_days": ["2025-03-15"], "data_hash": "d"},
                       {"ds": "2025-03-17"}, source="performance")
    record_request(ctx_on("2025-03-19"), {"judged_days": ["2025-03-17"], "data_hash": "e"}, {"ds": "2025-03-19"},
                   source="performance")
    made = [(r["source"], r["ds"]) for r in previous_requests(day)]
    assert made == [("drift", "2025-03-16"), ("drift", "2025-03-16"), ("performance", "2025-03-19")]


def test_without_a_cooldown_both_sources_go_through(data_root):
    day = ctx_on("2025-03-16", cooldown=0)
    record_request(day, {"window": ["2025-03-16"], "data_hash": "a"}, {"ds": "2025-03-16"}, source="drift")
    record_request(day, {"judged_days": ["2025-03-14"], "data_hash": "a"}, {"ds": "2025-03-16"},
                   source="performance")
    assert [r["source"] for r in previous_requests(day)] == ["drift", "performance"]
