"""The production profile's services, started for one test session on this machine (no Docker):

* PostgreSQL (the machine's, already running: ``make deps`` starts it; or, with
  ``own_postgres=True``, a :class:`PrivatePostgres` a test may stop): four databases of its own,
  named with a random tag and dropped afterwards: Airflow metadata, MLflow backend store, MLflow
  users, Feast registry;
* Redis (already running): a database index of its own for Feast's online store, flushed
  before and after;
* an S3-compatible server (moto's, on a free loopback port) with the buckets of the compose
  stack: ``pavedml`` (landing zone and lake) and ``mlflow`` (artifacts, written by the server only);
  with ``s3_proxy=True`` the steps reach it through a :class:`~tests.helpers.faultproxy.FaultProxy`
  a test can take down (moto keeps its data in memory: stopping it would lose the lake);
* the MLflow tracking server over HTTP (basic-auth app, PostgreSQL stores, artifacts proxied to
  S3), prepared by ``deploy/mlflow_init.py`` exactly as the compose stack's ``mlflow-init`` does:
  a non-admin pipeline user whose password is the secret the tests plant in an Airflow connection.

``python -m tests.helpers.prodstack`` starts them by hand and prints the step environment.
Faults: :meth:`ProductionServices.mlflow_down`/``mlflow_up``, the private PostgreSQL's
:meth:`PrivatePostgres.restart` (``own_postgres=True``), the proxy.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import REPO
from tests.helpers import procs
from tests.helpers.faultproxy import FaultProxy
from tests.helpers.standalone import free_port

PG = {"host": "127.0.0.1", "port": int(os.environ.get("PAVEDML_TEST_PGPORT", "5432")), "user": "postgres"}
REDIS_URL = os.environ.get("PAVEDML_TEST_REDIS", "redis://127.0.0.1:6379")
#: Redis database index reserved for this suite (Feast's keys carry no prefix we could scope by).
REDIS_DB = int(os.environ.get("PAVEDML_TEST_REDIS_DB", "13"))
PIPELINE_USER = "pavedml"


def pg_url(db: str, driver: str = "postgresql+psycopg2", pg: dict | None = None) -> str:
    pg = pg or PG
    return f"{driver}://{pg['user']}@{pg['host']}:{pg['port']}/{db}"


def _pg_admin(sql: str, pg: dict | None = None) -> None:
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **(pg or PG))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


class PrivatePostgres:
    """A PostgreSQL server of its own for a suite that stops it under a run (the machine's cluster
    serves the other tests, which may run at the same time in another pytest-xdist worker): a
    fresh ``initdb`` in a temporary directory, trust auth, loopback only, a free port. As root the
    server runs as the ``postgres`` user (PostgreSQL refuses root)."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
        self.bindir = bins[-1].parent
        self.port = free_port()
        self.pg = {"host": "127.0.0.1", "port": self.port, "user": "postgres"}
        self.user = None
        if os.geteuid() == 0:
            import pwd

            self.user = pwd.getpwnam("postgres")
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="pavedml-pg-"))  # not under pytest's 0700 root-owned tmp
        if self.user:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.proc: subprocess.Popen | None = None

    def _as_owner(self) -> dict:
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []} if self.user else {}

    def start(self) -> PrivatePostgres:
        if not self.data.exists():
            subprocess.run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                            "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120,
                           cwd=self.dir, **self._as_owner())
        with self.log.open("a") as out:
            self.proc = procs.spawn("postgres (private)", [
                str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=300"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.dir, **self._as_owner())
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}); see {self.log}:\n{self.log.read_text()[-2000:]}")
            try:
                _pg_admin("SELECT 1", self.pg)
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: every session is cut, nothing is lost), then the process is gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        procs.stop(self.proc, grace=5)
        self.proc = None

    def restart(self, down_s: float) -> float:
        """Stop (fast shutdown), stay down ``down_s`` seconds, start on the same port and files;
        returns when it accepts connections, with the seconds it was unreachable."""
        started = time.monotonic()
        self.stop()
        time.sleep(down_s)
        self.start()
        return time.monotonic() - started

    def remove(self) -> None:
        self.stop()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    raise RuntimeError(f"{url} not up after {timeout}s; see {log}")


