"""Run one DAG for one day in this process, as ``make run``, ``make demo`` and the tests do.

``python -m pavedml.airflow.devrun <dag_id> <YYYY-MM-DD> [--conf JSON] [--retries N]`` (``make run DAG=...
DATE=...``) runs the DAG through Airflow's ``dag.test()`` against the configured metadata
database (no scheduler needed), so the run and its logical date show in the UI afterwards. The
terminal gets one line per task as it starts and ends; Airflow's own output and every task's log go
to the task's log file in Airflow's layout (``$AIRFLOW_HOME/logs/dag_id=.../attempt=N.log``, where
the UI reads it). A failed task prints the DAG, the task, the step's one-screen summary and the log
path, never Airflow's traceback. Exit code: 0 success, 1 failed run, 2 bad arguments.

Airflow 3.3.2's ``dag.test()`` needs :mod:`pavedml.airflow.compat` (applied by
``plugins/airflow_local_settings.py``) for DAGs with deadline alerts; nothing here works around it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

#: Airflow's default log file template (``[logging] log_filename_template``).
LOG_TEMPLATE = "dag_id={dag_id}/run_id={run_id}/task_id={task_id}/attempt={try_number}.log"
SUMMARY_LINES = 14
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class TaskOutcome:
    task_id: str
    state: str
    seconds: float
    log_path: Path
    summary: list[str] = field(default_factory=list)


@dataclass
class RunOutcome:
    dag_id: str
    ds: str
    run_id: str | None
    state: str
    seconds: float
    tasks: list[TaskOutcome] = field(default_factory=list)

    @property
    def failed_tasks(self) -> list[TaskOutcome]:
        return [t for t in self.tasks if t.state in ("failed", "upstream_failed")]


def quiet_airflow_environment() -> None:
    """Before Airflow is imported: plain (uncoloured) logs, no example DAGs."""
    os.environ.setdefault("AIRFLOW__LOGGING__COLORED_CONSOLE_LOG", "False")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def log_dir() -> Path:
    from airflow.configuration import conf

    return Path(conf.get("logging", "base_log_folder"))


@contextlib.contextmanager
def _output_to(path: Path):
    """Point this process's stdout and stderr (file descriptors too: Airflow's structlog and any
    child process) at ``path`` for the duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with path.open("ab") as fh:
        saved = os.dup(1), os.dup(2)
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def load_dagbag():
    """Parse the configured DAGs folder (Airflow's parse chatter goes to a log file)."""
    quiet_airflow_environment()
    from airflow.dag_processing.dagbag import DagBag

    with _output_to(log_dir() / "pavedml-devrun" / "dagbag.log"):
        return DagBag(dag_folder=os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", "dags"))


def _terminal(out: TextIO | None) -> TextIO | None:
    """Where progress goes while stdout's descriptor points at a log file: a duplicate of ``out``'s
    descriptor when it has one (the terminal), else ``out`` itself (e.g. a StringIO)."""
    if out is None:
        return None
    try:
        fd = out.fileno()
    except (OSError, AttributeError, ValueError):
        return out
    out.flush()
    return os.fdopen(os.dup(fd), "w", buffering=1)


def _summary_from_alerts(dag_id: str, run_id: str, task_id: str) -> list[str]:
    """The summary the failure alert recorded for this task (the step's summary comes first)."""
    from pavedml.settings import get_settings

    path = get_settings().alerts_file
    if not path.exists():
        return []
    found: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("dag_id") == dag_id and rec.get("run_id") == run_id and rec.get("task_id") == task_id:
            found = (rec.get("summary") or "").splitlines()
    return found


def _summary_from_log(path: Path) -> list[str]:
    """The step's ``FAILED <step> [...]`` block in a task log, else its last error line."""
    from pavedml.airflow.operators import last_summary

    if not path.exists():
        return []
    lines = []
    for raw in _ANSI.sub("", path.read_text(errors="replace")).splitlines():
        # structlog lines: "<ts> [info     ] <message> [logger] loc=..."
        m = re.match(r"^\S+ \[\s*\w+\s*\] (.*?)(?: \[[\w.]+\](?: .*)?)?$", raw)
        lines.append(m.group(1) if m else raw)
    block = last_summary(lines)
    if block:
        return block
    errors = [ln for ln in lines if "Error" in ln or "error" in ln or "Exception" in ln]
    return errors[-3:]


def failure_lines(outcome: RunOutcome) -> list[str]:
    """What a failed run prints: DAG, task, reason, log path, per failed task."""
    out = []
    for task in outcome.failed_tasks:
        if task.state == "upstream_failed":
            continue
        out.append(f"FAILED {outcome.dag_id} {outcome.ds}: task {task.task_id}")
        summary = [ln for ln in task.summary if ln.strip() and not ln.startswith("=====")]
        for line in summary[:SUMMARY_LINES]:
            out.append(f"    {line[:200]}")
        if len(summary) > SUMMARY_LINES:
            out.append(f"    ... ({len(summary) - SUMMARY_LINES} more lines in the log)")
        out.append(f"    log: {task.log_path}")
    return out


def run_dag(dag_id: str, ds: str, conf: dict | None = None, *, retries: int | None = 0,
            out: TextIO | None = None, bag=None) -> RunOutcome:
    """Run ``dag_id`` for ``ds`` with ``dag.test()``; print a line per task to ``out`` (None: quiet).

    ``retries`` overrides every task's retries (default 0: ``dag.test()`` would sit out retry delays
    in real time); None keeps the DAG's own.
    """
    quiet_airflow_environment()
    import airflow.sdk.definitions.dag as sdk_dag

    logs = log_dir()
    run_log = logs / "pavedml-devrun" / f"{dag_id}.log"
    term = _terminal(out)
    try:
        return _run_dag(dag_id, ds, conf, retries, term, bag, logs, run_log, sdk_dag)
    finally:
        if term is not None and term is not out:
            term.close()


def _run_dag(dag_id, ds, conf, retries, term, bag, logs, run_log, sdk_dag) -> RunOutcome:
    if bag is None:
        bag = load_dagbag()
    dag = bag.dags.get(dag_id)
    if dag is None:
        errors = "; ".join(f"{Path(k).name}: {str(v).strip().splitlines()[-1]}" for k, v in bag.import_errors.items())
        known = ", ".join(sorted(bag.dags)) or "none"
        raise LookupError(f"no DAG {dag_id!r} (DAGs: {known})" + (f"; import errors: {errors}" if errors else ""))
    if retries is not None:
        for task in dag.tasks:
            task.retries = retries
    day = dt.date.fromisoformat(ds)
    outcome = RunOutcome(dag_id, ds, None, "failed", 0.0)

    def say(line: str) -> None:
        if term is not None:
            print(line, file=term, flush=True)

    original = sdk_dag._run_task

    def run_task(*, ti, task, **kwargs):
        path = logs / LOG_TEMPLATE.format(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                                          try_number=ti.try_number)
        outcome.run_id = ti.run_id
        started = time.perf_counter()
        try:
            with _output_to(path):
                return original(ti=ti, task=task, **kwargs)
        finally:
            state = str(getattr(ti.state, "value", ti.state) or "none")
            took = time.perf_counter() - started
            task_outcome = TaskOutcome(ti.task_id, state, took, path)
            if state == "failed":
                task_outcome.summary = (_summary_from_alerts(ti.dag_id, ti.run_id, ti.task_id)
                                        or _summary_from_log(path))
            outcome.tasks.append(task_outcome)
            mark = {"success": "ok", "skipped": "skipped", "failed": "FAILED"}.get(state, state)
            say(f"  - {ti.task_id:<26} {mark:<8} {took:5.1f}s")

    started = time.perf_counter()
    say(f"{dag_id} {ds}")
    sdk_dag._run_task = run_task
    try:
        with _output_to(run_log):
            run = dag.test(logical_date=dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC), run_conf=conf)
    finally:
        sdk_dag._run_task = original
    outcome.run_id = run.run_id
    outcome.state = str(getattr(run.state, "value", run.state))
    outcome.seconds = time.perf_counter() - started
    # tasks dag.test() never ran (upstream failed, skipped by a branch) still count
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    ran = {t.task_id for t in outcome.tasks}
    with create_session() as session:
        for ti in session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run.run_id):
            if ti.task_id not in ran and ti.state:
                outcome.tasks.append(TaskOutcome(ti.task_id, str(getattr(ti.state, "value", ti.state)), 0.0,
                                                 run_log))
                say(f"  - {ti.task_id:<26} {ti.state}")
    say(f"  = {outcome.state} in {outcome.seconds:.1f}s  (run {run.run_id})")
    if outcome.state != "success":
        for line in failure_lines(outcome):
            say(line)
        if not outcome.failed_tasks:
            say(f"    Airflow's output for this run: {run_log}")
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pavedml.airflow.devrun", description=__doc__.split("\n\n")[0])
    parser.add_argument("dag_id")
    parser.add_argument("ds", help="the run's date, YYYY-MM-DD (its data interval is [ds, ds + 1 day))")
    parser.add_argument("--conf", default="", help="run conf as JSON, e.g. '{\"reason\": \"by hand\"}'")
    parser.add_argument("--retries", type=int, default=0, help="retries per task (default 0)")
    args = parser.parse_args(argv)
    try:
        dt.date.fromisoformat(args.ds)
    except ValueError:
        parser.error(f"DATE must be YYYY-MM-DD, got {args.ds!r}")
    try:
        conf = json.loads(args.conf) if args.conf.strip() else None
    except json.JSONDecodeError as err:
        parser.error(f"CONF is not JSON ({err}): {args.conf}")
    if conf is not None and not isinstance(conf, dict):
        parser.error("CONF must be a JSON object")
    ensure_airflow_db()
    try:
        outcome = run_dag(args.dag_id, args.ds, conf, retries=args.retries, out=sys.stdout)
    except LookupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if outcome.state == "success" else 1


def ensure_airflow_db() -> None:
    """Create or upgrade the Airflow metadata database (quietly; idempotent)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise SystemExit(f"airflow db migrate failed (AIRFLOW_HOME={os.environ.get('AIRFLOW_HOME')}):\n{tail}")


if __name__ == "__main__":
    sys.exit(main())
