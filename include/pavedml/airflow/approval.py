"""The human approval of a promotion (``evaluation.require_approval``): Airflow's HITL
``ApprovalOperator`` with a comment field, whose answer the promotion step records.

Unlike the stock operator, a *Reject* does not skip ``promote_challenger``: the promotion step
runs either way, reads the answer (this task's XCom: status, who, comment, when) from its params,
and records it: ledger entry, ``approval.*`` version tags, model card, registry event. So a
rejection is on record with its approver and comment, not only a skipped box in the grid.
Waiting starts with an ``approval_requested`` registry event (:mod:`pavedml.airflow.events`).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param

TASK_ID = "approve_promotion"
#: The promotion task's params: the run's params plus this task's answer under ``approval``.
PARAMS_WITH_APPROVAL = "{{ dict(params, approval=ti.xcom_pull(task_ids='" + TASK_ID + "')) | tojson }}"


class PromotionApproval(ApprovalOperator):
    """Approve or reject a promotion, with a comment; returns a JSON-safe answer (see module doc)."""

    def __init__(self, **kwargs: Any) -> None:
        from pavedml.airflow.events import approval_requested

        kwargs.setdefault("task_id", TASK_ID)
        kwargs.setdefault("params", {"comment": Param("", type="string", title="Comment",
                                                      description="Why (recorded in the ledger and the model card)")})
        kwargs.setdefault("notifiers", [approval_requested])
        super().__init__(**kwargs)

    def execute_complete(self, context, event: dict[str, Any]) -> dict[str, Any]:
        ret = HITLOperator.execute_complete(self, context=context, event=event)  # no skipping on Reject
        return answer(ret)


def answer(ret: dict[str, Any]) -> dict[str, Any]:
    """The HITL response as the promotion step reads it: status ``approved``/``rejected``, who
    (name, id), the comment, when (ISO 8601)."""
    chosen = (ret.get("chosen_options") or [""])[0]
    user = ret.get("responded_by_user") or {}
    at = ret.get("responded_at")
    comment = (ret.get("params_input") or {}).get("comment") or ""
    return {"status": "approved" if chosen == ApprovalOperator.APPROVE else "rejected",
            "by": str(user.get("name") or user.get("id") or ""), "by_id": str(user.get("id") or ""),
            "comment": str(comment), "at": at.isoformat() if at is not None and hasattr(at, "isoformat") else str(at or "")}
