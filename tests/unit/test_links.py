"""Task links reach the evidence, and the report app serves report files only, only to signed-in
users, never outside the data root."""

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
    (root / "uc/registry/decision.json").write_text('{"outcome": "promote"}')
    (root / "uc/features/dt=2025-01-09").mkdir(parents=True)
    (root / "uc/features/dt=2025-01-09/part-0.parquet").write_bytes(b"PAR1 data")
    (tmp_path / "secret.html").write_text("outside")
    return root


def test_links_from_results(root):
    from pavedml.links import links_for

    assert links_for({"model_name": "telco churn", "version": "3"}) == {
        "mlflow": "http://mlflow.example:5000/#/models/telco%20churn/versions/3"}
    drift = links_for({"evidently_report": str(root / "uc/drift/dt=2025-01-09/evidently.html")})
    assert drift == {"evidently": "/pavedml/reports/uc/drift/dt%3D2025-01-09/evidently.html"}
    decision = links_for({"model_name": "m", "challenger_version": "4", "record": str(root / "uc/registry/decision.json")})
    assert decision["decision"] == "/pavedml/reports/uc/registry/decision.json"
    assert decision["mlflow"].endswith("/#/models/m/versions/4")
    assert links_for({"report": str(root.parent / "secret.html")}) == {}  # outside the data root: no link


def test_report_app_serves_reports_to_signed_in_users_only(root):
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    pavedml_ui = _plugin()
    app = pavedml_ui.create_report_app()
    anonymous = TestClient(app)
    assert anonymous.get("/reports/uc/drift/dt=2025-01-09/evidently.html").status_code in (401, 403)

    app.dependency_overrides[get_user] = lambda: object()
    client = TestClient(app)
    ok = client.get("/reports/uc/drift/dt%3D2025-01-09/evidently.html")
    assert ok.status_code == 200 and "evidently" in ok.text
    assert client.get("/reports/uc/registry/decision.json").json() == {"outcome": "promote"}
    assert client.get("/reports/uc/features/dt=2025-01-09/part-0.parquet").status_code == 404  # data, not a report
    assert client.get("/reports/../secret.html").status_code == 404
    assert client.get("/reports/%2E%2E/secret.html").status_code == 404
    assert client.get("/reports/uc/missing.html").status_code == 404
