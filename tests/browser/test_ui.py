"""A real browser (Debian's headless Chromium, driven by Playwright) against ``airflow standalone``
with this repository's DAGs: sign in, trigger the training DAG through its Params form, wait for
success, then open a deliberately failed validation run and read its summary.

Screenshots are kept in ``test-artifacts/browser/`` (``PAVEDML_ARTIFACTS_DIR`` overrides).
"""

from __future__ import annotations

import os
import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.helpers.standalone import Standalone

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("PAVEDML_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("PAVEDML_ARTIFACTS_DIR", REPO / "test-artifacts" / "browser"))
BAD_DAY = "2025-01-09"
BACKFILL = ("2025-01-10", "2025-01-11")
BAD_BACKFILL = "2025-01-12"  # a backfill whose day's batch lacks a column
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def stack(feature_history, tmp_path_factory):
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package (make deps does, as root)")
    root = tmp_path_factory.mktemp("browser") / "data"
    shutil.copytree(feature_history, root)
    # The same use case; only the feature pipeline keeps its daily schedule (a backfill needs one;
    # its catch-up run for yesterday finds no batch and fails at once); the rest run when triggered.
    cases = root.parent / "use_cases"
    cases.mkdir()
    spec = yaml.safe_load((REPO / "include/use_cases/telco_churn.yaml").read_text())
    spec["schedules"].update(training_pipeline=None, batch_scoring=None, drift_monitor=None)
    spec["batches"]["wait_timeout_seconds"] = 0
    spec["schedules"]["expected_duration_minutes"] = 0.25  # 15 s: the training run always takes longer
    (cases / "telco_churn.yaml").write_text(yaml.safe_dump(spec))
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(root))
    get_settings.cache_clear()
    simulate("telco_churn", date.fromisoformat(BAD_DAY), 1, rows_per_day=500, bad={BAD_DAY: "missing_column"})
    simulate("telco_churn", date.fromisoformat(BACKFILL[0]), len(BACKFILL), rows_per_day=500)
    simulate("telco_churn", date.fromisoformat(BAD_BACKFILL), 1, rows_per_day=500, bad={BAD_BACKFILL: "missing_column"})
    mp.undo()
    get_settings.cache_clear()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    s = Standalone(root.parent / "airflow", root, cases).start()
    try:
        for dag_id in ("telco_churn_training_pipeline", "telco_churn_feature_pipeline"):
            s.wait_for_dag(dag_id)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def page(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(stack.base + "/")
        page.get_by_label("Username").fill(stack.username)
        page.get_by_label("Password").fill(stack.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url and "login" not in url)
        yield page
        page.screenshot(path=str(ARTIFACTS / "last.png"))
        browser.close()


def test_trigger_training_through_its_params_form(stack, page):
    dag_id = "telco_churn_training_pipeline"
    page.goto(f"{stack.base}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    (ARTIFACTS / "trigger-form.html").write_text(dialog.inner_html())
    dialog.locator("input[name='element_reason']").fill("browser test: retrain now")
    window = dialog.get_by_role("spinbutton")  # training_window_days, the form's only number field
    window.fill("3650")  # the simulated history is from 2025; the run's logical date is now
    dialog.get_by_role("button", name="Advanced Options").click()
    dialog.locator("input[name='dagRunId']").fill("browser_form_run")
    page.screenshot(path=str(ARTIFACTS / "trigger-form.png"), full_page=True)
    dialog.locator("[data-testid='trigger-dag-submit']").click()
    run = stack.wait_for_run(dag_id, "browser_form_run", timeout=900)
    assert run["conf"]["reason"] == "browser test: retrain now"
    assert run["state"] == "success", run
    page.goto(f"{stack.base}/dags/{dag_id}/runs/{run['dag_run_id']}")
    page.get_by_text("success").first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "training-run-success.png"), full_page=True)


def test_a_run_past_its_deadline_raises_a_deadline_alert(stack):
    """The training run above took longer than the test config's 1 minute: the scheduler saw the
    missed deadline and the triggerer ran pavedml.airflow.callbacks.on_deadline_missed."""
    import json
    import time

    alerts_file = Path(stack.env["PAVEDML_DATA_ROOT"]) / "alerts.jsonl"
    deadline = time.monotonic() + 240
    missed = []
    while time.monotonic() < deadline and not missed:
        lines = alerts_file.read_text().splitlines() if alerts_file.exists() else []
        missed = [a for a in map(json.loads, lines) if a["kind"] == "deadline_missed"
                  and a["dag_id"] == "telco_churn_training_pipeline"]
        time.sleep(3)
    assert missed, f"no deadline alert in {alerts_file}"
    assert missed[0]["run_id"] == "browser_form_run"
    assert missed[0]["summary"].startswith("DEADLINE MISSED: telco_churn_training_pipeline run browser_form_run")


def test_failed_validation_shows_its_summary(stack, page):
    dag_id = "telco_churn_feature_pipeline"
    run = stack.api("POST", f"/dags/{dag_id}/dagRuns",
                    {"dag_run_id": f"browser_bad_{BAD_DAY}", "logical_date": f"{BAD_DAY}T00:00:00Z"})
    run = stack.wait_for_run(dag_id, run["dag_run_id"], timeout=600)
    assert run["state"] == "failed"
    page.goto(f"{stack.base}/dags/{dag_id}/runs/{run['dag_run_id']}/tasks/validate_raw_batch")
    summary = page.get_by_text("FAILED validate_raw_batch [validation_failed]").first
    summary.wait_for(timeout=60_000)
    summary.scroll_into_view_if_needed()
    assert page.get_by_text("Contract").first.is_visible()  # the missing column is named
    page.screenshot(path=str(ARTIFACTS / "failed-validation.png"), full_page=True)