class ProductionServices:
    def __init__(self, workdir: Path, s3_proxy: bool = False, own_postgres: bool = False) -> None:
        self.workdir = workdir
        self.postgres = PrivatePostgres() if own_postgres else None
        #: connection keywords of the PostgreSQL server the services use
        self.pg = self.postgres.pg if self.postgres else dict(PG)
        workdir.mkdir(parents=True, exist_ok=True)
        self.tag = f"pavedml_t_{secrets.token_hex(4)}"
        self.dbs = {name: f"{self.tag}_{name}" for name in ("airflow", "mlflow", "mlflow_auth", "feast")}
        self.s3_port = free_port()
        self.s3_url = f"http://127.0.0.1:{self.s3_port}"
        #: what the steps reach S3 through (the fault proxy, if any)
        self.proxy = FaultProxy(self.s3_port, free_port()) if s3_proxy else None
        self.step_s3_url = self.proxy.url if self.proxy else self.s3_url
        self.mlflow_port = free_port()
        self.mlflow_url = f"http://127.0.0.1:{self.mlflow_port}"
        self.admin = ("admin", secrets.token_urlsafe(16))
        #: the secret planted in the Airflow connection: the pipeline user's MLflow password
        self.pipeline_password = f"planted-{secrets.token_hex(12)}"
        self.procs: list[subprocess.Popen] = []
        self.created_dbs: list[str] = []
        self._mlflow_argv: tuple[list[str], dict[str, str]] | None = None
        self.mlflow_proc: subprocess.Popen | None = None

    # -- lifecycle
    def start(self) -> ProductionServices:
        try:
            if self.postgres:
                self.postgres.start()
            self._postgres()
            self._redis(flush=True)
            self._s3()
            self._mlflow()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):  # each with its whole session; SIGKILL after the grace period
            try:
                procs.stop(proc)
            except RuntimeError as exc:  # still registered: the session's end check names it too
                print(f"could not stop {proc.args[:2]}: {exc}", file=sys.stderr)
        self.procs.clear()
        if self.proxy:
            self.proxy.down()
        for db in self.created_dbs:
            try:
                _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', self.pg)
            except Exception as exc:  # noqa: BLE001 - teardown reports, never masks the test's result
                print(f"could not drop {db}: {exc}", file=sys.stderr)
        self.created_dbs.clear()
        if self.postgres:
            self.postgres.remove()
        try:
            self._redis(flush=True)
        except Exception as exc:  # noqa: BLE001
            print(f"could not flush redis db {REDIS_DB}: {exc}", file=sys.stderr)

    def pg_url(self, db: str, driver: str = "postgresql+psycopg2") -> str:
        return pg_url(db, driver, self.pg)

    # -- services
    def _postgres(self) -> None:
        try:
            _pg_admin("SELECT 1", self.pg)
        except Exception as exc:
            pg = self.pg
            raise RuntimeError(f"PostgreSQL is not reachable at {pg['host']}:{pg['port']} as {pg['user']} ({exc}); "
                               "start it (make deps does: pg_ctlcluster <version> main start)") from None
        for db in self.dbs.values():
            _pg_admin(f'CREATE DATABASE "{db}"', self.pg)
            self.created_dbs.append(db)

    def _redis(self, flush: bool) -> None:
        import redis

        client = redis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB}", socket_connect_timeout=5)
        try:
            client.ping()
        except Exception as exc:
            raise RuntimeError(f"Redis is not reachable at {REDIS_URL} ({exc}); start it (.ci/run does)") from None
        if flush:
            client.flushdb()

    def redis_keys(self) -> int:
        import redis

        return redis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB}").dbsize()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        log = self.workdir / f"{name}.log"
        with log.open("w") as out:  # the child keeps its own descriptor
            proc = procs.spawn(name, argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir)
        self.procs.append(proc)
        return proc, log

    def _s3(self) -> None:
        exe = Path(sys.executable).with_name("moto_server")
        proc, log = self._spawn("s3", [str(exe), "-H", "127.0.0.1", "-p", str(self.s3_port)], dict(os.environ))
        _wait_http(self.s3_url + "/moto-api/", 60, proc, log)
        client = self.s3()
        for bucket in ("pavedml", "mlflow"):
            client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket="pavedml", VersioningConfiguration={"Status": "Enabled"})
        if self.proxy:
            self.proxy.up()

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_url, aws_access_key_id="test-only",
                            aws_secret_access_key="test-only", region_name="us-east-1")

    def s3_keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def _mlflow(self) -> None:
        ini = self.workdir / "mlflow-auth.ini"
        ini.write_text("[mlflow]\ndefault_permission = READ\n"
                       f"database_uri = {self.pg_url(self.dbs['mlflow_auth'])}\n"
                       f"admin_username = {self.admin[0]}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                       "grant_default_workspace_access = false\n")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "PAVEDML_"))},
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": self.admin[0],
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin[1],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": "test-only", "AWS_SECRET_ACCESS_KEY": "test-only", "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
        }
        exe = Path(sys.executable).with_name("mlflow")
        self._mlflow_argv = ([
            str(exe), "server", "--app-name=basic-auth", "--host=127.0.0.1", f"--port={self.mlflow_port}",
            "--workers=1", f"--backend-store-uri={self.pg_url(self.dbs['mlflow'])}", "--serve-artifacts",
            "--artifacts-destination=s3://mlflow/artifacts"], env)
        self.mlflow_up()
        init = subprocess.run([sys.executable, str(REPO / "deploy/mlflow_init.py")], capture_output=True, text=True,
                              timeout=300, env={
                                  **env, "MLFLOW_TRACKING_URI": self.mlflow_url,
                                  "MLFLOW_TRACKING_USERNAME": self.admin[0], "MLFLOW_TRACKING_PASSWORD": self.admin[1],
                                  "PIPELINE_MLFLOW_USERNAME": PIPELINE_USER,
                                  "PIPELINE_MLFLOW_PASSWORD": self.pipeline_password,
                                  "PAVEDML_USE_CASES_DIR": str(REPO / "include/use_cases")})
        if init.returncode != 0:
            raise RuntimeError(f"deploy/mlflow_init.py failed:\n{init.stdout}\n{init.stderr}")

    def mlflow_down(self) -> None:
        """SIGKILL the tracking server (every request in flight is cut; the port refuses)."""
        if self.mlflow_proc is not None:
            procs.stop(self.mlflow_proc, grace=0)
            self.procs.remove(self.mlflow_proc)
            self.mlflow_proc = None

    def mlflow_up(self) -> None:
        """Start the tracking server (again, on the same port and stores) and wait until it answers."""
        assert self._mlflow_argv is not None
        argv, env = self._mlflow_argv
        log = self.workdir / "mlflow.log"
        with log.open("a") as out:
            self.mlflow_proc = procs.spawn("mlflow", argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir)
        self.procs.append(self.mlflow_proc)
        _wait_http(self.mlflow_url + "/health", 180, self.mlflow_proc, log)

    def mlflow_api(self, method: str, path: str, body: dict | None = None,
                   auth: tuple[str, str] | None = None) -> tuple[int, dict]:
        """(status, JSON body) of an MLflow REST call; ``auth=None`` sends no credentials."""
        req = urllib.request.Request(self.mlflow_url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw or b"{}")
            except ValueError:
                return err.code, {"raw": raw.decode(errors="replace")}

    # -- what the workers and steps get
    def step_env(self, data_root: Path) -> dict[str, str]:
        """The production profile's step settings; the MLflow password is NOT here (it is in the
        Airflow connection ``pavedml_mlflow``)."""
        return {
            "PAVEDML_DATA_ROOT": str(data_root),
            "PAVEDML_LANDING_URI": "s3://pavedml/landing",
            "PAVEDML_LAKE_URI": "s3://pavedml/lake",
            "PAVEDML_FEAST_REGISTRY": self.pg_url(self.dbs["feast"]),
            "PAVEDML_FEAST_ONLINE_STORE": f"{REDIS_URL}/{REDIS_DB}",
            "PAVEDML_LOCK_URL": self.pg_url(self.dbs["feast"], "postgresql"),  # champion moves: shared lock
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "PAVEDML_MLFLOW_CONN_ID": "pavedml_mlflow",
            "AWS_ENDPOINT_URL": self.step_s3_url,
            "AWS_ACCESS_KEY_ID": "test-only",
            "AWS_SECRET_ACCESS_KEY": "test-only",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def airflow_env(self) -> dict[str, str]:
        return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.pg_url(self.dbs["airflow"]),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}


if __name__ == "__main__":  # pragma: no cover - manual use
    services = ProductionServices(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/pavedml-prodstack")).start()
    print(json.dumps({**services.step_env(services.workdir / "data"), **services.airflow_env(),
                      "MLFLOW_TRACKING_USERNAME": PIPELINE_USER,
                      "MLFLOW_TRACKING_PASSWORD": services.pipeline_password}, indent=2))
    try:
        signal.pause()
    finally:
        services.stop()
