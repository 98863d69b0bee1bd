"""``make demo``: simulate days of Telco batches and run every DAG end to end.

Uses the embedded default profile (SQLite Airflow metadata, local folders, SQLite Feast online
store, SQLite MLflow). The days before the last three are history, landed by the feature steps in
this process; then every DAG runs through Airflow (``dag.test()``, see :mod:`pavedml.airflow.devrun`): the
feature pipeline for the last three days, training (five days before the end when the days allow,
so the first scored days' labels land within the demo), scoring of every day after it, drift,
realized performance and retraining, so
``make airflow`` shows the runs afterwards. The simulated days end today
(UTC) unless ``--start`` says otherwise: unpausing a DAG then schedules runs for days that have data.
The terminal shows a line per task; task logs are in Airflow's log folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("pavedml.tools.demo")


def minimum_days(uc) -> int:
    """Days the demo needs: the first training (on the second-to-last day) needs labelled days for the
    holdout, validation and at least one to train; labels arrive ``delay_days`` late."""
    return uc.model.split.holdout_days + uc.model.split.validation_days + 1 + uc.label.delay_days + 1


#: The last days go through the feature pipeline DAG; the days before are history, landed by the
#: same four steps in this process (imports paid once: a second a day instead of twelve).
DAG_FEATURE_DAYS = 3
FEATURE_STEPS = ("ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features")


#: With this many days beyond :func:`minimum_days`, the first model is trained that much earlier and
#: scores the days after it, so the labels of the first scored days land within the demo and the
#: performance monitor has realized metrics to show.
SCORED_AHEAD = 3


def plan(uc, days: list[str], simulated: bool = True) -> list[tuple[str, str, dict | None]]:
    """The demo's DAG runs in order: (pipeline, ds, conf)."""
    runs: list[tuple[str, str, dict | None]] = [("feature_pipeline", ds, None) for ds in days[-DAG_FEATURE_DAYS:]]
    retrain = ("training_pipeline", days[-1], {"reason": "demo: retrain after drift" if simulated
                                               else "demo: retrain on the newest labels"})
    if len(days) >= minimum_days(uc) + SCORED_AHEAD:
        first = -2 - SCORED_AHEAD
        runs += [("training_pipeline", days[first], {"reason": "demo: first model"})]
        runs += [("batch_scoring", ds, None) for ds in days[first + 1:]]
        return runs + [("drift_monitor", days[-1], None), ("performance_monitor", days[-1], None), retrain]
    return runs + [
        ("training_pipeline", days[-2], {"reason": "demo: first model"}),
        ("batch_scoring", days[-2], None),
        ("drift_monitor", days[-2], None),
        ("batch_scoring", days[-1], None),
        ("drift_monitor", days[-1], None),
        ("performance_monitor", days[-1], None),
        retrain,
    ]


def land_history(uc, days: list[str]) -> None:
    """The feature steps for ``days``, in this process, in order (what a history import does)."""
    from pavedml.airflow.devrun import _output_to
    from pavedml.cli import STEPS, _resolve
    from pavedml.context import StepContext
    from pavedml.errors import PavedMLError
    from pavedml.settings import get_settings
    from pavedml.summary import failure_summary

    started = time.perf_counter()
    log_file = Path(os.environ.get("AIRFLOW_HOME", ".")) / "logs" / "pavedml-devrun" / "history.log"
    for ds in days:
        for step in FEATURE_STEPS:
            get_settings.cache_clear()
            ctx = StepContext.build(uc.name, ds, dag_id="demo_history", run_id=f"demo_history__{ds}")
            try:
                with _output_to(log_file):  # the steps' logs, as a DAG run's go to its task logs
                    _resolve(STEPS[step][0])(ctx)
            except PavedMLError as exc:
                print(failure_summary(step, uc.name, ds, exc), file=sys.stderr)
                raise SystemExit(f"demo: history day {ds} failed at {step} (log: {log_file})") from None
    print(f"history: {len(days)} days ({days[0]} .. {days[-1]}) through the feature steps in-process "
          f"({', '.join(FEATURE_STEPS)}) in {time.perf_counter() - started:.0f}s; log: {log_file}", flush=True)


