"""Airflow as the production profile runs it, without containers: the CeleryExecutor with its
components as separate processes (API server, scheduler, DAG processor, triggerer) on one
"control" Airflow home, and Celery workers, each with an Airflow home and a ``PAVEDML_DATA_ROOT``
working copy of its own (a worker per "host"), taking tasks from a Redis broker.

Every component gets its configuration from the environment, as it would on separate hosts
(nothing is read from a shared ``airflow.cfg``): the metadata database, the broker and result
backend, the Fernet key, the JWT secret the workers' task processes authenticate with against the
API server's execution API. Each worker records its own name as the task instances' hostname
(``hostname_callable``), as two real hosts would (its logs stay on its disk: ``--skip-serve-logs``,
since the names do not resolve).

The broker is a Redis server of the cluster's own (append-only file on, as the compose stack's),
so a test can kill and restart it with tasks queued. Like the compose stack's ``restart: always``,
a supervisor thread starts again any component or worker that exits unless the test stopped it
(``restarts`` records each: what, when, exit code).

``python -m tests.helpers.cluster`` is not provided: start the production services
(``tests.helpers.prodstack``) and this from a test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from base64 import urlsafe_b64encode
from pathlib import Path

from tests.conftest import REPO
from tests.helpers import procs
from tests.helpers.prodstack import PG, pg_url
from tests.helpers.standalone import Standalone, free_port

WORKER_ENV = "PAVEDML_TEST_WORKER_NAME"


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the test workers: the worker's name stands for its host."""
    import socket

    return os.environ.get(WORKER_ENV) or socket.getfqdn()


class Worker:
    def __init__(self, name: str, home: Path, data_root: Path, env: dict[str, str]) -> None:
        self.name, self.home, self.data_root, self.env = name, home, data_root, env
        self.proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.home / "worker.log"


class BrokerRedis:
    """A Redis server for the Celery broker, persisted like the compose stack's (``appendonly yes``)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> BrokerRedis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (make deps installs it)")
        with (self.dir / "redis.log").open("a") as out:
            self.proc = procs.spawn("redis broker", [exe, "--bind", "127.0.0.1", "--port", str(self.port),
                                                     "--appendonly", "yes", "--save", "", "--dir", str(self.dir)],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=self.dir)
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                return self
            except redis.exceptions.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the broker's redis-server did not start; see {self.dir}/redis.log") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL (no shutdown save: what the append-only file holds is what survives)."""
        if self.proc is not None:
            procs.stop(self.proc, grace=0)
            self.proc = None


