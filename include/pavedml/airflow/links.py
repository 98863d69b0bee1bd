"""One click from a task in the Airflow UI to its evidence: the MLflow model version, the GX Data
Docs page, the Evidently drift report, the drift check's JSON report, the promotion decision (a
readable page), the model card and the promotion ledger (a table).

A step's links come from its JSON result (success) or from its failure summary's ``Report:``
line (failure), so a failed validation still links to its Data Docs. The worker pushes each link
to XCom when the task ends (Airflow 3's ``finalize``); the UI shows them as buttons. Reports under
the data root are served by the ``pavedml`` plugin's report app at ``/pavedml/reports/<path>``, to
users who may read the DAG that wrote them (``pavedml.airflow.reports.find_report`` decides what is a report). Imported by the plugin: standard library and ``airflow.sdk`` only.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import attrs
from airflow.sdk import BaseOperatorLink

#: URL prefix of the plugin's report app on the Airflow API server.
REPORTS_PREFIX = "/pavedml"

#: (link key, result fields in order of preference)
RESULT_FIELDS = {
    "data_docs": ("data_docs",),
    "evidently": ("evidently_report",),
    "report": ("report",),
    "decision": ("record",),
    "card": ("card",),
    "ledger": ("ledger",),
    "performance": ("performance_plot",),
}


def report_url(path: str, data_root: Path) -> str:
    """The report app's URL for a file under the data root ("" for anything else)."""
    if not path:
        return ""
    if path.startswith(("http://", "https://")):
        return path
    try:
        rel = Path(path).resolve().relative_to(data_root.resolve())
    except ValueError:
        return ""
    if Path(path).is_dir():
        index = Path(path) / "index.html"
        if not index.exists():
            return ""
        rel = rel / "index.html"
    return f"{REPORTS_PREFIX}/reports/{quote(rel.as_posix())}"


#: The version a result's MLflow link opens, by the result's naming (:mod:`pavedml.results`): the one
#: it is about, else the challenger a decision judged, else the champion a promotion or rollback left.
VERSION_FIELDS = ("model_version", "challenger_version", "to_version")


def mlflow_url(result: dict, ui_url: str) -> str:
    name = result.get("model_name")
    version = next((result[f] for f in VERSION_FIELDS if result.get(f)), None)
    if name and version:
        return f"{ui_url.rstrip('/')}/#/models/{quote(str(name))}/versions/{quote(str(version))}"
    return ""


def links_for(result: dict | None, summary: list[str] | None = None) -> dict[str, str]:
    """Link key -> URL for one step's result (or its failure summary)."""
    from pavedml.settings import get_settings

    s = get_settings()
    result = dict(result or {})
    for line in summary or []:
        if line.startswith("Report: "):  # a failure's report: Data Docs of a failed validation, or another
            path = line.removeprefix("Report: ").strip()
            result.setdefault("data_docs" if "/validation/" in path else "report", path)
    record = str(result.get("record") or "")
    if record.endswith(".json") and Path(record).with_suffix(".md").exists():
        result["record"] = str(Path(record).with_suffix(".md"))  # the readable page of the decision
    links = {"mlflow": mlflow_url(result, s.mlflow_ui_url)}
    for key, names in RESULT_FIELDS.items():
        links[key] = next((u for u in (report_url(str(result.get(n) or ""), s.data_root) for n in names) if u), "")
    return {k: v for k, v in links.items() if v}


@attrs.define()
class _StepLink(BaseOperatorLink):
    key = ""

    def get_link(self, operator, *, ti_key) -> str:
        return (getattr(operator, "links", None) or {}).get(self.key, "")


@attrs.define()
class MlflowLink(_StepLink):
    name = "MLflow model version"
    key = "mlflow"


@attrs.define()
class DataDocsLink(_StepLink):
    name = "GX Data Docs"
    key = "data_docs"


@attrs.define()
class EvidentlyLink(_StepLink):
    name = "Evidently drift report"
    key = "evidently"


@attrs.define()
class ReportLink(_StepLink):
    name = "Drift check (JSON)"
    key = "report"


@attrs.define()
class DecisionLink(_StepLink):
    name = "Promotion decision"
    key = "decision"


@attrs.define()
class CardLink(_StepLink):
    name = "Model card"
    key = "card"


@attrs.define()
class LedgerLink(_StepLink):
    name = "Promotion ledger"
    key = "ledger"


@attrs.define()
class PerformanceLink(_StepLink):
    name = "Realized performance"
    key = "performance"


STEP_LINKS = (MlflowLink(), DataDocsLink(), EvidentlyLink(), ReportLink(), DecisionLink(), CardLink(), LedgerLink(),
              PerformanceLink())
