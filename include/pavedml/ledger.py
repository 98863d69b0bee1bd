"""The promotion ledger: the audit trail of every promotion decision and champion move.

The ledger is one immutable file per entry (``registry/ledger/<time>-<digest>.json``, the digest
of the entry's content), so working copies synced through the lake only ever add files to each
other and no host's entry can overwrite another's. ``registry/ledger.jsonl`` is the view people
and the report app read: every entry known to this working copy, oldest first, rebuilt after each
append and after a lake pull brought entries. A line found in that view but in no entry file (a
ledger written before entry files, or by another host) becomes an entry file first, so the view
can be overwritten by a stale copy without losing anything.

Core (no step imports it from above): :mod:`pavedml.steps.registry` appends, :mod:`pavedml.lake`
rebuilds the view after a pull.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import re
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from pavedml import layout, storage
from pavedml.context import StepContext

log = logging.getLogger(__name__)
#: The folder of entry files, beside the view (``Layout.ledger_entries`` beside ``Layout.ledger``).
LEDGER_ENTRIES = PurePosixPath(layout.LEDGER_ENTRIES).name


@contextmanager
def flocked(lock_file: Path):
    """An exclusive ``flock`` on ``lock_file`` (created with its folder): one host's processes only."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _canonical(entry: dict) -> str:
    return json.dumps(entry, sort_keys=True, default=str)


def _entry_name(text: str, at: str) -> str:
    stamp = re.sub(r"[^0-9]", "", at)[:20] or "0"
    return f"{stamp}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"


def _ledger_locked(path: Path):
    """Serializes the writers of one working copy's ledger view (entry files need no lock)."""
    return flocked(path.parent / ".ledger.lock")


def _write_entry(folder: Path, text: str, at: str) -> None:
    target = folder / _entry_name(text, at)
    if target.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    with storage.atomic_path(target) as tmp:
        tmp.write_text(text + "\n")


def _read_entries(path: Path) -> list[dict]:
    """Every entry of the working copy: the entry files plus lines of the view no file holds yet."""
    folder = path.parent / LEDGER_ENTRIES
    seen: dict[str, dict] = {}
    if folder.is_dir():
        for file in sorted(folder.glob("*.json")):
            if file.name.startswith("."):  # a write in progress
                continue
            try:
                entry = json.loads(file.read_text())
            except (OSError, ValueError):
                log.warning("ledger entry %s is unreadable; skipped", file)
                continue
            seen.setdefault(_canonical(entry), entry)
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"action": "unreadable", "line": line}
            seen.setdefault(_canonical(entry), entry)
    return sorted(seen.values(), key=lambda e: (str(e.get("at", "")), _canonical(e)))


def rebuild_ledger(path: Path) -> int:
    """Give every entry of the view at ``path`` its file, then rewrite the view from all entry
    files (oldest first). Returns the number of entries."""
    path = Path(path)
    with _ledger_locked(path):
        entries = _read_entries(path)
        folder = path.parent / LEDGER_ENTRIES
        for entry in entries:
            _write_entry(folder, _canonical(entry), str(entry.get("at", "")))
        if entries or path.exists():
            with storage.atomic_path(path) as tmp:
                tmp.write_text("".join(_canonical(e) + "\n" for e in entries))
    return len(entries)


def append_ledger(ctx: StepContext, entry: dict) -> None:
    path = ctx.layout.ledger
    entry = {"at": datetime.now(UTC).isoformat(), "use_case": ctx.use_case.name, "dag_id": ctx.dag_id,
             "run_id": ctx.run_id, **entry}
    entry = json.loads(_canonical(entry))  # the form it is read back in
    with _ledger_locked(path):
        _write_entry(path.parent / LEDGER_ENTRIES, _canonical(entry), entry["at"])
    rebuild_ledger(path)


def read_ledger(ctx_or_path: StepContext | str | Path) -> list[dict]:
    """Every ledger entry this working copy knows, oldest first."""
    path = ctx_or_path.layout.ledger if isinstance(ctx_or_path, StepContext) else Path(ctx_or_path)
    return _read_entries(path)
