"""Governance on the demo data, as the training pipeline runs it (#20): a planted unfair challenger
(its training labels biased against one gender) is refused by the fairness gate while the fair one
is promoted; every registered version carries governance tags, a model card (Markdown + HTML, in
MLflow and beside the decision), permutation importance and a description; registry events reach
a local Slack/Teams webhook sink; the audit export alone replays the champion's history. A second
use case keeps its sensitive column out of the model (evaluation only) and explains each scored row.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.helpers.http_sink import HttpSink
from tests.helpers.registry import mlflow_client
from tests.helpers.steps import feature_days, run_step
from tests.helpers.use_cases import write_copy
from tests.integration.conftest import HISTORY_DAYS, HISTORY_START, LAST_DAY

pytestmark = pytest.mark.integration
TELCO, SECOND = "telco_churn", "fair_eval"
TRAIN = "{}_training_pipeline"
#: the share of female churners relabelled "no churn" in the unfair challenger's training data
BIAS = 0.5


def _biased_training_run(run_id: str) -> dict:
    """The planted unfair challenger: built as usual, then half the female churners in its train
    and validation splits relabelled as staying (a biased historical label), trained and judged."""
    from pavedml.context import StepContext

    kw = {"dag_id": TRAIN.format(TELCO), "run_id": run_id, "params": json.dumps({"reason": "planted unfair"})}
    run_step("build_training_set", LAST_DAY, TELCO, **kw)
    ctx = StepContext.build(TELCO, LAST_DAY, **kw)
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        path = ctx.layout.training_split(ctx.run_key, split)
        df = pd.read_parquet(path)
        flip = (df["gender"] == "Female") & (df["label"] == 1) & (rng.random(len(df)) < BIAS)
        df.loc[flip, "label"] = 0
        df.to_parquet(path, index=False)
    out = {s: run_step(s, LAST_DAY, TELCO, **kw).as_dict()
           for s in ("train_challenger", "evaluate_challenger", "promote_challenger")}
    return out


@pytest.fixture(scope="module")
def scenario(history_copy, tmp_path_factory):
    from tests.helpers.dagrun import dagbag, run_dag

    cases = tmp_path_factory.mktemp("governance_cases")
    from pavedml.settings import DEFAULT_USE_CASES_DIR

    shutil.copy(DEFAULT_USE_CASES_DIR / f"{TELCO}.yaml", cases / f"{TELCO}.yaml")
    spec = write_copy(cases, SECOND)
    spec["features"]["categorical"].remove("gender")  # a protected attribute the model must not see
    write_copy(cases, SECOND, features=spec["features"], governance={"owner": "risk-team", "business_unit": "retention"},
               evaluation={**spec["evaluation"], "fairness": {"sensitive": ["gender", "SeniorCitizen"],
                                                              "max_difference": {"true_positive_rate": 0.3},
                                                              "min_group_rows": 100}},
               scoring={"explain": True, "explain_top": 3})
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    from pavedml.tools.simulate import simulate

    simulate(SECOND, HISTORY_START, HISTORY_DAYS, rows_per_day=1500)
    feature_days(HISTORY_START, HISTORY_DAYS, SECOND)
    out = {"root": history_copy}
    out["unfair"] = _biased_training_run("manual__planted_unfair")
    with HttpSink() as sink:
        mp.setenv("AIRFLOW_CONN_GOV_SLACK", json.dumps({"conn_type": "slackwebhook",
                                                        "password": f"{sink.url}/slack/T0/B0/not-shown"}))
        mp.setenv("AIRFLOW_CONN_GOV_TEAMS", json.dumps({"conn_type": "http", "password": f"{sink.url}/teams"}))
        mp.setenv("PAVEDML_EVENTS_SLACK_CONN_ID", "gov_slack")
        mp.setenv("PAVEDML_EVENTS_WEBHOOK_CONN_ID", "gov_teams")
        get_settings.cache_clear()
        dagbag.cache_clear()  # this module's use-case folder
        try:
            out["fair"] = run_dag(TRAIN.format(TELCO), LAST_DAY, {"reason": "fair retrain"})
            out["second"] = run_dag(TRAIN.format(SECOND), LAST_DAY, {"reason": "first model"})
        finally:
            dagbag.cache_clear()
        out["posts"] = list(sink.posts)
    for name in ("AIRFLOW_CONN_GOV_SLACK", "AIRFLOW_CONN_GOV_TEAMS", "PAVEDML_EVENTS_SLACK_CONN_ID",
                 "PAVEDML_EVENTS_WEBHOOK_CONN_ID"):
        mp.delenv(name)
    get_settings.cache_clear()
    out["scored"] = run_step("score_customers", LAST_DAY, SECOND).as_dict()
    from pavedml.cli import main

    out["audit_file"] = cases.parent / "audit.jsonl"
    assert main(["audit", "export", "--use-case", TELCO, "--since", "2000-01-01",
                 "--output", str(out["audit_file"])]) == 0
    yield out
    mp.undo()
    get_settings.cache_clear()


def test_the_planted_unfair_challenger_is_refused_by_the_fairness_gate_alone(scenario):
    unfair = scenario["unfair"]
    decision = unfair["evaluate_challenger"]
    assert decision["outcome"] == "reject" and not decision["promote"]
    assert decision["reasons"] and all(r.startswith("fairness: ") for r in decision["reasons"]), decision["reasons"]
    assert any("true_positive_rate differs by" in r and "between gender groups" in r and "Female" in r
               for r in decision["reasons"])
    assert decision["metrics"]["challenger"]["roc_auc"] >= 0.70  # its floors hold: fairness alone refused it
    assert unfair["promote_challenger"]["action"] == "kept" and unfair["promote_challenger"]["to_version"] is None
    tags = mlflow_client().get_model_version(TELCO, unfair["train_challenger"]["model_version"]).tags
    assert tags["fairness.ok"] == "false" and "gender" in tags["fairness.violations"]
    assert tags["evaluation.outcome"] == "reject"


def test_the_fair_challenger_is_promoted_with_governance_tags_card_and_description(scenario):
    state, tasks, xcoms = scenario["fair"]
    assert state == "success", tasks
    assert xcoms["evaluate_challenger"]["outcome"] == "promote", xcoms["evaluate_challenger"]["reasons"]
    version = xcoms["train_challenger"]["model_version"]
    client = mlflow_client()
    assert str(client.get_model_version_by_alias(TELCO, "champion").version) == version
    mv = client.get_model_version(TELCO, version)
    tags = mv.tags
    assert tags["governance.owner"] == "ml-platform" and tags["governance.data_classification"] == "confidential"
    assert tags["governance.business_unit"] == "customer-retention" and "GDPR" in tags["governance.regulatory_context"]
    assert tags["approval.status"] == "not_required" and tags["fairness.ok"] == "true"
    assert "Contract" in tags["explain.top_features"].split(", ")[:3]
    assert mv.description.startswith(f"{TELCO} v{version} (hist_gradient_boosting") and "fairness limits hold" in mv.description
    assert "registry: promoted" in mv.description  # the card was updated by the promotion
    artifacts = {a.path for a in client.list_artifacts(mv.run_id, "card")}
    assert artifacts == {"card/model_card.md", "card/model_card.html"}
    card = tags["model_card"]
    assert card == xcoms["promote_challenger"]["card"] and card.endswith("model_card.html")
    html = open(card).read()
    for section in ("Purpose and ownership", "Data", "Features", "Training", "Offline metrics", "Slice metrics",
                    "Fairness", "Explanation", "Decision", "Approval", "Registry"):
        assert f"<h2>{section}</h2>" in html, section
    md = open(card.replace(".html", ".md")).read()
    snapshots = json.loads(client.get_run(mv.run_id).data.tags["raw_snapshot_hashes"])
    assert all(sha in md for sha in snapshots.values())  # every raw snapshot it learned from, by hash
    assert "gender=Female" in md and "gender=Male" in md


def test_registry_events_reached_both_channels_for_both_use_cases(scenario):
    texts = [p["json"]["text"] for p in scenario["posts"]]
    fair_v = scenario["fair"][2]["train_challenger"]["model_version"]
    for channel in ("/slack/T0/B0/not-shown", "/teams"):
        got = [p["json"]["text"].splitlines()[0] for p in scenario["posts"] if p["path"] == channel]
        assert any(t.startswith(f"[pavedml] {TELCO} v{fair_v} registered:") for t in got), got
        assert any(t.startswith(f"[pavedml] {TELCO} v{fair_v} promoted:") for t in got), got
        assert any(t.startswith(f"[pavedml] {SECOND} v1 promoted:") for t in got), got
    assert all("not-shown" not in t for t in texts)
    teams = [p["json"] for p in scenario["posts"] if p["path"] == "/teams" and p["json"]["event"]["event"] == "promoted"]
    assert all(t["links"]["mlflow"].endswith(f"/versions/{t['event']['version']}") for t in teams)
    assert all("airflow" in t["links"] and "card" in t["links"] for t in teams), teams


def test_a_sensitive_column_kept_out_of_the_model_is_still_judged(scenario):
    state, tasks, xcoms = scenario["second"]
    assert state == "success", tasks
    mv = mlflow_client().get_model_version(SECOND, xcoms["train_challenger"]["model_version"])
    run = mlflow_client().get_run(mv.run_id)
    assert "gender" not in run.data.params["features.categorical"].split(",")
    record = json.loads(open(xcoms["evaluate_challenger"]["record"]).read())
    groups = record["fairness"]["columns"]["gender"]["groups"]
    assert set(groups) == {"Female", "Male"} and all(g["judged"] for g in groups.values())
    assert set(record["fairness"]["columns"]["SeniorCitizen"]["groups"]) == {"0", "1"}
    assert record["features"]["evaluation_only"] == ["gender"]
    assert mv.tags["governance.owner"] == "risk-team"


def test_scoring_explains_each_row_with_its_top_features_and_reports_the_cost(scenario):
    scored = scenario["scored"]
    df = pd.read_parquet(scored["partition"])
    assert scored["explain_seconds"] is not None and scored["explain_seconds"] > 0
    tops = df["top_features"].str.split("; ")
    assert (tops.str.len() == 3).all()
    names = {t.split(":")[0] for row in tops for t in row}
    assert "gender" not in names and names <= set(_feature_columns(SECOND))
    assert {"Contract", "tenure"} & names


def _feature_columns(name: str) -> list[str]:
    from pavedml.config import get_use_case

    return get_use_case(name).feature_columns


def test_the_audit_export_alone_replays_the_champion_history(scenario):
    docs = [json.loads(line) for line in scenario["audit_file"].read_text().splitlines()]
    assert docs and all(d["event"]["dataset"] == "pavedml.registry" and d["ecs"]["version"] for d in docs)
    champion, judged = None, set()
    for d in docs:  # replay: every move starts from the champion the previous ones left
        labels = d["labels"]
        judged.add(labels.get("challenger_version") or labels.get("to_version"))
        if d["event"]["type"] == ["change"]:
            assert labels.get("from_version") == champion, d
            champion = labels["to_version"]
    client = mlflow_client()
    assert champion == str(client.get_model_version_by_alias(TELCO, "champion").version)
    versions = {str(v.version) for v in client.search_model_versions(f"name='{TELCO}'")}
    assert versions <= judged  # every registered version's fate is in the export
    actions = [d["event"]["action"] for d in docs]
    assert actions == ["model-rejected", "model-promoted"], actions
