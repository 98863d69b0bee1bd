"""The typed run context: ds is a date, the interval and the run key derive from it, and the run's
params are validated once when the step starts, with the use case's values as defaults."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import yaml

from pavedml.errors import EXIT_NO_RETRY, ConfigError
from pavedml.settings import DEFAULT_USE_CASES_DIR

pytestmark = pytest.mark.unit


@pytest.fixture
def cases(tmp_path, monkeypatch):
    """The bundled use case and a second one whose drift and training defaults differ."""
    from pavedml.settings import get_settings

    raw = yaml.safe_load((DEFAULT_USE_CASES_DIR / "telco_churn.yaml").read_text())
    folder = tmp_path / "cases"
    folder.mkdir()
    (folder / "telco_churn.yaml").write_text(yaml.safe_dump(raw))
    raw["name"] = "other_churn"
    raw["model"]["registered_name"] = "other_churn"
    raw["model"]["training_window_days"] = 30
    raw["drift"] = {**raw.get("drift", {}), "warn": 0.2, "alert": 0.4, "window_days": 3}
    (folder / "other_churn.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("PAVEDML_USE_CASES_DIR", str(folder))
    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield folder
    get_settings.cache_clear()


def test_ds_is_a_date_and_the_interval_and_run_key_derive_from_it(cases):
    from pavedml.context import StepContext

    ctx = StepContext.build("telco_churn", "2025-01-08", dag_id="d", run_id="manual__2025-01-08T10:00:00+00:00")
    assert ctx.ds == date(2025, 1, 8) and ctx.ds_iso == "2025-01-08"
    assert ctx.interval_start == datetime(2025, 1, 8, tzinfo=UTC)
    assert ctx.interval_end == datetime(2025, 1, 9, tzinfo=UTC)
    assert ctx.run_key == "manual__2025-01-08T10_00_00_00_00"
    assert ctx.dag_run_key == "d/manual__2025-01-08T10:00:00+00:00"
    cli = StepContext.build("telco_churn", date(2025, 1, 8))
    assert cli.run_key == "cli__2025-01-08" and cli.dag_run_key == "cli/2025-01-08"


@pytest.mark.parametrize("ds", ["2025-13-01", "08.01.2025", "", "2025-01-08T00:00:00"])
def test_a_bad_ds_is_a_config_error_naming_it(cases, ds):
    from pavedml.context import StepContext

    with pytest.raises(ConfigError, match="--ds .* is not a date") as err:
        StepContext.build("telco_churn", ds)
    assert err.value.exit_code == EXIT_NO_RETRY


@pytest.mark.parametrize(("params", "named"), [
    ({"training_window_days": "ninety"}, "training_window_days='ninety'"),
    ({"training_window_days": 0}, "training_window_days=0"),
    ({"window_days": -2}, "window_days=-2"),
    ({"alert_threshold": "high"}, "alert_threshold='high'"),
    ({"force_promote": "perhaps"}, "force_promote='perhaps'"),
    ({"target_version": "v3"}, "target_version='v3'"),
])
def test_a_bad_param_is_a_config_error_naming_it(cases, params, named):
    from pavedml.context import StepContext

    with pytest.raises(ConfigError) as err:
        StepContext.build("telco_churn", "2025-01-08", params=params)
    assert named in err.value.message and err.value.exit_code == EXIT_NO_RETRY


def test_params_take_each_use_cases_own_defaults(cases):
    from pavedml.config import get_use_case
    from pavedml.context import StepContext

    telco = StepContext.build("telco_churn", "2025-01-08", params="{}").params
    uc = get_use_case("telco_churn")
    assert (telco.training_window_days, telco.window_days, telco.alert_threshold, telco.warn_threshold) == \
        (uc.model.training_window_days, uc.drift.window_days, uc.drift.alert, uc.drift.warn)
    other = StepContext.build("other_churn", "2025-01-08", params={"reason": "  ", "hyperparameters": ""}).params
    assert (other.training_window_days, other.window_days, other.alert_threshold, other.warn_threshold) == \
        (30, 3, 0.4, 0.2)
    assert other.reason == "" and other.hyperparameters == {} and other.target_version == "previous"
    assert other.force_promote is False


def test_given_params_win_and_are_typed(cases):
    from pavedml.context import StepContext

    ctx = StepContext.build("other_churn", "2025-01-08", run_id="manual__x", params=(
        '{"training_window_days": "45", "window_days": 2, "alert_threshold": 0.1, "force_promote": true,'
        ' "hyperparameters": "{\\"max_iter\\": 50}", "reason": " why ", "target_version": "7"}'))
    p = ctx.params
    assert (p.training_window_days, p.window_days, p.alert_threshold) == (45, 2, 0.1)
    assert p.warn_threshold == pytest.approx(0.099)  # kept below a lower alert threshold
    assert p.force_promote is True and p.hyperparameters == {"max_iter": 50} and p.target_version == "7"
    assert ctx.reason == "why"


def test_the_drift_window_ends_at_ds(cases):
    from pavedml.context import StepContext
    from pavedml.steps.monitoring import window_days

    assert window_days(StepContext.build("other_churn", "2025-03-01")) == ["2025-02-27", "2025-02-28", "2025-03-01"]
    assert window_days(StepContext.build("other_churn", "2025-03-01", params={"window_days": 1})) == ["2025-03-01"]


def test_the_cli_names_a_bad_param_and_exits_3(cases):
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pavedml", "check_drift", "--use-case", "other_churn",
                          "--ds", "2025-01-08", "--params", '{"window_days": "all"}'],
                         capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == EXIT_NO_RETRY, out.stderr[-2000:]
    assert "window_days='all'" in out.stderr and "config_error" in out.stderr


def test_interval_flags_are_gone():
    """The interval is derived from --ds; flags that nothing passed are not offered."""
    from pavedml.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["build_features", "--use-case", "x", "--ds", "2025-01-01",
                                   "--interval-start", "2025-01-01T00:00:00"])
