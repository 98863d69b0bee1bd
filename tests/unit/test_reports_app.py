"""The report app as the API server mounts it (the real Airflow app, the plugin from plugins/, the
simple auth manager's login): a report needs read access to its DAG, and nothing but the reports
the pipeline writes is served, whatever the path, link or user."""

from __future__ import annotations

import json
import os
from datetime import date

import pytest

pytestmark = pytest.mark.unit
DS = "2025-01-02"
USE_CASE = "telco_churn"


@pytest.fixture(scope="module")
def site(tmp_path_factory, airflow_db):
    """A data root with one real validated day (landing CSV, snapshot, Data Docs), a report of every
    other kind at its layout path, the files beside them that are data, and the API server's app with
    a Viewer (``viewer``) and a signed-in user with no role (``nobody``)."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    from pavedml.layout import Layout
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate
    from tests.helpers.steps import run_step

    tmp = tmp_path_factory.mktemp("reports-app")
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(tmp / "data"))
    mp.setenv("AIRFLOW__CORE__AUTH_MANAGER",
              "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "viewer:viewer,nobody:")
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(tmp / "passwords.json"))
    get_settings.cache_clear()
    s = get_settings()
    layout = Layout.for_use_case(USE_CASE)
    simulate(USE_CASE, date.fromisoformat(DS), 1, rows_per_day=200)
    run_step("ingest_raw_batch", DS)
    validation = run_step("validate_raw_batch", DS)
    drift = layout.drift_dir(DS)
    drift.mkdir(parents=True)
    (drift / "report.json").write_text('{"status": "ok"}')
    (drift / "evidently.html").write_text("<html><body>evidently</body></html>")
    layout.drift_history.write_text("ds,feature,psi\n")
    layout.drift_history.with_suffix(".png").write_bytes(b"\x89PNG\r\n\x1a\nplot")
    layout.retrain_requests.write_text("{}\n")
    run = layout.training_dir("manual__2025-01-02T00_00_00_00_00")
    run.mkdir(parents=True)
    (run / "decision.json").write_text('{"outcome": "promote"}')
    (run / "decision.md").write_text("# Promotion decision: **promote**\n")
    (run / "dataset.json").write_text('{"rows": 1}')
    layout.ledger.parent.mkdir(parents=True)
    layout.ledger.write_text(json.dumps({"action": "promoted", "model": "m", "to_version": "1"}) + "\n")
    s.alerts_file.write_text(json.dumps({"summary": "FAILED ingest_raw_batch"}) + "\n")
    (tmp / "secret.json").write_text('{"secret": "outside the data root"}')
    (tmp / "outside").mkdir()
    (tmp / "outside" / "report.json").write_text('{"secret": "outside the data root"}')

    app = create_app(apps="core")
    client = TestClient(app)
    passwords = json.loads((tmp / "passwords.json").read_text())
    tokens = {}
    for user in ("viewer", "nobody"):
        response = client.post("/auth/token", json={"username": user, "password": passwords[user]})
        assert response.status_code == 201, response.text
        tokens[user] = response.json()["access_token"]
    yield {"root": s.data_root, "tmp": tmp, "layout": layout, "validation": validation, "client": client,
           "tokens": tokens, "passwords": passwords}
    client.close()
    purge_cached_app()
    mp.undo()
    get_settings.cache_clear()


def _get(site, user, path, **kwargs):
    headers = {"Authorization": f"Bearer {site['tokens'][user]}"} if user else {}
    return site["client"].get(path, headers=headers, **kwargs)


def _url(site, path) -> str:
    return "/pavedml/reports/" + path.resolve().relative_to(site["root"].resolve()).as_posix()


def test_the_validation_link_opens_data_docs_for_a_dag_reader_only(site):
    """The Data Docs link the validation step makes opens for a Viewer, with the session cookie the
    UI sends or a bearer token; a signed-in user with no role gets 403, no one signed in 401."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    from pavedml.airflow.links import links_for

    link = links_for(site["validation"].as_dict())["data_docs"]
    ok = _get(site, "viewer", link)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/html"), ok.text[:300]
    assert "/pavedml/static/bootstrap/" in ok.text
    site["client"].cookies.set(COOKIE_NAME_JWT_TOKEN, site["tokens"]["viewer"])
    try:
        assert site["client"].get(link).status_code == 200
    finally:
        site["client"].cookies.clear()
    denied = _get(site, "nobody", link)
    assert denied.status_code == 403 and "telco_churn_feature_pipeline" in denied.json()["detail"]
    assert _get(site, None, link).status_code == 401


