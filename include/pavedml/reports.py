"""Report files as pages a person reads in the browser, with no internet access: used by the
``pavedml`` plugin's report app (``/pavedml/reports/...``). Standard library only.

* GX Data Docs reference Bootstrap, jQuery and Font Awesome on public CDNs: :func:`offline_html`
  points those at the copies the app serves from the pinned ``xstatic-*`` packages
  (``/pavedml/static/<package>/...``) and drops every other external script, stylesheet and image
  (charts and the GX logo), so a page opens complete on a network without internet.
* A promotion decision (``decision.md``, next to ``decision.json``) renders as an HTML page with its
  metric table; the promotion ledger (``ledger.jsonl``) as a table, newest entry first.
"""

from __future__ import annotations

import html
import json
import re

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
