"""The step CLI: ``python -m pavedml <step> --use-case NAME --ds YYYY-MM-DD``.

Each pipeline step is one subcommand. ``--ds`` is the logical date; the data interval is derived
from it (``[ds 00:00 UTC, ds + 1 day)``), and ``--params`` (the DAG run's params, JSON) is
validated when the step starts (:class:`pavedml.context.StepContext`): a bad date or parameter is
a configuration error (exit 3) that names it. Logs go to stderr; the last line of stdout is one JSON
object (the step's result), which both runtimes push to XCom. A failing step prints a one-screen
summary to stderr and exits non-zero: 3 when the input or the configuration is wrong (retrying
cannot help), 1 when a retry may succeed (a service was down, the disk was full), 99 when there
was nothing to do. A full or read-only data root is a summary too (``storage_full``, exit 1;
``storage_not_writable``, exit 3), and an unexpected error prints its traceback and exits 1.
Everything the step writes to stderr is redacted (:mod:`pavedml.redact`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
import traceback
from contextlib import nullcontext

from pavedml.errors import EXIT_RETRY, EXIT_SKIP, PavedMLError, storage_error
from pavedml.redact import redact_urls

log = logging.getLogger("pavedml")

#: step name -> (module:function, one-line help). The module is imported only when the step runs.
STEPS: dict[str, tuple[str, str]] = {
    "check_landing_batch": ("pavedml.steps.ingest:check_landing_batch",
                            "Look once for the interval's landing batch: ready (its URI) or waiting."),
    "ingest_raw_batch": ("pavedml.steps.ingest:ingest_raw_batch",
                         "Read the interval's landing batch and write an immutable, content-hashed raw snapshot."),
    "validate_raw_batch": ("pavedml.steps.validation:validate_raw_batch",
                           "Validate the raw snapshot with a GX suite; quarantine it on failure."),
    "build_features": ("pavedml.steps.features:build_features",
                       "Build the interval's offline feature partition (atomic, checked)."),
    "materialize_features": ("pavedml.steps.featurestore:materialize_features",
                             "Apply the Feast definitions and materialize the interval into the online store."),
    "build_training_set": ("pavedml.steps.training:build_training_set",
                           "Join labels point-in-time with Feast features; split by time into train/validation/holdout."),
    "train_challenger": ("pavedml.steps.training:train_challenger",
                         "Train the configured pipeline, track it in MLflow and register it as the challenger."),
    "evaluate_challenger": ("pavedml.steps.evaluation:evaluate_challenger",
                            "Score challenger and champion on the same holdout and decide by policy."),
    "promote_challenger": ("pavedml.steps.registry:promote_challenger",
                           "Move the champion alias if the decision says so (compare-and-set) and write the ledger."),
    "rollback_model": ("pavedml.steps.registry:rollback_model",
                       "Move champion back to previous_champion or a given READY version, with a ledger entry."),
    "score_customers": ("pavedml.steps.scoring:score_customers",
                        "Score the interval's customers with the champion; write predictions partitioned by date."),
    "check_drift": ("pavedml.steps.monitoring:check_drift",
                    "PSI of the latest scoring window against the champion's frozen reference; reports."),
    "request_retraining": ("pavedml.steps.monitoring:request_retraining",
                           "Emit one retrain request per drifted window (cooldown honoured); else skip."),
    "measure_performance": ("pavedml.steps.performance:measure_performance",
                            "Join scored days with their labels as they land; realized metrics per day and model version."),
    "request_performance_retraining": ("pavedml.steps.performance:request_performance_retraining",
                                       "Alert and request retraining when the champion's realized metric falls too far; else skip."),
    "judge_live_evidence": ("pavedml.steps.live:judge_live_evidence",
                            "Promote a shadow challenger once its labelled shadow days beat the champion by policy; else skip."),
}
#: Steps that read only the landing zone (``PAVEDML_LANDING_URI``), never the working copy: no lake sync.
LANDING_ONLY = frozenset({"check_landing_batch"})
#: Commands that are not pipeline steps (no --ds contract).
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("pavedml.tools.simulate:simulate_command",
                 "Replay the bundled Telco sample as daily landing batches (drift and bad batches on request)."),
    "status": ("pavedml.tools.status:status_command",
               "One screen for on-call: champion, last DAG runs, latest PSI table, open quarantines."),
    "generate_scale": ("pavedml.tools.simulate:generate_scale_command",
                       "Write a synthetic batch of the same schema at 100k-5M rows for benchmarks."),
    "import-history": ("pavedml.tools.importer:import_command",
                       "Land a table's history (file or SQL) as dated batches and delayed labels, checked first."),
    "draft-use-case": ("pavedml.tools.draft:draft_command",
                       "Draft a use-case YAML from a table: schema, features, task and label inferred; review it."),
    "serve": ("pavedml.serving.app:serve_command",
              "The online prediction service: POST /v1/<use case>/predict from the online store, hot swap on the champion alias."),
    "lake": ("pavedml.lake:lake_command",
             "Pull or push a use case's working copy from/to the lake (PAVEDML_LAKE_URI) by hand."),
    "audit": ("pavedml.audit:audit_command",
              "Export every registry decision, move, approval and rollback as ECS JSON lines (for a SIEM)."),
}


def _resolve(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pavedml",
        description="Pipeline steps of the paved road. Each prints one JSON result as its last stdout line.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="STEP", required=True)
    for name, (_, help_) in STEPS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--use-case", required=True, help="use-case name (a file <name>.yaml in the use-cases folder)")
        p.add_argument("--ds", required=True, help="logical date, YYYY-MM-DD; the data interval is "
                                                   "[ds 00:00 UTC, ds + 1 day)")
        p.add_argument("--dag-id", default="", help="calling DAG (for lineage)")
        p.add_argument("--run-id", default="", help="calling DAG run (for lineage and idempotency)")
        p.add_argument("--try-number", default=1, type=int, help="task try number")
        p.add_argument("--params", default="", help="JSON object of run parameters")
    sim = sub.add_parser("simulate", help=COMMANDS["simulate"][1], description=COMMANDS["simulate"][1])
    sim.add_argument("--use-case", default="telco_churn")
    sim.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    sim.add_argument("--days", type=int, default=7)
    sim.add_argument("--rows-per-day", type=int, default=2000)
    sim.add_argument("--drift-from", help="day (YYYY-MM-DD) from which drift is injected")
    sim.add_argument("--drift-columns", default="MonthlyCharges,tenure",
                     help="comma-separated numeric columns to shift")
    sim.add_argument("--bad", action="append", default=[], metavar="KIND@YYYY-MM-DD",
                     help="inject a bad batch: missing_column, wrong_type, null_key, duplicate_keys, "
                          "empty_file, unparseable, out_of_range, unknown_category")
    sim.add_argument("--seed", type=int, default=7)
    st = sub.add_parser("status", help=COMMANDS["status"][1], description=COMMANDS["status"][1])
    st.add_argument("--use-case", default="telco_churn")
    scale = sub.add_parser("generate_scale", help=COMMANDS["generate_scale"][1],
                           description=COMMANDS["generate_scale"][1])
    scale.add_argument("--use-case", default="telco_churn")
    scale.add_argument("--ds", required=True)
    scale.add_argument("--rows", type=int, required=True)
    scale.add_argument("--format", default="parquet", choices=["csv", "parquet"])
    scale.add_argument("--seed", type=int, default=11)
    _import_arguments(sub.add_parser("import-history", help=COMMANDS["import-history"][1],
                                     description=COMMANDS["import-history"][1]))
    dr = sub.add_parser("draft-use-case", help=COMMANDS["draft-use-case"][1],
                        description=COMMANDS["draft-use-case"][1])
    dr.add_argument("--name", required=True, help="the use case's name (lowercase, digits, underscores)")
    dr.add_argument("--from", dest="source", required=True, metavar="FILE|s3://...|URL",
                    help="the table: CSV or Parquet (local or s3://), or with --sql the database URL")
    dr.add_argument("--sql", help="read the table with this query")
    dr.add_argument("--db-url-env", metavar="VAR", help="the environment variable holding the database URL")
    dr.add_argument("--key", required=True, help="the entity key column")
    dr.add_argument("--label", required=True, help="the label (target) column")
    dr.add_argument("--date-column", help="the event-time column, if the table has one")
    dr.add_argument("--task", default="auto", choices=["auto", "binary_classification", "regression"])
    dr.add_argument("--positive", action="append", help="binary: the positive label value (repeatable); default "
                                                        "the rarer of two values")
    dr.add_argument("--label-delay", type=int, default=1, help="days after its batch a label is known (default 1)")
    dr.add_argument("--dataset", default="batch", help="the batches' dataset name (landing folder)")
    dr.add_argument("--entity", help="the entity's name (default: derived from --name)")
    dr.add_argument("--days", type=int, help="without a date column: the --days you will import (sizes the defaults)")
    dr.add_argument("--threshold", type=float, help="binary from a numeric label: positive when >= THRESHOLD")
    dr.add_argument("--row-key", action="store_true", help="the table has no key: the entity key --key is the row "
                                                           "number (import with --row-key too)")
    dr.add_argument("--sep", default=",", help="the CSV separator (default ',')")
    dr.add_argument("--date-format", help="strftime format of --date-column when its dates read two ways")
    dr.add_argument("--out", help="write to this file (include/use_cases/<name>.yaml) instead of stdout")
    dr.add_argument("--force", action="store_true", help="overwrite --out")
    srv = sub.add_parser("serve", help=COMMANDS["serve"][1], description=COMMANDS["serve"][1])
    srv.add_argument("--use-case", required=True, help="use-case name (include/use_cases/<name>.yaml)")
    srv.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: loopback only)")
    srv.add_argument("--port", type=int, default=8600)
    srv.add_argument("--require-token", action="store_true",
                     help="refuse to start without PAVEDML_SERVING_TOKEN / PAVEDML_SERVING_TOKEN_CONN (production)")
    srv.add_argument("--no-access-log", dest="access_log", action="store_false", help="no JSON access-log lines")
    srv.add_argument("--workers", type=int, default=1, help="worker processes (each loads the models; default 1)")
    lake = sub.add_parser("lake", help=COMMANDS["lake"][1], description=COMMANDS["lake"][1])
    lake.add_argument("direction", choices=["pull", "push"])
    lake.add_argument("--use-case", default="telco_churn")
    audit = sub.add_parser("audit", help=COMMANDS["audit"][1], description=COMMANDS["audit"][1])
    audit.add_argument("action", choices=["export"])
    audit.add_argument("--use-case", help="one use case (default: every use case in the use-cases folder)")
    audit.add_argument("--since", type=_iso_date, help="first day, YYYY-MM-DD (UTC; default: the beginning)")
    audit.add_argument("--until", type=_iso_date, help="last day, YYYY-MM-DD (UTC; default: today)")
    audit.add_argument("--output", help="write to this file or s3:// object (atomically) instead of stdout")
    return parser


def _import_arguments(parser) -> None:
    parser.add_argument("--use-case", required=True, help="use-case name (include/use_cases/<name>.yaml)")
    parser.add_argument("--from", dest="source", metavar="FILE|s3://...|URL",
                        help="a CSV or Parquet file (local or s3://), or with --sql the database's SQLAlchemy URL "
                             "(no password: use --db-url-env)")
    parser.add_argument("--sql", help="read the table with this SQL query on the database given by --from or "
                                      "--db-url-env")
    parser.add_argument("--db-url-env", metavar="VAR", help="the environment variable holding the database URL "
                                                            "(for a URL with a password)")
    parser.add_argument("--date-column", help="split into daily batches by this column's date (default: the use "
                                              "case's batches.timestamp.column)")
    parser.add_argument("--days", type=int, help="no dates: split the rows, in table order, into N even daily "
                                                 "slices")
    parser.add_argument("--start", type=_iso_date, help="with --days: the first day (default: N days "
                                                                 "ending today, UTC)")
    parser.add_argument("--labels", metavar="FILE", help="labels in a separate file (entity key, label column, "
                                                         "optionally the date column), matched by key")
    parser.add_argument("--replace", action="store_true", help="overwrite landing files that hold different content")
    parser.add_argument("--shuffle", type=int, metavar="SEED", help="with --days: slice the rows in a seeded random "
                                                                    "order (a table sorted by its label)")
    parser.add_argument("--date-format", help="strftime format of the date column (e.g. '%%d/%%m/%%Y'); needed when "
                                              "dates read two ways")
    parser.add_argument("--row-key", action="store_true", help="the table has no key column: number its rows "
                                                               "(in table order) into the entity.key column")
    parser.add_argument("--sep", default=",", help="the CSV separator (default ',')")


def _iso_date(text: str):
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def _emit(result: dict) -> None:
    sys.stdout.write(json.dumps(result, default=str, sort_keys=True) + "\n")
    sys.stdout.flush()


class RedactingFormatter(logging.Formatter):
    """Every log line of a step (ours and the libraries') with URL credentials masked."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(super().format(record))


def _storage_failure(exc: BaseException | None) -> PavedMLError | None:
    """A full, read-only or forbidden path anywhere in ``exc``'s chain, as a StorageError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            try:
                from pavedml.settings import get_settings

                root = str(get_settings().data_root)
            except Exception:  # noqa: BLE001 - naming the path is best effort
                root = "the data root"
            error = storage_error(exc, root)
            if error is not None:
                return error
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    started = time.perf_counter()
    try:
        if args.command in STEPS:
            from pavedml import pullset
            from pavedml.context import StepContext
            from pavedml.lake import synced

            ctx = StepContext.build(args.use_case, args.ds, dag_id=args.dag_id, run_id=args.run_id,
                                    try_number=args.try_number, params=args.params)
            # production: the data root is a working copy of the lake; a step pulls what it reads
            # (pavedml.pullset) before and pushes what it wrote after; a step that reads only the
            # landing zone (a sensor's poke, every few seconds) skips it
            pull = None if args.command in LANDING_ONLY else pullset.for_step(args.command, ctx)
            with nullcontext() if pull is None else synced(args.use_case, pull=pull) as lake, \
                    pullset.enforced(pull) if pull is not None and lake is None and pullset.checked_locally() \
                    else nullcontext():
                result = _resolve(STEPS[args.command][0])(ctx)
        else:
            result = _resolve(COMMANDS[args.command][0])(args)
    except Exception as caught:  # noqa: BLE001 - every failure ends in a summary or a redacted traceback
        exc = caught if isinstance(caught, PavedMLError) else _storage_failure(caught)
        if exc is None:  # a bug or an unforeseen error: the traceback, redacted; retryable like Python's exit 1
            sys.stderr.write(redact_urls(traceback.format_exc()))
            return EXIT_RETRY
        if exc.exit_code == EXIT_SKIP:  # nothing to do: not a failure
            sys.stderr.write(f"SKIPPED {args.command}: {exc.message}\n")
            return exc.exit_code
        if exc.reason == "import_refused" or (args.command == "draft-use-case" and exc.reason == "config_error"):  # a refusal of the user's input: one line, nothing landed
            sys.stderr.write(f"{args.command}: refused: {exc.message}\n")
            return exc.exit_code
        from pavedml.summary import failure_summary

        sys.stderr.write("\n" + failure_summary(args.command, getattr(args, "use_case", ""),
                                                getattr(args, "ds", None), exc) + "\n")
        return exc.exit_code
    if result is None:  # a human command (status) printed its own screen
        return 0
    payload = result.as_dict() if hasattr(result, "as_dict") else dict(result)
    log.info("%s finished in %.2fs", args.command, time.perf_counter() - started)
    _emit(payload)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
