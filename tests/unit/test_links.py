"""Task links reach the evidence, and the report app serves report files only, only to users who may
read their DAGs, never outside the data root (more in test_reports_app.py)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def _plugin():
    import importlib
    import sys

    from tests.conftest import REPO

    if str(REPO / "plugins") not in sys.path:
        sys.path.insert(0, str(REPO / "plugins"))
    return importlib.import_module("pavedml_ui")


@pytest.fixture
def root(tmp_path, monkeypatch):
    from pavedml.settings import get_settings

    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("PAVEDML_MLFLOW_UI_URL", "http://mlflow.example:5000/")
    get_settings.cache_clear()
    root = tmp_path / "data"
    (root / "uc/drift/dt=2025-01-09").mkdir(parents=True)
    (root / "uc/drift/dt=2025-01-09/evidently.html").write_text("<html>evidently</html>")
    (root / "uc/registry").mkdir(parents=True)
    (root / "uc/training/run1").mkdir(parents=True)
    (root / "uc/training/run1/decision.json").write_text('{"outcome": "promote"}')
    (root / "uc/features/dt=2025-01-09").mkdir(parents=True)
    (root / "uc/features/dt=2025-01-09/part-0.parquet").write_bytes(b"PAR1 data")
    (tmp_path / "secret.html").write_text("outside")
    return root


def _results(root):
    """One result per step that links somewhere, built with the types the steps return
    (pavedml.results), as the CLI prints them: ``as_dict()`` through JSON."""
    import json

    from pavedml import results as r

    common = {"use_case": "uc", "ds": "2025-01-09"}
    decision = str(root / "uc/training/run1/decision.json")
    ledger = str(root / "uc/registry/ledger.jsonl")
    made = {
        "train_challenger": r.TrainResult(step="train_challenger", **common, model_name="telco churn",
                                          model_version="3", run_id="abc", metrics={}, reused=False),
        "evaluate_challenger": r.PromotionDecision(step="evaluate_challenger", **common, outcome="promote",
                                                   promote=True, reasons=[], model_name="m", challenger_version="4",
                                                   champion_version="3", metrics={}, record=decision),
        "promote_challenger": r.PromotionResult(step="promote_challenger", **common, action="promoted",
                                                model_name="m", from_version="3", to_version="4", reason="better",
                                                ledger=ledger),
        "rollback_model": r.PromotionResult(step="rollback_model", **common, action="rolled_back", model_name="m",
                                            from_version="4", to_version="3", reason="worse", ledger=ledger),
        "score_customers": r.ScoringResult(step="score_customers", **common, model_name="m", model_version="5",
                                           rows=1, partition="p", feature_snapshot_sha256="s", positive_rate=0.1,
                                           seconds=0.1),
        "check_drift": r.DriftCheckResult(step="check_drift", **common, status="no_drift", window=["2025-01-09"],
                                          model_version="3", data_hash="h", alerts=[], warnings=[], psi={},
                                          report=str(root / "uc/drift/dt=2025-01-09/report.json"),
                                          evidently_report=str(root / "uc/drift/dt=2025-01-09/evidently.html")),
    }
    return {step: json.loads(json.dumps(result.as_dict(), default=str)) for step, result in made.items()}


def test_links_from_results(root):
    from pavedml.airflow.links import links_for

    (root / "uc/drift/dt=2025-01-09/report.json").write_text("{}")
    (root / "uc/registry/ledger.jsonl").write_text("{}\n")
    out = {step: links_for(result) for step, result in _results(root).items()}
    mlflow = "http://mlflow.example:5000/#/models/"
    assert out["train_challenger"] == {"mlflow": mlflow + "telco%20churn/versions/3"}  # the version it registered
    assert out["evaluate_challenger"] == {"mlflow": mlflow + "m/versions/4",  # the challenger it judged
                                          "decision": "/pavedml/reports/uc/training/run1/decision.json"}
    ledger = "/pavedml/reports/uc/registry/ledger.jsonl"
    assert out["promote_challenger"] == {"mlflow": mlflow + "m/versions/4", "ledger": ledger}  # the new champion
    assert out["rollback_model"] == {"mlflow": mlflow + "m/versions/3", "ledger": ledger}  # the champion it restored
    assert out["score_customers"] == {"mlflow": mlflow + "m/versions/5"}
    assert out["check_drift"] == {"report": "/pavedml/reports/uc/drift/dt%3D2025-01-09/report.json",
                                  "evidently": "/pavedml/reports/uc/drift/dt%3D2025-01-09/evidently.html"}
    assert links_for({"report": str(root.parent / "secret.html")}) == {}  # outside the data root: no link


def test_report_app_serves_reports_to_signed_in_users_only(root):
    from fastapi.testclient import TestClient

    anonymous = TestClient(_plugin().create_report_app())
    assert anonymous.get("/reports/uc/drift/dt=2025-01-09/evidently.html").status_code in (401, 403)

    client = _client(root)
    ok = client.get("/reports/uc/drift/dt%3D2025-01-09/evidently.html")
    assert ok.status_code == 200 and "evidently" in ok.text
    assert client.get("/reports/uc/training/run1/decision.json").json() == {"outcome": "promote"}
    assert client.get("/reports/uc/features/dt=2025-01-09/part-0.parquet").status_code == 404  # data, not a report
    assert client.get("/reports/../secret.html").status_code == 404
    assert client.get("/reports/%2E%2E/secret.html").status_code == 404
    assert client.get("/reports/uc/missing.html").status_code == 404


def test_each_link_is_labelled_by_what_it_opens(root):
    """Data Docs are not the drift report: each evidence kind has its own link and label."""
    from pavedml.airflow.links import STEP_LINKS, links_for

    names = {link.key: link.name for link in STEP_LINKS}
    assert names == {"mlflow": "MLflow model version", "data_docs": "GX Data Docs",
                     "evidently": "Evidently drift report", "report": "Drift check (JSON)",
                     "decision": "Promotion decision", "card": "Model card", "ledger": "Promotion ledger",
                     "performance": "Realized performance"}
    (root / "uc/drift/dt=2025-01-09/report.json").write_text("{}")
    drift = links_for(_results(root)["check_drift"])
    assert set(drift) == {"report", "evidently"}  # no "GX Data Docs" button on a drift check
    docs = root / "uc/validation/dt=2025-01-09/abc"
    docs.mkdir(parents=True)
    (docs / "index.html").write_text("<html>docs</html>")
    failed = links_for(None, ["FAILED validate_raw_batch [validation_failed]", f"Report: {docs}"])
    assert failed == {"data_docs": "/pavedml/reports/uc/validation/dt%3D2025-01-09/abc/index.html"}
    (root / "uc/training/run1/decision.md").write_text("# Promotion decision: **promote**\n")
    (root / "uc/registry/ledger.jsonl").write_text("{}\n")
    decided = links_for(_results(root)["evaluate_challenger"])
    assert decided["decision"] == "/pavedml/reports/uc/training/run1/decision.md"  # the readable page
    assert links_for(_results(root)["promote_challenger"])["ledger"] == "/pavedml/reports/uc/registry/ledger.jsonl"
    (root / "uc/performance").mkdir(parents=True)
    (root / "uc/performance/history.png").write_bytes(b"png")
    measured = links_for({"step": "measure_performance", "performance_plot": str(root / "uc/performance/history.png"),
                          "history": str(root / "uc/performance/history.csv")})
    assert measured == {"performance": "/pavedml/reports/uc/performance/history.png"}  # not the CSV: data


def _client(root):
    """The app for a signed-in Viewer (the simple auth manager's role that may read DAGs)."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    create_auth_manager()
    app = _plugin().create_report_app()
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="viewer", role="viewer")
    return TestClient(app)


