from __future__ import annotations

import shutil

import pytest

from tests.conftest import HISTORY_DAYS, HISTORY_START, LAST_DAY  # noqa: F401  (re-exported)


@pytest.fixture(scope="module")
def history_copy(feature_history, tmp_path_factory, airflow_db):
    """A private copy of the history for one test module (its own MLflow, ledger and registry)."""
    root = tmp_path_factory.mktemp("copy") / "data"
    shutil.copytree(feature_history, root)
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(root))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    from pavedml.settings import get_settings

    get_settings.cache_clear()
    yield root
    mp.undo()
    get_settings.cache_clear()


@pytest.fixture
def lake_env(tmp_path, monkeypatch):
    """A local S3 (moto) on a free loopback port with the bucket ``lake``; the AWS environment points at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for name, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "test-only",
                        "AWS_SECRET_ACCESS_KEY": "test-only", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    import boto3

    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket="lake")
    yield client
    server.stop()
