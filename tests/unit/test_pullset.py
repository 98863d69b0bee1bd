"""What each step pulls from the lake (pavedml.pullset): the table of days per step, what a pull
set wants of a lake's keys, and the check that a step reads nothing outside it."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import pytest

from pavedml import pullset
from pavedml.context import StepContext

pytestmark = pytest.mark.unit

DS = date(2026, 3, 31)


def ctx(**drift) -> StepContext:
    c = StepContext.build("telco_churn", DS, run_id="manual__2026-03-31T00:00:00+00:00")
    if drift:
        uc = c.use_case
        c = dataclasses.replace(c, use_case=uc.model_copy(update={"drift": uc.drift.model_copy(update=drift)}))
    return c


def days_back(n: int, end: date = DS) -> set[str]:
    return {(end - timedelta(days=i)).isoformat() for i in range(n + 1)}


@pytest.mark.parametrize("step", ["ingest_raw_batch", "validate_raw_batch", "build_features",
                                  "materialize_features", "score_customers", "request_retraining"])
def test_the_daily_steps_pull_their_day_only(step):
    pull = pullset.for_step(step, ctx())
    assert pull.days == {DS.isoformat()}
    assert pull.runs == frozenset()


def test_training_pulls_its_window_and_its_own_run():
    c = ctx()
    pull = pullset.for_step("build_training_set", c)
    uc = c.use_case
    assert pull.days == days_back(uc.model.training_window_days + uc.features.ttl_days + uc.label.delay_days)
    assert pull.runs == {c.run_key}
    assert pull.collections == {"features", "validation/labels", "quarantine/labels"}  # never raw, predictions...
    for step in ("train_challenger", "evaluate_challenger", "promote_challenger"):
        assert pullset.for_step(step, c) == pullset.PullSet(step, frozenset(), frozenset({c.run_key}))
    # a run's own window parameter moves it
    wide = StepContext.build("telco_churn", DS, params={"training_window_days": 365})
    assert len(pullset.for_step("build_training_set", wide).days) == 365 + uc.features.ttl_days + uc.label.delay_days + 1


def test_drift_pulls_its_window_its_reference_and_one_season_ago():
    delay = ctx().use_case.label.delay_days
    training = pullset.for_step("check_drift", ctx(reference="training", reference_days=28, season_days=365))
    year_ago = DS - timedelta(days=365)
    # the window, and the seasonal period of the notes (28 days centred one season ago), each with
    # the label delay before it
    assert DS.isoformat() in training.days and year_ago.isoformat() in training.days
    assert (year_ago - timedelta(days=14 + delay)).isoformat() in training.days
    assert (DS - timedelta(days=30)).isoformat() not in training.days
    assert len(training.days) == (1 + delay) + (28 + delay)
    rolling = pullset.for_step("check_drift", ctx(reference="rolling", reference_days=28, season_days=365))
    assert days_back(28 + delay) <= rolling.days
    assert year_ago.isoformat() in rolling.days
    seasonal = pullset.for_step("check_drift", ctx(reference="seasonal", reference_days=28, season_days=365))
    assert year_ago.isoformat() in seasonal.days
    assert days_back(delay) <= seasonal.days
    assert (DS - timedelta(days=delay + 1)).isoformat() not in seasonal.days  # no rolling period
    assert max(seasonal.days) == DS.isoformat()


def test_performance_and_live_evidence_pull_their_lookback():
    c = ctx()
    lookback = c.use_case.performance.lookback_days
    assert pullset.for_step("measure_performance", c).days == days_back(lookback)
    assert "raw" not in pullset.for_step("measure_performance", c).collections
    assert pullset.for_step("request_performance_retraining", c).days == days_back(lookback)
    assert pullset.for_step("judge_live_evidence", c).days == days_back(c.use_case.label.delay_days + 366)
    assert pullset.for_step("rollback_model", c).days == frozenset()
    assert pullset.for_step("a_step_of_tomorrow", c) == pullset.PullSet("a_step_of_tomorrow", None, None)


@pytest.mark.parametrize(("rel", "wanted"), [
    ("raw/dt=2026-03-31/abc.parquet", True),
    ("raw/dt=2026-03-30/abc.parquet", False),
    ("validation/labels/dt=2026-03-31/ff/result.json", True),
    ("quarantine/labels/dt=2026-01-01/ff/reason.json", False),
    ("served/dt=2026-03-30/part-h-1-0.parquet", False),
    ("training/mine/train.parquet", True),
    ("training/theirs/train.parquet", False),
    ("drift/psi_history.csv", True),  # the shared records: always
    ("drift/retrain_requests.jsonl", True),
    ("performance/history.csv", True),
    ("registry/ledger/20260101T000000-abc.json", True),
    ("registry/ledger.jsonl", True),
    ("imports.jsonl", True),
    ("dt=2026-03-30", True),  # a top-level file named like a folder: not a partition
])
def test_what_a_pull_set_wants_of_the_lake(rel, wanted):
    pull = pullset.PullSet("s", frozenset({"2026-03-31"}), frozenset({"mine"}))
    assert pull.wants(rel) is wanted
    assert pullset.EVERYTHING.wants(rel)


def test_a_pull_set_of_some_collections_leaves_the_others_days():
    pull = pullset.PullSet("s", frozenset({"2026-03-31"}), frozenset(), frozenset({"features", "validation/labels"}))
    assert pull.wants("features/dt=2026-03-31/part-0.parquet")
    assert pull.wants("validation/labels/dt=2026-03-31/ff/result.json")
    assert not pull.wants("validation/dt=2026-03-31/ff/result.json")
    assert not pull.wants("raw/dt=2026-03-31/abc.parquet")
    assert pull.wants("performance/history.csv")
    pull.check_day("features", "2026-03-31")
    with pytest.raises(pullset.OutsidePullSetError, match="reads raw/dt=2026-03-31"):
        pull.check_day("raw", "2026-03-31")


def test_the_layout_refuses_a_partition_outside_the_running_steps_pull_set():
    c = ctx()
    pull = pullset.for_step("score_customers", c)
    with pullset.enforced(pull):
        assert c.layout.features_file(DS).name == "part-0.parquet"
        c.layout.predictions_partition(DS.isoformat())
        with pytest.raises(pullset.OutsidePullSetError, match=r"score_customers reads predictions/dt=2026-03-30"):
            c.layout.predictions_partition(DS - timedelta(days=1))
        for make in (lambda d: c.layout.raw_dir(d), lambda d: c.layout.drift_dir(d),
                     lambda d: c.layout.performance_dir(d), lambda d: c.layout.served_partition(d),
                     lambda d: c.layout.validation_dir(d, "s"), lambda d: c.layout.quarantine_dir(d, "s"),
                     lambda d: c.layout.labels_validation_dir(d, "s"), lambda d: c.layout.labels_quarantine_dir(d, "s")):
            with pytest.raises(pullset.OutsidePullSetError, match="2026-01-01"):
                make("2026-01-01")
        with pytest.raises(pullset.OutsidePullSetError, match="training/x"):
            c.layout.training_dir("x")
        c.layout.drift_history  # noqa: B018 - the shared records: never refused
    c.layout.predictions_partition(DS - timedelta(days=1))  # no step running: no check
    assert pullset.active() is None
