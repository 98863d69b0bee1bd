"""Governance pieces on their own: the fairness report and gate, the model card, the audit export's
ECS documents, the approval answer, registry events posted to a local webhook sink."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from pavedml.config import Evaluation, Fairness
from pavedml.steps.evaluation import decide
from tests.helpers.http_sink import HttpSink
from tests.unit.test_decision import BASE

pytestmark = pytest.mark.unit
POLICY = Fairness(sensitive=["gender"], max_difference={"true_positive_rate": 0.1, "selection_rate": 0.2},
                  min_group_rows=50)


def _holdout(n_per_group: int = 200, tpr: dict | None = None, seed: int = 0):
    """Labels half positive; each group's positives scored above 0.5 with the group's TPR."""
    rng = np.random.default_rng(seed)
    tpr = tpr or {"Female": 0.7, "Male": 0.7}
    rows, y, s = [], [], []
    for group, rate in tpr.items():
        labels = np.r_[np.ones(n_per_group // 2), np.zeros(n_per_group - n_per_group // 2)]
        caught = rng.random(len(labels)) < rate
        scores = np.where(labels == 1, np.where(caught, 0.8, 0.2), 0.1)
        rows += [group] * len(labels)
        y.append(labels)
        s.append(scores)
    return pd.DataFrame({"gender": rows}), np.concatenate(y), np.concatenate(s)


def test_fair_groups_pass_and_every_group_is_reported():
    from pavedml.fairness import group_report

    df, y, s = _holdout()
    report = group_report(df, y, s, POLICY)
    assert report["ok"] and report["violations"] == []
    groups = report["columns"]["gender"]["groups"]
    assert set(groups) == {"Female", "Male"} and all(g["judged"] and g["rows"] == 200 for g in groups.values())
    assert report["columns"]["gender"]["spreads"]["true_positive_rate"]["difference"] < 0.1


def test_a_tpr_gap_beyond_its_limit_is_a_violation_naming_column_metric_and_groups():
    from pavedml.fairness import group_report

    df, y, s = _holdout(tpr={"Female": 0.3, "Male": 0.8})
    report = group_report(df, y, s, POLICY)
    assert not report["ok"]
    [tpr] = [v for v in report["violations"] if "true_positive_rate" in v]
    assert "between gender groups" in tpr and "Male" in tpr and "Female" in tpr and "allowed 0.1" in tpr
    # selection rate gap (0.25 of 0.5 positives) is within its own limit 0.2? 0.5*(0.8-0.3)=0.25 > 0.2
    assert any("selection_rate" in v for v in report["violations"])


def test_a_group_below_the_minimum_is_reported_not_judged():
    from pavedml.fairness import group_report

    df, y, s = _holdout(tpr={"Female": 0.7, "Male": 0.7})
    small = pd.DataFrame({"gender": ["Other"] * 10})
    df = pd.concat([df, small], ignore_index=True)
    y = np.r_[y, np.ones(10)]
    s = np.r_[s, np.zeros(10)]  # the small group's TPR is 0: would violate if judged
    report = group_report(df, y, s, POLICY)
    col = report["columns"]["gender"]
    assert report["ok"] and col["groups"]["Other"] == {**col["groups"]["Other"], "rows": 10, "judged": False}
    assert "Other (10 rows)" in col["note"]


def test_one_judged_group_is_not_judged_at_all():
    from pavedml.fairness import group_report

    df, y, s = _holdout(n_per_group=200, tpr={"Female": 0.7})
    report = group_report(df, y, s, POLICY)
    assert report["ok"] and not report["columns"]["gender"]["judged"]


def test_whole_number_groups_are_named_without_decimals():
    from pavedml.fairness import group_labels

    assert list(group_labels(pd.Series([0.0, 1.0, np.nan]))) == ["0", "1", "__missing__"]
    assert list(group_labels(pd.Series(["a", None]))) == ["a", "__missing__"]


def test_regression_groups_compare_mean_prediction():
    from pavedml.fairness import group_report

    df = pd.DataFrame({"region": ["n"] * 100 + ["s"] * 100})
    y = np.r_[np.full(100, 10.0), np.full(100, 10.0)]
    s = np.r_[np.full(100, 10.0), np.full(100, 14.0)]
    report = group_report(df, y, s, Fairness(sensitive=["region"], max_difference={"mean_prediction": 1.0},
                                             min_group_rows=10), "regression")
    assert report["violations"] == ["fairness: mean_prediction differs by 4.000 between region groups "
                                    "(s 14.000, n 10.000; allowed 1.0)"]


def test_a_fairness_violation_rejects_even_the_first_model_and_sits_beside_floor_failures():
    policy = Evaluation(primary_metric="roc_auc", floors={"roc_auc": 0.7})
    v = decide(dict(BASE), None, policy, fairness_violations=["fairness: x"])
    assert v.outcome == "reject" and v.reasons == ["fairness: x"]
    v = decide({**BASE, "roc_auc": 0.6}, None, policy, fairness_violations=["fairness: x"])
    assert v.reasons == ["floor not met: roc_auc 0.6000 vs floor 0.7", "fairness: x"]
    v = decide(dict(BASE), dict(BASE, roc_auc=0.5), policy, fairness_violations=["fairness: x"])
    assert v.outcome == "reject"  # winning on the metric does not buy a fairness violation
    assert decide(dict(BASE), None, policy, fairness_violations=[]).reasons == [
        "no champion yet and every floor is met and every fairness limit holds"]


@pytest.mark.parametrize(("fairness", "message"), [
    ({"sensitive": ["nope"]}, "evaluation.fairness.sensitive: 'nope' is neither a column"),
    ({"sensitive": ["gender"], "max_difference": {"mae": 0.1}}, "'mae' is not a binary_classification group metric"),
    ({"sensitive": ["gender"], "max_difference": {"selection_rate": 0}}, "limits must be > 0"),
    ({"sensitive": ["customerID"]}, "is the entity key"),
    ({"sensitive": []}, "sensitive"),
])
def test_a_wrong_fairness_section_is_refused_naming_the_key(tmp_path, fairness, message):
    from pavedml.config import load_use_case
    from pavedml.errors import ConfigError
    from tests.helpers.use_cases import write_copy

    write_copy(tmp_path, "fair_bad", evaluation={"fairness": fairness})
    with pytest.raises(ConfigError) as err:
        load_use_case(tmp_path / "fair_bad.yaml")
    assert message in str(err.value) and "fair_bad.yaml" in str(err.value)


def test_a_sensitive_column_that_is_not_a_feature_is_evaluation_only(tmp_path):
    from pavedml.config import load_use_case
    from tests.helpers.use_cases import write_copy

    spec = write_copy(tmp_path, "fair_eval")
    spec["features"]["categorical"].remove("gender")
    write_copy(tmp_path, "fair_eval", features=spec["features"], evaluation={"fairness": {"sensitive": ["gender"]}})
    uc = load_use_case(tmp_path / "fair_eval.yaml")
    assert "gender" not in uc.feature_columns and uc.evaluation_columns == ["gender"]


def _record(**over):
    record = {
        "model": "m", "use_case": "m", "description": "d", "outcome": "promote", "promote": True,
        "reasons": ["no champion yet"], "policy": {"primary_metric": "roc_auc"}, "holdout_rows": 10,
        "challenger": {"version": "3", "metrics": {"roc_auc": 0.8}, "slices": {},
                       "metrics_ci": {"roc_auc": {"value": 0.8, "lo": 0.75, "hi": 0.85}}},
        "champion": None, "fairness": None, "importance": None,
        "governance": {"owner": "team-a", "data_classification": "confidential",
                       "intended_use": "<script>alert(1)</script>", "limitations": ""},
        "features": {"numeric": ["x"], "categorical": [], "evaluation_only": ["gender"]},
        "training": {"family": "hist_gradient_boosting", "params": {"max_iter": 5}, "run_id": "r1"},
        "dataset": {"rows": {"train": 5}, "feature_snapshots": {"2025-01-01": "abc"}, "snapshot_days": ["2025-01-01"]},
        "trained_through": "2025-01-08", "dag_run": "d/r", "decided_at": "2025-01-08T00:00:00+00:00"}
    return {**record, **over}


def test_the_card_holds_every_section_and_its_html_is_self_contained_and_escaped():
    from pavedml.modelcard import render, summary

    md, page = render(_record(approval={"status": "approved", "by": "alice", "comment": "ok", "at": "t"},
                              registry_move={"action": "promoted", "from_version": "2", "to_version": "3", "at": "t"}))
    for title in ("Summary", "Purpose and ownership", "Data", "Features", "Training", "Offline metrics",
                  "Decision", "Approval", "Registry"):
        assert f"## {title}" in md and f"<h2>{title}</h2>" in page
    assert "roc_auc 0.8000 [0.7500, 0.8500]" in summary(_record())
    assert "| by | alice |" in md and "champion v2 -> v3" in md
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "src=" not in page and "<link" not in page and "http" not in page  # nothing fetched from elsewhere
    assert "evaluation only (never given to the model): gender" in md


def test_a_card_renders_from_an_older_runs_manifest_without_ranges_or_digests():
    """Before: a run trained by a version whose dataset manifest lacked ``ranges`` (the benchmark's
    too) crashed evaluate_challenger in the card: the record held None for every missing key."""
    from pavedml.modelcard import render

    for dataset in ({"rows": {"train": 5}, "ranges": None, "digests": None, "feature_snapshots": None},
                    {"window_days": 90}, {}, None):
        md, page = render(_record(dataset=dataset))
        assert "## Data" in md and "<h2>Data</h2>" in page


def test_the_summary_is_capped_for_the_registry_description():
    from pavedml.modelcard import SUMMARY_LIMIT, summary

    assert len(summary(_record(reasons=["x" * 5000]))) == SUMMARY_LIMIT


def test_audit_documents_use_ecs_names_and_replay_the_champion_history():
    from pavedml.audit import documents

    entries = [
        {"at": "2025-01-01T00:00:00+00:00", "action": "promoted", "model": "m", "from_version": None,
         "to_version": "1", "reason": "first", "use_case": "m"},
        {"at": "2025-01-02T00:00:00+00:00", "action": "keep_champion", "model": "m", "from_version": "1",
         "to_version": "1", "challenger_version": "2", "reason": "tie", "use_case": "m"},
        {"at": "2025-01-03T00:00:00+00:00", "action": "approval_rejected", "model": "m", "from_version": "1",
         "to_version": "1", "challenger_version": "3", "reason": "no", "use_case": "m",
         "approval": {"status": "rejected", "by": "bob", "by_id": "7", "comment": "no"}},
        {"at": "2025-01-04T00:00:00+00:00", "action": "rolled_back", "model": "m", "from_version": "1",
         "to_version": "1", "reason": "noop", "use_case": "m"},
    ]
    docs = documents(entries)
    assert [d["event"]["action"] for d in docs] == ["model-promoted", "model-kept", "approval-rejected",
                                                    "model-rolled-back"]
    assert docs[0]["event"]["type"] == ["change"] and docs[1]["event"]["type"] == ["info"]
    assert docs[2]["user"] == {"name": "bob", "id": "7"} and docs[2]["related"] == {"user": ["bob"]}
    assert all(d["ecs"]["version"] and d["@timestamp"] and d["event"]["dataset"] == "pavedml.registry" for d in docs)
    assert len({d["event"]["id"] for d in docs}) == 4 and documents(entries)[0]["event"]["id"] == docs[0]["event"]["id"]
    assert [d["@timestamp"][:10] for d in documents(entries, since=pd.Timestamp("2025-01-02").date(),
                                                      until=pd.Timestamp("2025-01-03").date())] == \
        ["2025-01-02", "2025-01-03"]


def test_the_approval_answer_is_json_safe_with_who_comment_and_when():
    from datetime import UTC, datetime

    from pavedml.airflow.approval import answer

    got = answer({"chosen_options": ["Reject"], "params_input": {"comment": "not now"},
                  "responded_by_user": {"id": "3", "name": "carol"},
                  "responded_at": datetime(2025, 1, 1, tzinfo=UTC)})
    assert got == {"status": "rejected", "by": "carol", "by_id": "3", "comment": "not now",
                   "at": "2025-01-01T00:00:00+00:00"}
    assert json.loads(json.dumps(got)) == got
    assert answer({"chosen_options": ["Approve"], "params_input": None, "responded_by_user": None,
                   "responded_at": None})["status"] == "approved"


EVENT = {"event": "promoted", "use_case": "telco_churn", "model": "telco_churn", "version": "4", "from_version": "3",
         "to_version": "4", "summary": "uplift +0.0100 on roc_auc"}


def _channels(monkeypatch, slack: str | None, webhook: str | None):
    from pavedml.settings import get_settings

    if slack:
        monkeypatch.setenv("AIRFLOW_CONN_TEST_SLACK", json.dumps({"conn_type": "slackwebhook", "password": slack}))
        monkeypatch.setenv("PAVEDML_EVENTS_SLACK_CONN_ID", "test_slack")
    if webhook:
        monkeypatch.setenv("AIRFLOW_CONN_TEST_HOOK", json.dumps({"conn_type": "http", "password": webhook}))
        monkeypatch.setenv("PAVEDML_EVENTS_WEBHOOK_CONN_ID", "test_hook")
    get_settings.cache_clear()


def test_registry_events_reach_slack_and_a_generic_webhook_with_summary_and_links(monkeypatch):
    from pavedml.airflow.events import post

    with HttpSink() as sink:
        _channels(monkeypatch, f"{sink.url}/slack/T0/B0/secret", f"{sink.url}/teams")
        outcome = post(dict(EVENT))
    assert outcome == {"slack": "ok", "webhook": "ok"}
    by_path = {p["path"]: p["json"] for p in sink.posts}
    slack, teams = by_path["/slack/T0/B0/secret"], by_path["/teams"]
    assert slack["text"].startswith("[pavedml] telco_churn v4 promoted: uplift +0.0100 on roc_auc")
    assert "#/models/telco_churn/versions/4" in slack["text"]
    assert teams["text"] == "[pavedml] telco_churn v4 promoted: uplift +0.0100 on roc_auc"
    assert teams["event"]["event"] == "promoted" and teams["links"]["mlflow"].endswith("/versions/4")


def test_an_unreachable_or_refusing_webhook_never_raises_and_is_reported(monkeypatch, caplog, capfd):
    import socket

    from pavedml.airflow.events import post

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with HttpSink(status=500) as refusing:
        _channels(monkeypatch, f"{refusing.url}/slack/token-xyz", f"{dead}/hook/token-xyz")
        started = time.perf_counter()
        outcome = post(dict(EVENT))
        took = time.perf_counter() - started
    assert outcome["slack"] != "ok" and outcome["webhook"] != "ok", outcome
    assert took < 15, took
    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err  # stdlib logging, or Airflow's structlog once configured
    assert "could not post the registry event 'promoted'" in logged
    assert "token-xyz" not in logged and "token-xyz" not in json.dumps(outcome)  # the webhook URL is a secret


def test_no_channel_configured_posts_nothing(monkeypatch):
    from pavedml.airflow.events import post
    from pavedml.settings import get_settings

    monkeypatch.delenv("PAVEDML_EVENTS_SLACK_CONN_ID", raising=False)
    monkeypatch.delenv("PAVEDML_EVENTS_WEBHOOK_CONN_ID", raising=False)
    get_settings.cache_clear()
    assert post(dict(EVENT)) == {}


def test_the_evaluation_task_links_its_model_card_through_the_report_app(tmp_path, monkeypatch):
    from pavedml.airflow.links import links_for
    from pavedml.airflow.reports import find_report
    from pavedml.settings import get_settings

    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path))
    get_settings.cache_clear()
    path = tmp_path / "telco_churn" / "training" / "r" / "model_card.html"
    path.parent.mkdir(parents=True)
    path.write_text("<html></html>")
    assert links_for({"card": str(path)})["card"] == "/pavedml/reports/telco_churn/training/r/model_card.html"
    assert find_report("telco_churn/training/r/model_card.html").view == "html"
    assert find_report("telco_churn/training/r/model_card.md").view == "markdown"
    assert find_report("telco_churn/training/r/other.html") is None


def test_a_holdout_without_a_sensitive_column_is_a_config_error_naming_it(tmp_path):
    from pavedml.config import load_use_case
    from pavedml.errors import ConfigError
    from pavedml.steps.evaluation import governance_evidence
    from tests.helpers.use_cases import write_copy

    write_copy(tmp_path, "fair_late", evaluation={"fairness": {"sensitive": ["gender"]}, "importance_rows": 0})
    uc = load_use_case(tmp_path / "fair_late.yaml")
    holdout = pd.DataFrame({"label": [0, 1]})
    with pytest.raises(ConfigError, match="'gender' is not in this run's holdout"):
        governance_evidence(uc, holdout, np.array([0.1, 0.9]), model=None)


def test_a_group_without_positives_has_no_true_positive_rate_and_breaks_no_limit():
    from pavedml.fairness import group_report

    df = pd.DataFrame({"gender": ["A"] * 200 + ["B"] * 200})
    y = np.r_[np.tile([1, 0], 100), np.zeros(200)]  # group B holds no churner
    s = np.where(y == 1, 0.9, 0.1)  # a perfect model
    report = group_report(df, y, s, POLICY)
    assert report["columns"]["gender"]["groups"]["B"]["metrics"]["true_positive_rate"] is None
    assert not any("true_positive_rate" in v for v in report["violations"]), report["violations"]


def test_nothing_judged_is_said_so_not_called_fair():
    from pavedml.fairness import group_report
    from pavedml.modelcard import summary
    from pavedml.steps.evaluation import evidence_tags

    df, y, s = _holdout(n_per_group=20)  # every group under min_group_rows
    report = group_report(df, y, s, POLICY)
    assert report["ok"] and not report["judged"]
    assert evidence_tags(report, None)["fairness.ok"] == "not_judged"
    assert "fairness not judged" in summary(_record(fairness=report))


def test_a_sensitive_column_without_any_value_in_the_holdout_is_a_config_error(tmp_path):
    from pavedml.config import load_use_case
    from pavedml.errors import ConfigError
    from pavedml.steps.evaluation import governance_evidence
    from tests.helpers.use_cases import write_copy

    write_copy(tmp_path, "fair_stale", evaluation={"fairness": {"sensitive": ["gender"]}, "importance_rows": 0})
    uc = load_use_case(tmp_path / "fair_stale.yaml")
    holdout = pd.DataFrame({"label": [0, 1], "gender": ["__missing__", "__missing__"]})
    with pytest.raises(ConfigError, match="'gender' has no value in this run's holdout"):
        governance_evidence(uc, holdout, np.array([0.1, 0.9]), model=None)


def test_the_webhook_url_is_the_connections_password():
    from types import SimpleNamespace

    from pavedml.airflow.events import _webhook_url

    def conn(**kw):
        return SimpleNamespace(**{"conn_id": "c", "password": None, "host": None, "port": None, "schema": None,
                                  "extra_dejson": {}, **kw})

    assert _webhook_url(conn(password="https://example.invalid/hook/tok")) == "https://example.invalid/hook/tok"
    assert _webhook_url(conn(host="example.invalid", port=8443, extra_dejson={"path": "/h"})) == \
        "https://example.invalid:8443/h"
    with pytest.raises(ValueError, match="password field"):
        _webhook_url(conn())


def test_permutation_importance_keeps_a_rare_class_in_its_sample():
    from sklearn.linear_model import LogisticRegression

    from pavedml.explain import permutation_table

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=20000), "b": rng.normal(size=20000)})
    y = (X["a"] > 2.6).astype(int).to_numpy()  # ~0.5% positives
    model = LogisticRegression().fit(X, y)
    table = permutation_table(model, X, y, rows=500)
    assert all(np.isfinite(f["mean"]) for f in table["features"]) and table["features"][0]["feature"] == "a"


def test_evaluation_only_columns_join_point_in_time_with_the_latest_delivery_winning(tmp_path):
    from types import SimpleNamespace

    from pavedml.config import load_use_case
    from pavedml.steps.training import LABEL_TS, join_evaluation_columns
    from tests.helpers.use_cases import write_copy

    spec = write_copy(tmp_path, "fair_pit")
    spec["features"]["categorical"].remove("gender")
    write_copy(tmp_path, "fair_pit", features=spec["features"], evaluation={"fairness": {"sensitive": ["gender"]}})
    uc = load_use_case(tmp_path / "fair_pit.yaml")
    root = tmp_path / "features"
    ts = pd.Timestamp("2025-01-01", tz="UTC")
    for day, rows in (("2025-01-01", [("A", ts, "Female"), ("B", ts, "Female")]),
                      ("2025-01-03", [("A", ts, "Male")]),  # A's row of Jan 1 delivered again, corrected
                      ("2025-01-05", [("A", ts + pd.Timedelta(days=4), "Female")])):  # after the label: unseen
        (root / f"dt={day}").mkdir(parents=True)
        pd.DataFrame(rows, columns=["customerID", "event_timestamp", "gender"]).to_parquet(
            root / f"dt={day}" / "part-0.parquet")
    labels = pd.DataFrame({"customerID": ["A", "B", "C", "B"], "label": [1, 0, 1, 1],
                           LABEL_TS: pd.to_datetime(["2025-01-02", "2025-01-02", "2025-01-02", "2025-03-01"], utc=True)})
    out = join_evaluation_columns(uc, labels, SimpleNamespace(features_root=root))
    assert out["gender"].tolist() == ["Male", "Female", "__missing__", "__missing__"]  # B's March label: past the ttl
    assert out["customerID"].tolist() == ["A", "B", "C", "B"] and out["label"].tolist() == [1, 0, 1, 1]
