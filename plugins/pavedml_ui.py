"""The ``pavedml`` Airflow plugin: the task links (MLflow model version, GX Data Docs, Evidently
drift report, drift check JSON, promotion decision, promotion ledger) and the report app that
serves those report files.

The report app is mounted on the Airflow API server at ``/pavedml``. It serves only report files
(HTML, JSON, CSV, text, Markdown) under the data root, only to signed-in Airflow users (the UI's
session cookie or a bearer token), and never a path outside the data root. Pages work without
internet access: Data Docs get Bootstrap, jQuery and Font Awesome from ``/pavedml/static/`` (the
pinned xstatic packages) and lose other external assets; a decision (``.md``) and the ledger
(``ledger.jsonl``) render as HTML pages (``?raw=1`` for the file itself). See pavedml.reports.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from pavedml.links import REPORTS_PREFIX, STEP_LINKS


def create_report_app():
    import importlib

    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse

    from pavedml import reports
    from pavedml.links import REPORT_SUFFIXES
    from pavedml.settings import get_settings

    app = FastAPI(title="pavedml reports", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/reports/{path:path}", dependencies=[Depends(get_user)])
    def report(path: str, raw: bool = False):
        root = get_settings().data_root.resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root) or target.suffix not in REPORT_SUFFIXES or not target.is_file():
            raise HTTPException(status_code=404, detail="no such report")
        if raw:
            return FileResponse(target)
        if target.suffix == ".html":  # GX Data Docs: CDN assets from the local copies, nothing external
            return HTMLResponse(reports.offline_html(target.read_text(errors="replace")))
        if target.suffix == ".md":
            return HTMLResponse(reports.markdown_page(target.read_text(errors="replace"), target.name))
        if target.name == "ledger.jsonl":
            return HTMLResponse(reports.ledger_page(target.read_text(errors="replace"),
                                                    f"Promotion ledger: {target.parent.parent.name}"))
        return FileResponse(target)

    @app.get("/static/{package}/{path:path}", dependencies=[Depends(get_user)])
    def static(package: str, path: str):
        module = reports.STATIC_PACKAGES.get(package)
        if module is None:
            raise HTTPException(status_code=404, detail="no such package")
        from pathlib import Path

        base = Path(importlib.import_module(module).BASE_DIR).resolve()
        target = (base / path).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            raise HTTPException(status_code=404, detail="no such file")
        return FileResponse(target)

    return app


class LazyReportApp:
    """ASGI app that builds the report app on its first request: every Airflow process loads
    plugins, only the API server serves requests, and FastAPI/auth imports cost seconds."""

    def __init__(self) -> None:
        self._app = None

    async def __call__(self, scope, receive, send):
        if self._app is None:
            self._app = create_report_app()
        await self._app(scope, receive, send)


class PavedMLPlugin(AirflowPlugin):
    name = "pavedml"
    operator_extra_links = list(STEP_LINKS)
    fastapi_apps = [{"app": LazyReportApp(), "url_prefix": REPORTS_PREFIX, "name": "pavedml reports"}]
