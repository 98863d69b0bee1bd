"""A hostile day's inputs and faults, each reproduced against the real steps (GX, Feast, SQLite):
labels outside the declared values, a killed step's leftovers, an old day re-materialized after a
newer one, truncated and split deliveries, and non-finite numbers."""

from __future__ import annotations

import pandas as pd
import pytest

from pavedml.errors import ValidationFailedError
from tests.helpers.steps import run_step
from tests.integration.conftest import LAST_DAY

pytestmark = pytest.mark.integration
DAG = "telco_churn_training_pipeline"


@pytest.mark.parametrize("bad", ["yes", "Maybe"])
def test_labels_outside_the_declared_values_fail_and_are_quarantined(history_copy, bad):
    """Before: 'yes'/'Maybe' compared unequal to 'Yes' and became negatives, rc 0, no warning."""
    labels_dir = history_copy / "landing/telco_churn/labels"
    victim = labels_dir / f"dt={LAST_DAY}" / "labels.csv"  # known by LAST_DAY
    original = victim.read_bytes()
    df = pd.read_csv(victim, dtype=str)
    df.loc[df.index[:3], "Churn"] = bad
    df.to_csv(victim, index=False)
    try:
        with pytest.raises(ValidationFailedError, match=r"labels file .*labels\.csv .* failed .*: Churn") as err:
            run_step("build_training_set", LAST_DAY, dag_id=DAG, run_id=f"manual__labels_{bad}", params="{}")
        exc = err.value
        assert any("be_in_set" in e and bad in e and "3 unexpected" in e for e in exc.details["evidence"]), exc.details
        quarantine = history_copy / "telco_churn" / exc.details["quarantine"].split("/telco_churn/", 1)[1]
        assert (quarantine / "labels.csv").read_bytes() == victim.read_bytes()  # nothing lost
        assert (quarantine / "reason.json").exists() and list((quarantine / "report").rglob("*.html"))
        assert not (history_copy / f"telco_churn/training/manual__labels_{bad}").exists()
        # The same file fails again (from the kept result, no second GX run) until it is re-delivered.
        with pytest.raises(ValidationFailedError, match="Churn"):
            run_step("build_training_set", LAST_DAY, dag_id=DAG, run_id=f"manual__labels_{bad}", params="{}")
    finally:
        victim.write_bytes(original)
    # Re-delivered: the training set builds, and its labels hold both classes.
    result = run_step("build_training_set", LAST_DAY, dag_id=DAG, run_id=f"manual__labels_fixed_{bad}", params="{}")
    assert result.rows["train"] > 0


def test_a_labels_file_without_the_label_column_is_quarantined(history_copy):
    labels_dir = history_copy / "landing/telco_churn/labels"
    victim = labels_dir / f"dt={LAST_DAY}" / "labels.csv"  # known by LAST_DAY
    original = victim.read_bytes()
    pd.read_csv(victim, dtype=str).drop(columns=["Churn"]).to_csv(victim, index=False)
    try:
        with pytest.raises(ValidationFailedError, match="Churn") as err:
            run_step("build_training_set", LAST_DAY, dag_id=DAG, run_id="manual__labels_nocol", params="{}")
        assert any("column Churn: column_to_exist" in e for e in err.value.details["evidence"])
    finally:
        victim.write_bytes(original)


def test_a_config_without_label_negative_is_refused(tmp_path):
    import yaml

    from pavedml.config import load_use_case
    from pavedml.errors import ConfigError
    from pavedml.settings import DEFAULT_USE_CASES_DIR

    spec = yaml.safe_load((DEFAULT_USE_CASES_DIR / "telco_churn.yaml").read_text())
    del spec["label"]["negative"]
    path = tmp_path / "telco_churn.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"label\.negative"):
        load_use_case(path)
    spec["label"]["negative"] = "Yes"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="both 'Yes'"):
        load_use_case(path)
