"""One-screen failure summaries: what failed in plain words first, then the evidence, then where
the full report is and how to rerun. Printed as the last thing a failing step writes.

A summary stays one screen whatever the data holds: an evidence line (it quotes data values) is
cut at :data:`pavedml.redact.VALUE_LIMIT` characters (``... (N chars)``), a message line at
:data:`MESSAGE_LINE_LIMIT`, the report, quarantine and next-step lines (our own paths, which the UI
links to) at :data:`PATH_LIMIT`; newlines inside a value show as ``\\n``, the message keeps at most
:data:`MESSAGE_LINES` lines, and credentials in URLs are masked (:func:`pavedml.redact.redact_urls`)."""

from __future__ import annotations

from pavedml.errors import PavedMLError
from pavedml.redact import clip

RULE = "=" * 78
MESSAGE_LINES = 20
MESSAGE_LINE_LIMIT = 500
EVIDENCE_LINES = 12
PATH_LIMIT = 1000


def failure_summary(step: str, use_case: str, ds: str | None, exc: PavedMLError) -> str:
    d = exc.details
    lines = [RULE, f"FAILED {clip(step, 80)} [{clip(exc.reason, 80)}] use case={clip(use_case, 80)} "
                   f"interval={clip(ds, 80) if ds else '-'}"]
    message = str(exc.message).splitlines() or [""]
    lines += [clip(line, MESSAGE_LINE_LIMIT) for line in message[:MESSAGE_LINES]]
    if len(message) > MESSAGE_LINES:
        lines.append(f"... and {len(message) - MESSAGE_LINES} more line(s)")
    evidence = d.get("evidence") or []
    if isinstance(evidence, str):
        evidence = [evidence]
    for item in evidence[:EVIDENCE_LINES]:
        lines.append(f"  - {clip(item)}")
    if len(evidence) > EVIDENCE_LINES:
        lines.append(f"  ... and {len(evidence) - EVIDENCE_LINES} more (see the report)")
    for key, label in (("report", "Report"), ("quarantine", "Quarantined at"), ("next", "Next step")):
        if d.get(key):
            lines.append(f"{label}: {clip(d[key], PATH_LIMIT)}")
    lines.append(RULE)
    return "\n".join(lines)
