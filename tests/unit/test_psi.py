"""PSI drift (pavedml.drift): the vectorized, chunked implementation against a plain loop version of
the design doc's seed formula, hand-computed values, edge cases and the reference round trip."""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pavedml import drift
from pavedml.drift import (
    MISSING,
    UNSEEN,
    PsiAccumulator,
    build_reference,
    compute_psi,
    psi_from_proportions,
)
from pavedml.errors import DriftInputError

pytestmark = pytest.mark.unit

EPS = 1e-6


def seed_psi_loops(expected, actual, buckets: int = 10, epsilon: float = EPS) -> float:
    """The design doc's seed formula, written out with plain loops over the bins.

    Bins are ``[b_i, b_i+1)`` with the last one closed, like ``np.histogram``; values outside
    ``[b_0, b_k]`` are not counted (the seed drops them), but the denominators stay the full lengths.
    """
    breakpoints = np.percentile(expected, np.linspace(0, 100, buckets + 1))

    def hist(values) -> list[int]:
        counts = []
        for i in range(buckets):
            lo, hi = breakpoints[i], breakpoints[i + 1]
            last = i == buckets - 1
            counts.append(sum(1 for v in values if lo <= v < hi or (last and v == hi)))
        return counts

    expected_hist, actual_hist = hist(expected), hist(actual)
    # Sanity: the loop counts are np.histogram's, as in the seed.
    assert expected_hist == np.histogram(expected, breakpoints)[0].tolist()
    assert actual_hist == np.histogram(actual, breakpoints)[0].tolist()
    total = 0.0
    for i in range(buckets):
        e = expected_hist[i] / len(expected) + epsilon
        a = actual_hist[i] / len(actual) + epsilon
        total += (e - a) * math.log(e / a)
    return total


def _psi_of(report, name: str) -> float:
    return next(f.psi for f in report.features if f.name == name)


def _feature(report, name: str):
    return next(f for f in report.features if f.name == name)


def _sample(rng, n: int, *, shift: float = 0.0) -> pd.DataFrame:
    df = pd.DataFrame({
        "tenure": rng.integers(0, 73, n).astype("float64") * (1 - shift),
        "MonthlyCharges": rng.normal(65 + 20 * shift, 30, n),
        "Contract": rng.choice(["Month-to-month", "One year", "Two year"], n,
                               p=[0.55 - 0.3 * shift, 0.25, 0.20 + 0.3 * shift]),
        "SeniorCitizen": rng.choice([0, 1], n, p=[0.84, 0.16]),
    })
    df.loc[df.index[::37], "MonthlyCharges"] = np.nan
    df.loc[df.index[::53], "Contract"] = None
    return df


NUMERIC = ["tenure", "MonthlyCharges"]
CATEGORICAL = ["Contract", "SeniorCitizen"]


# ------------------------------------------------------------------------- equality with the seed


@pytest.mark.parametrize("bins", [5, 10, 20])  # > 16 distinct cuts: the searchsorted path
@pytest.mark.parametrize("kind", ["normal", "poisson", "integers", "binary"])
def test_vectorized_psi_equals_seed_loops_on_in_range_data(kind, bins):
    rng = np.random.default_rng(7)
    if kind == "normal":
        expected = rng.normal(0, 1, 5000)
        actual = rng.normal(0.3, 1.3, 3000)
    elif kind == "poisson":  # ties, repeated quantiles
        expected = rng.poisson(4, 5000).astype(float)
        actual = rng.poisson(5, 3000).astype(float)
    elif kind == "integers":  # many distinct cuts that data values sit exactly on
        expected = rng.integers(0, 100, 5000).astype(float)
        actual = rng.integers(20, 140, 3000).astype(float)
    else:  # the maximum holds > 1/bins of the data and keeps its own bin, as in np.histogram
        expected = rng.choice([0.0, 1.0], 5000, p=[0.7, 0.3])
        actual = rng.choice([0.0, 1.0], 3000, p=[0.4, 0.6])
    # No out-of-range values, so np.histogram (drops them) and our open outer bins agree.
    actual = np.clip(actual, expected.min(), expected.max())

    reference = build_reference(pd.DataFrame({"x": expected}), ["x"], [], bins=bins)
    report = compute_psi(reference, pd.DataFrame({"x": actual}), min_samples=0)

    assert reference["features"]["x"]["edges"] == pytest.approx(
        np.unique(np.percentile(expected, np.linspace(0, 100, bins + 1))).tolist(), rel=1e-12)
    assert _psi_of(report, "x") == pytest.approx(seed_psi_loops(expected, actual, bins), rel=1e-12, abs=1e-15)


