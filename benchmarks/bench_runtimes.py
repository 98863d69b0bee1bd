"""The docker runtime against the local runtime, same machine, same data, and the image build.

1. Image: base-image and task-image build times, cold (no base image, no wheelhouse, empty build
   cache: `--cold` removes them first) and cached (a second `up` with nothing changed), and the
   task image's size. Uses deploy/docker_local.py (starts dockerd if none runs).
2. One daily feature pipeline run (`dag.test()`: the wait_for_batch sensor and four steps) of the bench use case at `--rows`
   rows, in the local runtime (a subprocess per step) and the docker runtime (a container per
   step), alternating, `--reps` times each, on identical copies of the landing batch.

    .venv/bin/python benchmarks/bench_runtimes.py --rows 100000 --reps 3 --cold
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import synthetic  # noqa: E402

USE_CASES = Path(__file__).resolve().parent / "use_cases"
DS = "2025-03-01"


def docker_local():
    spec = importlib.util.spec_from_file_location("docker_local", REPO / "deploy" / "docker_local.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image_figures(dl, cold: bool) -> dict:
    if cold:
        for tag in (dl.BASE_IMAGE, f"pavedml-task:{dl.commit_tag()}"):
            dl.docker("image", "rm", "-f", tag, check=False)
        dl.docker("builder", "prune", "-af", check=False)
        shutil.rmtree(dl.WHEELHOUSE, ignore_errors=True)
    first = dl.up()
    second = dl.up()
    return {"first": first, "cached": second}


def one_run(runtime: str, batch: Path, image: str, work: Path, rep: int) -> float:
    """A fresh data root (group-writable for the container user), the batch landed, one DAG run."""
    root = work / f"{runtime}-{rep}" / "data"
    landing = root / "landing/bench_churn/customers" / f"dt={DS}"
    landing.mkdir(parents=True)
    shutil.copy(batch, landing / "customers.parquet")
    for path in [root.parent, *[p for p in root.rglob("*")], root]:
        os.chmod(path, os.stat(path).st_mode | 0o070)
    env = {**os.environ, "PAVEDML_DATA_ROOT": str(root), "PAVEDML_USE_CASES_DIR": str(root / "use_cases"),
           "PAVEDML_RUNTIME": runtime, "PAVEDML_IMAGE": image, "PAVEDML_DOCKER_NETWORK": "host",
           "PAVEDML_DOCKER_URL": "unix://var/run/docker.sock", "PAVEDML_DOCKER_DATA_VOLUME": str(root),
           "TQDM_DISABLE": "1"}
    shutil.copytree(USE_CASES, root / "use_cases")  # inside the data root: containers see the same path
    code = ("import datetime as dt, sys, time\n"
            "from airflow.dag_processing.dagbag import DagBag\n"
            f"bag = DagBag(dag_folder={str(REPO / 'dags')!r})\n"
            "dag = bag.dags['bench_churn_feature_pipeline']\n"
            "for t in dag.tasks: t.retries = 0\n"
            "t0 = time.perf_counter()\n"
            f"run = dag.test(logical_date=dt.datetime.fromisoformat('{DS}T00:00:00+00:00'))\n"
            "print('RESULT', run.state, time.perf_counter() - t0)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), None)
    if out.returncode != 0 or not line or line.split()[1] != "success":
        raise SystemExit(f"{runtime} run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return float(line.split()[2])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="remove base image, wheelhouse and build cache first")
    args = parser.parse_args()
    dl = docker_local()
    images = image_figures(dl, args.cold)
    image = images["cached"]["image"]
    print(f"{datetime.now(UTC):%Y-%m-%d} image build (deploy/docker_local.py up, {'cold' if args.cold else 'warm'} "
          "then again with nothing changed):\n" + json.dumps(images, indent=2), flush=True)
    work = Path(tempfile.mkdtemp(prefix="pavedml-bench-runtimes-"))
    os.chmod(work, 0o770)
    home = work / "airflow"
    home.mkdir()
    os.environ.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                       "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                       "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                       "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins")})
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    try:
        batch = work / "batch.parquet"
        df = synthetic(args.rows, 3, False)
        df.insert(0, "customer_id", [f"C{i:08d}" for i in range(args.rows)])
        df.to_parquet(batch, index=False)
        times: dict[str, list[float]] = {"local": [], "docker": []}
        for rep in range(args.reps):
            for runtime in ("local", "docker"):
                times[runtime].append(one_run(runtime, batch, image, work, rep))
                print(f"rep {rep + 1} {runtime}: {times[runtime][-1]:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nfeature pipeline dag.test(), {args.rows:,} rows, median of {args.reps}:")
    for runtime, values in times.items():
        print(f"  {runtime:<7} {statistics.median(values):6.1f} s   (runs: {', '.join(f'{v:.1f}' for v in values)})")
    local, docker = statistics.median(times["local"]), statistics.median(times["docker"])
    print(f"  docker / local: {docker / local:.2f}")


if __name__ == "__main__":
    main()
