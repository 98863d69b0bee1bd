"""Registry events to chat: every registered version, promotion, rejection, rollback, approval
request and approval answer posted to Slack (Airflow's ``SlackWebhookNotifier``,
apache-airflow-providers-slack) and to a generic JSON webhook (Microsoft Teams' incoming webhooks
and most others take ``{"text": ...}``), from the worker, where the connections are: a step never
holds them.

An event is a dict made by the step (its result's ``registry_event``) or by the approval task:
``{"event", "use_case", "model", "version", "from_version", "to_version", "summary"}``. What is
posted is its one-line text (:func:`event_text`) and its links (the MLflow model version, the
Airflow task, the model card). Which channels: :attr:`pavedml.settings.Settings.events_slack_conn_id`
and ``events_webhook_conn_id`` (empty: that channel is off). Both connections hold the webhook URL
(which carries its token) in their password field, which Airflow masks.

Posting is best effort: a channel that is down, refuses, or times out (:data:`TIMEOUT_SECONDS`)
is logged as a warning and reported in the return value; the pipeline never fails for it.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from pavedml.redact import clip, redact_urls

log = logging.getLogger(__name__)
#: The events a model's life posts.
EVENTS = ("registered", "promoted", "rejected", "rolled_back", "approval_requested", "approved",
          "approval_rejected")
TIMEOUT_SECONDS = 5.0
TEXT_LIMIT = 1000


def event_text(event: dict[str, Any]) -> str:
    """``[pavedml] telco_churn v3 promoted: <summary>`` (one line, redacted, capped)."""
    version = f" v{event['version']}" if event.get("version") else ""
    head = f"[pavedml] {event.get('model') or event.get('use_case') or '?'}{version} {event['event'].replace('_', ' ')}"
    summary = (event.get("summary") or "").strip()
    return clip(f"{head}: {summary}" if summary else head, TEXT_LIMIT)


def event_links(event: dict[str, Any], context: Any = None) -> dict[str, str]:
    """Where to look: the MLflow model version, the Airflow task's log, the model card."""
    from pavedml.airflow.links import mlflow_url, report_url
    from pavedml.settings import get_settings

    s = get_settings()
    links = {"mlflow": mlflow_url({"model_name": event.get("model"), "model_version": event.get("version")},
                                  s.mlflow_ui_url)}
    ti = (context or {}).get("ti") if isinstance(context, dict) else None
    url = getattr(ti, "log_url", "") if ti is not None else ""
    if url:
        links["airflow"] = str(url)
    card = event.get("card") or ""
    if card:
        links["card"] = report_url(str(card), s.data_root)
    return {k: v for k, v in links.items() if v}


def _webhook_url(conn) -> str:
    """The webhook's URL: the connection's password (a secret: Airflow masks it in logs and the UI), as
    for Slack's; else ``https://<host>[:port]<extra.path>`` for a URL that holds no token."""
    password = (conn.password or "").strip()
    if "://" in password:
        return password
    host = (conn.host or "").strip()
    if not host:
        raise ValueError(f"connection {conn.conn_id!r} holds no webhook URL: put it in the password field")
    port = f":{conn.port}" if conn.port else ""
    path = (conn.extra_dejson or {}).get("path", "")
    return f"{conn.schema or 'https'}://{host}{port}{path}"


def _post_webhook(conn_id: str, payload: dict[str, Any]) -> None:
    from airflow.sdk import BaseHook

    url = _webhook_url(BaseHook.get_connection(conn_id))
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as resp:  # noqa: S310 - the operator's own URL
        if not 200 <= resp.status < 300:
            raise RuntimeError(f"HTTP {resp.status}")


def _post_slack(conn_id: str, text: str, links: dict[str, str], context: Any) -> None:
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    lines = [text, *(f"<{url}|{name}>" for name, url in links.items() if url.startswith(("http://", "https://")))]
    notifier = SlackWebhookNotifier(slack_webhook_conn_id=conn_id, text="\n".join(lines), timeout=int(TIMEOUT_SECONDS))
    notifier.notify(context or {})  # notify(), not __call__: no Jinja rendering of text quoting data values


def post(event: dict[str, Any], context: Any = None) -> dict[str, str]:
    """Post ``event`` to every configured channel. Returns channel -> ``ok`` or the error (also logged);
    never raises."""
    from pavedml.settings import get_settings

    s = get_settings()
    channels = {"slack": s.events_slack_conn_id, "webhook": s.events_webhook_conn_id}
    if not any(channels.values()):
        return {}
    text = event_text(event)
    links = event_links(event, context)
    outcome: dict[str, str] = {}
    for channel, conn_id in channels.items():
        if not conn_id:
            continue
        try:
            if channel == "slack":
                _post_slack(conn_id, text, links, context)
            else:
                _post_webhook(conn_id, {"text": text, "event": {k: v for k, v in event.items() if k != "card"},
                                        "links": links})
            outcome[channel] = "ok"
        except Exception as err:  # noqa: BLE001 - a chat outage never fails the pipeline
            outcome[channel] = redact_urls(f"{type(err).__name__}: {err}")[:300]
            log.warning("could not post the registry event %r to %s (connection %s): %s", event.get("event"), channel,
                        conn_id, outcome[channel])
    log.info("registry event %s posted: %s", event.get("event"), outcome)
    return outcome


def approval_requested(context) -> None:
    """The approval task's notifier: posts ``approval_requested`` (with the decision it waits on)
    when it starts waiting."""
    ti = context.get("ti") or context.get("task_instance")
    decision: dict[str, Any] = {}
    try:
        decision = ti.xcom_pull(task_ids="evaluate_challenger") or {}
    except Exception as err:  # noqa: BLE001 - the post goes out without the decision's details
        log.warning("could not read evaluate_challenger's decision for the approval request: %s", err)
    post({"event": "approval_requested", "use_case": decision.get("use_case", ""),
          "model": decision.get("model_name", ""), "version": decision.get("challenger_version", ""),
          "summary": f"{getattr(ti, 'dag_id', '')} run {getattr(ti, 'run_id', '')} waits for approve_promotion; "
                     f"policy outcome {decision.get('outcome', '?')}: {'; '.join(decision.get('reasons', []))}",
          "card": decision.get("card", "")}, context)
