"""DAG parse time for the default use case, the way the DAG processor sees it.

Each repetition runs in a fresh interpreter: ``import airflow.sdk`` and the DagBag machinery first
(the processor has them loaded already), then the timed part: parsing every file in ``dags/``.
Prints the median of N runs (default 5) and each run's figure.

    .venv/bin/python benchmarks/bench_dag_parse.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKER = """
import json, time
import airflow.sdk  # noqa: F401  (already imported in the DAG processor)
from airflow.dag_processing.dagbag import DagBag
t0 = time.perf_counter()
bag = DagBag(dag_folder=%r)
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed, "dags": len(bag.dags), "errors": len(bag.import_errors),
                  "files": {s.file: s.duration.total_seconds() for s in bag.dagbag_stats}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    env.setdefault("AIRFLOW_HOME", str(REPO / "var" / "airflow"))
    results = []
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-c", WORKER % str(REPO / "dags")], capture_output=True, text=True,
                             env=env, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    secs = [r["seconds"] for r in results]
    print(f"DAG parse (all files in dags/, after import airflow.sdk): median {statistics.median(secs):.3f} s "
          f"over {args.runs} runs; runs: {', '.join(f'{s:.3f}' for s in secs)}")
    print(f"DAGs: {results[0]['dags']}, import errors: {results[0]['errors']}")
    for file, seconds in sorted(results[-1]["files"].items()):
        print(f"  {file}: {seconds:.3f} s (last run)")


if __name__ == "__main__":
    main()
