"""Report files as pages a person reads in the browser, with no internet access: used by the
``pavedml`` plugin's report app (``/pavedml/reports/...``). Standard library only.

* GX Data Docs reference Bootstrap, jQuery and Font Awesome on public CDNs: :func:`offline_html`
  points those at the copies the app serves from the pinned ``xstatic-*`` packages
  (``/pavedml/static/<package>/...``) and drops every other external script, stylesheet and image
  (charts and the GX logo), so a page opens complete on a network without internet.
* A promotion decision (``decision.md``, next to ``decision.json``) renders as an HTML page with its
  metric table; the promotion ledger (``ledger.jsonl``) as a table, newest entry first.
* :func:`find_report` says whether a path under the data root is a report the pipeline wrote (and
  which DAGs' readers may open it); everything else there (landing files, snapshots, features,
  predictions, the alerts file, histories) is data, never served.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from pavedml.layout import (
    CARD_HTML,
    CARD_MD,
    DECISION_FILE,
    DECISION_PAGE,
    DRIFT_REPORT,
    EVIDENTLY_REPORT,
    LEDGER_VIEW,
    PERFORMANCE_DAY,
    PERFORMANCE_PLOT,
    PSI_HISTORY_PLOT,
    PSI_TABLE,
)

STATIC_PREFIX = "/pavedml/static"
#: static package name in URLs -> the xstatic module holding it
STATIC_PACKAGES = {"bootstrap": "xstatic.pkg.bootstrap", "jquery": "xstatic.pkg.jquery",
                   "font-awesome": "xstatic.pkg.font_awesome"}
#: CDN URL pattern -> local static path
CDN_REPLACEMENTS = (
    (re.compile(r"https?://[^\"' ]*/bootstrap(?:@[\d.]+|/[\d.]+)/(?:dist/)?css/bootstrap\.min\.css"),
     f"{STATIC_PREFIX}/bootstrap/css/bootstrap.min.css"),
    (re.compile(r"https?://[^\"' ]*/bootstrap(?:@[\d.]+|/[\d.]+)/(?:dist/)?js/bootstrap(?:\.bundle)?\.min\.js"),
     f"{STATIC_PREFIX}/bootstrap/js/bootstrap.bundle.min.js"),
    (re.compile(r"https?://[^\"' ]*/jquery-[\d.]+(?:\.slim)?\.min\.js"), f"{STATIC_PREFIX}/jquery/jquery.min.js"),
    (re.compile(r"https?://[^\"' ]*/font-awesome/[\d.]+/css/all\.min\.css"),
     f"{STATIC_PREFIX}/font-awesome/css/all.min.css"),
)
_EXTERNAL_TAG = re.compile(
    r"<script\b[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>"
    r"|<link\b[^>]*\bhref=[\"']https?://[^>]*>"
    r"|<img\b[^>]*\bsrc=[\"']https?://[^>]*>", re.I | re.S)
PAGE_STYLE = ("body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}"
              "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.3rem .6rem;"
              "text-align:left;vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;"
              "font-variant-numeric:tabular-nums}code{background:#f3f3f3;padding:0 .2rem}")


_LOCAL_TAG = re.compile(r"<(?:script|link)\b[^>]*" + re.escape(STATIC_PREFIX) + r"[^>]*>", re.I | re.S)
_SRI = re.compile(r"\s(?:integrity|crossorigin)=(?:\"[^\"]*\"|'[^']*'|[^\s>]+)", re.I)


def offline_html(text: str) -> str:
    """``text`` (an HTML page) with CDN assets pointed at the local copies (their CDN integrity
    hashes dropped: the local files are other builds) and other external scripts, stylesheets and
    images removed."""
    for pattern, local in CDN_REPLACEMENTS:
        text = pattern.sub(local, text)
    text = _LOCAL_TAG.sub(lambda m: _SRI.sub("", m.group(0)), text)
    return _EXTERNAL_TAG.sub("", text)


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{PAGE_STYLE}</style></head><body>{body}</body></html>")


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _cell(text: str, tag: str) -> str:
    numeric = bool(re.fullmatch(r"[-+]?\d+(\.\d+)?", text.strip()))
    return f"<{tag}{' class=num' if numeric and tag == 'td' else ''}>{_inline(text.strip())}</{tag}>"


def markdown_page(md: str, title: str) -> str:
    """The small Markdown the pipeline writes (headings, pipe tables, lists, paragraphs) as HTML."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c for c in lines[i].strip().strip("|").split("|")])
                i += 1
            rows = [r for r in rows if not all(re.fullmatch(r"\s*:?-{3,}:?\s*", c) for c in r)]
            head, *body = rows or [[]]
            out.append("<table><thead><tr>" + "".join(_cell(c, "th") for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(_cell(c, "td") for c in r) + "</tr>" for r in body)
                       + "</tbody></table>")
            continue
        if m := re.match(r"^(#{1,6})\s+(.*)", line):
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif line.lstrip().startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].lstrip().startswith(("- ", "* ")):
                items.append(f"<li>{_inline(lines[i].lstrip()[2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return page(title, "\n".join(out))


LEDGER_COLUMNS = ("at", "action", "model", "from_version", "to_version", "challenger_version", "reason", "run_id")


def ledger_page(jsonl: str, title: str) -> str:
    """The promotion ledger as a table, newest entry first (an unreadable line is shown as such)."""
    rows = []
    for n, line in enumerate(jsonl.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = {"action": f"(line {n} is not JSON)"}
        rows.append(entry)
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{len(rows)} entries, newest first. "
            "Every promotion decision and every move of the champion alias.</p>",
            "<table><thead><tr>" + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in LEDGER_COLUMNS)
            + "</tr></thead><tbody>"]
    for entry in reversed(rows):
        cells = []
        for col in LEDGER_COLUMNS:
            value = entry.get(col)
            text = "" if value is None else str(value)
            cells.append(_cell(text[:19] if col == "at" else text, "td"))
        body.append("<tr>" + "".join(cells) + "</tr>")
    body.append("</tbody></table>")
    return page(title, "\n".join(body))


