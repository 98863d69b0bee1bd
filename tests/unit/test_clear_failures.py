"""Clear failures (issue 14, item 11): a huge value never makes a huge summary or pushes the alert's
first line out; a full, read-only or forbidden data root is a one-screen summary with the right exit
code, not a traceback; train_challenger finds an unreachable tracking server before it fits."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from pavedml.errors import StorageFullError, StorageNotWritableError, storage_error
from pavedml.summary import RULE

pytestmark = pytest.mark.unit

DS = "2025-01-01"


def _step(step: str, env: dict[str, str], prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    argv = [*(prefix or []), sys.executable, "-m", "pavedml", step, "--use-case", "telco_churn", "--ds", DS]
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


def _summary(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("FAILED "))
    return lines[start:lines.index(RULE, start)]


@pytest.fixture
def landing(tmp_path):
    """One simulated day of landing data, outside the data root under test."""
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate

    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "sim"))
    get_settings.cache_clear()
    simulate("telco_churn", date.fromisoformat(DS), 1, rows_per_day=300)
    mp.undo()
    get_settings.cache_clear()
    return tmp_path / "sim" / "landing"


def test_a_one_megabyte_cell_makes_a_one_screen_summary_and_keeps_the_alerts_first_line(tmp_path, landing):
    from pavedml.airflow.callbacks import failure_text
    from pavedml.airflow.operators import StepLog, StepRejectedInput, check_exit
    from pavedml.alerts import subject

    csv = next((landing / "telco_churn" / "customers" / f"dt={DS}").glob("*.csv"))
    df = pd.read_csv(csv, dtype=str)
    df.loc[5, "Contract"] = ("Two year\n" + "x" * 1000) * 1000  # 1 MB, with newlines, in one quoted cell
    df.to_csv(csv, index=False)
    env = {"PAVEDML_DATA_ROOT": str(tmp_path / "data"), "PAVEDML_LANDING_URI": str(landing)}
    assert _step("ingest_raw_batch", env).returncode == 0
    out = _step("validate_raw_batch", env)
    assert out.returncode == 3, out.stderr[-2000:]
    summary = _summary(out.stderr)
    assert summary[0].startswith("FAILED validate_raw_batch [validation_failed]")
    assert len("\n".join(summary)) < 4000 and max(map(len, summary)) <= 1100
    evidence = next(line for line in summary if "column Contract" in line)
    assert evidence.endswith("chars)") and "... (10" in evidence  # cut, and says how long the value was
    relay = StepLog(_NullLog())
    for line in out.stderr.splitlines():
        relay.line(line)
    with pytest.raises(StepRejectedInput) as err:
        check_exit(["python", "-m", "pavedml", "validate_raw_batch"], 3, relay.close())
    text = failure_text(err.value)
    assert text.startswith("FAILED validate_raw_batch [validation_failed] use case=telco_churn interval=2025-01-01\n")
    assert subject({"kind": "task_failed", "dag_id": "d", "task_id": "t", "summary": text}).startswith(
        "[pavedml] task_failed: d.t: FAILED validate_raw_batch")


def test_the_alert_keeps_its_first_line_whatever_follows():
    from pavedml.airflow.callbacks import failure_text
    from pavedml.alerts import TEXT_LIMIT

    huge = RuntimeError("cannot parse row 7\n" + "y" * 1_000_000)
    text = failure_text(huge)
    assert text.startswith("RuntimeError: cannot parse row 7\n") and len(text) < TEXT_LIMIT + 50
    text = failure_text(RuntimeError("z" * 1_000_000 + "\nsecond line"))
    first = text.splitlines()[0]
    assert first.startswith("RuntimeError: zzz") and first.endswith("(1000014 chars)") and len(text) < TEXT_LIMIT + 50


def test_every_summary_line_is_capped():
    from pavedml.errors import ValidationFailedError
    from pavedml.summary import failure_summary

    exc = ValidationFailedError("m" * 100_000 + "\n" + "two\n" * 100,
                                details={"evidence": ["v" * 100_000] * 30, "next": "n" * 100_000})
    summary = failure_summary("validate_raw_batch", "u" * 10_000, "d" * 10_000, exc)
    lines = summary.splitlines()
    assert len(lines) < 45 and max(map(len, lines)) < 1100
    assert lines[1].startswith("FAILED validate_raw_batch [validation_failed] use case=uuu")
    assert "... and 18 more (see the report)" in summary and "... and 81 more line(s)" in summary


class _NullLog:
    def info(self, *args):
        pass

    error = info


def _unshare_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode == 0


MOUNT = 'mount -t tmpfs -o "$1" tmpfs "$2" && shift 2 && exec "$@"'


@pytest.mark.parametrize(("options", "code", "reason", "says"), [
    ("size=4k", 1, "storage_full", "no space left on the device (ENOSPC)"),
    ("ro", 3, "storage_not_writable", "the file system is read-only (EROFS)"),
])
def test_a_full_or_read_only_data_root_is_a_summary_with_its_exit_code(tmp_path, landing, options, code, reason, says):
    if not _unshare_works():  # never skipped: a machine without it fails here, saying why
        pytest.fail("needs unshare -rm (user and mount namespaces, util-linux) to mount a tmpfs", pytrace=False)
    root = tmp_path / "root"
    root.mkdir()
    env = {"PAVEDML_DATA_ROOT": str(root), "PAVEDML_LANDING_URI": str(landing)}
    out = _step("ingest_raw_batch", env, ["unshare", "-rm", "sh", "-c", MOUNT, "sh", options, str(root)])
    assert out.returncode == code, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    summary = _summary(out.stderr)
    assert summary[0] == f"FAILED ingest_raw_batch [{reason}] use case=telco_churn interval={DS}"
    assert str(root) in summary[1] and summary[1].endswith(says)
    assert summary[-1].startswith("Next step: ")


def test_a_data_root_the_worker_may_not_write_is_a_summary_with_exit_3(landing, tmp_path):
    """A data root the step's user may not write (root here, without the capabilities that let root
    write anywhere: a worker's user would be in the same position). Staying root keeps the checkout
    and its venv readable wherever the clone lives (a mkdtemp clone is 0700)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.fail("needs root and setpriv (util-linux) to drop the capabilities that let root write anywhere",
                    pytrace=False)
    root = tmp_path / "root"
    root.mkdir()
    root.chmod(0o555)
    try:
        env = {"PAVEDML_DATA_ROOT": str(root), "PAVEDML_LANDING_URI": str(landing)}
        drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner",
                "--inh-caps=-dac_override,-dac_read_search,-fowner"]
        out = _step("ingest_raw_batch", env, drop)
        assert out.returncode == 3, out.stderr[-3000:]
        summary = _summary(out.stderr)
        assert summary[0] == f"FAILED ingest_raw_batch [storage_not_writable] use case=telco_churn interval={DS}"
        assert summary[1] == f"no access to {root}/telco_churn: permission denied (EACCES)"
        assert summary[-1] == (f"Next step: make {root} writable by the worker's user (ls -ld {root}), "
                               "then clear the task to rerun it")
    finally:
        root.chmod(0o755)