class CeleryCluster(Standalone):
    """The control plane plus ``workers`` Celery workers; ``api``/``wait_for_run``... as Standalone."""

    def __init__(self, home: Path, data_root: Path, use_cases_dir: Path | None, airflow_db: str,
                 worker_env: dict[str, dict[str, str]], extra_env: dict[str, str] | None = None,
                 heartbeat_timeout: int = 30, concurrency: int = 1, pg: dict | None = None) -> None:
        super().__init__(home, data_root, use_cases_dir, extra_env)
        self.redis = BrokerRedis(home.parent / "broker")
        broker = self.redis.url
        self.pg = pg or PG
        self.env.update({
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url(airflow_db, pg=self.pg),
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg_url(airflow_db, "postgresql", self.pg),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            "AIRFLOW__CORE__FERNET_KEY": urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            # a task whose worker died (no heartbeat) fails and is retried after this many seconds
            # (default 300); the Celery message itself is acknowledged late, but Redis redelivers
            # it only after the visibility timeout (Airflow's default, 24 h), so this is what recovers
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(heartbeat_timeout),
        })
        self.broker = broker
        self.airflow_db = airflow_db
        self.concurrency = concurrency
        self.workers: dict[str, Worker] = {}
        for name, env in worker_env.items():
            whome = home.parent / name
            whome.mkdir(parents=True, exist_ok=True)
            root = Path(env.get("PAVEDML_DATA_ROOT", whome / "data"))
            self.workers[name] = Worker(name, whome, root, {
                **self.env, **env,
                "AIRFLOW_HOME": str(whome),
                "PAVEDML_DATA_ROOT": str(root),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.helpers.cluster.worker_hostname",
                WORKER_ENV: name,
                "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            })
        self.components: dict[str, subprocess.Popen] = {}
        self._argv: dict[str, list[str]] = {}
        #: (what, time.monotonic(), exit code) of every automatic restart
        self.restarts: list[tuple[str, float, int | None]] = []
        self._supervising = threading.Event()
        self._guard = threading.Lock()

    # -- lifecycle
    def _spawn(self, name: str, argv: list[str], env: dict[str, str], home: Path, log: Path) -> subprocess.Popen:
        with log.open("a") as out:  # the child keeps its own descriptor
            return procs.spawn(name, [sys.executable, "-m", "airflow", *argv], env=env, cwd=home,
                               stdout=out, stderr=subprocess.STDOUT)

    def start(self, timeout: float = 420) -> CeleryCluster:
        try:
            self.redis.start()
            migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=self.env,
                                     cwd=self.home, capture_output=True, text=True, timeout=600)
            if migrate.returncode != 0:
                raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-3000:]}")
            for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
                self._argv[component] = [component, "--port", str(self.port)] if component == "api-server" else [component]
                self._start_component(component)
            for worker in self.workers.values():
                self.start_worker(worker.name, wait=False)
            deadline = time.monotonic() + timeout
            self._wait_healthy(deadline)
            for worker in self.workers.values():
                self._wait_worker(worker, deadline)
            self._supervising.set()
            threading.Thread(target=self._supervise, daemon=True, name="cluster supervisor").start()
            return self
        except BaseException:
            self.stop()
            raise

    def _start_component(self, component: str) -> None:
        self.components[component] = self._spawn(f"airflow {component}", self._argv[component], self.env, self.home,
                                                  self.home / f"{component}.log")

    def _supervise(self) -> None:
        """``restart: always``: start again whatever exited while the cluster runs."""
        while self._supervising.is_set():
            with self._guard:
                if not self._supervising.is_set():
                    return
                for name, proc in list(self.components.items()):
                    if proc.poll() is not None:
                        self.restarts.append((name, time.monotonic(), proc.returncode))
                        procs.stop(proc)  # its leftover children, and the registry entry
                        self._start_component(name)
                for worker in self.workers.values():
                    if worker.proc is not None and worker.proc.poll() is not None:
                        self.restarts.append((worker.name, time.monotonic(), worker.proc.returncode))
                        procs.stop(worker.proc)
                        self.start_worker(worker.name, wait=False)
            time.sleep(1)

    def healthy(self) -> dict[str, str]:
        """The API server's view of each component (``{}`` while it does not answer)."""
        import json

        try:
            with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=5) as r:
                return {c: v.get("status") for c, v in json.load(r).items() if isinstance(v, dict)}
        except (urllib.error.URLError, OSError, ValueError):
            return {}

    def _wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            for name, proc in self.components.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited ({proc.returncode}); see {self.home}/{name}.log")
            try:
                with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=5) as r:
                    import json

                    health = json.load(r)
                if all(health.get(c, {}).get("status") == "healthy"
                       for c in ("metadatabase", "scheduler", "dag_processor", "triggerer")):
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(2)
        raise RuntimeError(f"the Airflow components were not healthy in time; see {self.home}/*.log")

    def _wait_worker(self, worker: Worker, deadline: float, since: int = 0) -> None:
        """Until the worker's log says ready (after byte ``since``: an earlier start's line does not count)."""
        while time.monotonic() < deadline:
            if worker.proc is None or worker.proc.poll() is not None:
                raise RuntimeError(f"celery worker {worker.name} exited; see {worker.log}:\n"
                                   f"{worker.log.read_text(errors='replace')[-3000:]}")
            with worker.log.open("rb") as fh:
                fh.seek(since)
                if b" ready." in fh.read():
                    return
            time.sleep(1)
        raise RuntimeError(f"celery worker {worker.name} not ready in time; see {worker.log}")

    def start_worker(self, name: str, wait: bool = True) -> None:
        worker = self.workers[name]
        seen = worker.log.stat().st_size if worker.log.exists() else 0
        worker.proc = self._spawn(f"celery worker {name}",
                                  ["celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", str(self.concurrency),
                                   "--skip-serve-logs"],
                                  worker.env, worker.home, worker.log)
        if wait:
            self._wait_worker(worker, time.monotonic() + 180, seen)

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker and every process it started (its task processes too): a host dying
        (it stays dead until :meth:`start_worker`)."""
        worker = self.workers[name]
        with self._guard:
            if worker.proc is not None:
                procs.stop(worker.proc, grace=0)
                worker.proc = None

    def stop(self) -> None:
        with self._guard:
            self._supervising.clear()
        for worker in self.workers.values():  # workers first: their running tasks end with them
            try:
                procs.stop(worker.proc)
            except RuntimeError as exc:
                print(f"could not stop worker {worker.name}: {exc}", file=sys.stderr)
            worker.proc = None
        for name, proc in reversed(list(self.components.items())):
            try:
                procs.stop(proc)
            except RuntimeError as exc:
                print(f"could not stop airflow {name}: {exc}", file=sys.stderr)
        self.components.clear()
        try:
            procs.stop(self.redis.proc)
        except RuntimeError as exc:
            print(f"could not stop the broker: {exc}", file=sys.stderr)
        self.redis.proc = None

    def restart_broker(self, down_s: float) -> None:
        """SIGKILL the broker, keep it down ``down_s`` seconds, start it again on its port and files."""
        self.redis.kill()
        time.sleep(down_s)
        self.redis.start()

    # -- what ran where
    def task_hosts(self, dag_id: str | None = None) -> list[tuple[str, str, str, str]]:
        """(dag_id, run_id, task_id, hostname) of every task instance that ran, from the metadata DB."""
        import psycopg2

        conn = psycopg2.connect(dbname=self.airflow_db, **self.pg)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT dag_id, run_id, task_id, hostname FROM task_instance WHERE hostname <> ''"
                            + (" AND dag_id = %s" if dag_id else ""), (dag_id,) if dag_id else None)
                return cur.fetchall()
        finally:
            conn.close()

    def wait_running(self, dag_id: str, run_id: str, task_id: str, step: str | None = None,
                     timeout: float = 600) -> dict:
        """The task instance once it runs on a worker (and, with ``step``, once that worker's step
        process ``python -m pavedml <step>`` has started): its API record."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ti = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
            except urllib.error.HTTPError as err:
                if err.code != 404:
                    raise
                ti = {}
            if ti.get("state") == "running" and ti.get("hostname") in self.workers:
                if step is None or self.step_pids(ti["hostname"], step):
                    return ti
            elif ti.get("state") in ("success", "failed", "upstream_failed", "skipped"):
                raise RuntimeError(f"{dag_id}.{task_id} ended ({ti['state']}) before it was seen running")
            time.sleep(0.2)
        raise RuntimeError(f"{dag_id}.{task_id} of {run_id} was not running within {timeout}s")

    def step_pids(self, worker: str, step: str) -> list[int]:
        """Live ``python -m pavedml <step>`` processes started by ``worker``."""
        w = self.workers[worker]
        if w.proc is None:
            return []
        from pavedml.tools import procs as core

        out = []
        for pid in core.members([w.proc.pid]):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"pavedml" in argv and step.encode() in argv:
                out.append(pid)
        return out
