"""promote_challenger and rollback_model: the only code that moves the ``champion`` alias.

Every move is compare-and-set under a lock: the champion is re-read, and if it is no longer the
version the decision was made against, the move is refused (so two racing promotions can never
leave ``champion`` on the model that lost). ``previous_champion`` always names the model the
last move replaced, and every decision and move is appended to the ledger (the audit trail).
"""

from __future__ import annotations

import fcntl
import json
import logging
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pavedml import storage
from pavedml.context import StepContext
from pavedml.errors import ConfigError, RegistryError
from pavedml.results import PromotionResult

log = logging.getLogger(__name__)
MAX_REEVALUATIONS = 3


class ChampionChanged(RegistryError):
    """The champion moved between the decision and the move (a race another promotion won)."""


@contextmanager
def registry_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".champion.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append_ledger(ctx: StepContext, entry: dict) -> None:
    path = ctx.layout.ledger
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"at": datetime.now(UTC).isoformat(), "use_case": ctx.use_case.name, "dag_id": ctx.dag_id,
             "run_id": ctx.run_id, **entry}
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        fh.flush()


def read_ledger(ctx_or_path) -> list[dict]:
    path = ctx_or_path.layout.ledger if isinstance(ctx_or_path, StepContext) else Path(ctx_or_path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def move_champion(ctx: StepContext, client, to_version: str, expected_current: str | None, action: str,
                  reason: str, metrics: dict | None = None) -> PromotionResult:
    """Compare-and-set: move ``champion`` to ``to_version`` only if it still is ``expected_current``."""
    from pavedml.tracking import CHAMPION, PREVIOUS, alias_version

    name = ctx.use_case.model.registered_name
    with registry_lock(ctx.layout.ledger):
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
    return PromotionResult(step=action, use_case=ctx.use_case.name, ds=ctx.ds, action=action, model_name=name,
                           from_version=current_v, to_version=str(to_version), reason=reason,
                           ledger=str(ctx.layout.ledger))


def promote_challenger(ctx: StepContext) -> PromotionResult:
    """Act on the decision. If another promotion moved the champion meanwhile, decide again against
    the new champion (same holdout) before moving anything: the loser of a race never wins."""
    from pavedml.evaluation import evaluate_challenger
    from pavedml.training import run_key

    path = ctx.layout.training_dir(run_key(ctx)) / "decision.json"
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
    from pavedml.tracking import setup, unavailable_as_error

    force = bool(ctx.params.get("force_promote"))
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
            result = PromotionResult(step="promote_challenger", use_case=ctx.use_case.name, ds=ctx.ds, action="kept",
                                     model_name=name, from_version=champion, to_version=champion,
                                     reason="; ".join(decision["reasons"]), ledger=str(ctx.layout.ledger))
    return PromotionResult(**{**result.as_dict(), "step": "promote_challenger"})


def rollback_model(ctx: StepContext) -> PromotionResult:
    from pavedml.tracking import CHAMPION, PREVIOUS, alias_version, setup, unavailable_as_error

    target = str(ctx.params.get("target_version") or "previous").strip()
    reason = str(ctx.params.get("reason") or "").strip()
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
