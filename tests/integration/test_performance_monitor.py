"""Realized performance through dag.test(): a trained champion scores days, labels land a delay
later (one of them later still), the performance monitor measures each day once its labels are
there, a planted degradation (labels flipped from day N) alerts and asks for retraining once, a
broken labels file is refused by name. A second use case (a regression with event times) runs
the same steps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers.dagrun import asset_events, run_dag
from tests.helpers.steps import run_step
from tests.integration.conftest import LAST_DAY

pytestmark = pytest.mark.integration
UC = "telco_churn"
DAG = f"{UC}_performance_monitor"
SCORED = ["2025-01-03", "2025-01-04", "2025-01-05", "2025-01-06", "2025-01-07", "2025-01-08"]
FLIP_FROM = "2025-01-07"  # labels of this day and later are flipped for FLIP_SHARE of the rows
FLIP_SHARE = 0.6


def labels_file(root: Path, dt: str) -> Path:
    return root / f"landing/{UC}/labels/dt={dt}/labels.csv"


def flip(path: Path, share: float, seed: int) -> None:
    df = pd.read_csv(path, dtype=str)
    rng = np.random.default_rng(seed)
    rows = rng.random(len(df)) < share
    df.loc[rows, "Churn"] = df.loc[rows, "Churn"].map({"Yes": "No", "No": "Yes"})
    df.to_csv(path, index=False)


def alerts(root: Path, kind: str) -> list[dict]:
    path = root / "alerts.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def requests(root: Path) -> list[dict]:
    path = root / UC / "drift" / "retrain_requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def loop(history_copy):
    root = history_copy
    out = {"train": run_dag(f"{UC}_training_pipeline", LAST_DAY, {"reason": "first model"})}
    assert out["train"][0] == "success", out["train"]
    for ds in SCORED:
        run_step("score_customers", ds, UC)
    out["d06"] = run_dag(DAG, "2025-01-06")  # labels of 03, 04 landed (delay 2 days); 05, 06 not yet
    # the labels of 06 (due on 08) are late: moved aside, then delivered
    late = labels_file(root, "2025-01-08")
    stash = root.parent / "late_labels.csv"
    shutil.move(late, stash)
    out["d08_late"] = run_dag(DAG, "2025-01-08")
    shutil.move(stash, late)
    out["d08"] = run_dag(DAG, "2025-01-08")
    out["d08_bytes"] = {d: (root / UC / f"performance/dt={d}/metrics.json").read_bytes() for d in SCORED[:4]}
    out["d08_again"] = run_dag(DAG, "2025-01-08")
    # the planted degradation: labels of 07 and 08 (landing 09 and 10) flipped for 60% of the rows
    flip(labels_file(root, "2025-01-09"), FLIP_SHARE, 1)
    flip(labels_file(root, "2025-01-10"), FLIP_SHARE, 2)
    out["d10"] = run_dag(DAG, "2025-01-10")
    out["requests_after_d10"] = requests(root)
    out["d10_again"] = run_dag(DAG, "2025-01-10")
    # a re-delivery of 08's labels (other rows flipped) on 11: new data, still degraded, within the cooldown
    redelivered = labels_file(root, "2025-01-11")
    redelivered.parent.mkdir(parents=True)
    shutil.copy(labels_file(root, "2025-01-10"), redelivered)
    flip(redelivered, 0.1, 3)
    out["d11"] = run_dag(DAG, "2025-01-11")
    return out


def test_a_day_is_measured_once_its_labels_land(loop):
    state, tasks, xcoms = loop["d06"]
    assert state == "success", tasks
    assert xcoms["measure_performance"]["measured"] == ["2025-01-03", "2025-01-04"]
    assert xcoms["measure_performance"]["waiting"] == ["2025-01-05", "2025-01-06"]
    late = loop["d08_late"][2]["measure_performance"]
    assert late["measured"] == ["2025-01-05"] and late["unchanged"] == ["2025-01-03", "2025-01-04"]
    assert late["waiting"] == ["2025-01-06", "2025-01-07", "2025-01-08"]  # 06 is late; 07, 08 not due
    landed = loop["d08"][2]["measure_performance"]
    assert landed["measured"] == ["2025-01-06"]
    assert landed["unchanged"] == ["2025-01-03", "2025-01-04", "2025-01-05"]


def test_realized_metrics_equal_sklearn_on_the_joined_rows(loop, history_copy):
    """The join and the metrics, recomputed here from the files: predictions x labels (Churn=Yes)."""
    from sklearn import metrics as m

    day = "2025-01-05"
    preds = pd.read_parquet(history_copy / UC / f"predictions/dt={day}/part-0.parquet")
    labels = pd.read_csv(labels_file(history_copy, "2025-01-07"), dtype=str)
    assert set(labels["snapshot_date"]) == {day}
    joined = preds.merge(labels, on="customerID")
    y = (joined["Churn"] == "Yes").astype(int).to_numpy()
    p = joined["champion_score"].to_numpy()
    record = json.loads((history_copy / UC / f"performance/dt={day}/metrics.json").read_text())
    (block,) = [b for b in record["versions"] if b["role"] == "champion"]
    assert block["n"] == len(joined) == 1500 and block["model_version"] == "1"
    got = block["metrics"]
    assert got["roc_auc"]["value"] == pytest.approx(m.roc_auc_score(y, p), abs=1e-6)
    assert got["pr_auc"]["value"] == pytest.approx(m.average_precision_score(y, p), abs=1e-6)
    assert got["brier"]["value"] == pytest.approx(m.brier_score_loss(y, p), abs=1e-6)
    assert got["log_loss"]["value"] == pytest.approx(m.log_loss(y, p), abs=1e-6)
    assert got["observed_rate"]["value"] == pytest.approx(y.mean(), abs=1e-6)
    assert got["mean_predicted"]["value"] == pytest.approx(p.mean(), abs=1e-6)
    for name in ("roc_auc", "pr_auc", "brier", "log_loss", "ece"):
        assert got[name]["lo"] < got[name]["value"] < got[name]["hi"], (name, got[name])
    history = pd.read_csv(history_copy / UC / "performance/history.csv", dtype={"ds": str, "model_version": str})
    row = history[(history["ds"] == day) & (history["metric"] == "roc_auc") & (history["role"] == "champion")]
    assert row["value"].item() == pytest.approx(got["roc_auc"]["value"]) and row["n"].item() == 1500
    assert (history_copy / UC / "performance/history.png").stat().st_size > 1000


def test_no_degradation_skips_the_request(loop):
    state, tasks, xcoms = loop["d08"]
    assert state == "success"
    assert tasks["measure_performance"] == "success"
    assert tasks["request_performance_retraining"] == "skipped"


def test_a_rerun_leaves_every_record_as_it_was(loop, history_copy):
    again = loop["d08_again"][2]["measure_performance"]
    assert again["measured"] == [] and again["unchanged"] == SCORED[:4]
    for day, before in loop["d08_bytes"].items():
        assert (history_copy / UC / f"performance/dt={day}/metrics.json").read_bytes() == before
    # recomputed from scratch (the record removed) by a run of the day that wrote it: the same bytes
    path = history_copy / UC / "performance/dt=2025-01-04/metrics.json"
    assert json.loads(path.read_bytes())["as_of"] == "2025-01-06"
    path.unlink()
    result = run_step("measure_performance", "2025-01-06", UC)
    assert result.measured == ["2025-01-04"]
    assert path.read_bytes() == loop["d08_bytes"]["2025-01-04"]


def test_an_earlier_run_keeps_a_record_measured_with_later_labels(loop, history_copy):
    """08's record was measured on 11 with the re-delivered labels; a run of 10 (a backfill, or a
    labels Asset event re-delivering 10's partition) cannot see them and must not revert it."""
    path = history_copy / UC / "performance/dt=2025-01-08/metrics.json"
    history = history_copy / UC / "performance/history.csv"
    before, rows = path.read_bytes(), history.read_bytes()
    assert json.loads(before)["as_of"] == "2025-01-11"
    result = run_step("measure_performance", "2025-01-10", UC)
    assert "2025-01-08" not in result.measured and "2025-01-08" in result.unchanged
    assert path.read_bytes() == before and history.read_bytes() == rows


