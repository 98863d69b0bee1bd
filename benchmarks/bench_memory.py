"""Peak memory of ingest_raw_batch and validate_raw_batch as a CSV batch grows (telco schema: text
columns as delivered), each step a fresh `python -m pavedml <step>` process under /usr/bin/time -v,
median of N repetitions on a fresh data root each time.

    .venv/bin/python benchmarks/bench_memory.py --rows 1000000 5000000 --reps 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, run_worker  # noqa: E402

STEPS = ("ingest_raw_batch", "validate_raw_batch")
DS = "2025-03-01"


def batch_csv(rows: int) -> Path:
    """The bundled Telco sample resampled to ``rows`` rows with unique customer ids, as CSV text."""
    path = WORK / f"telco_batch_{rows}.csv"
    if path.exists():
        return path
    import numpy as np

    from pavedml.tools.simulate import load_sample

    WORK.mkdir(parents=True, exist_ok=True)
    sample = load_sample()
    rng = np.random.default_rng(3)
    tmp = path.with_suffix(".tmp")
    chunk = 500_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        part = sample.iloc[rng.integers(0, len(sample), n)].reset_index(drop=True)
        part["customerID"] = [f"{i:07d}-SYNTH" for i in range(start, start + n)]
        part.to_csv(tmp, mode="a", header=start == 0, index=False)
    tmp.rename(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(f"{'rows':>10} {'step':<20} {'wall s':>8} {'peak RSS MiB':>13}   runs (MiB)")
    for rows in args.rows:
        csv = batch_csv(rows)
        figures: dict[str, list] = {s: [] for s in STEPS}
        for _ in range(args.reps):
            root = WORK / f"memory_root_{rows}"
            shutil.rmtree(root, ignore_errors=True)
            landing = root / "landing/telco_churn/customers" / f"dt={DS}"
            landing.mkdir(parents=True)
            (landing / "customers.csv").symlink_to(csv)
            env = {"PAVEDML_DATA_ROOT": str(root), "TQDM_DISABLE": "1"}
            for step in STEPS:
                r = run_worker(["-m", "pavedml", step, "--use-case", "telco_churn", "--ds", DS], env)
                figures[step].append((r["process_wall_s"], r["peak_rss_mib"]))
            shutil.rmtree(root, ignore_errors=True)
        for step, values in figures.items():
            print(f"{rows:>10,} {step:<20} {statistics.median(v[0] for v in values):>8.1f} "
                  f"{statistics.median(v[1] for v in values):>13.0f}   {', '.join(f'{v[1]:.0f}' for v in values)}",
                  flush=True)


if __name__ == "__main__":
    main()
