"""The day a run works on, for every way a run starts (pavedml.airflow.factory.run_ds), and the
template every step's argv renders it with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from pavedml.airflow.factory import run_ds

pytestmark = pytest.mark.unit


def run(logical=None, run_after=datetime(2025, 3, 9, 7, 30, tzinfo=UTC)):
    return SimpleNamespace(logical_date=logical, run_after=run_after)


def event(extra=None, ts=datetime(2025, 3, 8, 23, 0, tzinfo=UTC)):
    return SimpleNamespace(extra=extra or {}, timestamp=ts)


def test_scheduled_manual_and_backfill_runs_use_the_logical_date():
    assert run_ds(run(datetime(2025, 1, 8, tzinfo=UTC))) == "2025-01-08"
    # a logical date given in another zone is the UTC day
    assert run_ds(run(datetime(2025, 1, 8, 23, 30, tzinfo=timezone(timedelta(hours=-3))))) == "2025-01-09"


def test_asset_triggered_runs_use_the_events_ds():
    retrain = {"retrain_request": [event({"ds": "2025-01-10", "window": {"start": "2025-01-10"}}),
                                   event({"ds": "2025-01-12"})],
               "features": [event({"ds": "2025-01-11", "sha256": "x"})]}
    assert run_ds(run(), retrain) == "2025-01-12"  # the newest day any event names


def test_events_without_ds_use_their_timestamp_then_run_after():
    assert run_ds(run(), {"a": [event({}, datetime(2025, 2, 1, 1, tzinfo=UTC))]}) == "2025-02-01"
    assert run_ds(run(), {}) == "2025-03-09"
    assert run_ds(run(), None) == "2025-03-09"


def test_every_step_argv_renders_ds_for_an_asset_triggered_run():
    """Render the argv template as Airflow does, with an Asset-triggered run's context."""
    import jinja2

    from pavedml.airflow.factory import RUN_ARGS

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    ctx = {"run_ds": run_ds, "dag_run": run(), "dag": SimpleNamespace(dag_id="d"), "run_id": "asset_triggered__x",
           "ti": SimpleNamespace(try_number=1),
           "triggering_asset_events": {"r": [event({"ds": "2025-01-10"})]}}
    rendered = [env.from_string(a).render(**ctx) for a in RUN_ARGS]
    assert rendered[:2] == ["--ds", "2025-01-10"]
