"""The prediction service (``python -m pavedml serve``) against what the pipeline materializes, with
real MLflow registry, Feast online store (SQLite) and models trained by the real steps:

* online answers equal batch scoring for the same entities and day, by key (online store) and by raw
  row (the same ``compute_features``);
* the canary share is the batch canary's stable hash, within tolerance; shadow scores and every
  answer land in the prediction log; the drift monitor reads that served traffic;
* every bad input gets its status and names the thing; no model yet / feature store down is 503;
* a real server process swaps models under load with zero failed requests and never a mixed answer,
  and shuts down gracefully (log flushed).

The history ends today (the service judges the challenger's shadow days against today): v1 (good)
is the champion, v2 (weak, rejected) the challenger in shadow, both trained through yesterday.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO
from tests.helpers import procs
from tests.helpers.standalone import free_port
from tests.helpers.steps import feature_days, run_step

pytestmark = pytest.mark.integration
UC = "serve_churn"
TODAY = datetime.now(UTC).date()
DAYS = [(TODAY - timedelta(days=8 - i)).isoformat() for i in range(9)]  # DAYS[-1] = today
YESTERDAY = DAYS[-2]
DAG = f"{UC}_training_pipeline"
WEAK = {"max_iter": 1, "max_leaf_nodes": 2, "learning_rate": 0.01}
MAX_KEYS = 50


def write_use_case(cases, name: str = UC, **serving) -> None:
    spec = yaml.safe_load((REPO / "include/use_cases/telco_churn.yaml").read_text())
    spec.update(name=name)
    spec["model"].update(registered_name=name, min_train_rows=300)
    spec["evaluation"].update(floors={}, guardrails={}, slices=[], min_uplift=0.0)
    spec["drift"] = {"judge_on": ["features", "served"]}
    spec["serving"] = {"canary_fraction": 0.3, "shadow": True, "max_keys": MAX_KEYS, "log_flush_seconds": 0.5,
                       **serving}
    (cases / f"{name}.yaml").write_text(yaml.safe_dump(spec))


@pytest.fixture(scope="module")
def history(tmp_path_factory, airflow_db):
    """Nine simulated days ending today through the feature steps; v1 champion, v2 challenger."""
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate

    base = tmp_path_factory.mktemp("serving")
    cases = base / "use_cases"
    cases.mkdir()
    write_use_case(cases)
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(base / "data"))
    mp.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    simulate(UC, datetime.fromisoformat(DAYS[0]).date(), len(DAYS), rows_per_day=600)
    feature_days(datetime.fromisoformat(DAYS[0]).date(), len(DAYS), UC)
    versions = []
    for run_id, hp in (("good", {}), ("weak", WEAK)):
        kw = {"dag_id": DAG, "run_id": run_id, "params": json.dumps({"hyperparameters": hp})}
        run_step("build_training_set", YESTERDAY, UC, **kw)
        versions.append(run_step("train_challenger", YESTERDAY, UC, **kw).model_version)
        run_step("evaluate_challenger", YESTERDAY, UC, **kw)
        run_step("promote_challenger", YESTERDAY, UC, **kw)
    batch = run_step("score_customers", DAYS[-1], UC)
    assert (batch.model_version, batch.challenger_version) == tuple(versions), (batch, versions)
    yield {"root": base / "data", "cases": cases, "versions": versions}
    mp.undo()
    get_settings.cache_clear()


def batch_predictions(root) -> pd.DataFrame:
    return pd.read_parquet(root / UC / "predictions" / f"dt={DAYS[-1]}" / "part-0.parquet").set_index("customerID")


def make_service(**kw):
    from pavedml.config import get_use_case
    from pavedml.serving.app import PredictionService
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    return PredictionService(get_use_case(UC), get_settings(), **kw)


def client_of(service):
    from fastapi.testclient import TestClient

    from pavedml.serving.app import create_app

    return TestClient(create_app(service))


def predict(client, payload, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(f"/v1/{UC}/predict", content=json.dumps(payload), headers=headers)


def served_log(root) -> pd.DataFrame:
    files = sorted((root / UC / "served").glob("dt=*/part-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def test_online_answers_equal_batch_scoring_canary_share_and_shadow_log(history):
    root, (v1, v2) = history["root"], history["versions"]
    batch = batch_predictions(root)
    keys = batch.index.tolist()
    service = make_service()
    answers = []
    with client_of(service) as client:
        assert client.get("/readyz").json() == {"ready": True, "champion_version": v1, "challenger_version": v2}
        for i in range(0, len(keys), MAX_KEYS):
            r = predict(client, {"keys": keys[i:i + MAX_KEYS]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model_name"] == UC
            answers += body["predictions"]
        again = predict(client, {"keys": keys[:MAX_KEYS]}).json()["predictions"]
        # by raw row: the landing batch's rows of today, through the same compute_features
        raw = pd.read_csv(root / "landing" / UC / "customers" / f"dt={DAYS[-1]}" / "customers.csv", dtype=str)
        raw = raw.head(20)
        spec = __import__("pavedml.config", fromlist=["get_use_case"]).get_use_case(UC).schema_.columns
        rows = []
        for rec in raw.to_dict("records"):
            row = {}
            for c, s in spec.items():
                v = rec[c]
                row[c] = (None if v.strip() == "" else float(v)) if s.type in ("int", "float") else v
            rows.append(row)
        by_row = predict(client, {"rows": rows})
        assert by_row.status_code == 200, by_row.text
        metrics = client.get("/metrics").text
    answered = pd.DataFrame(answers).set_index("key")
    assert answered.index.tolist() == keys
    assert set(answered["model_version"]) == {v1, v2}
    expected = np.where(answered["alias"] == "challenger", batch["challenger_score"], batch["champion_score"])
    np.testing.assert_allclose(answered["probability"].to_numpy(), expected, rtol=0, atol=1e-9)
    assert (answered["prediction"] == (answered["probability"] >= 0.5).astype(int)).all()
    assert (answered.loc[answered["alias"] == "champion", "model_version"] == v1).all()
    ages = answered["feature_age_seconds"]
    assert ((ages > 0) & (ages < 2 * 86400)).all()  # today's snapshot: less than two days old
    # the canary is the batch canary's stable hash of the key, within tolerance of the configured share
    from pavedml.steps.scoring import canary_rows

    share = (answered["alias"] == "challenger").mean()
    assert abs(share - 0.3) < 0.05, share
    assert ((answered["alias"] == "challenger").to_numpy() == canary_rows(pd.Series(keys), 0.3)).all()
    assert [a["alias"] for a in again] == answered["alias"].head(MAX_KEYS).tolist()
    # raw rows answer as the batch did for the same entities
    got = pd.DataFrame(by_row.json()["predictions"]).set_index("key")
    assert got.index.tolist() == raw["customerID"].tolist()
    want = np.where(got["alias"] == "challenger", batch.loc[got.index, "challenger_score"],
                    batch.loc[got.index, "champion_score"])
    np.testing.assert_allclose(got["probability"].to_numpy(), want, rtol=0, atol=1e-9)
    # the log (flushed on shutdown): every answer, with the challenger's shadow score on every row
    log = served_log(root)
    n_answered = len(keys) + MAX_KEYS + len(rows)
    assert len(log) == n_answered
    assert set(log["source"]) == {"keys", "rows"}
    assert log["challenger_version"].eq(v2).all() and log["challenger_score"].notna().all()
    assert log["champion_version"].eq(v1).all()
    by_key = log[log["source"] == "keys"].drop_duplicates("customerID").set_index("customerID")
    np.testing.assert_allclose(by_key.loc[keys, "challenger_score"], batch.loc[keys, "challenger_score"],
                               rtol=0, atol=1e-9)
    assert set(log["served_by"]) == {"champion", "challenger"}
    assert {p.parent.name for p in (root / UC / "served").glob("dt=*/*.parquet")} == \
        {f"dt={datetime.now(UTC).date().isoformat()}"}
    assert not list((root / UC / "served").glob("dt=*/.*"))  # no temporary file left where readers look
    assert f'pavedml_serving_canary_total{{use_case="{UC}"}}' in metrics


def test_the_drift_monitor_reads_the_served_traffic(history):
    """Drifted traffic answered online (raw rows with MonthlyCharges tripled) alerts in the drift
    monitor's record under ``served`` and, with ``served`` in drift.judge_on, in its verdict, while
    the batch window of the same day stays quiet."""
    root = history["root"]
    raw = pd.read_csv(root / "landing" / UC / "customers" / f"dt={DAYS[-1]}" / "customers.csv", dtype=str)
    from pavedml.config import get_use_case

    spec = get_use_case(UC).schema_.columns
    rows = []
    for rec in raw.to_dict("records"):
        row = {c: (None if rec[c].strip() == "" else float(rec[c])) if s.type in ("int", "float") else rec[c]
               for c, s in spec.items()}
        row["MonthlyCharges"] = row["MonthlyCharges"] * 3
        rows.append(row)
    service = make_service()
    with client_of(service) as client:
        for i in range(0, len(rows), MAX_KEYS):
            assert predict(client, {"rows": rows[i:i + MAX_KEYS]}).status_code == 200
    result = run_step("check_drift", DAYS[-1], UC)
    record = json.loads((root / UC / "drift" / f"dt={DAYS[-1]}" / "report.json").read_text())
    served = record["served"]
    assert served["rows"] >= len(rows) and served["status"] == "drift", served
    assert "MonthlyCharges" in served["alerts"]
    assert "MonthlyCharges" not in record["report"].get("alerts", [])
    assert result.status == "drift" and "served:MonthlyCharges" in result.alerts, result
    assert result.served_status == "drift"


def test_the_performance_monitor_measures_the_served_traffic(history):
    """Entities whose newest materialized features are yesterday's (not in today's batch) answered
    online today: once yesterday's labels land, the performance monitor measures that day from the
    prediction log alone (batch scoring never scored it), for the champion and the shadow challenger."""
    root, (v1, v2) = history["root"], history["versions"]
    landing = root / "landing" / UC / "customers"
    yesterday = set(pd.read_csv(landing / f"dt={YESTERDAY}" / "customers.csv", dtype=str)["customerID"])
    today = set(pd.read_csv(landing / f"dt={DAYS[-1]}" / "customers.csv", dtype=str)["customerID"])
    keys = sorted(yesterday - today)
    assert len(keys) > 300
    service = make_service()
    with client_of(service) as client:
        for i in range(0, len(keys), MAX_KEYS):
            assert predict(client, {"keys": keys[i:i + MAX_KEYS]}).status_code == 200
    assert not (root / UC / "predictions" / f"dt={YESTERDAY}").exists()
    tomorrow = (TODAY + timedelta(days=1)).isoformat()  # yesterday's labels land two days later
    result = run_step("measure_performance", tomorrow, UC)
    assert YESTERDAY in result.measured, result
    record = json.loads((root / UC / "performance" / f"dt={YESTERDAY}" / "metrics.json").read_text())
    blocks = {b["role"]: b for b in record["versions"]}
    assert blocks["champion"]["model_version"] == v1 and blocks["champion"]["n"] == len(keys)
    assert blocks["challenger"]["model_version"] == v2 and blocks["challenger"]["n"] == len(keys)
    assert record["served_files"] >= 1
    # a rerun with the same files measures nothing again, nor after traffic on another day's features
    assert YESTERDAY in run_step("measure_performance", tomorrow, UC).unchanged
    with client_of(make_service()) as client:
        assert predict(client, {"keys": sorted(today)[:MAX_KEYS]}).status_code == 200
    assert YESTERDAY in run_step("measure_performance", tomorrow, UC).unchanged


def test_bad_inputs_each_get_their_status_and_name_the_thing(history, monkeypatch, tmp_path):
    from pavedml.serving.online import FeatureStoreUnavailable  # noqa: F401 - the service's contract

    service = make_service(token="s3cret-token")
    with client_of(service) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        r = predict(client, {"keys": ["x"]})
        assert r.status_code == 401 and "bearer" in r.json()["detail"]
        assert predict(client, {"keys": ["x"]}, token="wrong").status_code == 401
        tok = "s3cret-token"
        r = client.post(f"/v1/{UC}/predict", content=b"{not json", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 400 and r.json()["error"] == "malformed_json"
        r = predict(client, {"keys": ["7590-VHVEG", 42]}, tok)
        assert r.status_code == 422 and "keys[1]" in r.json()["detail"]
        r = predict(client, {"keys": "7590-VHVEG"}, tok)
        assert r.status_code == 422 and "keys" in r.json()["detail"]
        r = predict(client, {"keys": ["a"], "rows": []}, tok)
        assert r.status_code == 422
        r = predict(client, {"rows": [{"customerID": "x", "tenure": "abc"}]}, tok)
        assert r.status_code == 422 and r.json()["detail"].startswith("rows[0].")
        raw = pd.read_csv(history["root"] / "landing" / UC / "customers" / f"dt={DAYS[-1]}" / "customers.csv",
                          dtype=str)
        good = {c: raw.iloc[0][c] for c in raw.columns if c != "Churn"}
        for c in ("tenure", "SeniorCitizen", "MonthlyCharges"):
            good[c] = float(good[c])
        good["TotalCharges"] = float(good["TotalCharges"]) if good["TotalCharges"].strip() else None
        bad = {**good, "tenure": "abc"}
        r = predict(client, {"rows": [good, bad]}, tok)
        assert r.status_code == 422 and r.json()["detail"].startswith("rows[1].tenure: expected a finite number"), r.text
        for literal in (b"NaN", b"Infinity"):  # JSON's non-standard numbers: refused, never scored
            body = json.dumps({"rows": [good]}).encode().replace(b'"MonthlyCharges": ' + str(good["MonthlyCharges"]).encode(),
                                                                  b'"MonthlyCharges": ' + literal)
            r = client.post(f"/v1/{UC}/predict", content=body, headers={"Authorization": f"Bearer {tok}"})
            assert r.status_code == 422 and "rows[0].MonthlyCharges: expected a finite number" in r.json()["detail"], \
                r.text
        huge = json.dumps({"rows": [good]}).replace('"tenure": ' + json.dumps(good["tenure"]), '"tenure": 1' + "0" * 400)
        r = client.post(f"/v1/{UC}/predict", content=huge, headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 422 and "rows[0].tenure: expected a finite number" in r.json()["detail"], r.text
        r = client.post(f"/v1/{UC}/predict", content=b"[" + b" " * (8 << 20) + b"]",
                        headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 413 and "bytes" in r.json()["detail"]
        missing = {k: v for k, v in good.items() if k != "Contract"}
        r = predict(client, {"rows": [missing]}, tok)
        assert r.status_code == 422 and r.json()["detail"] == "rows[0].Contract: missing"
        r = predict(client, {"keys": [f"k{i}" for i in range(MAX_KEYS + 1)]}, tok)
        assert r.status_code == 413 and str(MAX_KEYS) in r.json()["detail"]
        known = raw["customerID"].iloc[0]
        r = predict(client, {"keys": [known, "NO-SUCH-CUSTOMER"]}, tok)
        assert r.status_code == 404 and "NO-SUCH-CUSTOMER" in r.json()["detail"] and known not in r.json()["detail"]
        r = client.post("/v1/other_use_case/predict", content=json.dumps({"keys": [known]}),
                        headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 404 and UC in r.json()["detail"]
        assert predict(client, {"rows": [good]}, tok).status_code == 200
        # a row whose derived features break the use case's rules: 422 naming the feature and the key
        r = predict(client, {"rows": [{**good, "TotalCharges": None, "tenure": 3.0}]}, tok)
        assert r.status_code == 422 and "avg_monthly_spend" in r.json()["detail"] and known in r.json()["detail"]
        metrics = client.get("/metrics").text
    assert 'reason="unknown_entity"' in metrics and 'reason="too_many_keys"' in metrics

    # the feature store down: 503 naming it, never an answer on missing features; readyz says why
    dead = free_port()
    monkeypatch.setenv("PAVEDML_FEAST_ONLINE_STORE", f"redis://127.0.0.1:{dead}")
    service = make_service()
    with client_of(service) as client:
        started = time.monotonic()
        r = predict(client, {"keys": [known]})
        assert r.status_code == 503 and f"127.0.0.1:{dead}" in r.json()["detail"], r.text
        assert time.monotonic() - started < 3
        started = time.monotonic()  # the next request is not held up by the dead store again
        r = predict(client, {"keys": [known]})
        assert r.status_code == 503 and "not retried" in r.json()["detail"] and time.monotonic() - started < 0.5
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "feature store" in ready.json()["reason"]

    # no model yet (an empty registry): readyz and predict are 503 with the reason
    monkeypatch.delenv("PAVEDML_FEAST_ONLINE_STORE")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    service = make_service()
    with client_of(service) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "no champion" in ready.json()["reason"]
        r = predict(client, {"keys": [known]})
        assert r.status_code == 503 and r.json()["error"] == "not_ready"


class Broken:
    """A challenger whose scoring fails (e.g. a category its encoder refuses)."""

    def score(self, numeric, categorical):
        raise ValueError("found unknown categories ['Crypto'] in column 14 during transform")


def test_a_failing_challenger_never_fails_an_answer_or_loses_a_log_row(history):
    from dataclasses import replace

    root, (v1, _) = history["root"], history["versions"]
    keys = batch_predictions(root).index[:MAX_KEYS].tolist()
    before = len(served_log(root))
    service = make_service()
    service.watcher.refresh()
    bundle = service.watcher.bundle
    service.watcher.bundle = replace(bundle, challenger=replace(bundle.challenger, scorer=Broken()))
    service._shadow_thread.start()
    service.predlog.start()
    answer = service.predict("keys", keys)
    canary = answer["predictions"]  # canary rows: the champion answers them
    assert [p["alias"] for p in canary] == ["champion"] * len(keys)
    assert {p["model_version"] for p in canary} == {v1}
    service.stop()  # the shadow work (failing) is done and the log flushed
    log = served_log(root)
    assert len(log) == before + len(keys)
    log = log[log["request_id"] == answer["request_id"]]
    assert len(log) == len(keys) and log["challenger_score"].isna().all()
    assert 'reason="challenger_failed"' in __import__("prometheus_client").generate_latest(
        service.metrics.registry).decode()


def test_with_a_lake_each_log_file_reaches_it_and_a_monitors_working_copy(history, lake_env, monkeypatch, tmp_path):
    """Production profile: the service's complete log files are put to ``<lake>/<uc>/served/...``, so
    a step on another host (a working copy pulled from the lake) reads the served traffic."""
    from pavedml.lake import Lake

    root = history["root"]
    monkeypatch.setenv("PAVEDML_LAKE_URI", "s3://lake/pavedml")
    keys = batch_predictions(root).index[:MAX_KEYS].tolist()
    service = make_service()
    with client_of(service) as client:
        answer = predict(client, {"keys": keys}).json()
    day = datetime.now(UTC).date().isoformat()
    objects = [k for k in lake_keys(lake_env, f"pavedml/{UC}/served/dt={day}/") if k.endswith(".parquet")]
    assert objects and not [k for k in objects if "/." in k]  # whole files only, never a temporary one
    other = tmp_path / "other_host"
    Lake(f"s3://lake/pavedml/{UC}", other / UC).pull()
    pulled = pd.concat([pd.read_parquet(p) for p in (other / UC / "served").glob("dt=*/part-*.parquet")])
    assert (pulled["request_id"] == answer["request_id"]).sum() == len(keys)


def lake_keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix=prefix)
    return [o["Key"][len(prefix):] for page in pages for o in page.get("Contents", [])]


def test_unknown_entities_get_the_configured_default(history, monkeypatch, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    write_use_case(cases, unknown_entity="default", default_score=0.0, canary_fraction=0.0, shadow=False)
    monkeypatch.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    known = batch_predictions(history["root"]).index[0]
    service = make_service()
    with client_of(service) as client:
        r = predict(client, {"keys": ["NO-SUCH-CUSTOMER", known]})
    assert r.status_code == 200, r.text
    unknown, found = r.json()["predictions"]
    assert unknown["default"] is True and unknown["probability"] == 0.0 and unknown["model_version"] is None
    assert found["key"] == known and "default" not in found


class Load:
    """Threads sending key requests to a live server as fast as they are answered."""

    def __init__(self, port: int, keys: list[str], threads: int = 3) -> None:
        self.port, self.keys = port, keys
        self.stop = threading.Event()
        self.results: list[tuple[int, list[dict] | str]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            keys = [self.keys[i] for i in rng.choice(len(self.keys), 10, replace=False)]
            try:
                conn.request("POST", f"/v1/{UC}/predict", body=json.dumps({"keys": keys}),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = resp.read().decode()
                out = (resp.status, json.loads(body)["predictions"] if resp.status == 200 else body)
            except Exception as exc:  # noqa: BLE001 - a failed request is a result
                out = (-1, repr(exc))
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            with self.lock:
                self.results.append(out)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)


def champion_served(port: int) -> str | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/readyz")
        resp = conn.getresponse()
        return json.loads(resp.read()).get("champion_version") if resp.status == 200 else None
    except OSError:
        return None


def test_a_live_server_swaps_models_under_load_without_a_failed_request_and_stops_gracefully(history):
    import mlflow

    from pavedml.settings import get_settings

    root, (v1, v2) = history["root"], history["versions"]
    keys = batch_predictions(root).index.tolist()
    before = len(served_log(root))
    port = free_port()
    env = {**os.environ, "PAVEDML_SERVING_POLL_SECONDS": "0.3", "PAVEDML_DATA_ROOT": str(root),
           "PAVEDML_USE_CASES_DIR": str(history["cases"])}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = root.parent / "serve.log"
    with log_path.open("w") as out:
        proc = procs.spawn("pavedml serve", [sys.executable, "-m", "pavedml", "serve", "--use-case", UC,
                                             "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while champion_served(port) != v1:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        mlflow.set_tracking_uri(get_settings().mlflow_tracking_uri)
        client = mlflow.MlflowClient()
        seen_swaps = []
        with Load(port, keys) as load:
            time.sleep(1.5)
            for target in (v2, v1):
                client.set_registered_model_alias(UC, "champion", target)
                deadline = time.monotonic() + 60
                while champion_served(port) != target:
                    assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                    time.sleep(0.1)
                seen_swaps.append(target)
                time.sleep(1.5)
        os.kill(proc.pid, signal.SIGTERM)
        # uvicorn finishes in-flight requests and the shutdown (the log flush), then re-raises the signal
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM), log_path.read_text()[-3000:]
        assert "Application shutdown complete" in log_path.read_text()
    finally:
        client_alias = mlflow.MlflowClient()
        client_alias.set_registered_model_alias(UC, "champion", v1)
        procs.stop(proc)
    results = load.results
    assert len(results) > 50, len(results)
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed[:5]
    champions_seen = set()
    for _, rows in results:
        champion_versions = {r["model_version"] for r in rows if r["alias"] == "champion"}
        assert len(champion_versions) <= 1, rows  # never a mixed answer
        champions_seen |= champion_versions
        if champion_versions == {v2}:  # v2 is champion: the challenger alias names it too, so no canary
            assert all(r["alias"] == "champion" for r in rows), rows
    assert champions_seen == {v1, v2} and seen_swaps == [v2, v1]
    # graceful stop: every answer is in the log, each log line is JSON
    log = served_log(root)
    assert len(log) - before == sum(len(rows) for _, rows in results)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("path") == f"/v1/{UC}/predict"]
    assert len(access) == len(results) and all(a["status"] == 200 for a in access)