def test_one_click_from_the_failed_task_to_its_data_docs(stack, page):
    dag_id, run_id = "telco_churn_feature_pipeline", f"browser_bad_{BAD_DAY}"
    stack.wait_for_run(dag_id, run_id, timeout=600)  # made by the test above (or still running)
    page.goto(f"{stack.base}/dags/{dag_id}/runs/{run_id}/tasks/validate_raw_batch/details")
    link = page.get_by_role("link", name="GX Data Docs")
    link.wait_for()
    page.screenshot(path=str(ARTIFACTS / "task-links.png"), full_page=True)
    href = link.get_attribute("href")
    assert href and "/pavedml/reports/telco_churn/validation/" in href and href.endswith(".html")
    opened = len(page.context.pages)
    requested: list[str] = []
    page.context.on("request", lambda request: requested.append(request.url))
    link.click()  # the UI opens it in this tab or a new one
    page.wait_for_timeout(2000)
    docs = page.context.pages[-1] if len(page.context.pages) > opened else page
    docs.wait_for_load_state()
    assert "/pavedml/reports/" in docs.url
    assert "Contract" in docs.content()  # the GX Data Docs page of this batch, served to the signed-in user
    # complete without internet: every request it made went to the API server (styles included)
    docs.wait_for_load_state("networkidle")
    assert requested and not [u for u in requested if not u.startswith(stack.base)], requested
    assert any(u.endswith("/pavedml/static/bootstrap/css/bootstrap.min.css") for u in requested), requested
    docs.screenshot(path=str(ARTIFACTS / "data-docs.png"), full_page=True)
    if docs is not page:
        docs.close()
    # the same URL without the session is refused
    anonymous = page.context.browser.new_context()
    try:
        response = anonymous.new_page().goto(stack.base + href)
        assert response.status in (401, 403)
    finally:
        anonymous.close()


def test_backfill_over_a_date_range_through_the_scheduler(stack):
    """Airflow 3's backfill (what the trigger dialog's Backfill tab and `airflow backfill create`
    make) over two days: one run per day, each reading only its own batch."""
    dag_id = "telco_churn_feature_pipeline"
    backfill = stack.api("POST", "/backfills", {
        "dag_id": dag_id, "from_date": f"{BACKFILL[0]}T00:00:00Z", "to_date": f"{BACKFILL[-1]}T00:00:00Z",
        "max_active_runs": 2, "reprocess_behavior": "none", "run_backwards": False, "dag_run_conf": {}})
    import time

    deadline = time.monotonic() + 900
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = [r for r in stack.runs(dag_id) if r["run_type"] == "backfill"]
        if len(runs) == len(BACKFILL) and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(5)
    assert sorted(r["logical_date"][:10] for r in runs) == list(BACKFILL), (backfill, runs)
    assert {r["state"] for r in runs} == {"success"}, runs
    root = Path(stack.env["PAVEDML_DATA_ROOT"])
    import pandas as pd

    for ds in BACKFILL:
        features = pd.read_parquet(root / f"telco_churn/features/dt={ds}")
        landing = pd.read_csv(root / f"landing/telco_churn/customers/dt={ds}/customers.csv")
        assert len(features) == len(landing) == 500
        assert features["event_timestamp"].dt.strftime("%Y-%m-%d").unique().tolist() == [ds]


def test_a_backfill_over_a_bad_day_fails_that_run_with_its_summary(stack):
    """The failing counterpart: the run of the bad day fails at validation (no retry), with the
    step's summary as the task's error, and on-call gets the alert."""
    import json
    import time
    import urllib.error

    dag_id = "telco_churn_feature_pipeline"
    body = {"dag_id": dag_id, "from_date": f"{BAD_BACKFILL}T00:00:00Z", "to_date": f"{BAD_BACKFILL}T00:00:00Z",
            "max_active_runs": 1, "reprocess_behavior": "none", "run_backwards": False, "dag_run_conf": {}}
    deadline = time.monotonic() + 180
    while True:  # 409 while the scheduler has not yet marked the previous test's backfill complete
        try:
            stack.api("POST", "/backfills", body)
            break
        except urllib.error.HTTPError as err:
            if err.code != 409 or time.monotonic() > deadline:
                raise
            time.sleep(5)
    deadline = time.monotonic() + 600
    run = None
    while time.monotonic() < deadline:
        run = next((r for r in stack.runs(dag_id)
                    if r["run_type"] == "backfill" and r["logical_date"].startswith(BAD_BACKFILL)), None)
        if run and run["state"] in ("success", "failed"):
            break
        time.sleep(5)
    assert run and run["state"] == "failed", run
    tis = {t["task_id"]: t for t in stack.api("GET", f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]}
    assert tis["validate_raw_batch"]["state"] == "failed" and tis["validate_raw_batch"]["try_number"] == 1
    assert tis["build_features"]["state"] == "upstream_failed"
    alerts = Path(stack.env["PAVEDML_DATA_ROOT"]) / "alerts.jsonl"
    mine = [a for a in map(json.loads, alerts.read_text().splitlines())
            if a.get("run_id") == run["dag_run_id"] and a["kind"] == "task_failed"]
    assert len(mine) == 1 and mine[0]["summary"].startswith("FAILED validate_raw_batch [validation_failed]"), mine
