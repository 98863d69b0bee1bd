"""The registry audit export: every promotion decision, champion move, approval and rollback of
a use case as JSON lines in Elastic Common Schema (ECS) field names, for a SIEM.

Source: the promotion ledger (:mod:`pavedml.ledger`): one immutable file per entry, only ever added
to, pushed to the lake by the step that wrote it (so the lake holds the append-only record; with a
lake configured the export pulls it first). One ledger entry gives one ECS document:

===========================  =====================================================================
``@timestamp``               when the entry was written (UTC, ISO 8601)
``ecs.version``              the ECS version the names follow (:data:`ECS_VERSION`)
``event.kind``               ``event``
``event.category``           ``["configuration"]`` (a model registry's state)
``event.type``               ``["change"]`` when the champion moved (promoted, rolled back), else ``["info"]``
``event.action``             ``model-promoted``, ``model-rolled-back``, ``model-kept`` (policy kept the
                             champion), ``model-rejected``, ``model-shadow``, ``model-superseded``,
                             ``approval-rejected``... (:func:`action_name`)
``event.outcome``            ``success`` (the entry records what happened)
``event.reason``             the ledger's reason (why: policy reasons, approver's comment, rollback reason)
``event.id``                 a digest of the entry (stable: re-exporting gives the same ids)
``event.dataset``            ``pavedml.registry``
``service.name``/``type``    ``pavedml`` / ``mlops``
``user.name``                the approver, when a person approved or rejected (``related.user`` too)
``labels.*``                 ``use_case``, ``model``, ``from_version``, ``to_version``, ``challenger_version``,
                             ``dag_id``, ``run_id`` (strings)
``pavedml.ledger``           the ledger entry itself (metrics, approval...)
===========================  =====================================================================

``python -m pavedml audit export [--use-case NAME] [--since YYYY-MM-DD] [--until YYYY-MM-DD]
[--output PATH|s3://...]`` prints the documents (oldest first) or writes them atomically to a file
or an S3 object (e.g. in the lake, for the SIEM's S3 input).
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import date
from typing import Any

ECS_VERSION = "8.11.0"
#: ledger actions that move the champion alias
MOVES = ("promoted", "rolled_back")
LABELS = ("use_case", "model", "from_version", "to_version", "challenger_version", "dag_id", "run_id")


def action_name(action: str) -> str:
    """The ECS ``event.action`` of a ledger action (``rolled_back`` -> ``model-rolled-back``)."""
    words = {"keep_champion": "kept", "reject": "rejected"}.get(action, action).replace("_", "-")
    return words if words.startswith("approval-") else f"model-{words}"


def document(entry: dict[str, Any]) -> dict[str, Any]:
    """One ledger entry as an ECS document (see the module's table)."""
    canonical = json.dumps(entry, sort_keys=True, default=str)
    action = str(entry.get("action", "unknown"))
    approval = entry.get("approval") or {}
    doc: dict[str, Any] = {
        "@timestamp": entry.get("at"),
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": "event", "category": ["configuration"],
                  "type": ["change"] if action in MOVES else ["info"], "action": action_name(action),
                  "outcome": "success", "reason": entry.get("reason", ""),
                  "id": hashlib.sha256(canonical.encode()).hexdigest()[:32], "dataset": "pavedml.registry"},
        "service": {"name": "pavedml", "type": "mlops"},
        "labels": {k: str(entry[k]) for k in LABELS if entry.get(k) not in (None, "")},
        "pavedml": {"ledger": entry},
    }
    if approval.get("by"):
        doc["user"] = {"name": approval["by"], **({"id": approval["by_id"]} if approval.get("by_id") else {})}
        doc["related"] = {"user": [approval["by"]]}
    return doc


def documents(entries: list[dict[str, Any]], since: date | None = None, until: date | None = None) -> list[dict]:
    """The ECS documents of ``entries`` whose day is within [since, until], oldest first."""
    out = []
    for entry in sorted(entries, key=lambda e: str(e.get("at", ""))):
        day = str(entry.get("at", ""))[:10]
        if (since and day < since.isoformat()) or (until and day > until.isoformat()):
            continue
        out.append(document(entry))
    return out


def export(use_cases: list[str], since: date | None = None, until: date | None = None) -> list[dict]:
    """Every use case's documents, oldest first (pulling each ledger from the lake when there is one)."""
    from pavedml import pullset
    from pavedml.lake import Lake, _guarded
    from pavedml.layout import Layout
    from pavedml.ledger import read_ledger
    from pavedml.settings import get_settings

    s = get_settings()
    entries = []
    for name in use_cases:
        lake = Lake.for_use_case(name, s)
        if lake is not None:  # only the records (the ledger among them), no dated partition
            _guarded(lake, "pull", pullset.PullSet("audit export", frozenset(), frozenset()))
        entries += read_ledger(Layout.for_use_case(name, s).ledger)
    return documents(entries, since, until)


def audit_command(args) -> dict | None:
    """``python -m pavedml audit export``: see the module's doc."""
    from pavedml import storage
    from pavedml.config import load_all
    from pavedml.settings import get_settings

    names = [args.use_case] if args.use_case else [uc.name for uc in load_all(get_settings().use_cases_dir)]
    docs = export(names, args.since, args.until)
    text = "".join(json.dumps(d, sort_keys=True, default=str) + "\n" for d in docs)
    if not args.output:
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    storage.write_bytes(args.output, text.encode())
    return {"documents": len(docs), "output": args.output, "use_cases": names,
            "since": args.since.isoformat() if args.since else None}