def test_flipped_labels_alert_and_request_retraining_once(loop, history_copy):
    state, tasks, xcoms = loop["d10"]
    assert state == "success", tasks
    assert xcoms["measure_performance"]["measured"] == ["2025-01-07", "2025-01-08"]
    assert tasks["request_performance_retraining"] == "success"
    req = xcoms["request_performance_retraining"]
    assert req["requested"] and req["window"] == ["2025-01-08"]
    first = req["alert"]["summary"].splitlines()[0]
    assert first.startswith(f"PERFORMANCE DEGRADED [{UC}] champion v1 realized roc_auc"), first
    assert "2025-01-08" in first and "training holdout" in first
    sent = alerts(history_copy, "performance_degraded")
    assert sent and sent[0]["summary"].splitlines()[0] == first
    (made,) = loop["requests_after_d10"]
    assert made["source"] == "performance" and made["judged_days"] == ["2025-01-08"]
    events = [e for e in asset_events(f"pavedml://{UC}/retrain-request") if e.get("source") == "performance"]
    assert len(events) == 1 and events[0]["judged_days"] == ["2025-01-08"]
    # realized AUC collapsed on the flipped days, not before
    history = pd.read_csv(history_copy / UC / "performance/history.csv", dtype={"ds": str})
    auc = history[(history["metric"] == "roc_auc") & (history["role"] == "champion")].set_index("ds")["value"]
    assert auc["2025-01-08"] < 0.6 < auc["2025-01-06"]


