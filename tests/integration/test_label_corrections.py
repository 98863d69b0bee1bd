"""A label delivered again in a later partition (a correction) wins, in training as in the
performance monitor: both read the newest delivery of a (key, day) label."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _land(uri: str, rows: list[tuple[str, str, str]]) -> None:
    from pavedml import storage

    text = "customerID,Churn,snapshot_date\n" + "".join(f"{k},{v},{d}\n" for k, v, d in rows)
    storage.write_bytes(uri, text.encode())


def test_a_corrected_label_wins_in_training(data_root):
    from pavedml.context import StepContext
    from pavedml.steps.training import LABEL, load_labels

    ctx = StepContext.build("telco_churn", "2025-01-08")
    first = [(f"c{i:03d}", "Yes" if i % 3 == 0 else "No", "2025-01-01") for i in range(60)]
    corrected = [(k, "No" if v == "Yes" else "Yes", d) for k, v, d in first[:10]]  # ten labels flipped
    _land(ctx.layout.landing_file("labels", "2025-01-03", "csv"), first)
    _land(ctx.layout.landing_file("labels", "2025-01-06", "csv"), corrected)
    labels, sources = load_labels(ctx, window_days=30)
    assert len(labels) == 60 and len(sources) == 2
    got = dict(zip(labels["customerID"], labels[LABEL], strict=True))
    for key, value, _ in corrected:
        assert got[key] == (1 if value == "Yes" else 0), key
    for key, value, _ in first[10:]:
        assert got[key] == (1 if value == "Yes" else 0), key
    # a run before the correction landed still sees the first delivery
    before, _ = load_labels(StepContext.build("telco_churn", "2025-01-05"), window_days=30)
    assert dict(zip(before["customerID"], before[LABEL], strict=True))["c000"] == 1
