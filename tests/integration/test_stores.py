"""Feast definitions (programmatic and the feature_repo/ CLI) apply idempotently, landing batches
can come from S3 (a local moto server), and retrain requests honour the cooldown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_feast_apply_is_idempotent_and_matches_the_config(data_root):
    from pavedml.config import get_use_case
    from pavedml.steps.featurestore import get_store

    uc = get_use_case("telco_churn")
    store, _ = get_store(uc)
    store, defs = get_store(uc)  # second apply
    views = store.list_feature_views()
    assert [v.name for v in views] == [uc.feature_view]
    assert {f.name for f in views[0].features} == set(uc.feature_columns)
    assert [s.name for s in store.list_feature_services()] == [uc.model.registered_name]
    assert [e.name for e in store.list_entities()] == [uc.entity.name]


def test_feature_repo_cli_apply(data_root):
    env = {**os.environ, "PAVEDML_USE_CASE": "telco_churn", "FEAST_STATE_DIR": str(data_root / "telco_churn/feast"),
           "PYTHONPATH": str(REPO / "include")}
    (data_root / "telco_churn/feast").mkdir(parents=True)
    feast = [sys.executable, "-m", "feast.cli.cli", "-c", str(REPO / "feature_repo")]
    for _ in range(2):
        out = subprocess.run([*feast, "apply"], env=env, capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 0, out.stderr[-2000:]
    out = subprocess.run([*feast, "feature-services", "list"], env=env, capture_output=True, text=True, cwd=REPO)
    assert "telco_churn" in out.stdout


@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-only")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-only")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="landing")
    yield f"http://{host}:{port}"
    server.stop()


def test_landing_batches_on_s3(data_root, s3, monkeypatch):
    monkeypatch.setenv("PAVEDML_LANDING_URI", "s3://landing/zone")
    from pavedml.tools.simulate import simulate

    simulate("telco_churn", date(2025, 5, 1), 1, rows_per_day=300)
    out = subprocess.run([sys.executable, "-m", "pavedml", "ingest_raw_batch", "--use-case", "telco_churn",
                          "--ds", "2025-05-01"], env=os.environ.copy(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["source_uri"] == "s3://landing/zone/telco_churn/customers/dt=2025-05-01/customers.csv"
    assert result["rows"] == 300
    missing = subprocess.run([sys.executable, "-m", "pavedml", "ingest_raw_batch", "--use-case", "telco_churn",
                              "--ds", "2025-05-09"], env=os.environ.copy(), capture_output=True, text=True)
    assert "no batch for 2025-05-09 at s3://landing/zone/telco_churn/customers/dt=2025-05-09/customers.csv" \
        in missing.stderr


def test_retrain_requests_honour_the_cooldown(data_root):
    from pavedml.context import StepContext
    from pavedml.errors import SkipStep
    from pavedml.steps.monitoring import request_retraining
    from pavedml.storage import write_json

    def report(ds, data_hash):
        ctx = StepContext.build("telco_churn", ds)
        write_json(str(ctx.layout.drift_dir(ds) / "report.json"), {
            "status": "drift", "window": [ds], "data_hash": data_hash, "model_version": "1",
            "report": {"alerts": ["tenure"], "features": [{"name": "tenure", "psi": 0.9}]}})
        return ctx

    assert request_retraining(report("2025-01-10", "a")).requested
    with pytest.raises(SkipStep, match="already made"):
        request_retraining(report("2025-01-10", "a"))
    with pytest.raises(SkipStep, match=r"cooldown: last retrain request on 2025-01-10 \(drift, at [^)]+\); "
                                       r"next one allowed from 2025-01-13"):
        request_retraining(report("2025-01-12", "b"))
    assert request_retraining(report("2025-01-13", "c")).requested
