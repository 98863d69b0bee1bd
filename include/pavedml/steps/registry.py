"""promote_challenger and rollback_model: the only code that moves the ``champion`` alias.

Every move is compare-and-set under a lock: the champion is re-read, and if it is no longer the
version the decision was made against, the move is refused (so two racing promotions can never
leave ``champion`` on the model that lost). ``previous_champion`` always names the model the
last move replaced, and every decision and move is appended to the ledger (the audit trail).

The lock must be as shared as the registry. With ``PAVEDML_LOCK_URL`` set (the production
profile: every worker host has its own working copy of the data root) it is a PostgreSQL
advisory lock keyed by the registered model name, held on a connection of its own: every host
waits on the same lock, and a killed holder releases it with its session. Without it, an
``flock`` in the data root: safe for the processes of one host only.

The ledger is one immutable file per entry (``registry/ledger/<time>-<digest>.json``, the digest
of the entry's content), so working copies synced through the lake only ever add files to each
other and no host's entry can overwrite another's. ``registry/ledger.jsonl`` is the view people
and the report app read: every entry known to this working copy, oldest first, rebuilt after each
append and after a lake pull brought entries. A line found in that view but in no entry file (a
ledger written before entry files, or by another host) becomes an entry file first, so the view
can be overwritten by a stale copy without losing anything.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import re
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pavedml import storage
from pavedml.context import StepContext
from pavedml.errors import ConfigError, RegistryError
from pavedml.results import PromotionResult

log = logging.getLogger(__name__)
MAX_REEVALUATIONS = 3
#: How long a promotion waits for the shared lock before it fails (retryable).
LOCK_WAIT_SECONDS = 300
LOCK_CONNECT_SECONDS = 10
LEDGER_ENTRIES = "ledger"  # folder of entry files, beside ledger.jsonl


class ChampionChanged(RegistryError):
    """The champion moved between the decision and the move (a race another promotion won)."""


class LockUnavailableError(RegistryError):
    """The shared lock server (PAVEDML_LOCK_URL) could not be reached or the lock not taken in
    time; nothing was moved, a retry may succeed."""

    reason = "lock_unavailable"
    exit_code = 1


# -- the lock
def shown_url(url: str) -> str:
    """``url`` without its password (safe to print)."""
    return re.sub(r"^([a-zA-Z][\w+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", url)


def libpq_url(url: str) -> str:
    """A libpq connection URI from a PostgreSQL URL, also SQLAlchemy's ``postgresql+driver://``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ConfigError(f"PAVEDML_LOCK_URL={shown_url(url)!r}: expected postgresql://user:password@host:port/db",
                          details={"next": "point PAVEDML_LOCK_URL at a PostgreSQL database every worker host "
                                           "reaches, or unset it on a single host"})
    return f"postgresql://{rest}"


def lock_key(name: str) -> int:
    """The advisory lock key (a signed 64-bit integer, stable across processes) of a registered model."""
    return int.from_bytes(hashlib.sha256(f"pavedml:champion:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def advisory_lock(url: str, name: str, wait_seconds: float = LOCK_WAIT_SECONDS):
    """Hold the PostgreSQL advisory lock of registered model ``name`` (session level, own connection)."""
    import psycopg2

    dsn = libpq_url(url)
    password = re.match(r"[^:/@]*:([^@/]*)@", dsn.removeprefix("postgresql://"))
    try:
        conn = psycopg2.connect(dsn, connect_timeout=LOCK_CONNECT_SECONDS,
                                application_name=f"pavedml champion lock {name}"[:63])
    except psycopg2.Error as exc:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if password and password.group(1):
            cause = cause.replace(password.group(1), "***")
        raise LockUnavailableError(
            f"lock server {shown_url(url)} is unreachable ({cause}); the champion of {name} was not moved",
            details={"evidence": [f"PAVEDML_LOCK_URL={shown_url(url)}"],
                     "next": "check that PostgreSQL is up and PAVEDML_LOCK_URL (host, database, credentials) is "
                             "right, then clear the task; it is retried by itself"}) from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(wait_seconds * 1000)}ms",))
            try:
                cur.execute("SELECT pg_advisory_lock(%s)", (lock_key(name),))
            except psycopg2.errors.LockNotAvailable:
                raise LockUnavailableError(
                    f"waited {wait_seconds:.0f}s for the champion lock of {name} on {shown_url(url)}: another "
                    "promotion or rollback still holds it; nothing was moved",
                    details={"next": "see which task holds it (pg_stat_activity, application_name "
                                     f"'pavedml champion lock {name}'); the task is retried by itself"}) from None
        try:
            yield
        finally:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (lock_key(name),))
    finally:
        conn.close()  # also releases the lock if the unlock above failed


@contextmanager
def _flocked(lock_file: Path):
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def registry_lock(path: Path):
    """The single-host lock: an ``flock`` beside the ledger."""
    return _flocked(path.parent / ".champion.lock")


@contextmanager
def champion_lock(ctx: StepContext):
    """The lock every move of ``ctx``'s champion holds: shared across hosts when PAVEDML_LOCK_URL is set."""
    if ctx.settings.lock_url:
        with advisory_lock(ctx.settings.lock_url, ctx.use_case.model.registered_name):
            yield
    else:
        with registry_lock(ctx.layout.ledger):
            yield


# -- the ledger
def _canonical(entry: dict) -> str:
    return json.dumps(entry, sort_keys=True, default=str)


def _entry_name(text: str, at: str) -> str:
    stamp = re.sub(r"[^0-9]", "", at)[:20] or "0"
    return f"{stamp}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"


