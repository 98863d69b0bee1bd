"""validate_raw_batch against bare Great Expectations on the same snapshot and the same generated
suite (#21 item 3).

Needs the data root ``bench_feature_pipeline.py --rows N`` leaves. Each repetition runs, in fresh
processes, alternating:

* the step: ``python -m pavedml validate_raw_batch`` (chunks of ``PAVEDML_VALIDATION_CHUNK_ROWS``,
  Data Docs pages, result files);
* bare GX: import GX, read the snapshot into pandas, run the suite ``generate_suite`` makes for
  it on the whole frame in an ephemeral context (the GX 1.x API as its docs show it), then, timed
  apart, build its Data Docs page.

    .venv/bin/python benchmarks/bench_validation.py --rows 1000000 --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_feature_pipeline import DS, USE_CASES  # noqa: E402
from common import WORK, run_worker  # noqa: E402

BARE = r'''
import json, sys, time, tempfile
t0 = time.perf_counter()
import great_expectations as gx
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
t1 = time.perf_counter()
snapshot, specs = sys.argv[1], json.load(open(sys.argv[2]))
text = pd.StringDtype("pyarrow")
df = pq.read_table(snapshot).to_pandas(types_mapper={pa.string(): text, pa.large_string(): text}.get)
t2 = time.perf_counter()
ctx = gx.get_context(mode="ephemeral")
batch = ctx.data_sources.add_pandas("pandas").add_dataframe_asset("batch").add_batch_definition_whole_dataframe("whole")
suite = ctx.suites.add(gx.ExpectationSuite(name="raw_batch", expectations=[
    ExpectationConfiguration(type=s["type"], kwargs=s["kwargs"]).to_domain_obj() for s in specs]))
vdef = ctx.validation_definitions.add(gx.ValidationDefinition(name="raw_batch", data=batch, suite=suite))
with pd.option_context("mode.string_storage", "pyarrow"):
    result = vdef.run(batch_parameters={"dataframe": df}, result_format={"result_format": "BASIC"})
t3 = time.perf_counter()
ctx.add_data_docs_site("local", {"class_name": "SiteBuilder", "store_backend": {
    "class_name": "TupleFilesystemStoreBackend", "base_directory": tempfile.mkdtemp()},
    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
ctx.build_data_docs(site_names=["local"])
t4 = time.perf_counter()
print("RESULT " + json.dumps({"import": t1 - t0, "read": t2 - t1, "validate": t3 - t2, "docs": t4 - t3,
                              "success": result.success, "expectations": len(result.results)}))
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    root = WORK / f"feature_root_{args.rows}"
    env = {"PAVEDML_DATA_ROOT": str(root), "PAVEDML_USE_CASES_DIR": str(USE_CASES), "TQDM_DISABLE": "1",
           "GX_ANALYTICS_ENABLED": "false"}
    import os

    os.environ.update(env)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "include"))
    import pyarrow.parquet as pq

    from pavedml import storage
    from pavedml.context import StepContext
    from pavedml.steps.ingest import latest_snapshot
    from pavedml.steps.validation import _naive_utc, generate_suite

    ctx = StepContext.build("bench_churn", DS)
    try:
        sha, snapshot = latest_snapshot(ctx)
    except Exception as exc:  # noqa: BLE001
        raise SystemExit(f"{exc}: run bench_feature_pipeline.py --rows {args.rows} first") from None
    manifest = storage.read_json(str(ctx.layout.raw_manifest(DS, sha)))
    specs = generate_suite(ctx.use_case, pq.read_schema(snapshot).names, manifest.get("type_errors"), ctx.interval_start)
    spec_file = WORK / f"suite_{args.rows}.json"
    spec_file.write_text(json.dumps([{"type": s["type"], "kwargs": {k: _naive_utc(v) for k, v in s["kwargs"].items()}}
                                     for s in specs], default=str))
    step, bare, parts = [], [], []
    for _ in range(args.reps):
        step.append(run_worker(["-m", "pavedml", "validate_raw_batch", "--use-case", "bench_churn", "--ds", DS],
                               env)["process_wall_s"])
        r = run_worker(["-c", BARE, snapshot, str(spec_file)], env)
        if not r["success"]:
            raise SystemExit("bare GX: the suite failed on the benchmark's batch")
        bare.append(r["process_wall_s"] - r["docs"])
        parts.append(r)
    med = {k: statistics.median(p[k] for p in parts) for k in ("import", "read", "validate", "docs")}
    s, b = statistics.median(step), statistics.median(bare)
    print(f"validation, {args.rows:,} rows, {len(specs)} expectations, median of {args.reps} (fresh processes):")
    print(f"  step (chunks, Data Docs, result files)    {s:7.2f} s   runs {', '.join(f'{x:.2f}' for x in step)}")
    print(f"  bare GX without Data Docs                 {b:7.2f} s   runs {', '.join(f'{x:.2f}' for x in bare)}")
    print(f"    of which import {med['import']:.2f} s, read {med['read']:.2f} s, validate {med['validate']:.2f} s")
    print(f"  bare GX's Data Docs page (apart)          {med['docs']:7.2f} s")
    print(f"  step / bare GX: {s / b:.2f} (goal <= 1.5); step / (bare + its Data Docs): {s / (b + med['docs']):.2f}")


if __name__ == "__main__":
    main()
