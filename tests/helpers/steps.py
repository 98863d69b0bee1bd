"""Run pipeline steps in-process (fast fixtures for tests that need history, not DAG runs)."""

from __future__ import annotations

from datetime import date, timedelta

FEATURE_STEPS = ("ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features")


def run_step(step: str, ds: str, use_case: str = "telco_churn", **ctx_kwargs):
    from pavedml.cli import STEPS, _resolve
    from pavedml.context import StepContext
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    ctx = StepContext.build(use_case, ds, **ctx_kwargs)
    return _resolve(STEPS[step][0])(ctx)


def feature_days(start: date, days: int, use_case: str = "telco_churn") -> list[str]:
    out = []
    for i in range(days):
        ds = (start + timedelta(days=i)).isoformat()
        for step in FEATURE_STEPS:
            run_step(step, ds, use_case)
        out.append(ds)
    return out