def test_comparison_and_searchsorted_counting_agree():
    rng = np.random.default_rng(17)
    cuts = np.arange(-3.0, 3.01, 0.25)
    x = np.concatenate([rng.normal(0, 2, 3000).round(1), cuts, [np.nan] * 7, [np.inf, -np.inf]])
    for n_cuts in (0, 1, 5, len(cuts)):
        by_compare = drift._count_numeric(x, cuts[:n_cuts], compare_max_cuts=10**6)
        by_search = drift._count_numeric(x, cuts[:n_cuts], compare_max_cuts=-1)
        assert by_compare[0].tolist() == by_search[0].tolist() and by_compare[1] == by_search[1] == 7
        assert by_search[0].sum() == len(x) - 7
        expected = [np.sum(np.searchsorted(cuts[:n_cuts], x[~np.isnan(x)], side="right") == i)
                    for i in range(n_cuts + 1)]
        assert by_search[0].tolist() == expected


def test_out_of_range_values_are_kept_in_the_outer_bins_unlike_the_seed():
    rng = np.random.default_rng(3)
    expected = rng.normal(0, 1, 5000)
    actual = np.concatenate([rng.normal(0, 1, 900), np.full(100, expected.max() + 5)])
    reference = build_reference(pd.DataFrame({"x": expected}), ["x"], [], bins=10)
    feature = _feature(compute_psi(reference, pd.DataFrame({"x": actual}), min_samples=0), "x")
    assert sum(feature.actual) == pytest.approx(1.0)  # nothing dropped
    assert feature.actual[-2] >= 0.1  # last value bin (before "missing") holds the 100 outliers
    assert feature.psi > seed_psi_loops(expected, actual, 10)  # the seed drops them


# ------------------------------------------------------------------------------------ known values


def test_identical_distributions_give_psi_near_zero():
    rng = np.random.default_rng(11)
    reference = build_reference(_sample(rng, 50_000), NUMERIC, CATEGORICAL)
    report = compute_psi(reference, _sample(rng, 50_000))
    assert report.judged
    assert all(f.psi < 0.01 for f in report.features), report.table()
    assert report.alerts == [] and report.warnings == []
    assert {f.status for f in report.features} == {"ok"}


def test_known_shift_matches_hand_computed_value():
    e1, e2, a1, a2 = 0.5 + EPS, 0.5 + EPS, 0.9 + EPS, 0.1 + EPS
    by_hand = (e1 - a1) * math.log(e1 / a1) + (e2 - a2) * math.log(e2 / a2)
    assert psi_from_proportions([0.5, 0.5], [0.9, 0.1]) == pytest.approx(by_hand, abs=1e-9)
    assert by_hand == pytest.approx(0.4 * math.log(5 / 9) * -1 + 0.4 * math.log(5), abs=1e-5)  # ~0.8789

    # End to end: 2 bins split at 0.5; 50/50 in the reference, 90/10 in the new data.
    reference = build_reference(pd.DataFrame({"x": [0.0] * 50 + [1.0] * 50}), ["x"], [], bins=2)
    assert reference["features"]["x"]["cuts"] == [0.5]
    report = compute_psi(reference, pd.DataFrame({"x": [0.0] * 90 + [1.0] * 10}), min_samples=0)
    feature = _feature(report, "x")
    assert feature.expected == [0.5, 0.5, 0.0] and feature.actual == [0.9, 0.1, 0.0]
    assert feature.psi == pytest.approx(by_hand, abs=1e-9)  # the empty "missing" bucket adds 0


