"""Promotion across hosts: two data roots (two worker hosts, each with its own working copy of the
lake) promote at once against one MLflow store. With PAVEDML_LOCK_URL both wait on one PostgreSQL
advisory lock, the second is re-decided against the first's champion, the better model ends as
champion and both moves are in every host's ledger. An unreachable lock server fails retryably,
naming the URL without its password, and moves nothing.

Needs the local PostgreSQL (trust auth, like tests/production); each test module gets a database
of its own, dropped afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

import pytest

from tests.helpers import procs as procs_helper
from tests.helpers.prodstack import PG, pg_url
from tests.integration.conftest import LAST_DAY

pytestmark = pytest.mark.integration
DAG = "telco_churn_training_pipeline"
STRONG = "{}"  # the use case's own hyper-parameters
WEAK = '{"hyperparameters": {"max_iter": 10, "learning_rate": 0.1, "max_leaf_nodes": 3}}'  # a few stumps


def _pg(dbname: str):
    import psycopg2

    conn = psycopg2.connect(dbname=dbname, connect_timeout=5, **PG)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="module")
def lock_db():
    name = f"pavedml_t_lock_{secrets.token_hex(4)}"
    admin = _pg("postgres")
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield name
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture(scope="module")
def challengers(history_copy):
    """Two challengers trained and decided while there is no champion: both decisions say
    "promote None -> vX" (the race of the issue), and the policy prefers the strong one."""
    from pavedml.config import get_use_case
    from pavedml.steps.evaluation import decide
    from tests.helpers.steps import run_step

    out = {}
    for run_id, params in (("manual__strong", STRONG), ("manual__weak", WEAK)):
        steps = [run_step(s, LAST_DAY, dag_id=DAG, run_id=run_id, params=params)
                 for s in ("build_training_set", "train_challenger", "evaluate_challenger")]
        decision = json.loads((history_copy / f"telco_churn/training/{run_id}/decision.json").read_text())
        assert decision["promote"] and decision["champion"] is None, decision
        out[run_id] = (steps[1].model_version, decision["challenger"])
    strong, weak = out["manual__strong"][1], out["manual__weak"][1]
    verdict = decide(strong["metrics"], weak["metrics"], get_use_case("telco_churn").evaluation, strong["slices"],
                     weak["slices"])
    assert verdict.outcome == "promote", (verdict, strong["metrics"], weak["metrics"])  # the test's premise
    return out


def _champion(root) -> str | None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow/mlflow.db'}")
    try:
        return str(client.get_model_version_by_alias("telco_churn", "champion").version)
    except mlflow.exceptions.MlflowException:
        return None


def _promote(env: dict, run_id: str, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pavedml", "promote_challenger", "--use-case", "telco_churn", "--ds", LAST_DAY,
            "--dag-id", DAG, "--run-id", run_id]
    if kw.get("wait", True):
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    return procs_helper.spawn(f"promote {run_id}", argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)


def test_unreachable_lock_server_fails_retryably_and_moves_nothing(history_copy, challengers):
    env = {**os.environ, "PAVEDML_DATA_ROOT": str(history_copy),
           "MLFLOW_TRACKING_URI": f"sqlite:///{history_copy / 'mlflow/mlflow.db'}",
           "PAVEDML_LOCK_URL": "postgresql+psycopg2://pavedml:planted-lock-pw@127.0.0.1:9/locks"}
    out = _promote(env, "manual__strong")
    assert out.returncode == 1, out.stderr[-3000:]  # retryable
    assert "FAILED promote_challenger [lock_unavailable]" in out.stderr, out.stderr[-3000:]
    assert "lock server postgresql+psycopg2://pavedml:***@127.0.0.1:9/locks is unreachable" in out.stderr
    assert "planted-lock-pw" not in out.stderr + out.stdout
    assert _champion(history_copy) is None


def test_two_hosts_promoting_at_once_leave_the_better_model_champion(history_copy, challengers, lock_db, tmp_path,
                                                                     monkeypatch):
    from moto.server import ThreadedMotoServer

    from pavedml.lake import Lake
    from pavedml.ledger import read_ledger
    from pavedml.steps.registry import lock_key

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    procs: list[subprocess.Popen] = []
    holder = _pg(lock_db)
    try:
        host, port = server.get_host_and_port()
        aws = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test-only",
               "AWS_SECRET_ACCESS_KEY": "test-only", "AWS_DEFAULT_REGION": "us-east-1"}
        for name, value in aws.items():
            monkeypatch.setenv(name, value)
        import boto3

        # moto's servers in one process share their buckets: a bucket of its own, so another test's
        # lake (with its ledger entries) is never this one's
        bucket = f"lake-{secrets.token_hex(4)}"
        boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
        Lake(f"s3://{bucket}/pavedml/telco_churn", history_copy / "telco_churn").push()  # the system of record
        shared = {**os.environ, **aws, "PAVEDML_LAKE_URI": f"s3://{bucket}/pavedml",
                  "MLFLOW_TRACKING_URI": f"sqlite:///{history_copy / 'mlflow/mlflow.db'}",  # one registry
                  "PAVEDML_LOCK_URL": pg_url(lock_db)}
        roots = {"a": tmp_path / "host-a", "b": tmp_path / "host-b"}

        def waiting() -> int:
            with holder.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                            "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()")
                return cur.fetchone()[0]

        def wait_until_waiting(n: int, proc: subprocess.Popen) -> None:
            deadline = time.monotonic() + 240
            while waiting() < n:
                if proc.poll() is not None:
                    _, err = proc.communicate()
                    pytest.fail(f"promotion finished (rc={proc.returncode}) without waiting for the shared lock "
                                f"the test holds:\n{err[-3000:]}")
                assert time.monotonic() < deadline, "no promotion waits on the shared lock"
                time.sleep(0.5)

        # The test holds the champion lock, so both hosts' moves overlap for sure: the weak one
        # queues first, the strong one second; PostgreSQL grants the lock in that order.
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (lock_key("telco_churn"),))
        procs.append(_promote({**shared, "PAVEDML_DATA_ROOT": str(roots["b"])}, "manual__weak", wait=False))
        wait_until_waiting(1, procs[-1])
        procs.append(_promote({**shared, "PAVEDML_DATA_ROOT": str(roots["a"])}, "manual__strong", wait=False))
        wait_until_waiting(2, procs[-1])
        assert _champion(history_copy) is None  # nobody moves while another holds the lock
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (lock_key("telco_churn"),))
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]

        strong, weak = challengers["manual__strong"], challengers["manual__weak"]
        assert _champion(history_copy) == strong[0]
        # Every host's ledger, once pulled, holds both moves: the weak one from no champion, the
        # strong one re-decided against it.
        moves = {(None, weak[0]), (weak[0], strong[0])}
        for root in roots.values():
            lake = Lake(f"s3://{bucket}/pavedml/telco_churn", root / "telco_churn")
            lake.pull()
            entries = read_ledger(root / "telco_churn/registry/ledger.jsonl")
            assert {(e["from_version"], e["to_version"]) for e in entries if e["action"] == "promoted"} == moves, \
                entries
            view = (root / "telco_churn/registry/ledger.jsonl").read_text().splitlines()
            assert [json.loads(x) for x in view] == entries
    finally:
        for proc in procs:
            procs_helper.stop(proc)
        holder.close()
        server.stop()
