"""``python -m pavedml status`` (``make status``): one terminal screen for on-call.

The current champion (version, holdout metrics, since when), the last run of every DAG of the use
case, the latest realized performance (champion and shadow challenger on the newest labelled day,
with the floor, the training holdout and the plot), the latest PSI table and the open quarantines.
"""

from __future__ import annotations

import json
import logging

from pavedml import storage
from pavedml.config import LOWER_IS_BETTER, get_use_case
from pavedml.layout import DRIFT_REPORT, PSI_TABLE, QUARANTINE_REASON, Layout
from pavedml.settings import get_settings

log = logging.getLogger(__name__)


def _champion_lines(uc) -> list[str]:
    from pavedml.adapters.tracking import CHAMPION, PREVIOUS, alias_version, connect

    try:
        client, _ = connect(get_settings(), uc.name)
        mv = alias_version(client, uc.model.registered_name, CHAMPION)
        prev = alias_version(client, uc.model.registered_name, PREVIOUS)
    except Exception as exc:  # status must render even when MLflow is down
        return [f"  MLflow unavailable: {str(exc)[:120]}"]
    if mv is None:
        return ["  no champion yet"]
    metrics = ", ".join(f"{k.removeprefix('holdout_')}={float(v):.3f}" for k, v in sorted(mv.tags.items())
                        if k.startswith("holdout_") and k[8:] in ("roc_auc", "pr_auc", "f1", "brier", "rmse", "mae", "r2"))
    tags = mv.tags
    governance = [f"  owner {tags['governance.owner']} ({tags.get('governance.data_classification', '?')} data); "
                  f"fairness {'ok' if tags.get('fairness.ok') == 'true' else tags.get('fairness.ok', 'not checked')}; "
                  f"approval {tags.get('approval.status', '-')}" + (f" by {tags['approval.by']}" if tags.get('approval.by') else "")
                  ] if "governance.owner" in tags else []
    card = [f"  model card: {tags['model_card']}"] if tags.get("model_card") else []
    return [f"  {uc.model.registered_name} v{mv.version}  since {tags.get('champion_since', '?')[:19]}",
            f"  holdout: {metrics}", *governance, *card,
            f"  previous_champion: v{prev.version}" if prev else "  previous_champion: -"]


def _run_lines(uc) -> list[str]:
    from pavedml.airflow.runs import last_run_lines  # the Airflow metadata database

    return last_run_lines(uc)


def _psi_lines(layout: Layout) -> list[str]:
    reports = sorted(layout.root.glob(f"drift/dt=*/{DRIFT_REPORT}"))
    if not reports:
        return ["  no drift check yet"]
    record = storage.read_json(str(reports[-1]))
    table = (reports[-1].parent / PSI_TABLE).read_text().splitlines()
    head = f"  window {record['window']}  status {record['status'].upper()}  model v{record['model_version']}"
    output = [line for line in table if line.lstrip().startswith("prediction ")][-1:]
    rows = [line for line in table if line not in output]
    return ([head] + [f"  {line}" for line in rows[:9]] + (["  ..."] if len(rows) > 9 else [])
            + [f"  {line}" for line in output])  # the model output's PSI, whatever the feature count


def _version_key(version: str) -> tuple[int, int, str]:
    """Registry versions in number order ("9" before "10"); anything else after them, as text."""
    text = str(version)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _bound(value) -> str:
    """An interval bound, "n/a" when there is none (performance.bootstrap 0, too few rows)."""
    return "n/a" if value is None else f"{value:.4f}"


def _performance_lines(uc, layout: Layout) -> list[str]:
    """The newest labelled day's realized primary metric per model version (value, interval, rows),
    the floor and the champion's training holdout, and the plot."""
    records = sorted(layout.root.glob("performance/dt=*/metrics.json"))
    if not records:
        return [f"  no labelled scored day yet (labels land {uc.label.delay_days} day(s) after scoring)"]
    record = storage.read_json(str(records[-1]))
    pm = record["primary_metric"]
    lines = [f"  {record['ds']}  {pm} (realized, {record['confidence']:.0%} interval)"]
    versions = sorted({b["model_version"] for b in record["versions"] if b["role"] == "champion"}, key=_version_key)
    for b in sorted(record["versions"], key=lambda b: (b["role"] != "champion", _version_key(b["model_version"]))):
        m = b["metrics"].get(pm) or {}
        value = "n/a" if m.get("value") is None else f"{m['value']:.4f} [{_bound(m.get('lo'))}, {_bound(m.get('hi'))}]"
        role = "champion" if b["role"] == "champion" else "shadow challenger"
        lines.append(f"  {role:<18} v{b['model_version']:<4} {value}  n={b['n']}")
    floor = uc.performance_floors.get(pm)
    holdout = "?"
    try:
        from pavedml.adapters.tracking import connect

        client, _ = connect(get_settings(), uc.name)
    except Exception:  # status must render even when MLflow is down
        client, holdout = None, "? (MLflow unavailable)"
    if client is not None and versions:
        try:
            tags = client.get_model_version(uc.model.registered_name, versions[-1]).tags or {}
            holdout = f"{float(tags[f'holdout_{pm}']):.4f} (v{versions[-1]})" if f"holdout_{pm}" in tags else "?"
        except Exception:  # an unregistered version (or a registry gone since): no line to compare with
            holdout = f"? (v{versions[-1]} not in the registry)"
    lines.append(f"  {'ceiling' if pm in LOWER_IS_BETTER else 'floor'} {floor if floor is not None else '-'}"
                 f"  training holdout {holdout}")
    if layout.performance_plot.exists():
        lines.append(f"  plot: {layout.performance_plot}")
    return lines


def _quarantine_lines(layout: Layout) -> list[str]:
    root = layout.quarantine_root
    found = [p for pattern in ("dt=*/*", "labels/dt=*/*") for p in root.glob(pattern) if p.is_dir()] \
        if root.exists() else []
    found.sort(key=lambda p: (p.parent.name, p.name))
    lines = []
    for q in found[-8:]:
        reason = "validation_failed"
        if (q / QUARANTINE_REASON).exists():
            reason = json.loads((q / QUARANTINE_REASON).read_text())["reason"]
        what = "labels " if q.parent.parent.name == "labels" else ""
        lines.append(f"  {what}{q.parent.name} {q.name[:12]}  {reason}  {q}")
    return lines or ["  none"]


def render(use_case: str) -> str:
    uc = get_use_case(use_case)
    layout = Layout.for_use_case(uc.name, get_settings())
    out = [f"pavedml status: {uc.name}", "", "Champion"] + _champion_lines(uc)
    out += ["", "Last DAG runs"] + _run_lines(uc)
    out += ["", "Realized performance"] + _performance_lines(uc, layout)
    out += ["", "Latest PSI"] + _psi_lines(layout)
    out += ["", "Quarantined batches"] + _quarantine_lines(layout)
    return "\n".join(out)


def status_command(args) -> None:
    """Prints the screen on stdout (a human command: no JSON result line)."""
    logging.getLogger().setLevel(logging.WARNING)
    print(render(args.use_case), flush=True)
