"""One-screen failure summaries: what failed in plain words first, then the evidence, then where
the full report is and how to rerun. Printed as the last thing a failing step writes."""

from __future__ import annotations

from pavedml.errors import PavedMLError

RULE = "=" * 78


def failure_summary(step: str, use_case: str, ds: str | None, exc: PavedMLError) -> str:
    d = exc.details
    lines = [RULE, f"FAILED {step} [{exc.reason}] use case={use_case} interval={ds or '-'}", exc.message]
    for item in d.get("evidence", [])[:12]:
        lines.append(f"  - {item}")
    if len(d.get("evidence", [])) > 12:
        lines.append(f"  ... and {len(d['evidence']) - 12} more (see the report)")
    for key, label in (("report", "Report"), ("quarantine", "Quarantined at"), ("next", "Next step")):
        if d.get(key):
            lines.append(f"{label}: {d[key]}")
    lines.append(RULE)
    return "\n".join(lines)
