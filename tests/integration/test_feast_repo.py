"""``python -m pavedml.tools.feast_repo``: the feast CLI on a repo rendered from the steps' settings
(registry file or SQL, SQLite or Redis online store), run the way a user runs it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from datetime import date

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO
from tests.helpers import procs
from tests.helpers.standalone import free_port
from tests.helpers.steps import run_step
from tests.helpers.use_cases import write_copy

pytestmark = pytest.mark.integration
DS = "2025-01-01"


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """A use case of our own (a telco_churn copy) with one day through the feature steps (SQLite)."""
    from pavedml.settings import get_settings
    from pavedml.tools.simulate import simulate

    name = f"frepo_{secrets.token_hex(3)}"
    tmp = tmp_path_factory.mktemp("feast_repo")
    cases = tmp / "use_cases"
    write_copy(cases, name)
    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_DATA_ROOT", str(tmp / "data"))
    mp.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    get_settings.cache_clear()
    try:
        simulate(name, date.fromisoformat(DS), 1, rows_per_day=200)
        for step in ("ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features"):
            run_step(step, DS, name)
        yield {"name": name, "root": tmp / "data"}
    finally:
        mp.undo()
        get_settings.cache_clear()


def _tool(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pavedml.tools.feast_repo", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


def _load(folder, env: dict | None = None):
    """The rendered yaml as Feast loads it (``${VAR}`` expanded from ``env``)."""
    from feast.repo_config import load_repo_config

    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        return load_repo_config(folder, folder / "feature_store.yaml")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_defaults_render_the_steps_sqlite_store_and_file_registry(applied):
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    from pavedml.config import get_use_case
    from pavedml.steps.featurestore import repo_config

    done = _tool("--use-case", applied["name"], "--print-dir")
    assert done.returncode == 0, done.stderr
    folder = applied["root"] / applied["name"] / "feast" / "repo"
    assert done.stdout.strip() == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["definitions.py", "feature_store.yaml"]
    raw = yaml.safe_load((folder / "feature_store.yaml").read_text())
    state = applied["root"] / applied["name"] / "feast"
    assert raw["online_store"] == {"type": "sqlite", "path": str(state / "online.db")}
    assert raw["registry"]["registry_type"] == "file" and raw["registry"]["path"] == str(state / "registry.db")
    ours, steps = _load(folder), repo_config(get_use_case(applied["name"]))
    assert SqliteOnlineStore._get_db_path(ours) == SqliteOnlineStore._get_db_path(steps)
    assert (ours.project, ours.entity_key_serialization_version) == (steps.project, 3)
    assert "password" not in (folder / "feature_store.yaml").read_text()


@pytest.mark.parametrize("registry,online", [
    ("", "redis://127.0.0.1:6390/3"),
    ("postgresql+psycopg2://feast:PLANTEDpg@db.example:5432/feast", "redis://redis-online:6379,password=PLANTEDrd/0"),
])
def test_redis_and_sql_settings_render_the_same_stores_as_the_steps_without_secrets(applied, registry, online):
    from pavedml.config import get_use_case
    from pavedml.settings import Settings
    from pavedml.steps.featurestore import repo_config
    from pavedml.tools.feast_repo import ONLINE_CONNECTION_ENV, render

    env = {**os.environ, "PAVEDML_FEAST_ONLINE_STORE": online, "PAVEDML_FEAST_REGISTRY": registry}
    settings = Settings.from_env(env)
    uc = get_use_case(applied["name"])
    folder, extra = render(uc, settings)
    text = (folder / "feature_store.yaml").read_text()
    assert "PLANTED" not in text and "PLANTED" not in (folder / "definitions.py").read_text()
    raw = yaml.safe_load(text)
    assert raw["online_store"]["type"] == "redis"
    steps = repo_config(uc, settings)
    ours = _load(folder, {**extra, "PAVEDML_FEAST_REGISTRY": registry})
    assert ours.online_store.connection_string == steps.online_store.connection_string
    assert type(ours.registry) is type(steps.registry) and ours.registry.path == steps.registry.path
    if "password" in online:
        assert raw["online_store"]["connection_string"] == "${" + ONLINE_CONNECTION_ENV + "}"
        assert raw["registry"] == {"registry_type": "sql", "path": "${PAVEDML_FEAST_REGISTRY}", "cache_ttl_seconds": 60,
                                   "sqlalchemy_config_kwargs": {"pool_pre_ping": True}}
        assert extra == {ONLINE_CONNECTION_ENV: "redis-online:6379,password=PLANTEDrd,db=0"}
    else:
        assert raw["online_store"]["connection_string"] == "127.0.0.1:6390,db=3" and extra == {}
    render(uc)  # back to the defaults for the CLI tests of this module


def test_feast_cli_through_the_tool_lists_what_the_pipeline_applied(applied):
    done = _tool("--use-case", applied["name"], "--", "feature-views", "list")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "ENTITIES"]
    assert any(line.split()[0] == "customer_features" and "customer" in line for line in lines[1:]), done.stdout
    done = _tool("--use-case", applied["name"], "--", "feature-services", "list")
    assert done.returncode == 0 and applied["name"] in done.stdout  # the service is named after the model


def test_feast_serve_through_the_tool_answers_from_the_pipelines_online_store(applied, tmp_path):
    """What the serving benchmark starts: Feast's feature server on the steps' online store."""
    name, port = applied["name"], free_port()
    features = pd.read_parquet(applied["root"] / name / "features" / f"dt={DS}" / "part-0.parquet")
    key = features["customerID"].iloc[3]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = procs.spawn("feast serve", [sys.executable, "-m", "pavedml.tools.feast_repo", "--use-case", name, "--",
                                          "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log"],
                           stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(1)
        body = {"features": ["customer_features:tenure", "customer_features:Contract"],
                "entities": {"customerID": [key, "NO-SUCH-KEY"]}}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/get-online-features", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            got = json.load(resp)
        names = got["metadata"]["feature_names"]
        results = dict(zip(names, got["results"], strict=True))
        row = features.iloc[3]
        assert results["tenure"]["values"] == [float(row["tenure"]), None]
        assert results["Contract"]["values"] == [row["Contract"], None]
        assert results["tenure"]["statuses"] == ["PRESENT", "NOT_FOUND"]
    finally:
        procs.stop(proc)
    assert proc.poll() is not None