def _ledger_locked(path: Path):
    """Serializes the writers of one working copy's ledger view (entry files need no lock)."""
    return _flocked(path.parent / ".ledger.lock")


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


def read_ledger(ctx_or_path) -> list[dict]:
    """Every ledger entry this working copy knows, oldest first."""
    path = ctx_or_path.layout.ledger if isinstance(ctx_or_path, StepContext) else Path(ctx_or_path)
    return _read_entries(path)


def move_champion(ctx: StepContext, client, to_version: str, expected_current: str | None, action: str,
                  reason: str, metrics: dict | None = None) -> PromotionResult:
    """Compare-and-set: move ``champion`` to ``to_version`` only if it still is ``expected_current``."""
    from pavedml.adapters.tracking import CHAMPION, PREVIOUS, alias_version

    name = ctx.use_case.model.registered_name
    with champion_lock(ctx):
        current = alias_version(client, name, CHAMPION)
        current_v = str(current.version) if current else None
        if current_v != expected_current:
            raise ChampionChanged(
                f"{name}: champion is v{current_v} now, not v{expected_current} as when this move was decided; "
                f"refusing to move it to v{to_version}",
                details={"next": "another promotion won the race; rerun evaluate_challenger against the new champion"})
        if current_v == str(to_version):
            action, reason = "kept", f"v{to_version} already is the champion"
        else:
            if current_v is not None:
                client.set_registered_model_alias(name, PREVIOUS, current_v)
            client.set_registered_model_alias(name, CHAMPION, str(to_version))
            client.set_model_version_tag(name, str(to_version), "champion_since", datetime.now(UTC).isoformat())
        append_ledger(ctx, {"action": action, "model": name, "from_version": current_v, "to_version": str(to_version),
                            "reason": reason, "metrics": metrics or {}})
    log.info("%s %s: %s -> v%s (%s)", action, name, f"v{current_v}" if current_v else "no champion", to_version,
             reason)
    return PromotionResult(step=action, use_case=ctx.use_case.name, ds=ctx.ds_iso, action=action, model_name=name,
                           from_version=current_v, to_version=str(to_version), reason=reason,
                           ledger=str(ctx.layout.ledger))


def promote_challenger(ctx: StepContext) -> PromotionResult:
    """Act on the decision. If another promotion moved the champion meanwhile, decide again against
    the new champion (same holdout) before moving anything: the loser of a race never wins."""
    from pavedml.steps.evaluation import evaluate_challenger

    path = ctx.layout.decision(ctx.run_key)
    if not path.exists():
        raise RegistryError(f"no promotion decision at {path}", details={"next": "run evaluate_challenger first"})
    for attempt in range(MAX_REEVALUATIONS + 1):
        try:
            return _promote_once(ctx, storage.read_json(str(path)))
        except ChampionChanged as exc:
            if attempt == MAX_REEVALUATIONS:
                raise
            log.warning("%s; deciding again against the new champion", exc.message)
            evaluate_challenger(ctx)
    raise AssertionError("unreachable")


def _promote_once(ctx: StepContext, decision: dict) -> PromotionResult:
    from pavedml.adapters.tracking import setup, unavailable_as_error

    force = ctx.params.force_promote
    reason = ctx.reason
    client, _ = setup(ctx)
    name = ctx.use_case.model.registered_name
    challenger = decision["challenger"]["version"]
    champion = decision["champion"]["version"] if decision.get("champion") else None
    metrics = decision["challenger"]["metrics"]
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        if decision["promote"] or force:
            why = "; ".join(decision["reasons"]) if decision["promote"] else \
                f"FORCED over policy outcome {decision['outcome']} ({'; '.join(decision['reasons'])})"
            result = move_champion(ctx, client, challenger, champion, "promoted", f"{reason}: {why}", metrics)
        else:
            append_ledger(ctx, {"action": decision["outcome"], "model": name, "from_version": champion,
                                "to_version": champion, "challenger_version": challenger,
                                "reason": f"{reason}: " + "; ".join(decision["reasons"]), "metrics": metrics})
            result = PromotionResult(step="promote_challenger", use_case=ctx.use_case.name, ds=ctx.ds_iso, action="kept",
                                     model_name=name, from_version=champion, to_version=champion,
                                     reason="; ".join(decision["reasons"]), ledger=str(ctx.layout.ledger))
    return PromotionResult(**{**result.as_dict(), "step": "promote_challenger"})


def rollback_model(ctx: StepContext) -> PromotionResult:
    from pavedml.adapters.tracking import CHAMPION, PREVIOUS, alias_version, setup, unavailable_as_error

    target = ctx.params.target_version
    reason = ctx.params.reason
    if not reason:
        raise ConfigError("rollback needs a reason (params.reason)")
    client, _ = setup(ctx)
    name = ctx.use_case.model.registered_name
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        current = alias_version(client, name, CHAMPION)
        if target == "previous":
            prev = alias_version(client, name, PREVIOUS)
            if prev is None:
                raise RegistryError(f"{name} has no previous_champion to roll back to",
                                    details={"next": "give an explicit target_version"})
            target = str(prev.version)
        if not target.isdigit():
            raise ConfigError(f"target_version {target!r} is neither 'previous' nor a version number")
        try:
            mv = client.get_model_version(name, target)
        except Exception:
            raise RegistryError(f"{name} v{target} does not exist") from None
        if mv.status != "READY":
            raise RegistryError(f"{name} v{target} is {mv.status}, not READY")
        result = move_champion(ctx, client, target, str(current.version) if current else None, "rolled_back",
                               reason)
    return PromotionResult(**{**result.as_dict(), "step": "rollback_model"})
