"""Model cards: one per registered version, as Markdown and as a self-contained HTML page (no
script, no external style or font), rendered from the evaluation's decision record.

The record (written by :func:`pavedml.steps.evaluation.evaluate_challenger`) holds everything the
card shows: the use case's governance, the training set's data versions (snapshot hashes, date
ranges, digests), features, training parameters, holdout metrics with confidence intervals, slice
metrics, fairness results, permutation importance, the decision, and once the promotion step ran,
the approval and the registry move. :func:`render` is pure: the same record gives the same card.
"""

from __future__ import annotations

import html
from typing import Any

from pavedml.layout import CARD_HTML, CARD_MD

__all__ = ["CARD_ARTIFACTS", "CARD_HTML", "CARD_MD", "markdown", "page", "render", "sections", "summary"]
#: Where the card's files go in the version's MLflow run (and beside the decision record: layout).
CARD_ARTIFACTS = "card"
#: The registered version's description is the card's summary, at most this long.
SUMMARY_LIMIT = 1500

Block = tuple[str, Any]  # ("p", text) | ("list", [text]) | ("table", (headers, rows))


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary(record: dict) -> str:
    """One paragraph: which version, its outcome and why, its primary metric with its interval,
    fairness, and who owns it (the registered version's description)."""
    chal = record["challenger"]
    primary = (record.get("policy") or {}).get("primary_metric", "")
    ci = chal.get("metrics_ci", {}).get(primary) or {}
    metric = chal["metrics"].get(primary)
    interval = f" [{_fmt(ci.get('lo'))}, {_fmt(ci.get('hi'))}]" if ci.get("lo") is not None else ""
    fairness = record.get("fairness")
    fair = ("fairness not configured" if not fairness else
            f"fairness violated ({len(fairness['violations'])})" if not fairness["ok"] else
            "fairness limits hold" if fairness.get("judged", True) else "fairness not judged (too few rows per group)")
    gov = (record.get("governance") or {})
    approval = record.get("approval") or {}
    approved = (f"; {approval['status']} by {approval.get('by') or 'unknown'}" if approval.get("status") else "")
    moved = record.get("registry_move") or {}
    move = f"; registry: {moved['action']}" if moved.get("action") else ""
    reasons = "; ".join(record.get("reasons", []))
    text = (f"{record['model']} v{chal['version']} ({record.get('training', {}).get('family', '?')}, trained through "
            f"{record.get('trained_through', '?')}): {record['outcome']}{approved}{move}. {primary} {_fmt(metric)}"
            f"{interval} on {record['holdout_rows']} holdout rows; {fair}. Owner {gov.get('owner') or '?'}"
            f" ({gov.get('data_classification', 'internal')} data). {reasons}")
    return text if len(text) <= SUMMARY_LIMIT else text[:SUMMARY_LIMIT - 3] + "..."


