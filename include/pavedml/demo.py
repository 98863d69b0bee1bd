"""``make demo``: simulate days of Telco batches and run every DAG end to end with dag.test().

Uses the embedded default profile (SQLite Airflow metadata, local folders, SQLite Feast online
store, SQLite MLflow). Prints where to look afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import subprocess
import sys
import time

log = logging.getLogger("pavedml.demo")


def _airflow_db_migrate() -> None:
    log.info("initializing the Airflow metadata database in %s", os.environ.get("AIRFLOW_HOME"))
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)


def _run(bag, dag_id: str, ds: str, conf: dict | None = None) -> str:
    dag = bag.dags.get(dag_id)
    if dag is None:
        print(f"(no DAG {dag_id}: skipped)", flush=True)
        return "skipped"
    for task in dag.tasks:  # a demo should fail fast, not wait out retry delays
        task.retries = 0
    started = time.perf_counter()
    day = dt.date.fromisoformat(ds)
    run = dag.test(logical_date=dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC), run_conf=conf)
    print(f"{dag_id:<40} {ds}  {run.state:<8} {time.perf_counter() - started:5.1f}s", flush=True)
    return run.state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", default="telco_churn")
    parser.add_argument("--start", default="2025-01-01")
    parser.add_argument("--days", type=int, default=8)
    args = parser.parse_args(argv)
    # Task logs stay in the run's log files; the terminal shows one line per DAG run.
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("airflow", "sqlalchemy", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from pavedml.config import get_use_case
    from pavedml.layout import Layout
    from pavedml.settings import get_settings
    from pavedml.simulate import simulate

    uc = get_use_case(args.use_case)
    # training on day N-1 needs labelled days for the holdout, validation and at least one to train
    needed = uc.model.split.holdout_days + uc.model.split.validation_days + 1 + uc.label.delay_days + 1
    if args.days < needed:
        parser.error(f"--days must be at least {needed} for {uc.name} (labels arrive {uc.label.delay_days} days "
                     f"late; the split needs {needed - uc.label.delay_days - 1} labelled days)")
    start = dt.date.fromisoformat(args.start)
    days = [(start + dt.timedelta(days=i)).isoformat() for i in range(args.days)]
    drift_day = start + dt.timedelta(days=args.days - 1)
    _airflow_db_migrate()
    result = simulate(uc.name, start, args.days, drift_from=drift_day)
    print(f"simulated {len(result.days)} days into {result.landing} (drift injected on {drift_day})", flush=True)

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", "dags"))
    if bag.import_errors:
        log.error("DAG import errors: %s", bag.import_errors)
        return 1
    failures = []
    for ds in days:
        if _run(bag, uc.dag_id("feature_pipeline"), ds) == "failed":
            failures.append(("feature_pipeline", ds))
    steps = [
        ("training_pipeline", days[-2], {"reason": "demo: first model"}),
        ("batch_scoring", days[-2], None),
        ("drift_monitor", days[-2], None),
        ("batch_scoring", days[-1], None),
        ("drift_monitor", days[-1], None),
        ("training_pipeline", days[-1], {"reason": "demo: retrain after drift"}),
    ]
    for pipeline, ds, conf in steps:
        if pipeline == "drift_monitor" and ("batch_scoring", ds) in failures:
            # its sensor would wait (reschedule) for a scoring window that is not coming
            print(f"{uc.dag_id(pipeline):<40} {ds}  not run: batch scoring failed", flush=True)
            continue
        if _run(bag, uc.dag_id(pipeline), ds, conf) == "failed":
            failures.append((pipeline, ds))

    s = get_settings()
    layout = Layout.for_use_case(uc.name, s)
    print("\nWhere to look:")
    print(f"  raw snapshots + manifests   {layout.root / 'raw'}")
    print(f"  validation reports (HTML)   {layout.root / 'validation'}")
    print(f"  offline features            {layout.features_root}")
    print(f"  Feast online store          {layout.feast_dir}")
    print(f"  MLflow tracking             {s.mlflow_tracking_uri}   (make airflow starts the MLflow UI on :5000)")
    print(f"  promotion ledger            {layout.ledger}")
    print(f"  predictions / drift         {layout.predictions_root}  {layout.root / 'drift'}")
    print(f"  alerts                      {s.alerts_file}")
    print("  Airflow UI                  make airflow  -> http://127.0.0.1:8080")
    if failures:
        print(f"\nFAILED runs: {failures}")
        return 1
    print("\nDemo complete.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