@pytest.mark.parametrize(("number", "cls", "code"), [
    (errno.ENOSPC, StorageFullError, 1), (errno.EDQUOT, StorageFullError, 1),
    (errno.EROFS, StorageNotWritableError, 3), (errno.EACCES, StorageNotWritableError, 3),
    (errno.EPERM, StorageNotWritableError, 3),
])
def test_storage_errors_name_the_path_and_choose_the_exit_code(number, cls, code):
    err = storage_error(OSError(number, os.strerror(number), "/data/telco_churn/raw/x.parquet"))
    assert type(err) is cls and err.exit_code == code
    assert "/data/telco_churn/raw/x.parquet" in err.message and errno.errorcode[number] in err.message
    nameless = storage_error(OSError(number, os.strerror(number)), "/data")  # a failed write() names no file
    assert "/data" in nameless.message
    assert storage_error(OSError(errno.ENOENT, "missing", "/x")) is None  # not a storage condition


def test_train_challenger_checks_the_tracking_server_before_anything_else(tmp_path):
    """No training set, no fit: an unreachable server is found first (exit 1, retried), not after
    minutes of fitting."""
    out = _step("train_challenger", {"PAVEDML_DATA_ROOT": str(tmp_path), "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
                                      "PAVEDML_TRACKING_WAIT_SECONDS": "0"})
    assert out.returncode == 1, out.stderr[-3000:]
    summary = _summary(out.stderr)
    assert summary[0] == f"FAILED train_challenger [tracking_unavailable] use case=telco_churn interval={DS}"
    assert summary[1].startswith("MLflow tracking server http://127.0.0.1:1 is unreachable")
    assert "fitted" not in out.stderr and not (Path(tmp_path) / "telco_churn" / "training").exists()


@pytest.mark.parametrize(("params", "named"), [
    ('{"hyperparameters": {"max_depth": "deep"}}', "hyper-parameter max_depth='deep' from the trigger form"),
    ('{"hyperparameters": {"learning_rate": -1}}', "learning_rate=-1"),
    ('{"hyperparameters": "{not json"}', "hyperparameters is not JSON"),
    ('{"hyperparameters": [6]}', "hyperparameters must be an object"),
])
def test_a_wrong_typed_hyperparameter_is_bad_input_named_before_any_data(tmp_path, params, named):
    """Before: scikit-learn raised InvalidParameterError at fit: a raw traceback, exit 1, retried."""
    argv = [sys.executable, "-m", "pavedml", "train_challenger", "--use-case", "telco_churn", "--ds", DS,
            "--run-id", "manual__typo", "--params", params]
    env = {**os.environ, "PAVEDML_DATA_ROOT": str(tmp_path / "data")}  # no training set: checked first
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 3, out.stderr[-2000:]
    summary = _summary(out.stderr)
    assert summary[0].startswith("FAILED train_challenger [config_error]") and named in "\n".join(summary)
    assert "Traceback" not in out.stderr