def test_every_report_kind_opens_for_a_viewer_and_none_for_a_user_without_a_role(site):
    layout = site["layout"]
    run = layout.training_dir("manual__2025-01-02T00_00_00_00_00")
    docs = sorted(p for p in (site["root"] / USE_CASE / "validation").rglob("*") if p.is_file())
    reports = [*docs, layout.drift_dir(DS) / "report.json", layout.drift_dir(DS) / "evidently.html",
               layout.drift_history.with_suffix(".png"), run / "decision.json", run / "decision.md", layout.ledger]
    assert {".html", ".json", ".css", ".png", ".otf", ".md", ".jsonl"} <= {p.suffix for p in reports}
    for path in reports:
        assert _get(site, "viewer", _url(site, path)).status_code == 200, path
        assert _get(site, "nobody", _url(site, path)).status_code == 403, path
    font = next(p for p in docs if p.suffix == ".otf")
    assert _get(site, "viewer", _url(site, font)).content == font.read_bytes()
    ledger = _get(site, "viewer", _url(site, layout.ledger))
    assert ledger.headers["content-type"].startswith("text/html") and "<td>promoted</td>" in ledger.text
    decision = _get(site, "viewer", _url(site, run / "decision.json"))
    assert decision.json() == {"outcome": "promote"} and decision.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("user", ["viewer", "nobody"])
def test_data_under_the_data_root_is_never_served(site, user):
    """The landing CSV, the alerts file, the raw ledger, snapshots, manifests, histories, retrain
    requests and the training set manifest: 404 for anyone, as if they did not exist."""
    root, layout = site["root"], site["layout"]
    sha = site["validation"].sha256
    data = [next((root / "landing").rglob("customers.csv")), site["root"] / "alerts.jsonl",
            layout.raw_snapshot(DS, sha), layout.raw_manifest(DS, sha), layout.raw_latest(DS),
            layout.drift_history, layout.retrain_requests,
            layout.training_dir("manual__2025-01-02T00_00_00_00_00") / "dataset.json"]
    for path in data:
        assert path.is_file(), path
        response = _get(site, user, _url(site, path))
        assert response.status_code == 404, (path, response.status_code)
    assert _get(site, user, _url(site, layout.ledger) + "?raw=1").status_code == 404
    assert _get(site, user, "/pavedml/reports/alerts.jsonl").status_code == 404


