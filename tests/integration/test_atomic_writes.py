"""A step killed (SIGKILL) mid-write leaves no partial snapshot or partition behind, and the rerun
of the same interval succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.integration
DS = "2025-04-01"


def _kill_when_temp_appears(args: list[str], watch: Path, env: dict) -> bool:
    """Start the step; SIGKILL it as soon as a temporary file appears under ``watch``."""
    proc = subprocess.Popen([sys.executable, "-m", "pavedml", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    killed = False
    while proc.poll() is None and time.monotonic() < deadline:
        if watch.exists() and any(p.name.startswith(".tmp-") for p in watch.rglob("*")):
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    proc.wait()
    return killed


@pytest.fixture
def big_batch(data_root):
    from pavedml.tools.simulate import synthetic_batch

    df = synthetic_batch("telco_churn", 400_000, seed=5)
    landing = data_root / "landing/telco_churn/customers" / f"dt={DS}"
    landing.mkdir(parents=True)
    df.to_parquet(landing / "customers.parquet", index=False)
    return data_root


def _env(root: Path) -> dict:
    return {**os.environ, "PAVEDML_DATA_ROOT": str(root)}


def test_killed_ingest_leaves_no_partial_snapshot(big_batch):
    raw = big_batch / "telco_churn/raw" / f"dt={DS}"
    assert _kill_when_temp_appears(["ingest_raw_batch", "--use-case", "telco_churn", "--ds", DS], raw,
                                   _env(big_batch)), "the step finished before it could be killed mid-write"
    finals = [p for p in raw.glob("*") if not p.name.startswith(".")]
    assert finals == [], f"partial output under final names: {finals}"
    out = subprocess.run([sys.executable, "-m", "pavedml", "ingest_raw_batch", "--use-case", "telco_churn",
                          "--ds", DS], env=_env(big_batch), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    snapshot = next(raw.glob("*.parquet"))
    assert len(pd.read_parquet(snapshot)) == 400_000


def test_killed_build_features_leaves_no_partial_partition(big_batch):
    env = _env(big_batch)
    for step in ("ingest_raw_batch", "validate_raw_batch"):
        out = subprocess.run([sys.executable, "-m", "pavedml", step, "--use-case", "telco_churn", "--ds", DS],
                             env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
    features = big_batch / "telco_churn/features"
    staging = big_batch / "telco_churn/.tmp-staging"  # temporaries live outside the folder Feast reads
    assert _kill_when_temp_appears(["build_features", "--use-case", "telco_churn", "--ds", DS], staging, env)
    assert not (features / f"dt={DS}").exists()
    assert not features.exists() or [p.name for p in features.iterdir()] == []
    out = subprocess.run([sys.executable, "-m", "pavedml", "build_features", "--use-case", "telco_churn", "--ds", DS],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(pd.read_parquet(features / f"dt={DS}" / "part-0.parquet")) == 400_000