def test_no_second_request_for_the_same_days_or_within_the_cooldown(loop, history_copy):
    assert loop["d10_again"][1]["request_performance_retraining"] == "skipped"
    state, tasks, xcoms = loop["d11"]
    assert state == "success" and tasks["request_performance_retraining"] == "skipped"
    assert xcoms["measure_performance"]["measured"] == ["2025-01-08"]  # the re-delivery changed its labels
    assert len(requests(history_copy)) == 1
    assert len([e for e in asset_events(f"pavedml://{UC}/retrain-request") if e.get("source") == "performance"]) == 1
    held = [a for a in alerts(history_copy, "performance_degraded") if "cooldown" in a["summary"]]
    assert len(held) == 1 and "2025-01-08" in held[0]["summary"].splitlines()[0]


@pytest.mark.parametrize("content, expect", [
    ("customerID,Churn,snapshot_date\n{key},Maybe,2025-01-08\n", "Churn"),
    ("customerID,Churn,snapshot_date\n{key},Yes,2025-01-08\n{key2},N", ""),
])
def test_a_broken_labels_file_is_refused_naming_it(loop, history_copy, content, expect):
    key, key2 = pd.read_parquet(history_copy / UC / "predictions/dt=2025-01-08/part-0.parquet")["customerID"][:2]
    bad = labels_file(history_copy, "2025-01-12")
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(content.format(key=key, key2=key2))
    try:
        env = {**os.environ, "PAVEDML_DATA_ROOT": str(history_copy)}
        proc = subprocess.run([sys.executable, "-m", "pavedml", "measure_performance", "--use-case", UC,
                               "--ds", "2025-01-12"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 3, proc.stderr[-3000:]
        failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED ")]
        assert failed and "dt=2025-01-12" in "\n".join(proc.stderr.splitlines()[-40:]), proc.stderr[-3000:]
        assert expect in proc.stderr
    finally:
        shutil.rmtree(bad.parent)


# -- a second use case: a regression with event times (the "bring your own data" example) --------

VISITS_UC = "diabetes_visits"
VISIT_DAYS = ["2025-03-02", "2025-03-03", "2025-03-04"]


@pytest.fixture(scope="module")
def visits(tmp_path_factory):
    """diabetes_visits imported from its table; three days scored by hand in the scoring contract's
    format (a champion and a shadow challenger on every row, scores = label + noise)."""
    import yaml

    from tests.conftest import REPO

    base = tmp_path_factory.mktemp("visits")
    root, cases = base / "data", base / "use_cases"
    cases.mkdir()
    spec = yaml.safe_load((REPO / "include/examples/diabetes_visits/diabetes_visits.yaml").read_text())
    spec["performance"] = {"min_rows": 10, "bootstrap": 50}
    (cases / f"{VISITS_UC}.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PAVEDML_DATA_ROOT": str(root), "PAVEDML_USE_CASES_DIR": str(cases)}
    proc = subprocess.run([sys.executable, "-m", "pavedml", "import-history", "--use-case", VISITS_UC, "--from",
                           str(REPO / "include/examples/diabetes_visits/visits.csv")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rng = np.random.default_rng(5)
    for day in VISIT_DAYS:
        batch = pd.read_csv(root / f"landing/{VISITS_UC}/visits/dt={day}/visits.csv", dtype=str)
        labels = pd.concat([pd.read_csv(p, dtype=str) for p in (root / f"landing/{VISITS_UC}/labels").glob("dt=*/*.csv")])
        y = batch[["visit_id"]].merge(labels, on="visit_id")["progression"].astype(float).to_numpy()
        part = root / VISITS_UC / f"predictions/dt={day}"
        part.mkdir(parents=True)
        champion = y + rng.normal(0, 30, len(y))
        pd.DataFrame({"visit_id": batch["visit_id"], "event_timestamp": pd.to_datetime(batch["visit_time"], utc=True),
                      "prediction": champion, "model_name": VISITS_UC, "model_version": "3", "served_by": "champion",
                      "champion_version": "3", "champion_score": champion, "challenger_version": "4",
                      "challenger_score": y + rng.normal(0, 50, len(y))}).to_parquet(part / "part-0.parquet")
        (part / "_SCORED.json").write_text(json.dumps({"model_version": "3", "challenger_version": "4"}))
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(root))
    mp.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    yield root
    mp.undo()


def test_second_use_case_regression_metrics_equal_sklearn(visits):
    from sklearn import metrics as m

    result = run_step("measure_performance", "2025-03-05", VISITS_UC)
    assert result.measured == VISIT_DAYS and result.primary_metric == "rmse"
    day = VISIT_DAYS[0]
    preds = pd.read_parquet(visits / VISITS_UC / f"predictions/dt={day}/part-0.parquet")
    labels = pd.concat([pd.read_csv(p, dtype=str) for p in (visits / f"landing/{VISITS_UC}/labels").glob("dt=*/*.csv")])
    joined = preds.merge(labels, on="visit_id")
    y = joined["progression"].astype(float).to_numpy()
    record = json.loads((visits / VISITS_UC / f"performance/dt={day}/metrics.json").read_text())
    blocks = {b["role"]: b for b in record["versions"]}
    assert set(blocks) == {"champion", "challenger"} and blocks["challenger"]["model_version"] == "4"
    for role in ("champion", "challenger"):
        got, p = blocks[role]["metrics"], joined[f"{role}_score"].to_numpy()
        assert blocks[role]["n"] == len(y) > 5
        assert got["rmse"]["value"] == pytest.approx(np.sqrt(m.mean_squared_error(y, p)), abs=1e-5)
        assert got["mae"]["value"] == pytest.approx(m.mean_absolute_error(y, p), abs=1e-5)
        assert got["r2"]["value"] == pytest.approx(m.r2_score(y, p), abs=1e-5)
        assert got["rmse"]["lo"] < got["rmse"]["value"] < got["rmse"]["hi"]


def test_second_use_case_degradation_requests_retraining_once(visits):
    """rmse above the ceiling (evaluation.floors rmse: 80) on the newest day: an alert and a request."""
    from pavedml.errors import SkipStep

    last = VISIT_DAYS[-1]
    with pytest.raises(SkipStep, match="within its floors"):
        run_step("request_performance_retraining", "2025-03-05", VISITS_UC)
    path = visits / f"landing/{VISITS_UC}/labels/dt=2025-03-05/labels.csv"  # labels of 03-04 (delay 1 day)
    assert set(pd.read_csv(path, dtype=str)["snapshot_date"]) == {last}
    labels = pd.read_csv(path, dtype=str)
    labels["progression"] = (labels["progression"].astype(float) + 150).astype(str)
    labels.to_csv(path, index=False)
    assert run_step("measure_performance", "2025-03-05", VISITS_UC).measured == [last]
    result = run_step("request_performance_retraining", "2025-03-05", VISITS_UC)
    assert result.requested and result.window == [last]
    assert "rmse" in result.alert["summary"].splitlines()[0] and "above its ceiling 80" in result.alert["summary"]
    with pytest.raises(SkipStep, match="already made"):
        run_step("request_performance_retraining", "2025-03-05", VISITS_UC)
    made = [json.loads(line) for line in (visits / VISITS_UC / "drift/retrain_requests.jsonl").read_text().splitlines()]
    assert len(made) == 1 and made[0]["source"] == "performance"
