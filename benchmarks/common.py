"""Shared benchmark helpers: fresh-process workers under /usr/bin/time -v, medians, synthetic tables."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("PAVEDML_BENCH_DIR", REPO / "var" / "bench"))
NUM_COLS = ["tenure_months", "monthly_charges", "total_charges", "num_support_calls", "avg_session_minutes",
            "data_usage_gb", "num_logins_30d", "days_since_last_login", "payment_delay_days", "num_products",
            "discount_pct", "satisfaction_score"]
CAT_COLS = {
    "contract_type": ["month-to-month", "one_year", "two_year"],
    "payment_method": ["credit_card", "bank_transfer", "electronic_check", "mailed_check"],
    "internet_service": ["dsl", "fiber", "none"],
    "region": ["north", "south", "east", "west", "central"],
    "plan_tier": ["basic", "standard", "premium", "enterprise"],
    "device_type": ["android", "ios", "web", "desktop", "tablet", "smart_tv"],
}


def synthetic(n: int, seed: int, shift: bool):
    """12 numeric + 6 categorical columns, like the library baselines' generator (../shared/baselines)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    s = 1.0 if shift else 0.0
    d = {}
    tenure = rng.gamma(2.0, 12.0 - 3.0 * s, n)
    d["tenure_months"] = tenure
    d["monthly_charges"] = rng.normal(70 + 8 * s, 20 + 4 * s, n).clip(10, None)
    d["total_charges"] = d["monthly_charges"] * tenure
    d["num_support_calls"] = rng.poisson(1.5 + 0.8 * s, n).astype(np.float64)
    d["avg_session_minutes"] = rng.lognormal(3.0 - 0.2 * s, 0.6, n)
    d["data_usage_gb"] = rng.exponential(15 + 5 * s, n)
    d["num_logins_30d"] = rng.poisson(20 - 4 * s, n).astype(np.float64)
    d["days_since_last_login"] = rng.exponential(5 + 3 * s, n)
    d["payment_delay_days"] = rng.poisson(2 + 1 * s, n).astype(np.float64)
    d["num_products"] = rng.integers(1, 6, n).astype(np.float64)
    d["discount_pct"] = rng.beta(2, 8 - 2 * s, n) * 100
    d["satisfaction_score"] = rng.normal(7 - 0.7 * s, 1.5, n).clip(0, 10)
    for c, vals in CAT_COLS.items():
        p = np.linspace(1.0, 2.0 + s, len(vals))
        d[c] = np.asarray(vals, dtype=object)[rng.choice(len(vals), n, p=p / p.sum())]
    return pd.DataFrame(d)


def run_worker(argv: list[str], env: dict | None = None) -> dict:
    """Run ``python argv`` in a fresh process under /usr/bin/time -v; return its RESULT json + peak RSS."""
    cmd = ["/usr/bin/time", "-v", sys.executable, *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{out.stderr[-3000:]}")
    result = {}
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    for line in lines:
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    if not result and lines:  # a pavedml step: its last stdout line is the JSON result
        result = {"step_result": json.loads(lines[-1])}
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", out.stderr)
    result["peak_rss_mib"] = int(rss.group(1)) / 1024 if rss else None
    if wall:
        parts = [float(p) for p in wall.group(1).split(":")]
        result["process_wall_s"] = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return result


def median(values):
    return statistics.median(values)


def emit(result: dict) -> None:
    print("RESULT " + json.dumps(result, default=str), flush=True)