def test_empty_bins_and_unseen_categories_give_finite_values():
    assert math.isfinite(psi_from_proportions([0.0, 1.0], [1.0, 0.0]))
    assert psi_from_proportions([0.0, 0.0, 1.0], [0.0, 0.0, 1.0]) == 0.0

    reference = build_reference(pd.DataFrame({"x": np.arange(1000.0), "c": ["a", "b"] * 500}),
                                ["x"], ["c"], bins=10)
    new = pd.DataFrame({"x": np.full(600, 10_000.0), "c": ["a"] * 300 + ["zzz"] * 300})
    report = compute_psi(reference, new)
    x, c = _feature(report, "x"), _feature(report, "c")
    assert math.isfinite(x.psi) and math.isfinite(c.psi)
    assert x.actual[-2] == 1.0 and sum(x.actual[:-2]) == 0.0  # every other bin empty
    assert c.bins == ["a", "b", MISSING, UNSEEN]
    assert c.expected[-1] == 0.0 and c.actual[-1] == 0.5
    assert report.alerts == ["x", "c"]


def test_missing_values_have_their_own_bucket():
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan] * 250})
    reference = build_reference(train, ["x"], [], bins=3)
    assert reference["features"]["x"]["null_fraction"] == 0.25
    feature = _feature(compute_psi(reference, pd.DataFrame({"x": [np.nan] * 600}), min_samples=0), "x")
    assert feature.bins[-1] == MISSING
    assert feature.expected[-1] == 0.25 and feature.actual == [0.0] * (len(feature.bins) - 1) + [1.0]


def test_constant_reference_column_still_detects_change():
    reference = build_reference(pd.DataFrame({"x": [5.0] * 1000}), ["x"], [], bins=10)
    same = compute_psi(reference, pd.DataFrame({"x": [5.0] * 600}))
    moved = compute_psi(reference, pd.DataFrame({"x": [6.0] * 600}))
    assert _psi_of(same, "x") == 0.0
    assert _feature(same, "x").bins == ["< 5", "= 5", ">= 5", MISSING]
    assert moved.alerts == ["x"]


# ---------------------------------------------------------------------------------- report, judging


def test_below_min_samples_nothing_is_judged():
    rng = np.random.default_rng(5)
    reference = build_reference(_sample(rng, 5000), NUMERIC, CATEGORICAL)
    report = compute_psi(reference, _sample(rng, 120, shift=0.8), min_samples=500)
    assert report.judged is False and report.n_rows == 120
    assert "120" in report.reason and "500" in report.reason
    assert {f.status for f in report.features} == {"insufficient_data"}
    assert report.alerts == [] and report.warnings == []
    assert all(math.isfinite(f.psi) for f in report.features)


def test_chunked_accumulation_equals_one_shot():
    rng = np.random.default_rng(21)
    reference = build_reference(_sample(rng, 5000), NUMERIC, CATEGORICAL)
    new = _sample(rng, 4003, shift=0.3)
    one_shot = compute_psi(reference, new)
    assert compute_psi(reference, new, chunk_rows=333).as_dict() == one_shot.as_dict()

    acc = PsiAccumulator(reference)
    for start, stop in [(0, 1), (1, 1500), (1500, 1500), (1500, 4003)]:
        part = new.iloc[start:stop].copy()
        if start == 1500:  # dtype variants count the same
            part["Contract"] = part["Contract"].astype("category")
        acc.update(part)
    assert acc.n_rows == 4003
    assert acc.result().as_dict() == one_shot.as_dict()


def test_streams_pyarrow_batches():
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(8)
    reference = build_reference(_sample(rng, 3000), NUMERIC, CATEGORICAL)
    new = _sample(rng, 2500, shift=0.5)
    acc = PsiAccumulator(reference)
    for batch in pa.Table.from_pandas(new.assign(extra=1)).to_batches(max_chunksize=700):
        acc.update(batch)
    assert acc.result().as_dict() == compute_psi(reference, new).as_dict()