def sections(record: dict) -> list[tuple[str, list[Block]]]:
    """The card as titled sections of paragraphs, lists and tables (rendered by :func:`markdown` and :func:`page`)."""
    chal, champ = record["challenger"], record.get("champion")
    gov = (record.get("governance") or {})
    out: list[tuple[str, list[Block]]] = [("Summary", [("p", summary(record))])]
    out.append(("Purpose and ownership", [("table", (["", ""], [
        ["Use case", f"{record.get('use_case', '')}: {record.get('description', '')}"],
        ["Intended use", gov.get("intended_use") or "(not stated: set governance.intended_use)"],
        ["Limitations", gov.get("limitations") or "(not stated: set governance.limitations)"],
        ["Owner", gov.get("owner", "")], ["Business unit", gov.get("business_unit", "")],
        ["Regulatory context", gov.get("regulatory_context", "")],
        ["Data classification", gov.get("data_classification", "")]]))]))
    data = (record.get("dataset") or {})
    rows = [[split, str((data.get("rows") or {}).get(split, "")), " .. ".join((data.get("ranges") or {}).get(split, [])),
             ((data.get("digests") or {}).get(split) or "")[:16]] for split in ("train", "validation", "holdout")]
    snapshots = (data.get("feature_snapshots") or {})
    out.append(("Data", [
        ("p", f"Training window {data.get('window_days', '?')} days; labelled snapshot days "
              f"{(data.get('snapshot_days') or ['?'])[0]} .. {(data.get('snapshot_days') or ['?'])[-1]}; "
              f"{data.get('dropped_without_features', 0)} label rows had no features at their time."),
        ("table", (["split", "rows", "label time range", "content digest (sha256)"], rows)),
        ("table", (["snapshot day", "raw snapshot sha256"], [[d, h] for d, h in sorted(snapshots.items())])),
    ]))
    feats = (record.get("features") or {})
    out.append(("Features", [("list", [f"numeric: {', '.join(feats.get('numeric', [])) or '-'}",
                                       f"categorical: {', '.join(feats.get('categorical', [])) or '-'}",
                                       f"evaluation only (never given to the model): "
                                       f"{', '.join(feats.get('evaluation_only', [])) or '-'}"])]))
    training = (record.get("training") or {})
    out.append(("Training", [("table", (["", ""], [
        ["Family", training.get("family", "")],
        ["Parameters", ", ".join(f"{k}={v}" for k, v in sorted(training.get("params", {}).items()))],
        ["MLflow run", training.get("run_id", "")], ["DAG run", record.get("dag_run", "")],
        ["Code version", training.get("git_commit", "")]]))]))
    cis = chal.get("metrics_ci", {})
    mrows = []
    for metric, value in chal["metrics"].items():
        ci = cis.get(metric) or {}
        other = champ["metrics"].get(metric) if champ else None
        mrows.append([metric, _fmt(value),
                      f"[{_fmt(ci.get('lo'))}, {_fmt(ci.get('hi'))}]" if ci.get("lo") is not None else "",
                      _fmt(other), f"{value - other:+.4f}" if other is not None else ""])
    blocks: list[Block] = [("p", f"Holdout of {record['holdout_rows']} rows (the most recent labelled days); 95% "
                                 f"intervals. Champion: {'v' + champ['version'] if champ else 'none'}."),
                           ("table", (["metric", "challenger", "95% interval", "champion", "delta"], mrows))]
    out.append(("Offline metrics", blocks))
    slices = chal.get("slices") or {}
    if slices:
        primary = (record.get("policy") or {}).get("primary_metric", "")
        srows = [[name, _fmt(vals.get(primary)),
                  _fmt((champ or {}).get("slices", {}).get(name, {}).get(primary))] for name, vals in slices.items()]
        out.append(("Slice metrics", [("table", (["slice", f"challenger {primary}", f"champion {primary}"], srows))]))
    fairness = record.get("fairness")
    if fairness:
        fblocks: list[Block] = [("p", "Limits: " + (", ".join(f"{k} spread <= {v}" for k, v in fairness["limits"].items())
                                                    or "none (reported only)")
                                 + f"; groups under {fairness['min_group_rows']} rows are reported, not judged. "
                                 + ("Every limit holds." if fairness["ok"] else "VIOLATED:"))]
        if fairness["violations"]:
            fblocks.append(("list", fairness["violations"]))
        for col, info in fairness["columns"].items():
            metrics = sorted({m for g in info["groups"].values() for m in g["metrics"]})
            frows = [[f"{col}={g}", str(v["rows"]), "yes" if v["judged"] else "no (too few rows)",
                      *(_fmt(v["metrics"].get(m), 3) for m in metrics)] for g, v in info["groups"].items()]
            frows += [[f"{col} spread", "", "", *(_fmt(info["spreads"].get(m, {}).get("difference"), 3)
                                                  for m in metrics)]]
            fblocks.append(("table", (["group", "rows", "judged", *metrics], frows)))
            if info.get("note"):
                fblocks.append(("p", info["note"]))
        out.append(("Fairness", fblocks))
    importance = record.get("importance")
    if importance:
        irows = [[f["feature"], _fmt(f["mean"]), _fmt(f["std"])] for f in importance["features"][:15]]
        out.append(("Explanation", [("p", f"Permutation importance on {importance['rows']} holdout rows "
                                          f"({importance['repeats']} shuffles each): the {importance['meaning']} when "
                                          "a feature's values are shuffled."),
                                    ("table", (["feature", "importance", "std"], irows))]))
    out.append(("Decision", [("p", f"Outcome: {record['outcome']} (decided {record.get('decided_at', '')})"),
                             ("list", record.get("reasons", []))]))
    approval = record.get("approval")
    arows = ([["status", approval.get("status", "")], ["by", approval.get("by") or ""],
              ["comment", approval.get("comment") or ""], ["at", approval.get("at") or ""]]
             if approval else [["status", "not required (evaluation.require_approval: false)"]])
    out.append(("Approval", [("table", (["", ""], arows))]))
    moved = record.get("registry_move")
    if moved:
        out.append(("Registry", [("p", f"{moved.get('action')}: champion "
                                       f"{'v' + str(moved['from_version']) if moved.get('from_version') else 'none'} -> "
                                       f"{'v' + str(moved['to_version']) if moved.get('to_version') else 'none'} "
                                       f"at {moved.get('at', '')}")]))
    return out


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(record: dict) -> str:
    """The card as Markdown."""
    chal = record["challenger"]
    lines = [f"# Model card: {record['model']} v{chal['version']}", ""]
    for title, blocks in sections(record):
        lines += [f"## {title}", ""]
        for kind, body in blocks:
            if kind == "p":
                lines += [body, ""]
            elif kind == "list":
                lines += [f"- {item}" for item in body] + [""]
            else:
                headers, rows = body
                lines += ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
                          "|" + "---|" * len(headers)]
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows] + [""]
    return "\n".join(lines)


STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
         "table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
         "text-align:left;vertical-align:top}th{background:#f3f3f3}h2{border-bottom:1px solid #ddd;margin-top:2rem}")


def page(record: dict) -> str:
    """The card as one self-contained HTML page (inline style; no script, no external resource)."""
    e = html.escape
    chal = record["challenger"]
    title = f"Model card: {record['model']} v{chal['version']}"
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{e(title)}</h1>"]
    for name, blocks in sections(record):
        parts.append(f"<h2>{e(name)}</h2>")
        for kind, body in blocks:
            if kind == "p":
                parts.append(f"<p>{e(body)}</p>")
            elif kind == "list":
                parts.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in body) + "</ul>")
            else:
                headers, rows = body
                head = "" if not any(headers) else "<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in headers) + "</tr>"
                parts.append("<table>" + head + "".join(
                    "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows) + "</table>")
    parts.append("</body></html>")
    return "".join(parts)


def render(record: dict) -> tuple[str, str]:
    """(Markdown, HTML) of the card of ``record``."""
    return markdown(record), page(record)
