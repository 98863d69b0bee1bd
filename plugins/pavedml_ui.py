"""The ``pavedml`` Airflow plugin: the task links (MLflow model version, GX Data Docs, Evidently
drift report, drift check JSON, promotion decision, promotion ledger) and the report app that
serves those report files.

The report app is mounted on the Airflow API server at ``/pavedml``. It serves only the report
files the pipeline writes (Data Docs and validation results, drift reports, promotion decisions,
the ledger page: :func:`pavedml.airflow.reports.find_report`), nothing else under the data root (no
landing file, snapshot, feature, prediction or alerts file), and only to a user the auth manager
lets read the DAG that wrote the report (``is_authorized_dag``, GET, on ``<use case>_<pipeline>``:
the Viewer role and up in the simple auth manager, ``can read on DAG:<dag_id>`` with FAB). A
signed-in user without that permission gets 403, anyone gets 404 for a path that is not a report,
a symlink that leads out of the data root or to a non-report, a hard link (a file with more than
one link may be a file from anywhere) and an odd path (``%00``, control characters).
Pages work without internet access: Data Docs get Bootstrap, jQuery and Font Awesome from
``/pavedml/static/`` (the pinned xstatic packages) and lose other external assets; a decision
(``.md``) renders as an HTML page (``?raw=1`` for the file itself) and the ledger
(``ledger.jsonl``) as a page only. See pavedml.airflow.reports.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from pavedml.airflow.links import REPORTS_PREFIX, STEP_LINKS

NOT_FOUND = "no such report"


def authorize(user, report) -> None:
    """403 unless the auth manager lets ``user`` read (GET) one of the DAGs that write ``report``."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.configuration import conf
    from fastapi import HTTPException

    auth_manager = get_auth_manager()
    multi_team = conf.getboolean("core", "multi_team", fallback=False)
    for dag_id in report.dag_ids:
        team_name = None
        if multi_team:
            from airflow.models.dag import DagModel

            team_name = DagModel.get_team_name(dag_id)
        if auth_manager.is_authorized_dag(method="GET", details=DagDetails(id=dag_id, team_name=team_name),
                                          user=user):
            return
    raise HTTPException(status_code=403, detail=f"reading {report.area} reports of {report.use_case} needs read "
                                                f"access to DAG {' or '.join(report.dag_ids)}")


def read_report(root, report):
    """The bytes of ``report`` under ``root`` (resolved), or None when it is not a single-link regular
    file inside ``root`` whose real path is a report of the same use case and area."""
    import os
    import stat

    from pavedml.airflow import reports

    try:
        target = (root / report.path).resolve(strict=True)
        if not target.is_relative_to(root):
            return None
        real = reports.find_report(target.relative_to(root).as_posix())
        if real is None or (real.use_case, real.area, real.view) != (report.use_case, report.area, report.view):
            return None
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError, RuntimeError):  # missing, a loop, a name too long, a null byte, not UTF-8
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return None
        return f.read()


def create_report_app():
    import importlib
    import mimetypes
    from pathlib import Path

    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse, Response

    from pavedml.airflow import reports
    from pavedml.settings import get_settings

    app = FastAPI(title="pavedml reports", docs_url=None, redoc_url=None, openapi_url=None)
    headers = {"X-Content-Type-Options": "nosniff"}
    signed_in_user = Depends(get_user)

    @app.get("/reports/{path:path}")
    def report(path: str, raw: bool = False, user=signed_in_user):
        found = reports.find_report(path)
        if found is None or (raw and found.view == "ledger"):
            raise HTTPException(status_code=404, detail=NOT_FOUND)
        authorize(user, found)
        data = read_report(get_settings().data_root.resolve(), found)
        if data is None:
            raise HTTPException(status_code=404, detail=NOT_FOUND)
        name = Path(found.path).name
        if not raw and found.view == "html":  # Data Docs, Evidently: CDN assets from the local copies
            return HTMLResponse(reports.offline_html(data.decode(errors="replace")), headers=headers)
        if not raw and found.view == "markdown":
            return HTMLResponse(reports.markdown_page(data.decode(errors="replace"), name), headers=headers)
        if found.view == "ledger":
            return HTMLResponse(reports.ledger_page(data.decode(errors="replace"),
                                                    f"Promotion ledger: {found.use_case}"), headers=headers)
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type == "application/json":
            media_type += "; charset=utf-8"
        return Response(data, media_type=media_type, headers=headers)

    @app.get("/static/{package}/{path:path}", dependencies=[Depends(get_user)])
    def static(package: str, path: str):
        module = reports.STATIC_PACKAGES.get(package)
        if module is None:
            raise HTTPException(status_code=404, detail="no such package")
        base = Path(importlib.import_module(module).BASE_DIR).resolve()
        try:
            target = (base / path).resolve()
            ok = target.is_relative_to(base) and target.is_file()
        except (OSError, ValueError, RuntimeError):  # a null byte, a name too long, a loop
            ok = False
        if not ok:
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
