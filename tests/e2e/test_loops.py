"""The loops close under the real scheduler (``airflow standalone``: scheduler, DAG processor,
triggerer, API server, LocalExecutor), operated as an operator would, for two use cases:

1. unpause the feature pipeline (the scheduler runs today) and backfill the three days before it
   (the history before them is seeded through the same feature steps in-process, as ``make demo``
   does: the backfill and the scheduled run are what is under test, not ten days of them);
2. trigger the first training by hand; unpause every other DAG;
3. today's scheduled scoring and drift check find the drift injected in the data, the drift monitor
   emits the retrain request, and the *scheduler* starts the training run from it (an
   Asset-triggered run, no logical date): it must succeed and record its decision and ledger entry;
4. a drift check for another drifted day inside the cooldown requests nothing, so no training starts;
   meanwhile a drift run waiting for a day that is never scored does not hold it back;
5. a bad batch on another day fails validation on its first try and raises exactly one alert.

The second use case requires a person's approval before a promotion (``evaluation.require_approval``):
its first model is approved, its retrained one rejected, each with a comment, through the REST API
as the UI does it; both answers are recorded by ``promote_challenger`` (ledger, version tags) and
the registry events (approval requested, promoted, approval rejected) reach a local webhook sink.

Everything is asserted through the REST API, the metadata database and the files the steps wrote.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import urllib.error
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.helpers.http_sink import HttpSink
from tests.helpers.standalone import Standalone
from tests.helpers.steps import feature_days

pytestmark = pytest.mark.e2e
USE_CASES = ("telco_churn", "acme_churn")
#: the first days of DAYS whose feature steps run in-process before the stack starts
SEEDED = 6
#: the use case whose promotions wait for a person (evaluation.require_approval)
APPROVAL = "acme_churn"
APPROVE_TASK = "approve_promotion"
ROWS = 800
DAYS: list[str] = []  # 10 days ending today, BAD_DAY before them, UNSCORED_DAY among them: see _set_days
BAD_DAY = UNSCORED_DAY = ""


def _set_days() -> None:
    """Today is the scheduler's today when the stack starts, not when this module was imported (the
    suite may have crossed midnight UTC in between: the scheduler then runs another day than the
    one the data was landed for)."""
    global DAYS, BAD_DAY, UNSCORED_DAY
    today = datetime.now(UTC).date()
    DAYS = [(today - timedelta(days=i)).isoformat() for i in range(9, -1, -1)]
    BAD_DAY = (today - timedelta(days=10)).isoformat()
    UNSCORED_DAY = DAYS[4]  # a drift check for it waits: that day is never scored


def write_use_cases(cases: Path) -> None:
    """Two use cases from the shipped example: training runs only when asked (by hand or by a retrain
    request), the drift sensor pokes every 10 s, a missing batch is not waited for."""
    cases.mkdir(parents=True)
    spec = yaml.safe_load((REPO / "include/use_cases/telco_churn.yaml").read_text())
    spec["schedules"]["training_pipeline"] = None
    spec["batches"]["wait_timeout_seconds"] = 0
    spec["drift"].update(poke_interval_seconds=10, min_samples=200)
    spec["model"]["min_train_rows"] = 300
    for name in USE_CASES:
        spec.update(name=name)
        spec["model"]["registered_name"] = name
        spec["evaluation"]["require_approval"] = name == APPROVAL
        (cases / f"{name}.yaml").write_text(yaml.safe_dump(spec))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate

    _set_days()
    base = tmp_path_factory.mktemp("e2e")
    root, cases = base / "data", base / "use_cases"
    write_use_cases(cases)
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(root))
    mp.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    get_settings.cache_clear()
    for uc in USE_CASES:  # the demo's data: drift from yesterday on, plus one bad batch before it all
        simulate(uc, date.fromisoformat(DAYS[0]), len(DAYS), rows_per_day=ROWS,
                 drift_from=date.fromisoformat(DAYS[-2]))
        simulate(uc, date.fromisoformat(BAD_DAY), 1, rows_per_day=ROWS, bad={BAD_DAY: "missing_column"})
        feature_days(date.fromisoformat(DAYS[0]), SEEDED, uc)
    mp.undo()
    get_settings.cache_clear()
    sink = HttpSink().__enter__()  # registry events: a generic webhook (Teams and others) on loopback
    s = Standalone(base / "airflow", root, cases, extra_env={
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # as an operator finds them
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW_CONN_PAVEDML_EVENTS": json.dumps({"conn_type": "http", "password": f"{sink.url}/hook"}),
        "PAVEDML_EVENTS_WEBHOOK_CONN_ID": "pavedml_events",
    })
    s.sink = sink
    try:
        s.start()
        for uc in USE_CASES:
            s.wait_for_dag(f"{uc}_drift_monitor")
        yield s
    finally:
        s.stop()
        sink.__exit__(None, None, None)


def db(stack, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(f"file:{stack.home / 'airflow.db'}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(sql, args).fetchall()


def unpause(stack, dag_id: str) -> None:
    stack.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})


def trigger(stack, dag_id: str, ds: str, conf: dict | None = None, run_id: str | None = None) -> str:
    run = stack.api("POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id or f"e2e_{ds}_{time.time_ns()}",
                                                         "logical_date": f"{ds}T00:00:00Z", "conf": conf or {}})
    return run["dag_run_id"]


def wait(predicate, timeout: float, what: str, every: float = 3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def runs_by_day(stack, dag_id: str) -> dict[str, dict]:
    return {r["logical_date"][:10]: r for r in stack.runs(dag_id) if r.get("logical_date")}


def tasks(stack, dag_id: str, run_id: str) -> dict[str, dict]:
    return {t["task_id"]: t for t in
            stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]}


def finished(run: dict | None) -> bool:
    return bool(run) and run["state"] in ("success", "failed")


def answer_approval(stack, dag_id: str, run_id: str, option: str, comment: str) -> dict:
    """Wait until the run's approval task waits for input (parked in ``awaiting_input``, its
    request posted, and still so a poll later), then answer it as the admin does in the UI's
    Required Actions page (the same REST call). Not before: Airflow 3.3 resumes a task on a
    response only once it is parked; an answer given while the task still runs its notifiers is
    stored but never resumes it."""
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{APPROVE_TASK}/-1/hitlDetails"
    seen: list[int] = []

    def asked():
        ti = tasks(stack, dag_id, run_id).get(APPROVE_TASK, {})
        if ti.get("state") not in ("awaiting_input", "deferred"):
            seen.clear()
            return None
        try:
            detail = stack.api("GET", path)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise
        if detail.get("response_received"):
            return None
        seen.append(ti.get("try_number", 0))
        return detail if len(seen) >= 2 and seen[-1] == seen[-2] else None  # parked, and settled
    wait(asked, 600, f"{dag_id} run {run_id} to ask for approval", every=3)
    return stack.api("PATCH", path, {"chosen_options": [option], "params_input": {"comment": comment}})


def run_with_approval(stack, dag_id: str, run_id: str, option: str, comment: str, timeout: float = 600):
    """Answer the run's approval, then wait for the run to end; answer again if the approval task
    asks again. Airflow 3.3.2 can kill the attempt it resumes on an answer ("Server indicated the
    task shouldn't be running anymore", seen in CI 2026-12-01); its retry then posts a new request,
    which an operator sees in Required Actions and answers. Returns (run, answers given)."""
    answers = [answer_approval(stack, dag_id, run_id, option, comment)]
    deadline = time.monotonic() + timeout
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{APPROVE_TASK}/-1/hitlDetails"
    while time.monotonic() < deadline:
        run = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        if finished(run):
            return run, answers
        if tasks(stack, dag_id, run_id).get(APPROVE_TASK, {}).get("state") == "awaiting_input" \
                and not stack.api("GET", path).get("response_received"):
            answers.append(answer_approval(stack, dag_id, run_id, option, comment))
        time.sleep(3)
    raise AssertionError(f"{dag_id} run {run_id} did not end within {timeout:.0f}s after {len(answers)} answer(s)")


@pytest.mark.parametrize("uc", USE_CASES)
def test_drift_triggers_a_retraining_run_that_succeeds_and_failures_alert(stack, uc):
    root = Path(stack.env["PAVEDML_DATA_ROOT"])
    features, training = f"{uc}_feature_pipeline", f"{uc}_training_pipeline"
    scoring, drift = f"{uc}_batch_scoring", f"{uc}_drift_monitor"

    # 1. the feature pipeline: the scheduler runs today, a backfill the nine days before. The
    # backfill is created while the DAG is still paused: on SQLite, Airflow 3.3.2 deletes the runs
    # of a backfill whose creation hit "database is locked" (its clean-up before the 503), and a
    # scheduler already working on those runs dies of StaleDataError (seen in CI, 2026-11-30);
    # the scheduler never touches a paused DAG's runs
    run_days = DAYS[SEEDED:]
    stack.api("POST", "/backfills", {
        "dag_id": features, "from_date": f"{run_days[0]}T00:00:00Z", "to_date": f"{DAYS[-2]}T00:00:00Z",
        "max_active_runs": 2, "reprocess_behavior": "none", "run_backwards": False, "dag_run_conf": {}})
    unpause(stack, features)
    done = wait(lambda: (r := runs_by_day(stack, features)) and all(finished(r.get(d)) for d in run_days) and r,
                900, f"{features} over {run_days[0]}..{DAYS[-1]}", every=5)
    assert {d: done[d]["state"] for d in run_days} == {d: "success" for d in run_days}
    assert done[DAYS[-1]]["run_type"] == "scheduled" and done[run_days[0]]["run_type"] == "backfill"
    assert not set(done) & set(DAYS[:SEEDED])  # the seeded days were not run again

    # 2. the first model by hand (a paused DAG's manual run waits: unpause it first), then every DAG
    unpause(stack, training)
    first_id = trigger(stack, training, DAYS[-2], {"reason": "e2e: first model"})
    asks = 0
    if uc == APPROVAL:
        first, answers = run_with_approval(stack, training, first_id, "Approve", "e2e: checked the card, go")
        assert all(a["responded_by"]["name"] == stack.username for a in answers)
        asks += len(answers)
    else:
        first = stack.wait_for_run(training, first_id, 600)
    assert first["state"] == "success", tasks(stack, training, first["dag_run_id"])
    for pipeline in ("batch_scoring", "drift_monitor", "model_rollback"):
        unpause(stack, f"{uc}_{pipeline}")

    # 3. today's scheduled scoring and drift check; the retrain request; the scheduler's training run
    drift_today = wait(lambda: finished(r := runs_by_day(stack, drift).get(DAYS[-1])) and r, 600,
                       f"the scheduled {drift} run for {DAYS[-1]}")
    assert runs_by_day(stack, scoring)[DAYS[-1]]["run_type"] == "scheduled"
    assert drift_today["run_type"] == "scheduled" and drift_today["state"] == "success", drift_today
    assert tasks(stack, drift, drift_today["dag_run_id"])["request_retraining"]["state"] == "success"
    event = db(stack, "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?",
               f"pavedml://{uc}/retrain-request")
    assert len(event) == 1 and json.loads(event[0][0])["ds"] == DAYS[-1]
    retrain = wait(lambda: [r for r in stack.runs(training) if r["run_type"] == "asset_triggered"], 300,
                   f"the scheduler to start {training} from the retrain request")
    assert len(retrain) == 1 and retrain[0]["logical_date"] is None
    if uc == APPROVAL:
        retrain, answers = run_with_approval(stack, training, retrain[0]["dag_run_id"], "Reject",
                                             "e2e: hold until the drift is explained")
        asks += len(answers)
    else:
        retrain = stack.wait_for_run(training, retrain[0]["dag_run_id"], 600)
    assert retrain["state"] == "success", tasks(stack, training, retrain["dag_run_id"])
    key = re.sub(r"[^A-Za-z0-9_.=-]", "_", retrain["dag_run_id"])  # pavedml.context.run_key_of
    decision = json.loads((root / uc / "training" / key / "decision.json").read_text())
    assert decision["outcome"] and decision["reasons"], decision
    ledger = [json.loads(line) for line in (root / uc / "registry/ledger.jsonl").read_text().splitlines()]
    by_run = {e["run_id"]: e for e in ledger}
    assert set(by_run) == {first["dag_run_id"], retrain["dag_run_id"]}, ledger
    assert by_run[first["dag_run_id"]]["reason"].startswith("e2e: first model")
    assert by_run[retrain["dag_run_id"]]["reason"].startswith("retrain request (asset event)")
    if uc == APPROVAL:  # a person's answers, recorded where a model's history is read
        approved, rejected = by_run[first["dag_run_id"]], by_run[retrain["dag_run_id"]]
        assert approved["action"] == "promoted" and approved["approval"]["status"] == "approved"
        assert approved["approval"]["by"] == stack.username and approved["approval"]["comment"] == \
            "e2e: checked the card, go"
        assert rejected["action"] == "approval_rejected" and rejected["to_version"] == approved["to_version"]
        assert rejected["approval"] == {**rejected["approval"], "status": "rejected", "by": stack.username,
                                        "comment": "e2e: hold until the drift is explained"}
        assert tasks(stack, training, retrain["dag_run_id"])["promote_challenger"]["state"] == "success"
        kinds = [p["json"]["event"]["event"] for p in stack.sink.posts if p["json"]["event"].get("model") == uc]
        assert kinds.count("approval_requested") == asks and "approval_rejected" in kinds and "promoted" in kinds, kinds
    else:
        assert by_run[retrain["dag_run_id"]]["action"] == ("promoted" if decision["promote"] else decision["outcome"])
    # the asset-triggered run trained on the day of the request (labels known by then), not today's clock
    built = tasks(stack, training, retrain["dag_run_id"])["build_training_set"]
    assert built["state"] == "success"
    dataset = json.loads((root / uc / "training" / key / "dataset.json").read_text())
    assert max(dataset["snapshot_days"]) <= DAYS[-1]

    # 4. a drift check waiting for a never-scored day does not hold back another day's check; that
    #    one finds drift too (yesterday), but inside the cooldown: no request, no training run
    waiting = trigger(stack, drift, UNSCORED_DAY)
    assert stack.wait_for_run(scoring, trigger(stack, scoring, DAYS[-2]), 600)["state"] == "success"
    yesterday = stack.wait_for_run(drift, trigger(stack, drift, DAYS[-2]), 600)
    assert yesterday["state"] == "success"
    report = json.loads((root / uc / "drift" / f"dt={DAYS[-2]}" / "report.json").read_text())
    assert report["status"] == "drift", report["status"]
    assert tasks(stack, drift, yesterday["dag_run_id"])["request_retraining"]["state"] == "skipped"
    assert stack.api("GET", f"/dags/{drift}/dagRuns/{waiting}")["state"] == "running"
    assert tasks(stack, drift, waiting)["wait_for_drift"]["state"] in ("up_for_reschedule", "running", "queued",
                                                                       "scheduled")
    time.sleep(10)  # the scheduler's chance (ten of its loops) to start a training run it should not start
    assert len([r for r in stack.runs(training) if r["run_type"] == "asset_triggered"]) == 1
    requests = (root / uc / "drift/retrain_requests.jsonl").read_text().splitlines()
    assert len(requests) == 1
    stack.api("PATCH", f"/dags/{drift}/dagRuns/{waiting}", {"state": "failed"})  # stop its pokes

    # 5. a bad batch: validation fails on try 1 (never retried) and on-call gets exactly one alert
    bad = stack.wait_for_run(features, trigger(stack, features, BAD_DAY), 600)
    assert bad["state"] == "failed"
    ti = tasks(stack, features, bad["dag_run_id"])["validate_raw_batch"]
    assert ti["state"] == "failed" and ti["try_number"] == 1
    alerts = [json.loads(line) for line in (root / "alerts.jsonl").read_text().splitlines()]
    mine = [a for a in alerts if a.get("run_id") == bad["dag_run_id"]]
    assert len(mine) == 1 and mine[0]["kind"] == "task_failed", mine
    assert mine[0]["summary"].startswith("FAILED validate_raw_batch [validation_failed]")
    assert "Contract" in mine[0]["summary"]
    # and the drift detected today was alerted once for this use case
    assert len([a for a in alerts if a["kind"] == "drift_detected" and a["dag_id"] == drift]) == 1
