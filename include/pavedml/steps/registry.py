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

The ledger (one immutable file per entry, and a readable view) is :mod:`pavedml.ledger`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from pavedml import storage
from pavedml.context import StepContext
from pavedml.errors import EXIT_RETRY, ConfigError, RegistryError
from pavedml.ledger import append_ledger, flocked
from pavedml.results import PromotionResult, registry_event

log = logging.getLogger(__name__)
MAX_REEVALUATIONS = 3
#: How long a promotion waits for the shared lock before it fails (retryable).
LOCK_WAIT_SECONDS = 300
LOCK_CONNECT_SECONDS = 10


class ChampionChanged(RegistryError):
    """The champion moved between the decision and the move (a race another promotion won)."""


class LockUnavailableError(RegistryError):
    """The shared lock server (PAVEDML_LOCK_URL) could not be reached or the lock not taken in
    time; nothing was moved, a retry may succeed."""

    reason = "lock_unavailable"
    exit_code = EXIT_RETRY


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


def registry_lock(path: Path):
    """The single-host lock: an ``flock`` beside the ledger."""
    return flocked(path.parent / ".champion.lock")


@contextmanager
def champion_lock(ctx: StepContext):
    """The lock every move of ``ctx``'s champion holds: shared across hosts when PAVEDML_LOCK_URL is set."""
    if ctx.settings.lock_url:
        with advisory_lock(ctx.settings.lock_url, ctx.use_case.model.registered_name):
            yield
    else:
        with registry_lock(ctx.layout.ledger):
            yield


def move_champion(ctx: StepContext, client, to_version: str, expected_current: str | None, action: str,
                  reason: str, metrics: dict | None = None, approval: dict | None = None) -> PromotionResult:
    """Compare-and-set: move ``champion`` to ``to_version`` only if it still is ``expected_current``."""
    from pavedml.adapters.tracking import CHAMPION, PREVIOUS, alias_version

    name = ctx.use_case.model.registered_name
    with champion_lock(ctx):
        current = alias_version(client, name, CHAMPION)
        current_v = str(current.version) if current else None
        # already there (a retry of a move that was made, or the same move by another run): nothing to move
        if current_v != expected_current and current_v != str(to_version):
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
                            "reason": reason, "metrics": metrics or {},
                            **({"approval": approval} if approval else {})})
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
            if ctx.use_case.evaluation.require_approval:
                raise ChampionChanged(
                    f"{exc.message}; the approval was given for the comparison with the champion of then, so "
                    "nothing moved", details={"next": "trigger a new training run (or clear evaluate_challenger and "
                                                      "approve_promotion of this one) to decide and approve against "
                                                      "the new champion"}) from None
            log.warning("%s; deciding again against the new champion", exc.message)
            evaluate_challenger(ctx)
    raise AssertionError("unreachable")


def _approval_tags(client, name: str, version: str, approval: dict) -> None:
    from pavedml.redact import clip

    for key in ("status", "by", "comment", "at"):
        if approval.get(key):
            client.set_model_version_tag(name, version, f"approval.{key}", clip(approval[key], 4000))


def _promote_once(ctx: StepContext, decision: dict) -> PromotionResult:
    from pavedml.adapters.tracking import setup, unavailable_as_error

    force = ctx.params.force_promote
    reason = ctx.reason
    client, _ = setup(ctx)
    name = ctx.use_case.model.registered_name
    challenger = decision["challenger"]["version"]
    champion = decision["champion"]["version"] if decision.get("champion") else None
    metrics = decision["challenger"]["metrics"]
    approval = None
    if ctx.use_case.evaluation.require_approval:
        approval = dict(ctx.params.approval or {"status": "missing", "comment": "no answer from approve_promotion"})
    with unavailable_as_error(ctx.settings.mlflow_tracking_uri):
        if approval is not None:
            _approval_tags(client, name, challenger, approval)
        if approval is not None and approval.get("status") != "approved":
            # no longer awaiting live evidence: never served to a canary share, never promoted on live evidence
            client.set_model_version_tag(name, challenger, "evaluation.outcome", "approval_rejected")
            who = f" by {approval['by']}" if approval.get("by") else ""
            why = f"promotion {approval.get('status')}{who}" + (f": {approval['comment']}" if approval.get("comment") else "")
            append_ledger(ctx, {"action": "approval_rejected", "model": name, "from_version": champion,
                                "to_version": champion, "challenger_version": challenger,
                                "reason": f"{reason}: {why} (policy outcome {decision['outcome']})", "metrics": metrics,
                                "approval": approval})
            result = PromotionResult(step="promote_challenger", use_case=ctx.use_case.name, ds=ctx.ds_iso,
                                     action="kept", model_name=name, from_version=champion, to_version=champion,
                                     reason=why, ledger=str(ctx.layout.ledger),
                                     registry_event=registry_event("approval_rejected", ctx, challenger, champion, champion, why))
        elif decision["promote"] or force:
            why = "; ".join(decision["reasons"]) if decision["promote"] else \
                f"FORCED over policy outcome {decision['outcome']} ({'; '.join(decision['reasons'])})"
            if approval is not None:
                why += f"; approved by {approval.get('by') or '?'}" + (f": {approval['comment']}"
                                                                      if approval.get("comment") else "")
            result = move_champion(ctx, client, challenger, champion, "promoted", f"{reason}: {why}", metrics, approval)
            if result.action == "promoted":
                result = replace(result, registry_event=registry_event("promoted", ctx, challenger, champion, challenger, why))
        else:
            append_ledger(ctx, {"action": decision["outcome"], "model": name, "from_version": champion,
                                "to_version": champion, "challenger_version": challenger,
                                "reason": f"{reason}: " + "; ".join(decision["reasons"]), "metrics": metrics,
                                **({"approval": approval} if approval else {})})
            why = "; ".join(decision["reasons"])
            event = (registry_event("rejected", ctx, challenger, champion, champion, f"{decision['outcome']}: {why}")
                     if decision["outcome"] in ("reject", "keep_champion") and challenger != champion else None)
            result = PromotionResult(step="promote_challenger", use_case=ctx.use_case.name, ds=ctx.ds_iso, action="kept",
                                     model_name=name, from_version=champion, to_version=champion,
                                     reason=why, ledger=str(ctx.layout.ledger), registry_event=event)
        card = _update_card(ctx, client, decision, approval, result)
    return replace(result, step="promote_challenger", card=card,
                   registry_event={**result.registry_event, "card": card} if result.registry_event else None)


def _update_card(ctx: StepContext, client, decision: dict, approval: dict | None, result: PromotionResult) -> str:
    """The challenger's model card again, now with its approval and the registry move; its path."""
    from pavedml.modelcard import CARD_HTML
    from pavedml.steps.evaluation import publish_card

    if "training" not in decision:  # a decision recorded before model cards
        return ""
    record = {**decision, "approval": approval,
              "registry_move": {"action": result.action, "from_version": result.from_version,
                                "to_version": result.to_version, "at": datetime.now(UTC).isoformat()}}
    try:
        publish_card(ctx, client, record)
    except Exception as err:  # noqa: BLE001 - the move is done and in the ledger; a retry would redo nothing useful
        log.warning("the model card of v%s was not updated after the %s (%s); the evaluation's card stands",
                    decision["challenger"]["version"], result.action, err)
    return str(ctx.layout.decision(ctx.run_key).parent / CARD_HTML)


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
    event = (registry_event("rolled_back", ctx, target, result.from_version, target, reason)
             if result.action == "rolled_back" else None)
    return replace(result, step="rollback_model", registry_event=event)
