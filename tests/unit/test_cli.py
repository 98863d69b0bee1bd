from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from pavedml.cli import STEPS
from pavedml.settings import DEFAULT_USE_CASES_DIR

pytestmark = pytest.mark.unit


def _run(args, env=None):
    return subprocess.run([sys.executable, "-m", "pavedml", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_help_lists_every_step():
    out = _run(["--help"])
    assert out.returncode == 0
    for step in STEPS:
        assert step in out.stdout


def test_broken_use_case_file_names_file_and_key(tmp_path):
    raw = yaml.safe_load((DEFAULT_USE_CASES_DIR / "telco_churn.yaml").read_text())
    raw["model"]["familly"] = raw["model"].pop("family")
    (tmp_path / "telco_churn.yaml").write_text(yaml.safe_dump(raw))
    out = _run(["ingest_raw_batch", "--use-case", "telco_churn", "--ds", "2025-01-01"],
               {"PAVEDML_USE_CASES_DIR": str(tmp_path)})
    assert out.returncode == 3
    assert str(tmp_path / "telco_churn.yaml") in out.stderr
    assert "model.familly: unknown key" in out.stderr
    assert "model.family: required key is missing" in out.stderr


def test_unknown_use_case(tmp_path):
    out = _run(["build_features", "--use-case", "nope", "--ds", "2025-01-01"])
    assert out.returncode == 3
    assert "unknown use case 'nope'" in out.stderr and "known: telco_churn" in out.stderr


def test_bad_ds_is_named():
    out = _run(["build_features", "--use-case", "telco_churn", "--ds", "2025-13-01"])
    assert out.returncode == 3
    assert "--ds '2025-13-01' is not a date" in out.stderr


def test_missing_batch_fails_at_once_with_ds_and_uri(tmp_path):
    """The step looks once (the feature pipeline's wait_for_batch sensor does the waiting)."""
    raw = yaml.safe_load((DEFAULT_USE_CASES_DIR / "telco_churn.yaml").read_text())
    raw["batches"].update(wait_timeout_seconds=600, poke_interval_seconds=1)
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "telco_churn.yaml").write_text(yaml.safe_dump(raw))
    started = time.monotonic()
    out = _run(["ingest_raw_batch", "--use-case", "telco_churn", "--ds", "2030-01-01"],
               {"PAVEDML_DATA_ROOT": str(tmp_path), "PAVEDML_USE_CASES_DIR": str(cases)})
    assert time.monotonic() - started < 120  # never the 600 s wait
    assert out.returncode == 1  # retryable: the file may still arrive
    assert f"no batch for 2030-01-01 at {tmp_path}/landing/telco_churn/customers/dt=2030-01-01/customers.csv" \
        in out.stderr


def test_last_stdout_line_is_the_json_result(tmp_path):
    out = _run(["simulate", "--start", "2025-01-01", "--days", "1", "--rows-per-day", "200"],
               {"PAVEDML_DATA_ROOT": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["days"] == ["2025-01-01"]
