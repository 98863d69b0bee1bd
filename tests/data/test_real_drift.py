"""PSI drift judged on a real, time-ordered public data set: the Mauna Loa weekly CO2 record
(1958-2001, bundled with statsmodels). Features: the year-over-year growth of CO2 and the seasonal
deviation from the 52-week centred mean. Growth roughly doubled between the 1960s and the 1990s
(a shifted window); between 1975-1984 and 1985-1994 it was stable."""

from __future__ import annotations

import pytest

from pavedml.config import Drift
from pavedml.drift import build_reference, compute_psi

pytestmark = pytest.mark.data
POLICY = Drift(warn=0.1, alert=0.25, min_alert_features=1, min_samples=300)


@pytest.fixture(scope="module")
def co2():
    import statsmodels.datasets.co2 as co2

    df = co2.load_pandas().data.interpolate()
    df["growth"] = df["co2"].diff(52)
    df["season"] = df["co2"] - df["co2"].rolling(52, center=True).mean()
    return df.dropna()


def fires(reference_df, window_df) -> tuple[bool, object]:
    from pavedml.steps.monitoring import judge

    reference = build_reference(reference_df, ["growth", "season"], [], bins=10)
    report = compute_psi(reference, window_df, warn=POLICY.warn, alert=POLICY.alert, min_samples=POLICY.min_samples)
    return judge(report, POLICY) == "drift", report


def test_sensor_fires_on_a_shifted_window(co2):
    fired, report = fires(co2.loc["1960":"1969"], co2.loc["1990":"1999"])
    assert fired, report.table()
    assert report.alerts == ["growth"]


def test_sensor_stays_quiet_on_a_stable_window(co2):
    fired, report = fires(co2.loc["1975":"1984"], co2.loc["1985":"1994"])
    assert not fired, report.table()
    assert report.judged and report.n_rows > 500


def test_too_few_rows_are_not_judged(co2):
    fired, report = fires(co2.loc["1960":"1969"], co2.loc["1990":"1992"])
    assert not fired and not report.judged