#: A use case's name (the same pattern as pavedml.config.NAME_RE, which needs pydantic).
USE_CASE_NAME = re.compile(r"^[a-z][a-z0-9_]{1,40}$")
#: What a GX Data Docs site holds: pages, their styles, scripts, images and fonts, and result JSON.
DATA_DOCS_SUFFIXES = (".html", ".json", ".css", ".js", ".png", ".svg", ".ico", ".gif", ".woff", ".woff2", ".ttf",
                      ".otf")
#: Drift reports in ``drift/dt=<ds>/`` (the PSI history CSV and retrain requests beside them are data).
DRIFT_FILES = (DRIFT_REPORT, EVIDENTLY_REPORT, PSI_TABLE)
#: Readers of one of these pipelines' DAGs (``<use case>_<pipeline>``) may open the area's reports.
AREA_PIPELINES = {
    "validation": ("feature_pipeline",),
    "labels": ("training_pipeline",),  # validation/labels/: written by build_training_set
    "drift": ("drift_monitor",),
    "training": ("training_pipeline",),
    "registry": ("training_pipeline", "model_rollback", "performance_monitor"),
    "performance": ("performance_monitor",),
}
_ODD = re.compile(r"[\x00-\x1f\x7f\\\ud800-\udfff\ufffd]")  # control, backslash, bytes that were not UTF-8


@dataclass(frozen=True)
class Report:
    """A report file: ``path`` relative to the data root, how it is shown (``view``: ``file``,
    ``html`` (Data Docs or Evidently: assets made local), ``markdown`` or ``ledger`` (page only))."""

    path: str
    use_case: str
    area: str
    view: str

    @property
    def dag_ids(self) -> tuple[str, ...]:
        """The DAGs whose readers may open it (``UseCase.dag_id``: ``<use case>_<pipeline>``)."""
        return tuple(f"{self.use_case}_{p}" for p in AREA_PIPELINES[self.area])


def find_report(path: str) -> Report | None:
    """The report at ``path`` (relative to the data root, ``/``-separated), or None when the path is
    not one the pipeline writes reports to. Judged on the name alone (never the disk), so the answer
    tells nothing about what exists:

    * ``<uc>/validation/...``: the validation result JSON and GX Data Docs (pages and their assets);
    * ``<uc>/drift/dt=<ds>/``: ``report.json``, ``evidently.html``, ``psi_table.txt``; and
      ``<uc>/drift/psi_history.png``;
    * ``<uc>/training/<run>/decision.json`` and ``decision.md``, ``model_card.md`` and ``model_card.html``;
    * ``<uc>/registry/ledger.jsonl``, as a page only; ``<uc>/registry/live/v<N>.json`` (a live-evidence decision);
    * ``<uc>/performance/history.png`` and ``<uc>/performance/dt=<ds>/metrics.json`` (realized performance).

    Refused: empty, ``.`` and ``..`` parts, hidden parts (``.tmp-*`` folders being written), control
    characters (``%00``), backslashes, bytes that were not UTF-8 (``%ff``)
    and names longer than a file system allows.
    """
    if not isinstance(path, str) or _ODD.search(path):
        return None
    parts = path.split("/")
    if len(parts) < 3 or len(path.encode()) > 4096 or any(not p or p.startswith(".") or len(p.encode()) > 255
                                                          for p in parts):
        return None
    use_case, area, *rest = parts
    name = parts[-1]
    suffix = PurePosixPath(name).suffix.lower()
    if not USE_CASE_NAME.fullmatch(use_case) or area not in AREA_PIPELINES:
        return None
    view = None
    if area == "validation" and suffix in DATA_DOCS_SUFFIXES:
        view = "html" if suffix == ".html" else "file"
    elif area == "drift" and len(rest) == 2 and rest[0].startswith("dt=") and name in DRIFT_FILES:
        view = "html" if suffix == ".html" else "file"
    elif area == "drift" and rest == [PSI_HISTORY_PLOT]:
        view = "file"
    elif area == "training" and len(rest) == 2 and name in (DECISION_FILE, DECISION_PAGE, CARD_MD):
        view = "markdown" if suffix == ".md" else "file"
    elif area == "training" and len(rest) == 2 and name == CARD_HTML:
        view = "html"
    elif area == "registry" and "/".join([area, *rest]) == LEDGER_VIEW:
        view = "ledger"
    elif area == "registry" and len(rest) == 2 and rest[0] == "live" and re.fullmatch(r"v[0-9]+\.json", name):
        view = "file"
    elif area == "performance" and (rest == [PERFORMANCE_PLOT]
                                    or (len(rest) == 2 and rest[0].startswith("dt=") and name == PERFORMANCE_DAY)):
        view = "file"
    if view is not None and area == "validation" and rest[0] == "labels":
        area = "labels"
    return None if view is None else Report(path=path, use_case=use_case, area=area, view=view)