def what_next(uc, s, layout, days: list[str]) -> list[str]:
    from pavedml.layout import CARD_HTML

    airflow_home = os.environ.get("AIRFLOW_HOME", "")
    return [
        "",
        "What next",
        "  make airflow                 Airflow UI http://127.0.0.1:8080 and MLflow UI http://127.0.0.1:5000",
        "                               (AIRFLOW_PORT=... MLFLOW_PORT=... to change); the demo's runs are there.",
        f"                               user admin, password in {airflow_home}/simple_auth_manager_passwords.json.generated",
        "  make status                  champion, last DAG runs, latest PSI, realized metrics, quarantines",
        f"  make run DAG={uc.dag_id('batch_scoring')} DATE={days[-1]}",
        "                               run one DAG for one day again (a line per task)",
        "",
        "Reports",
        f"  GX Data Docs                 {layout.root / 'validation'}/dt=<day>/<snapshot>/",
        f"  Evidently drift reports      {layout.root / 'drift'}/dt=<day>/",
        f"  PSI history                  {layout.drift_history} (.png beside it)",
        f"  realized performance         {layout.performance_history} (.png beside it)",
        f"  promotion decisions          {layout.decision_page('<run>')}, ledger {layout.ledger}",
        f"  model cards                  {layout.decision('<run>').parent / CARD_HTML} (and .md; audit trail: "
        "python -m pavedml audit export)",
        f"  predictions                  {layout.predictions_root}",
        f"  alerts                       {s.alerts_file}",
        f"  task logs                    {airflow_home}/logs/",
        "",
        "Your own data",
        "  python -m pavedml draft-use-case --name <name> --from FILE --key COL --label COL --out include/use_cases/<name>.yaml",
        "  (or copy an example from include/examples/*/), review it, then land its history with",
        "  python -m pavedml import-history --use-case <name> --from FILE (--date-column COLUMN | --days N)",
        "  and run it with make demo USE_CASE=<name> (README: \"Bring your own data\").",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--use-case", default="telco_churn")
    parser.add_argument("--start", default="", help="first simulated day (default: DAYS days ending today, UTC)")
    parser.add_argument("--days", type=int, default=14)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    for noisy in ("airflow", "sqlalchemy", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from pavedml.airflow.devrun import ensure_airflow_db, quiet_airflow_environment, run_dag
    from pavedml.config import get_use_case
    from pavedml.errors import ConfigError
    from pavedml.layout import Layout
    from pavedml.settings import get_settings
    from pavedml.tools.importer import has_imports, imported_days
    from pavedml.tools.simulate import check_simulatable, simulate

    quiet_airflow_environment()
    try:
        uc = get_use_case(args.use_case)
    except ConfigError as exc:
        print(f"demo: {exc.message}", file=sys.stderr)
        return 2
    needed = minimum_days(uc)
    layout = Layout.for_use_case(uc.name, get_settings())
    simulated = not has_imports(layout)  # imported history is never simulated over
    if simulated:
        try:
            check_simulatable(uc)
        except ConfigError as exc:
            print(f"demo: no history has been imported for {uc.name} ({layout.imports_log}), and {exc.message}",
                  file=sys.stderr)
            return 2
    else:
        landed = imported_days(uc, layout)
    if simulated:
        if args.days < needed:
            parser.error(f"DAYS must be at least {needed} for {uc.name} (labels arrive {uc.label.delay_days} days "
                         f"late; the split needs {needed - uc.label.delay_days - 1} labelled days)")
        try:
            start = (dt.date.fromisoformat(args.start) if args.start
                     else dt.datetime.now(dt.UTC).date() - dt.timedelta(days=args.days - 1))
        except ValueError:
            parser.error(f"START must be YYYY-MM-DD, got {args.start!r}")
        days = [(start + dt.timedelta(days=i)).isoformat() for i in range(args.days)]
    else:
        days = [d for d in landed if not args.start or d >= args.start][-args.days:]
        if len(days) < needed:
            print(f"demo: {uc.name} has {len(days)} landed day(s) to run ({days[0] if days else '-'} .. "
                  f"{days[-1] if days else '-'}); the demo needs at least {needed} (labels arrive "
                  f"{uc.label.delay_days} day(s) late, the split needs {needed - uc.label.delay_days - 1} labelled "
                  "days): import more history or raise DAYS", file=sys.stderr)
            return 2
        first_dag_day = dt.date.fromisoformat(days[-DAG_FEATURE_DAYS])
        if first_dag_day < uc.schedules.start_date:
            print(f"demo: {uc.name}'s schedules.start_date {uc.schedules.start_date} is after {first_dag_day}, the "
                  f"first day its DAGs would run: set schedules.start_date: {days[0]} in {uc.source_file}",
                  file=sys.stderr)
            return 2
    print(f"Airflow metadata database: {os.environ.get('AIRFLOW_HOME')}", flush=True)
    ensure_airflow_db()
    if simulated:
        drift_day = dt.date.fromisoformat(days[-1])
        result = simulate(uc.name, dt.date.fromisoformat(days[0]), args.days, drift_from=drift_day)
        print(f"simulated {len(result.days)} days ({days[0]} .. {days[-1]}) into {result.landing} "
              f"(drift injected on {drift_day})", flush=True)
    else:
        print(f"imported history of {uc.name}: running the last {len(days)} landed day(s) ({days[0]} .. {days[-1]}) "
              f"from {layout.landing}", flush=True)

    from pavedml.airflow.devrun import load_dagbag

    bag = load_dagbag()
    mine = [uc.dag_id(p) for p in ("feature_pipeline", "training_pipeline", "batch_scoring", "drift_monitor",
                                   "performance_monitor")]
    missing = [d for d in mine if d not in bag.dags]
    if missing:
        errors = "\n".join(f"  {path}: {str(err).strip().splitlines()[-1]}" for path, err in bag.import_errors.items())
        print(f"DAGs missing: {', '.join(missing)}\n{errors}", file=sys.stderr)
        return 1
    land_history(uc, days[:-DAG_FEATURE_DAYS])
    failures: list[tuple[str, str]] = []
    for pipeline, ds, conf in plan(uc, days, simulated):
        dag_id = uc.dag_id(pipeline)
        if pipeline == "drift_monitor" and ("batch_scoring", ds) in failures:
            # its sensor would wait (reschedule) for a scoring window that is not coming
            print(f"{dag_id} {ds}\n  not run: batch scoring failed for {ds}", flush=True)
            continue
        outcome = run_dag(dag_id, ds, conf, out=sys.stdout, bag=bag)
        if outcome.state != "success":
            failures.append((pipeline, ds))

    s = get_settings()
    for line in what_next(uc, s, layout, days):
        print(line)
    took = time.perf_counter() - started
    if failures:
        print(f"\nDemo FAILED in {took:.0f}s: " + ", ".join(f"{uc.dag_id(p)} {ds}" for p, ds in failures)
              + " (each failure is printed above with its log)")
        return 1
    print(f"\nDemo complete in {took:.0f}s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