def test_decision_and_ledger_open_as_readable_pages(root):
    import json

    md = ("# Promotion decision: **keep_champion**\n\ntelco_churn challenger v2 vs champion v1\n\n"
          "| metric | challenger | champion | delta |\n|---|---|---|---|\n| roc_auc | 0.8844 | 0.8934 | -0.0090 |\n\n"
          "Reasons:\n- slice Contract=Two year: roc_auc regressed by 0.0303 (allowed 0.03)\n")
    (root / "uc/training/run1/decision.md").write_text(md)
    entries = [{"at": "2025-01-08T10:00:00+00:00", "action": "promoted", "model": "m", "from_version": None,
                "to_version": "1", "reason": "first <model>", "run_id": "manual__1"},
               {"at": "2025-01-09T10:00:00+00:00", "action": "keep_champion", "model": "m", "from_version": "1",
                "to_version": "1", "challenger_version": "2", "reason": "no uplift", "run_id": "asset_triggered__2"}]
    (root / "uc/registry/ledger.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries) + "not json\n")
    client = _client(root)
    page = client.get("/reports/uc/training/run1/decision.md")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<strong>keep_champion</strong>" in page.text
    assert "<th>metric</th>" in page.text and "<td class=num>0.8844</td>" in page.text and "---" not in page.text
    assert "<li>slice Contract=Two year" in page.text
    ledger = client.get("/reports/uc/registry/ledger.jsonl")
    assert ledger.headers["content-type"].startswith("text/html")
    rows = ledger.text.split("<tbody>")[1]
    assert rows.index("line 3 is not JSON") < rows.index("asset_triggered__2") < rows.index("manual__1")  # newest first
    assert "first &lt;model&gt;" in rows  # data is escaped, never markup
    assert client.get("/reports/uc/registry/ledger.jsonl?raw=1").status_code == 404  # the page only
    assert client.get("/reports/uc/training/run1/decision.md?raw=1").text.startswith("# Promotion decision")


def test_gx_data_docs_open_without_internet(root):
    """A real Data Docs page (written by GX for a real suite) refers to nothing outside the API
    server once the app has served it, and the assets it refers to are served."""
    import re
    from datetime import date

    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate
    from tests.helpers.steps import run_step

    simulate("telco_churn", date(2025, 1, 2), 1, rows_per_day=200)
    run_step("ingest_raw_batch", "2025-01-02")
    run_step("validate_raw_batch", "2025-01-02")
    pages = sorted(get_settings().data_root.glob("telco_churn/validation/**/data_docs/validations/**/*.html"))
    assert pages, "no Data Docs page to check"
    original = pages[0].read_text()
    assert "https://" in original  # GX does refer to CDNs
    target = root / "uc/validation/dt=2025-01-09/abc/page.html"
    target.parent.mkdir(parents=True)
    target.write_text(original)
    client = _client(root)
    served = client.get("/reports/uc/validation/dt%3D2025-01-09/abc/page.html").text
    refs = re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=[\"']([^\"']+)", served, re.I)
    assert refs and not [r for r in refs if r.startswith(("http:", "https:", "//"))], refs
    assert "integrity=" in original  # GX pins the CDN files' hashes, which the local builds do not match
    for tag in re.findall(r"<(?:script|link)\b[^>]*/pavedml/static/[^>]*>", served, re.I):
        assert "integrity" not in tag and "crossorigin" not in tag, tag
    local = [r for r in refs if r.startswith("/pavedml/static/")]
    assert {"/pavedml/static/bootstrap/css/bootstrap.min.css", "/pavedml/static/jquery/jquery.min.js"} <= set(local)
    for ref in local:
        response = client.get(ref.removeprefix("/pavedml"))
        assert response.status_code == 200 and len(response.content) > 1000, ref
    assert client.get("/static/bootstrap/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd").status_code == 404
    assert client.get("/static/bootstrap/..%2F..%2F..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/static/nope/x.css").status_code == 404
