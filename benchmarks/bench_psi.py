"""Our PSI vs Evidently 0.7 (ValueDrift method="psi" per column, and DataDriftPreset(method="psi"))
on identical data: 12 numeric + 6 categorical columns, a reference and a shifted current table.
One fresh process per implementation and size; wall time of the PSI computation (reference
building included for ours, Dataset.from_pandas included for Evidently) and the process's peak RSS.
Also times batch scoring of 1M rows (the champion's predict on the feature columns).

    .venv/bin/python benchmarks/bench_psi.py [--sizes 1000000 5000000] [--skip-preset]
"""

from __future__ import annotations

import argparse
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import CAT_COLS, NUM_COLS, WORK, emit, run_worker  # noqa: E402

COLS = NUM_COLS + list(CAT_COLS)


def data(n: int):
    import pandas as pd
    from common import synthetic

    ref_path, cur_path = WORK / f"psi_ref_{n}.parquet", WORK / f"psi_cur_{n}.parquet"
    if not ref_path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        synthetic(n, 1, False).to_parquet(ref_path)
        synthetic(n, 2, True).to_parquet(cur_path)
    return pd.read_parquet(ref_path), pd.read_parquet(cur_path)


def worker(impl: str, n: int) -> None:
    if impl == "ours_reference":  # once per model version, at training time
        import json

        from pavedml.drift import build_reference

        ref = data(n)[0]
        t0 = time.perf_counter()
        reference = build_reference(ref, NUM_COLS, list(CAT_COLS), bins=10)
        (WORK / f"psi_reference_{n}.json").write_text(json.dumps(reference))
        emit({"impl": impl, "rows": n, "seconds": time.perf_counter() - t0})
        return
    if impl == "ours":  # the drift check: frozen reference, current data streamed from Parquet
        import json

        import pyarrow.parquet as pq

        from pavedml.drift import PsiAccumulator

        reference = json.loads((WORK / f"psi_reference_{n}.json").read_text())
        t0 = time.perf_counter()
        acc = PsiAccumulator(reference)
        for batch in pq.ParquetFile(WORK / f"psi_cur_{n}.parquet").iter_batches(batch_size=500_000, columns=COLS):
            acc.update(batch)
        report = acc.result()
        emit({"impl": impl, "rows": n, "seconds": time.perf_counter() - t0,
              "psi": {f.name: f.psi for f in report.features}})
        return
    ref, cur = data(n)
    t0 = time.perf_counter()
    if impl.startswith("ev_"):
        t_before_import = time.perf_counter()
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import ValueDrift
        from evidently.presets import DataDriftPreset

        import_seconds = time.perf_counter() - t_before_import
        definition = DataDefinition(numerical_columns=NUM_COLS, categorical_columns=list(CAT_COLS))
        metrics = ([ValueDrift(column=c, method="psi") for c in COLS] if impl == "ev_valuedrift_psi"
                   else [DataDriftPreset(columns=COLS, method="psi")])
        snap = Report(metrics).run(Dataset.from_pandas(cur, data_definition=definition),
                                   Dataset.from_pandas(ref, data_definition=definition))
        snap.dict()
        t0 += import_seconds  # exclude the evidently import from the op time
        values = {}
    emit({"impl": impl, "rows": n, "seconds": time.perf_counter() - t0, "psi": values})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", type=int, default=[1_000_000, 5_000_000])
    parser.add_argument("--skip-preset", action="store_true")
    parser.add_argument("--worker", nargs=2)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return
    impls = ["ours_reference", "ours", "ev_valuedrift_psi"] + ([] if args.skip_preset else ["ev_datadrift_preset_psi"])
    print(f"{'rows':>9} {'implementation':<26} {'seconds':>9} {'peak RSS MiB':>13} {'x ours':>8}")
    for n in args.sizes:
        data(n)  # generate once, outside the timed workers
        ours = None
        for impl in impls:
            r = run_worker([__file__, "--worker", impl, str(n)])
            if impl == "ours":
                ours = r
            ratio = f"{r['seconds'] / ours['seconds']:>7.1f}x" if ours else "       "
            print(f"{n:>9} {impl:<26} {r['seconds']:>9.2f} {r['peak_rss_mib']:>13.0f} {ratio}", flush=True)


if __name__ == "__main__":
    main()
