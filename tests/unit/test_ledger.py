"""The promotion ledger is one immutable file per entry with a rebuilt ``ledger.jsonl`` view, so
copies of it merged from several hosts never lose an entry; the shared-lock setting is parsed,
printed without its password and handed to steps as a secret."""

from __future__ import annotations

import json

import pytest

from pavedml.errors import ConfigError
from pavedml.ledger import LEDGER_ENTRIES, read_ledger, rebuild_ledger
from pavedml.settings import Settings, step_environment
from pavedml.steps.registry import libpq_url, lock_key, shown_url

pytestmark = pytest.mark.unit


def _line(**entry) -> str:
    return json.dumps(entry, sort_keys=True) + "\n"


def test_a_view_overwritten_by_another_hosts_copy_loses_nothing(tmp_path):
    view = tmp_path / "registry" / "ledger.jsonl"
    view.parent.mkdir()
    # a ledger written before entry files existed (or pulled from a lake that has only the view)
    view.write_text(_line(at="2025-01-01T00:00:00+00:00", action="promoted", to_version="1") + "not json\n")
    assert rebuild_ledger(view) == 2
    assert len(list((view.parent / LEDGER_ENTRIES).glob("*.json"))) == 2
    # another host's view (its own entry only) replaces this one, as a lake pull does
    view.write_text(_line(at="2025-01-02T00:00:00+00:00", action="promoted", to_version="2"))
    rebuild_ledger(view)
    entries = read_ledger(view)
    assert [e.get("to_version") for e in entries] == [None, "1", "2"]  # the unreadable line kept, first
    assert entries[0] == {"action": "unreadable", "line": "not json"}
    assert [json.loads(x) for x in view.read_text().splitlines()] == entries
    # rebuilding is idempotent: the same entries, the same files
    rebuild_ledger(view)
    assert read_ledger(view) == entries
    assert len(list((view.parent / LEDGER_ENTRIES).glob("*.json"))) == 3


def test_lock_url_is_shown_without_password_and_accepts_sqlalchemy_form():
    url = "postgresql+psycopg2://feast:s3cr:et@postgres:5432/feast"
    assert shown_url(url) == "postgresql+psycopg2://feast:***@postgres:5432/feast"
    assert shown_url("postgresql://postgres@localhost/x") == "postgresql://postgres@localhost/x"
    assert libpq_url(url) == "postgresql://feast:s3cr:et@postgres:5432/feast"
    with pytest.raises(ConfigError, match=r"mysql://u:\*\*\*@h/db") as err:
        libpq_url("mysql://u:hunter2@h/db")
    assert "hunter2" not in err.value.message


def test_lock_key_is_stable_and_per_model():
    assert lock_key("telco_churn") == lock_key("telco_churn")
    assert lock_key("telco_churn") != lock_key("other")
    assert -(2**63) <= lock_key("telco_churn") < 2**63
    assert lock_key("telco_churn") == -440185865671748437  # never Python's randomized hash()


def test_lock_url_setting_reaches_steps_as_a_secret():
    env = {"PAVEDML_DATA_ROOT": "/data", "PAVEDML_LOCK_URL": " postgresql://feast:pw@postgres/feast "}
    assert Settings.from_env(env).lock_url == "postgresql://feast:pw@postgres/feast"
    assert Settings.from_env({"PAVEDML_DATA_ROOT": "/data"}).lock_url == ""
    public, private = step_environment(env)
    assert "PAVEDML_LOCK_URL" in private and "PAVEDML_LOCK_URL" not in public
