"""Champion/challenger in production, through the real steps, MLflow registry and landed labels:

* a challenger that wins offline while ``require_shadow_days`` is set waits in shadow: batch scoring
  scores it beside the champion on every row (both versions recorded) and serves its score to a
  stable canary fraction of entities only;
* it is promoted only once it has the required labelled shadow days and beats the champion on the
  same rows with confidence; a worse challenger in shadow is not promoted, and leaves shadow;
* a challenger past ``shadow_days`` is no longer scored in shadow.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
import yaml

from pavedml.errors import SkipStep
from tests.conftest import REPO
from tests.helpers.steps import feature_days, run_step

pytestmark = pytest.mark.integration
UC = "live_churn"
START = date(2025, 3, 1)
DAYS = 16
DAY = {i: (START + timedelta(days=i - 1)).isoformat() for i in range(1, DAYS + 3)}  # DAY[1] = START
DAG = f"{UC}_training_pipeline"
WEAK = {"max_iter": 1, "max_leaf_nodes": 2, "learning_rate": 0.01}


@pytest.fixture(scope="module")
def live(tmp_path_factory, airflow_db):
    """16 simulated days of a Telco copy that requires 3 labelled shadow days and a 30% canary."""
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate

    base = tmp_path_factory.mktemp("live")
    cases = base / "use_cases"
    cases.mkdir()
    spec = yaml.safe_load((REPO / "include/use_cases/telco_churn.yaml").read_text())
    spec.update(name=UC)
    spec["model"].update(registered_name=UC, min_train_rows=300)
    spec["evaluation"].update(require_shadow_days=3, canary_fraction=0.3, shadow_days=5, floors={},
                              guardrails={}, slices=[], min_uplift=0.0)
    (cases / f"{UC}.yaml").write_text(yaml.safe_dump(spec))
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(base / "data"))
    mp.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    simulate(UC, START, DAYS, rows_per_day=900)
    feature_days(START, DAYS, UC)
    yield base / "data"
    mp.undo()
    get_settings.cache_clear()


def train(ds: str, run_id: str, hyperparameters: dict | None = None):
    params = json.dumps({"hyperparameters": hyperparameters or {}})
    kw = {"dag_id": DAG, "run_id": run_id, "params": params}
    run_step("build_training_set", ds, UC, **kw)
    version = run_step("train_challenger", ds, UC, **kw).model_version
    decision = run_step("evaluate_challenger", ds, UC, **kw)
    run_step("promote_challenger", ds, UC, **kw)
    return version, decision


def client_and_aliases():
    import mlflow

    from pavedml.adapters.tracking import CHALLENGER, CHAMPION, alias_version, setup
    from pavedml.context import StepContext

    client, _ = setup(StepContext.build(UC, DAY[1]))
    champion = alias_version(client, UC, CHAMPION)
    challenger = alias_version(client, UC, CHALLENGER)
    assert isinstance(client, mlflow.MlflowClient)
    return client, champion, challenger


def predictions(root, day: str) -> pd.DataFrame:
    return pd.read_parquet(root / UC / "predictions" / f"dt={day}" / "part-0.parquet")


def ledger(root) -> list[dict]:
    return [json.loads(line) for line in (root / UC / "registry" / "ledger.jsonl").read_text().splitlines()]


def test_a_better_challenger_waits_in_shadow_then_wins_on_live_evidence(live):
    weak, first = train(DAY[8], "manual__weak", WEAK)
    assert first.outcome == "promote"  # no champion yet: nothing to wait for
    strong, second = train(DAY[8], "manual__strong")
    assert second.outcome == "shadow", second.reasons
    assert not second.promote and "awaiting live evidence" in second.reasons[-1]
    client, champion, challenger = client_and_aliases()
    assert (str(champion.version), str(challenger.version)) == (weak, strong)
    assert challenger.tags["evaluation.outcome"] == "shadow"
    assert ledger(live)[-1]["action"] == "shadow"

    for i in range(9, 15):
        result = run_step("score_customers", DAY[i], UC)
        assert result.challenger_version == strong
    day9, day10 = predictions(live, DAY[9]), predictions(live, DAY[10])
    assert set(day9["champion_version"]) == {weak} and set(day9["challenger_version"]) == {strong}
    canary = day9["served_by"] == "challenger"
    # the canary: about 30% of entities, served the challenger's score and recorded as its version
    assert 0.2 < canary.mean() < 0.4
    assert (day9.loc[canary, "model_version"] == strong).all() and (day9.loc[~canary, "model_version"] == weak).all()
    np.testing.assert_array_equal(day9.loc[canary, "probability"], day9.loc[canary, "challenger_score"])
    np.testing.assert_array_equal(day9.loc[~canary, "probability"], day9.loc[~canary, "champion_score"])
    assert (day9["prediction"] == (day9["probability"] >= 0.5).astype("int8")).all()
    # the same entity stays on the same side from day to day
    both = day9.merge(day10, on="customerID", suffixes=("_9", "_10"))
    assert len(both) > 20 and (both["served_by_9"] == both["served_by_10"]).all()
    scored = json.loads((live / UC / "predictions" / f"dt={DAY[9]}" / "_SCORED.json").read_text())
    assert scored["challenger_version"] == strong and scored["canary_rows"] == int(canary.sum())

    # on day 12 only days 9 and 10 have labels (they land two days later): 2 of 3, it waits; an early
    # partial delivery of day 11's labels (in day 12's partition) does not make day 11 a judged day
    from pavedml import storage
    from pavedml.context import StepContext

    layout = StepContext.build(UC, DAY[12]).layout
    on_time = layout.landing_file("labels", DAY[12], "csv")
    original = storage.read_bytes(on_time)
    day11 = storage.read_bytes(layout.landing_file("labels", DAY[13], "csv")).decode().splitlines()
    storage.write_bytes(on_time, original + ("\n".join(day11[1:21]) + "\n").encode())
    with pytest.raises(SkipStep, match="2 of 3 labelled shadow day"):
        run_step("judge_live_evidence", DAY[12], UC)
    storage.write_bytes(on_time, original)
    assert str(client_and_aliases()[1].version) == weak

    result = run_step("judge_live_evidence", DAY[14], UC, dag_id=f"{UC}_performance_monitor", run_id="scheduled__x")
    assert result.action == "promoted" and result.to_version == strong
    client, champion, challenger = client_and_aliases()
    assert str(champion.version) == strong
    assert client.get_model_version(UC, strong).tags["evaluation.outcome"] == "promoted_live"
    record = json.loads((live / UC / "registry" / "live" / f"v{strong}.json").read_text())
    # the first three days after the one it was trained through whose labels had two days to land
    assert record["live"]["days"] == [DAY[9], DAY[10], DAY[11]]
    assert record["live"]["interval"][0] > 0 and record["live"]["gain"] > 0
    assert record["challenger"]["offline"]["holdout"]["roc_auc"] > record["champion"]["offline"]["holdout"]["roc_auc"]
    # the live metrics are the task's metrics of both models' scores on the same joined rows
    from sklearn.metrics import roc_auc_score

    from pavedml.context import StepContext
    from pavedml.steps.performance import labelled_predictions

    ctx = StepContext.build(UC, DAY[14])
    rows = pd.concat([labelled_predictions(ctx, d) for d in record["live"]["days"]])
    assert len(rows) == record["live"]["rows"]
    assert record["challenger"]["live"]["roc_auc"] == pytest.approx(roc_auc_score(rows["label"], rows["challenger_score"]))
    assert record["champion"]["live"]["roc_auc"] == pytest.approx(roc_auc_score(rows["label"], rows["champion_score"]))
    entry = ledger(live)[-1]
    assert (entry["action"], entry["from_version"], entry["to_version"]) == ("promoted", weak, strong)
    assert "live evidence over 3 day(s)" in entry["reason"]
    # decided once: nothing awaits any more, and the next scoring has no challenger in shadow
    with pytest.raises(SkipStep, match="no live_churn challenger awaits"):
        run_step("judge_live_evidence", DAY[14], UC)
    assert run_step("score_customers", DAY[15], UC).challenger_version is None


def test_a_worse_challenger_in_shadow_is_kept_out_on_live_evidence(live):
    client, champion, _ = client_and_aliases()
    strong = str(champion.version)
    worse, decision = train(DAY[11], "manual__worse", WEAK)
    assert decision.outcome == "keep_champion"  # it loses offline ...
    # ... so pretend its holdout was unrepresentative: put it in shadow as an offline win would
    client.set_model_version_tag(UC, worse, "evaluation.outcome", "shadow")
    for i in range(12, 17):
        assert run_step("score_customers", DAY[i], UC).challenger_version == worse
    with pytest.raises(SkipStep, match="kept over challenger"):
        run_step("judge_live_evidence", DAY[16], UC)
    client, champion, challenger = client_and_aliases()
    assert str(champion.version) == strong and str(challenger.version) == worse
    assert client.get_model_version(UC, worse).tags["evaluation.outcome"] == "kept_live"
    entry = ledger(live)[-1]
    assert (entry["action"], entry["to_version"], entry["challenger_version"]) == ("keep_champion", strong, worse)
    record = json.loads((live / UC / "registry" / "live" / f"v{worse}.json").read_text())
    assert record["outcome"] == "keep_champion" and record["live"]["gain"] < 0
    # past shadow_days (5 days after the day it was trained through) it is not scored beside the champion
    from pavedml.context import StepContext
    from pavedml.steps.scoring import shadow_challenger

    assert shadow_challenger(StepContext.build(UC, DAY[16]), client, champion) is not None
    assert shadow_challenger(StepContext.build(UC, DAY[17]), client, champion) is None


def test_a_newer_challenger_supersedes_one_waiting_for_live_evidence(live):
    """A retrain while a challenger waits for live evidence: the waiting one leaves shadow undecided,
    said in its tags and the ledger (never silently dropped)."""
    client, champion, _ = client_and_aliases()
    waiting, _ = train(DAY[14], "manual__waiting", WEAK)
    client.set_model_version_tag(UC, waiting, "evaluation.outcome", "shadow")
    newer, _ = train(DAY[14], "manual__newer", WEAK)
    tags = client.get_model_version(UC, waiting).tags
    assert tags["evaluation.outcome"] == "superseded" and tags["evaluation.superseded_by"] == newer
    entries = [e for e in ledger(live) if e["action"] == "superseded" and e["challenger_version"] == waiting]
    assert len(entries) == 1
    assert f"challenger v{newer} was registered while v{waiting} waited" in entries[0]["reason"]
    assert str(client_and_aliases()[1].version) == str(champion.version)


def test_canary_selection_is_stable_and_proportional():
    from pavedml.steps.scoring import canary_rows

    keys = pd.Series([f"c{i:05d}" for i in range(20_000)])
    mask = canary_rows(keys, 0.1)
    assert 0.09 < mask.mean() < 0.11
    assert (canary_rows(keys.iloc[::-1], 0.1) == mask[::-1]).all()  # per key, not per position
    assert not canary_rows(keys, 0.0).any()
    assert mask[canary_rows(keys, 0.05)].all()  # a smaller canary is a subset of a larger one