def test_links_out_of_the_data_root_and_odd_paths_are_404(site):
    root, tmp, layout = site["root"], site["tmp"], site["layout"]
    drift = layout.drift_dir(DS)
    landing_csv = next((root / "landing").rglob("customers.csv"))
    docs_dir = root / USE_CASE / "validation" / f"dt={DS}" / site["validation"].sha256
    (docs_dir / "hard.json").hardlink_to(tmp / "secret.json")  # a hard link to a file outside
    (docs_dir / "hard-landing.html").hardlink_to(landing_csv)  # and to data inside
    (drift.parent / "dt=2025-01-03").symlink_to(tmp / "outside")  # a symlinked folder...
    (drift / "psi_table.txt").symlink_to(tmp / "secret.json")  # ...and file out of the data root
    (docs_dir / "landing.json").symlink_to(landing_csv)  # a report name for data inside the root
    os.mkfifo(docs_dir / "fifo.json")  # would block an open() without O_NONBLOCK
    for path in ("hard.json", "hard-landing.html", "landing.json", "fifo.json"):
        assert _get(site, "viewer", _url(site, docs_dir) + "/" + path).status_code == 404, path
        assert _get(site, "nobody", _url(site, docs_dir) + "/" + path).status_code == 403, path
    assert _get(site, "viewer", f"/pavedml/reports/{USE_CASE}/drift/dt={DS}/psi_table.txt").status_code == 404
    assert _get(site, "viewer", f"/pavedml/reports/{USE_CASE}/drift/dt=2025-01-03/report.json").status_code == 404
    odd = [f"{USE_CASE}/validation/a%00.html", f"{USE_CASE}/validation/%00", "%00", f"{USE_CASE}/drift/dt={DS}%00/report.json",
           f"{USE_CASE}/validation/%ff%fe.html", f"{USE_CASE}/validation/" + "x" * 5000 + ".html",
           f"{USE_CASE}/validation/" + "/".join(["d" * 200] * 40) + "/a.html",
           f"{USE_CASE}/validation/..%2f..%2falerts.jsonl", f"{USE_CASE}/validation/%2e%2e/%2e%2e/alerts.jsonl",
           f"{USE_CASE}/validation/a%5c..%5c..%5calerts.jsonl", f"{USE_CASE}//validation/a.html",
           f"{USE_CASE}/validation/%0a.html", f"{USE_CASE}/validation/.tmp-x/a.html", "../secret.json"]
    for path in odd:
        for user in ("viewer", "nobody"):
            response = _get(site, user, f"/pavedml/reports/{path}")
            assert response.status_code == 404, (path, user, response.status_code)
    for path in ("bootstrap/css/a%00.css", "bootstrap/" + "x" * 5000, "bootstrap/%ff"):
        assert _get(site, "viewer", f"/pavedml/static/{path}").status_code == 404, path


def test_the_use_case_name_rule_is_the_configs():
    from pavedml.airflow.reports import USE_CASE_NAME
    from pavedml.config import NAME_RE

    assert USE_CASE_NAME.pattern == NAME_RE.pattern


def test_labels_reports_belong_to_the_training_pipeline():
    """The labels suite runs in build_training_set: its Data Docs are for the training DAG's readers."""
    from pavedml.airflow.reports import find_report

    labels = find_report("telco_churn/validation/labels/dt=2025-01-08/abc/runs/x/data_docs/index.html")
    assert labels is not None and labels.dag_ids == ("telco_churn_training_pipeline",)
    batch = find_report("telco_churn/validation/dt=2025-01-08/abc/runs/x/data_docs/index.html")
    assert batch is not None and batch.dag_ids == ("telco_churn_feature_pipeline",)


def test_performance_reports_belong_to_the_performance_monitor():
    """The realized-performance plot and a day's metrics are served to the performance monitor's readers;
    a live-evidence decision also to the training DAG's; the history CSV and caches beside them are data."""
    from pavedml.airflow.reports import find_report

    plot = find_report("telco_churn/performance/history.png")
    assert plot is not None and plot.dag_ids == ("telco_churn_performance_monitor",) and plot.view == "file"
    day = find_report("telco_churn/performance/dt=2025-01-08/metrics.json")
    assert day is not None and day.dag_ids == ("telco_churn_performance_monitor",)
    live = find_report("telco_churn/registry/live/v3.json")
    assert live is not None and "telco_churn_training_pipeline" in live.dag_ids
    assert "telco_churn_performance_monitor" in live.dag_ids
    for data in ("telco_churn/performance/history.csv", "telco_churn/performance/labels_index.json",
                 "telco_churn/registry/live/v3.json.tmp", "telco_churn/performance/dt=2025-01-08/other.json",
                 "telco_churn/registry/live/../ledger.jsonl"):
        assert find_report(data) is None, data