def test_per_feature_threshold_overrides():
    train = pd.DataFrame({"a": [0.0] * 50 + [1.0] * 50, "b": [0.0] * 50 + [1.0] * 50})
    new = pd.DataFrame({"a": [0.0] * 90 + [1.0] * 10, "b": [0.0] * 90 + [1.0] * 10})  # PSI ~0.879
    reference = build_reference(train, ["a", "b"], [], bins=2)

    default = compute_psi(reference, new, min_samples=0)
    assert default.alerts == ["a", "b"]
    raised = compute_psi(reference, new, min_samples=0, per_feature={"b": {"alert": 1.0}})
    assert raised.alerts == ["a"] and raised.warnings == ["b"]
    assert (_feature(raised, "b").warn, _feature(raised, "b").alert) == (0.1, 1.0)
    quiet = compute_psi(reference, new, min_samples=0, warn=0.9, alert=2.0, per_feature={"a": {"warn": 0.5}})
    assert quiet.warnings == ["a"] and _feature(quiet, "b").status == "ok"

    with pytest.raises(DriftInputError, match="warn < alert"):
        compute_psi(reference, new, per_feature={"a": {"warn": 0.3, "alert": 0.2}})
    with pytest.raises(DriftInputError, match="unknown PSI threshold"):
        compute_psi(reference, new, per_feature={"a": {"crit": 0.5}})


def test_table_is_sorted_by_psi_with_four_decimals():
    rng = np.random.default_rng(2)
    reference = build_reference(_sample(rng, 5000), NUMERIC, CATEGORICAL)
    report = compute_psi(reference, _sample(rng, 3000, shift=0.6))
    lines = report.table().splitlines()
    assert lines[0].split() == ["feature", "kind", "psi", "status"]
    psis = [float(line.split()[2]) for line in lines[1:]]
    assert psis == sorted(psis, reverse=True) and len(psis) == 4
    assert all(len(line.split()[2].split(".")[1]) == 4 for line in lines[1:])
    assert len({len(line.rstrip()) - len(line.split()[-1]) for line in lines}) == 1  # columns align
    json.dumps(report.as_dict())


# ------------------------------------------------------------------------------ reference and input


def test_reference_round_trips_through_json():
    rng = np.random.default_rng(13)
    reference = build_reference(_sample(rng, 4000), NUMERIC, CATEGORICAL, bins=8)
    loaded = json.loads(json.dumps(reference))
    assert loaded == reference
    assert loaded["n"] == 4000 and set(loaded["features"]) == set(NUMERIC + CATEGORICAL)
    assert loaded["features"]["SeniorCitizen"]["categories"] == [0, 1]
    new = _sample(rng, 2000, shift=0.4)
    assert compute_psi(loaded, new).as_dict() == compute_psi(reference, new).as_dict()


def test_bad_input_raises_drift_input_error():
    reference = build_reference(pd.DataFrame({"x": np.arange(100.0), "c": ["a"] * 100}), ["x"], ["c"])
    with pytest.raises(DriftInputError) as missing:
        compute_psi(reference, pd.DataFrame({"x": [1.0]}))
    assert missing.value.details == {"missing": ["c"]}
    with pytest.raises(DriftInputError, match="non-numeric"):
        compute_psi(reference, pd.DataFrame({"x": ["1.0"], "c": ["a"]}))
    with pytest.raises(DriftInputError, match="not a PSI reference"):
        PsiAccumulator({"features": {}})
    with pytest.raises(DriftInputError, match="0 rows"):
        build_reference(pd.DataFrame({"x": []}), ["x"], [])
    with pytest.raises(DriftInputError, match="equal length"):
        psi_from_proportions([0.5, 0.5], [1.0])


def test_module_imports_only_the_standard_library():
    tree = ast.parse(Path(drift.__file__).read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module.split(".")[0])
    assert top - set(sys.stdlib_module_names) - {"__future__"} == {"pavedml"}
