"""Retrain requests: one file, one lock, one cooldown for every monitor that asks for retraining.

The drift monitor (PSI) and the performance monitor (realized metrics) emit the same Asset
(``<use case>.retrain_request``, the training DAG is scheduled on it); before a step returns a
request it appends it here, under an exclusive lock, to ``layout.retrain_requests`` (JSON lines).
A request whose dedup key (e.g. the window and data hash) equals an earlier one of the same
source is refused (a rerun never asks twice), and so is any request within ``drift.cooldown_days``
of an earlier one unless both are the same monitor's on the same day (its own reruns and other
windows that day). A drift request and a performance request on the same day are NOT both let
through: one retraining answers both monitors.
"""

from __future__ import annotations

import fcntl
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pavedml.context import StepContext
from pavedml.errors import SkipStep


def previous_requests(ctx: StepContext) -> list[dict]:
    """Every request recorded so far (oldest first; empty when there is none)."""
    path = ctx.layout.retrain_requests
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record_request(ctx: StepContext, key: dict[str, Any], extra: dict[str, Any], *,
                   source: str = "drift") -> dict:
    """Append one request (``{"at", "source", **key, **extra}``) unless one with the same ``key``
    fields (and source) was made before, or the cooldown since the newest request has not passed:
    then :class:`SkipStep` saying which (the task is skipped: no Asset event). Returns the record."""
    uc, ds = ctx.use_case, ctx.ds_iso
    path = ctx.layout.retrain_requests
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        previous = [json.loads(line) for line in fh.read().splitlines() if line.strip()]
        for p in previous:
            if p.get("source", "drift") == source and all(p.get(k) == v for k, v in key.items()):
                what = ", ".join(f"{k} {v}" for k, v in key.items() if k != "data_hash")
                raise SkipStep(f"a retrain request for {what} was already made at {p['at']}")
        if previous and uc.drift.cooldown_days:
            cooldown = timedelta(days=uc.drift.cooldown_days)
            blocking = [p for p in previous
                        if ctx.ds < date.fromisoformat(p["ds"]) + cooldown
                        and not (p["ds"] == ds and p.get("source", "drift") == source)]
            if blocking:
                last = max(blocking, key=lambda p: (p["ds"], p["at"]))
                until = date.fromisoformat(last["ds"]) + cooldown
                other = last.get("source", "drift")
                same_day = (f"; one retraining answers both monitors (the {other} monitor asked on {ds})"
                            if last["ds"] == ds else "")
                raise SkipStep(f"cooldown: last retrain request on {last['ds']} ({other}, at {last['at']})"
                               f"{same_day}; next one allowed from {until}")
        record = {"at": datetime.now(UTC).isoformat(), "source": source, **key, **extra}
        fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
    return record
