"""Online serving on loopback (#18): our service against the chain a user would otherwise build
(``feast serve`` + ``mlflow models serve`` of the same model version on the same online store),
under a fixed-rate open-loop load, plus a hot swap of the ``champion`` alias under load.

Needs a data root where ``make demo`` ran (a champion and a materialized online store)::

    make demo                                   # once, ~8 min; or DATA_ROOT=/tmp/x and --data-root /tmp/x
    .venv/bin/python benchmarks/bench_serving.py [--data-root var] [--use-case telco_churn]
        [--rates 20 50 100 200] [--seconds 30] [--sizes 1 100] [--targets anchor ours]
        [--ramp-seconds 10] [--swap-rate R] [--quick] [--out var/bench/serving.json]

The load generator runs in this process (asyncio, raw HTTP/1.1 keep-alive connections, uvloop when
installed), the servers in sessions of their own. Requests are sent on a fixed schedule whatever
the answers do (open loop); a request's latency runs from its *scheduled* send time to the end of
its answer (no coordinated omission), and a request not answered within ``--timeout`` (2 s) of its
scheduled time is an error. Percentiles count every failed request at the timeout. A chained
request is the Feast call plus the MLflow call; its latency is the whole chain. Each target runs
alone (the other's servers are stopped), the anchor first. Once a rate fails half its requests,
the higher rates of that target and size are skipped (``--no-skip`` runs them anyway). The ramp
looks for the highest sustained rate (errors = 0, p99 < 1 s) beyond the rates: half and a quarter
of the lowest if none was sustained, twice and four times the top if it was. Our service also runs
at the anchor's highest sustained rate (the ratio is taken there).

The hot swap: after the single-key runs, the service (polling the registry every second) is under
single-key load at the top rate, and at the anchor's highest sustained rate when that is lower; a
helper process moves ``champion`` to another registered version (the previous champion, else the
newest other; with only one version, the champion's model is registered again) and back, each
time until answers carry the new version. The original alias is restored when the helper ends.
Figures go to ``--out`` (JSON), server logs to ``var/bench/serving/logs/``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, WORK  # noqa: E402

sys.path.insert(0, str(REPO / "include"))
from pavedml.tools import procs  # noqa: E402  (standard library only)

#: a rate is sustained when no request failed and p99 stayed under this
SUSTAINED_P99_S = 1.0
SUSTAINED = f"errors = 0 and p99 < {SUSTAINED_P99_S * 1000:.0f} ms"
GOAL_P99_MS = 10.0
GOAL_RATIO = 3.0
#: a rate that fails this share of its requests ends the target's climb for that request size
COLLAPSED_SHARE = 0.5
MAX_CONNECTIONS = 1000
READY_TIMEOUT_S = 180.0
#: an idle keep-alive connection older than this is closed, not reused (uvicorn closes them after 5 s)
IDLE_REUSE_S = 4.0


# --------------------------------------------------------------------------------------------
# HTTP/1.1 over asyncio streams
# --------------------------------------------------------------------------------------------

class HttpError(Exception):
    """A non-2xx answer (or a malformed one): its reason is the error's label, ``detail`` a sample."""

    def __init__(self, label: str, detail: bytes | str = "") -> None:
        super().__init__(label)
        self.detail = detail[:300].decode(errors="replace") if isinstance(detail, bytes) else detail[:300]


class Pool:
    """Keep-alive connections to one server: an idle one is reused, else a new one is opened."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0
        self.live = 0
        self.retried = 0

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body) of one POST. An idle connection is reused only if it rested less than
        :data:`IDLE_REUSE_S` and the server has not closed it; one that fails before any answer
        byte is retried once on a fresh connection (what keep-alive clients do)."""
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        for attempt in (0, 1):
            conn = self._idle() if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                if self.live >= MAX_CONNECTIONS:
                    raise HttpError("client_connection_cap")
                self.live += 1
                try:
                    conn = await asyncio.open_connection(self.host, self.port)
                except BaseException:
                    self.live -= 1
                    raise
                self.opened += 1
            reader, writer = conn
            got_bytes = False
            try:
                writer.write(head + body)
                status_line = await reader.readline()
                if not status_line:
                    raise ConnectionResetError("the server closed the connection before answering")
                got_bytes = True
                status, data, close = await _read_rest(reader, status_line)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                self._discard(conn)
                if reused and not got_bytes:
                    self.retried += 1
                    continue
                raise HttpError(type(exc).__name__, str(exc) or ("after the status line" if got_bytes
                                                                 else "on a fresh connection")) from exc
            except BaseException:  # timeout (cancelled) or a parse error: the connection's state is unknown
                self._discard(conn)
                raise
            if close:
                self._discard(conn)
            else:
                self.idle.append((reader, writer, time.perf_counter()))
            return status, data
        raise AssertionError("unreachable")

    def _idle(self):
        while self.idle:
            reader, writer, since = self.idle.pop()  # the most recently used first
            if time.perf_counter() - since < IDLE_REUSE_S and not reader.at_eof() and not writer.is_closing():
                return reader, writer
            self._discard((reader, writer))
        return None

    def _discard(self, conn) -> None:
        self.live -= 1
        conn[1].close()

    def close(self) -> None:
        for conn in self.idle:
            conn[1].close()
        self.live -= len(self.idle)
        self.idle.clear()


async def _read_rest(reader: asyncio.StreamReader, status_line: bytes) -> tuple[int, bytes, bool]:
    status = int(status_line.split(b" ", 2)[1])
    length, chunked, close = 0, False, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if not chunked:
        return status, await reader.readexactly(length) if length else b"", close
    body = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            return status, bytes(body), close
        body += (await reader.readexactly(size + 2))[:-2]


# --------------------------------------------------------------------------------------------
# Targets: one call = one user request, however many servers it crosses
# --------------------------------------------------------------------------------------------

class Ours:
    """``POST /v1/<use_case>/predict {"keys": [...]}``: returns the (alias, version) of each prediction."""

    name = "ours"

    def __init__(self, port: int, use_case: str) -> None:
        self.pool = Pool(port)
        self.path = f"/v1/{use_case}/predict"

    async def call(self, keys: list[str]) -> list[tuple[str, str]]:
        status, data = await self.pool.post(self.path, json.dumps({"keys": keys}).encode())
        if status != 200:
            raise HttpError(f"http_{status}", data)
        preds = json.loads(data)["predictions"]
        if len(preds) != len(keys):
            raise HttpError("wrong_prediction_count")
        return [(str(p.get("alias")), str(p.get("model_version"))) for p in preds]

    def close(self) -> None:
        self.pool.close()


class Chain:
    """Feast ``/get-online-features`` of the feature service, then MLflow ``/invocations`` with
    those features as ``dataframe_split`` (in the model's column order)."""

    name = "anchor"

    def __init__(self, feast_port: int, mlflow_port: int, feature_service: str, entity_key: str,
                 columns: list[str], version: str) -> None:
        self.feast, self.mlflow = Pool(feast_port), Pool(mlflow_port)
        self.feature_service, self.entity_key, self.columns = feature_service, entity_key, columns
        self.version = version
        self.not_present = 0

    async def call(self, keys: list[str]) -> list[tuple[str, str]]:
        body = json.dumps({"feature_service": self.feature_service, "entities": {self.entity_key: keys}})
        status, data = await self.feast.post("/get-online-features", body.encode())
        if status != 200:
            raise HttpError(f"feast_http_{status}", data)
        doc = json.loads(data)
        by_name = dict(zip(doc["metadata"]["feature_names"], doc["results"], strict=True))
        try:
            cols = [by_name[c] for c in self.columns]
        except KeyError as exc:
            raise HttpError("feast_missing_column") from exc
        self.not_present += sum(s != "PRESENT" for c in cols for s in c["statuses"])
        rows = [list(r) for r in zip(*(c["values"] for c in cols), strict=True)]
        frame = json.dumps({"dataframe_split": {"columns": self.columns, "data": rows}})
        status, data = await self.mlflow.post("/invocations", frame.encode())
        if status != 200:
            raise HttpError(f"mlflow_http_{status}", data)
        if len(json.loads(data)["predictions"]) != len(keys):
            raise HttpError("wrong_prediction_count")
        return [("champion", self.version)] * len(keys)

    def close(self) -> None:
        self.feast.close()
        self.mlflow.close()


# --------------------------------------------------------------------------------------------
# The open-loop generator
# --------------------------------------------------------------------------------------------

@dataclass
class Run:
    """What one fixed-rate run saw."""

    target: str
    size: int
    rate: float
    latencies: list[float] = field(default_factory=list)  # seconds, failed requests at the timeout
    errors: Counter = field(default_factory=Counter)
    error_samples: dict = field(default_factory=dict)  # label -> the first answer's body
    versions: Counter = field(default_factory=Counter)  # "alias:version" -> predictions
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (answered at s, versions) when tracked
    mixed: int = 0  # answers whose champion predictions carry more than one version
    sent: int = 0
    ok: int = 0
    wall: float = 0.0
    lateness: list[float] = field(default_factory=list)  # each send's delay against its schedule (the generator's lag)
    cpu: float = 0.0  # the generator's CPU seconds

    def figures(self, timeout: float) -> dict:
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            return _pct(lat, q)

        n_err = sum(self.errors.values())
        return {"target": self.target, "size": self.size, "rate": self.rate, "sent": self.sent, "ok": self.ok,
                "achieved_rps": round(self.ok / self.wall, 1) if self.wall else 0.0,
                "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
                "max_ms": round(lat[-1] * 1000, 2) if lat else None,
                "errors": n_err, "error_kinds": dict(self.errors), "error_samples": self.error_samples, "versions": dict(self.versions),
                "mixed_answers": self.mixed, "generator_late_p99_ms": _pct(sorted(self.lateness), 0.99),
                "generator_cpu_pct": round(100 * self.cpu / self.wall, 1) if self.wall else 0.0,
                "sustained": n_err == 0 and bool(lat) and lat[min(len(lat) - 1, int(0.99 * len(lat)))] < SUSTAINED_P99_S,
                "timeout_s": timeout}


def _pct(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of sorted seconds, in ms."""
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2) if values else None


async def load(target, keys: list[str], size: int, rate: float, seconds: float, timeout: float, seed: int,
               stop: asyncio.Event | None = None, run: Run | None = None) -> Run:
    """Send ``rate`` requests a second of ``size`` random keys for ``seconds`` (or until ``stop``).

    Times are ``perf_counter`` (uvloop's clock ticks in whole milliseconds). A ``run`` passed in is
    filled as answers arrive, with its timeline of versions (the swap watches it)."""
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    rng = random.Random(seed)
    track = run is not None
    run = run or Run(target.name, size, rate)
    pending: set[asyncio.Task] = set()
    start = clock() + 0.05

    async def one(scheduled: float, batch: list[str]) -> None:
        try:
            async with asyncio.timeout(scheduled + timeout - clock()):
                answer = await target.call(batch)
        except TimeoutError:
            run.errors["timeout"] += 1
            run.latencies.append(timeout)
            return
        except HttpError as exc:
            run.errors[str(exc)] += 1
            run.error_samples.setdefault(str(exc), exc.detail)
            run.latencies.append(timeout)
            return
        except Exception as exc:  # noqa: BLE001  (a client-side failure is still a failed request)
            run.errors[type(exc).__name__] += 1
            run.error_samples.setdefault(type(exc).__name__, str(exc))
            run.latencies.append(timeout)
            return
        done = clock()
        run.latencies.append(done - scheduled)
        run.ok += 1
        champ = {v for a, v in answer if a == "champion"}
        if len(champ) > 1:
            run.mixed += 1
        for a, v in answer:
            run.versions[f"{a}:{v}"] += 1
        if track:
            run.timeline.append((done - start, ",".join(sorted({v for _, v in answer}))))

    cpu = time.process_time()
    n = int(rate * seconds)
    i = 0
    while i < n and not (stop is not None and stop.is_set()):
        scheduled = start + i / rate
        now = clock()
        if scheduled > now:
            await asyncio.sleep(scheduled - now)
            now = clock()
        run.lateness.append(max(0.0, now - scheduled))
        task = loop.create_task(one(scheduled, rng.sample(keys, size)))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
    run.sent = i
    end = start + i / rate
    if pending:
        await asyncio.wait(pending)
    run.wall = end - start
    run.cpu = time.process_time() - cpu
    return run


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servers:
    """Processes started in sessions of their own, stopped together (a guard stops them if we die)."""

    def __init__(self, logs: Path, env: dict) -> None:
        self.logs, self.env = logs, env
        self.started: list[tuple[str, subprocess.Popen]] = []
        self.t_start: dict[str, float] = {}
        self.guard = procs.Guard(grace=5)

    def start(self, name: str, argv: list[str], extra_env: dict | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115  (the child keeps it)
        proc = procs.start(argv, stdout=log, stderr=subprocess.STDOUT, env={**self.env, **(extra_env or {})},
                           cwd=str(REPO))
        log.close()
        self.guard.watch(proc.pid)
        self.started.append((name, proc))
        self.t_start[name] = time.perf_counter()
        return proc

    def wait_ready(self, name: str, proc: subprocess.Popen, url: str) -> float:
        """Seconds from its start until ``url`` answers 200; fails naming the server and its log if it
        dies or stalls."""
        t0 = self.t_start[name]
        while time.perf_counter() - t0 < READY_TIMEOUT_S:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode} before it was ready: see "
                                 f"{self.logs / (name + '.log')}\n{self._tail(name)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise SystemExit(f"{name} not ready at {url} after {READY_TIMEOUT_S:.0f} s: see "
                         f"{self.logs / (name + '.log')}\n{self._tail(name)}")

    def _tail(self, name: str) -> str:
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""

    def stop(self) -> None:
        self.t_start.clear()
        for _, proc in self.started:
            procs.stop(proc.pid, grace=5, proc=proc)
            self.guard.forget(proc.pid)
        self.started.clear()

    def close(self) -> None:
        self.stop()
        self.guard.close()


# --------------------------------------------------------------------------------------------
# Helpers that import the stack, in a process of their own (the generator stays lean)
# --------------------------------------------------------------------------------------------

def probe_main(use_case: str) -> None:
    """Print what the bench needs from the data root, or exit naming what is missing."""
    from pavedml.config import get_use_case
    from pavedml.layout import Layout
    from pavedml.settings import get_settings

    s = get_settings()
    uc = get_use_case(use_case)
    layout = Layout.for_use_case(uc.name, s)
    hint = f"run `make demo DATA_ROOT={s.data_root}` first (or pass --data-root of a data root where it ran)"
    online = s.feast_online_store
    if not online or online.startswith("sqlite:"):
        path = Path(online.removeprefix("sqlite:///")) if online else layout.feast_dir / "online.db"
        if not path.exists():
            sys.exit(f"no online store at {path}: {hint}")
    parts = sorted(p for p in layout.features_root.glob("dt=*") if p.is_dir()) if layout.features_root.exists() else []
    if not parts:
        sys.exit(f"no feature partitions under {layout.features_root}: {hint}")
    import pyarrow.parquet as pq

    keys = pq.read_table(str(parts[-1]), columns=[uc.entity.key]).column(0).to_pylist()
    keys = sorted({str(k) for k in keys if k is not None})
    from pavedml.adapters.tracking import CHAMPION, connect

    client, _ = connect(s, uc.name)
    name = uc.model.registered_name
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION).version
    except Exception as exc:  # noqa: BLE001  (MlflowException: no such model or alias)
        sys.exit(f"no `{CHAMPION}` alias on registered model {name!r} at {s.mlflow_tracking_uri}: {hint} ({exc})")
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    print(json.dumps({"data_root": str(s.data_root), "tracking_uri": s.mlflow_tracking_uri, "model_name": name,
                      "champion": str(champion), "versions": [str(v) for v in versions],
                      "feature_service": uc.feature_service, "entity_key": uc.entity.key,
                      "columns": list(uc.feature_columns), "features_partition": str(parts[-1]), "keys": keys,
                      "feast_dir": str(layout.feast_dir), "online_store": online}))


def swap_main(use_case: str) -> None:
    """Move the champion alias on command (stdin: a version per line); put the original back at EOF.

    With a single registered version, the champion's model is registered again for the test."""
    from pavedml.adapters.tracking import CHAMPION, PREVIOUS, connect
    from pavedml.config import get_use_case
    from pavedml.settings import get_settings

    uc = get_use_case(use_case)
    client, _ = connect(get_settings(), uc.name)
    name = uc.model.registered_name
    original = client.get_model_version_by_alias(name, CHAMPION)
    first = str(original.version)
    others = sorted((int(v.version) for v in client.search_model_versions(f"name='{name}'")
                     if str(v.version) != first), reverse=True)
    registered = None
    try:
        other = str(client.get_model_version_by_alias(name, PREVIOUS).version)
        if other == first:
            raise LookupError(other)
    except Exception:  # noqa: BLE001  (no previous champion)
        if others:
            other = str(others[0])
        else:
            mv = client.create_model_version(name, original.source, run_id=original.run_id,
                                             tags={**original.tags, "pavedml.bench": "hot swap copy"})
            other = registered = str(mv.version)
    print(json.dumps({"champion": first, "other": other, "registered": registered}), flush=True)
    current = first
    for line in sys.stdin:
        version = line.strip()
        t0 = time.perf_counter()
        client.set_registered_model_alias(name, CHAMPION, version)
        current = version
        print(json.dumps({"set": version, "seconds": round(time.perf_counter() - t0, 3)}), flush=True)
    if current != first:
        client.set_registered_model_alias(name, CHAMPION, first)


# --------------------------------------------------------------------------------------------
# The bench
# --------------------------------------------------------------------------------------------

def helper(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env, cwd=str(REPO))


async def run_grid(target, keys: list[str], size: int, rates: list[float], seconds: float, timeout: float,
                   skip: bool, seed: int, ramp_seconds: float = 0.0) -> list[dict]:
    """One fixed-rate run per rate, lowest first, for requests of ``size`` keys; then the ramp: if no
    rate was sustained, half the lowest and a quarter; if the top one was, twice and four times it
    (``ramp_seconds`` each, stopping at the first that changes the answer)."""
    await load(target, keys, size, 10, 2, timeout, seed)  # warm up (not counted)
    baseline = await idle_latency(target, keys, timeout)
    out: list[dict] = []
    collapsed = None

    async def measure(rate: float, secs: float, ramp: bool) -> dict:
        run = await load(target, keys, size, rate, secs, timeout, seed + int(rate) * 1000 + size)
        fig = run.figures(timeout)
        fig.update(loadavg_1m_after=round(os.getloadavg()[0], 2), idle_single_key_ms=round(baseline * 1000, 2),
                   seconds=secs, ramp=ramp)
        out.append(fig)
        print(("  ramp " if ramp else "  ") + line(fig), flush=True)
        for label, sample in fig["error_samples"].items():
            print(f"      first {label}: {sample!r}", flush=True)
        if run.errors:
            await settle(target, keys, timeout, baseline)
        await asyncio.sleep(1.0)
        return fig

    for rate in rates:
        if collapsed is not None:
            out.append({"target": target.name, "size": size, "rate": rate, "skipped": f"collapsed at {collapsed:g}/s"})
            print(f"  {target.name:6} {size:>3} keys {rate:>6g}/s  skipped: {COLLAPSED_SHARE:.0%} or more failed "
                  f"at {collapsed:g}/s", flush=True)
            continue
        fig = await measure(rate, seconds, False)
        if skip and fig["sent"] and fig["errors"] >= COLLAPSED_SHARE * fig["sent"]:
            collapsed = rate
    if ramp_seconds > 0:
        sustained = [f["rate"] for f in out if f.get("sustained")]
        if not sustained:
            for rate in (min(rates) / 2, min(rates) / 4):
                if (await measure(rate, ramp_seconds, True))["sustained"]:
                    break
        elif max(sustained) == max(rates):
            for rate in (max(rates) * 2, max(rates) * 4):
                if not (await measure(rate, ramp_seconds, True))["sustained"]:
                    break
    return out


async def idle_latency(target, keys: list[str], timeout: float, n: int = 9) -> float:
    """Median seconds of ``n`` single-key requests one after the other (the idle server's answer time)."""
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await target.call(keys[i:i + 1])
            times.append(time.perf_counter() - t0)
        except Exception:  # noqa: BLE001
            times.append(timeout)
    return sorted(times)[n // 2]


async def settle(target, keys: list[str], timeout: float, baseline: float, limit: float = 120.0) -> float:
    """After an overloaded run, wait until the server has worked off its backlog (requests the
    client gave up on may still be queued there): until two single-key requests in a row are
    answered within 3x the idle time (at least 50 ms). Returns the seconds waited."""
    t0 = time.perf_counter()
    good = 0
    while time.perf_counter() - t0 < limit and good < 2:
        t1 = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await target.call(keys[:1])
            good = good + 1 if time.perf_counter() - t1 < max(3 * baseline, 0.05) else 0
        except Exception:  # noqa: BLE001  (still busy, or the worker restarting)
            good = 0
        await asyncio.sleep(0.2)
    return time.perf_counter() - t0


def line(f: dict) -> str:
    errs = f" ({', '.join(f'{k} {v}' for k, v in f['error_kinds'].items())})" if f["errors"] else ""
    return (f"{f['target']:6} {f['size']:>3} keys {f['rate']:>6g}/s  achieved {f['achieved_rps']:>6.1f}/s  "
            f"p50 {f['p50_ms']:>7.1f}  p95 {f['p95_ms']:>7.1f}  p99 {f['p99_ms']:>7.1f}  max {f['max_ms']:>7.1f} ms  "
            f"errors {f['errors']}{errs}  [gen cpu {f['generator_cpu_pct']:.0f}%, late p99 {f['generator_late_p99_ms']:.1f} ms]")


def highest(figs: list[dict], size: int) -> float | None:
    ok = [f["rate"] for f in figs if f["size"] == size and f.get("sustained")]
    return max(ok) if ok else None


async def hot_swap(target: Ours, keys: list[str], rate: float, timeout: float, env: dict, use_case: str,
                   seed: int, max_seconds: float = 120.0) -> dict:
    """Single-entity load at ``rate``; the champion alias moves to another version and back, each time
    waiting until answers carry the new version; every failed request of the whole run is counted."""
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--_swap", use_case, env=env, cwd=str(REPO),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    hello = json.loads(await proc.stdout.readline() or b"{}")
    if "champion" not in hello:
        await proc.wait()
        raise SystemExit("the swap helper could not read the champion (its error is above)")
    original, other = str(hello["champion"]), str(hello["other"])
    stop = asyncio.Event()
    run = Run(target.name, 1, rate)
    clock = time.perf_counter
    t0 = clock()
    run_task = asyncio.create_task(load(target, keys, 1, rate, max_seconds, timeout, seed, stop=stop, run=run))
    steps = []
    try:
        await asyncio.sleep(3.0)
        for version in (other, original):
            t_set = clock() - t0
            proc.stdin.write(f"{version}\n".encode())
            await proc.stdin.drain()
            ack = json.loads(await proc.stdout.readline() or b"{}")
            step = {"to": version, "at_s": round(t_set, 2), "alias_call_s": ack.get("seconds"), "seen_after_s": None}
            steps.append(step)
            checked = 0
            while clock() - t0 < t_set + 30 and step["seen_after_s"] is None:
                await asyncio.sleep(0.05)
                tail, checked = run.timeline[checked:], len(run.timeline)
                if any(v == version for _, v in tail):
                    step["seen_after_s"] = round(clock() - t0 - t_set, 2)
            await asyncio.sleep(3.0)  # answers keep coming on the new version
    finally:
        stop.set()
        await run_task
        proc.stdin.close()
        await proc.wait()
    fig = run.figures(timeout)
    order: list[str] = []
    for _, v in sorted(run.timeline):
        if not order or order[-1] != v:
            order.append(v)
    return {"rate": rate, "seconds": round(run.wall, 1), "sent": run.sent, "ok": run.ok, "errors": fig["errors"],
            "error_kinds": fig["error_kinds"], "mixed_answers": run.mixed, "p50_ms": fig["p50_ms"],
            "p99_ms": fig["p99_ms"], "max_ms": fig["max_ms"], "versions_seen": fig["versions"],
            "version_sequence": order, "original": original, "other": other,
            "registered_for_test": hello.get("registered"), "steps": steps,
            "swapped_and_back": all(s["seen_after_s"] is not None for s in steps)}


async def bench(args, info: dict, env: dict, servers: Servers) -> dict:
    keys, uc = info["keys"], args.use_case
    py = sys.executable
    result: dict = {"runs": [], "ready_s": {}, "highest_sustained": {}}
    for name in args.targets:
        print(f"\n{name}: starting", flush=True)
        if name == "anchor":
            feast_port, mlflow_port = free_port(), free_port()
            feast_argv = [py, "-m", "pavedml.tools.feast_repo", "--use-case", uc, "--", "serve", "-h", "127.0.0.1",
                          "-p", str(feast_port)]
            feast = servers.start("feast", feast_argv)
            mlflow = servers.start("mlflow", [str(Path(py).parent / "mlflow"), "models", "serve", "-m",
                                              f"models:/{info['model_name']}/{info['champion']}", "--env-manager",
                                              "local", "-h", "127.0.0.1", "-p", str(mlflow_port)],
                                   {"MLFLOW_TRACKING_URI": info["tracking_uri"]})
            result["ready_s"]["feast"] = round(servers.wait_ready("feast", feast, f"http://127.0.0.1:{feast_port}/health"), 1)
            result["ready_s"]["mlflow"] = round(servers.wait_ready("mlflow", mlflow, f"http://127.0.0.1:{mlflow_port}/ping"), 1)
            target: Ours | Chain = Chain(feast_port, mlflow_port, info["feature_service"], info["entity_key"],
                                         info["columns"], info["champion"])
            result["anchor_commands"] = [" ".join(feast_argv), f"mlflow models serve -m models:/{info['model_name']}/"
                                         f"{info['champion']} --env-manager local"]
        else:
            port = free_port()
            proc = servers.start("ours", [py, "-m", "pavedml", "serve", "--use-case", uc, "--host", "127.0.0.1",
                                          "--port", str(port)])
            result["ready_s"]["ours"] = round(servers.wait_ready("ours", proc, f"http://127.0.0.1:{port}/readyz"), 1)
            target = Ours(port, uc)
        print(f"{name}: ready ({', '.join(f'{k} {v} s' for k, v in result['ready_s'].items() if k in servers.t_start)} "
              "after start)", flush=True)
        figs: list[dict] = []
        for size in args.sizes:
            rates = list(args.rates)
            anchor_high = result["highest_sustained"].get("anchor", {}).get(str(size))
            if name == "ours" and anchor_high and anchor_high not in rates:
                rates = sorted([*rates, anchor_high])  # the ratio is taken at the anchor's highest sustained rate
            figs += await run_grid(target, keys, size, rates, args.seconds, args.timeout, not args.no_skip,
                                   args.seed, args.ramp_seconds)
            if size == 1:  # the swap runs before the 100-key runs can leave a backlog behind
                await swap_under_load(args, result, target, keys, env)
        result["runs"] += figs
        result["highest_sustained"][name] = {str(s): highest(figs, s) for s in args.sizes}
        if name == "anchor" and isinstance(target, Chain):
            result["anchor_features_not_present"] = target.not_present
        if 1 not in args.sizes:
            await swap_under_load(args, result, target, keys, env)
        target.close()
        servers.stop()
    return result


async def swap_under_load(args, result: dict, target, keys: list[str], env: dict) -> None:
    if isinstance(target, Ours) and not args.no_swap:
        rates = [args.swap_rate] if args.swap_rate else \
            swap_rates(args.rates, result["highest_sustained"].get("anchor", {}).get("1"))
        for rate in rates:
            await swap_once(args, result, target, keys, env, rate)


async def swap_once(args, result: dict, target: Ours, keys: list[str], env: dict, rate: float) -> None:
    print(f"ours: hot swap under {rate:g} single-entity requests/s", flush=True)
    sw = await hot_swap(target, keys, rate, args.timeout, env, args.use_case, args.seed + 7)
    result.setdefault("swaps", []).append(sw)
    print(f"  swap v{sw['original']} -> v{sw['other']} -> v{sw['original']}: {sw['sent']} requests in "
          f"{sw['seconds']:g} s, errors {sw['errors']} {sw['error_kinds'] or ''}, mixed answers "
          f"{sw['mixed_answers']}, p50 {sw['p50_ms']} p99 {sw['p99_ms']} max {sw['max_ms']} ms, versions in "
          f"answers {' -> '.join(sw['version_sequence'])}, new version answered "
          f"{', '.join(str(s['seen_after_s']) for s in sw['steps'])} s after each alias move", flush=True)
    await asyncio.sleep(1.0)


def swap_rates(rates: list[float], anchor_highest: float | None) -> list[float]:
    """The anchor's highest sustained rate when it is below the top rate tried, and the top rate."""
    return sorted({min(max(rates), anchor_highest), max(rates)}) if anchor_highest else [max(rates)]


def summary(result: dict, args) -> dict:
    runs = [r for r in result["runs"] if "skipped" not in r]

    def fig(target: str, size: int, rate: float) -> dict | None:
        return next((r for r in runs if r["target"] == target and r["size"] == size and r["rate"] == rate), None)

    top = max(args.rates)
    out: dict = {"definition_sustained": SUSTAINED}
    ours = fig("ours", 1, top)
    if ours:
        out["ours_p99_ms_single_at_top"] = {"rate": top, "p99_ms": ours["p99_ms"], "errors": ours["errors"],
                                            "goal_ms": GOAL_P99_MS, "met": ours["errors"] == 0 and ours["p99_ms"] < GOAL_P99_MS}
    for size in args.sizes:
        a_high = result["highest_sustained"].get("anchor", {}).get(str(size))
        rate = a_high or min(args.rates)
        a, o = fig("anchor", size, rate), fig("ours", size, rate)
        if a and o and o["p99_ms"]:
            out[f"ratio_anchor_over_ours_p99_{size}"] = {
                "rate": rate, "anchor_sustained_it": a_high is not None, "anchor_p99_ms": a["p99_ms"],
                "anchor_p99_is_the_timeout": a["errors"] > 0.01 * a["sent"],
                "ours_p99_ms": o["p99_ms"], "ratio": round(a["p99_ms"] / o["p99_ms"], 1), "goal": GOAL_RATIO,
                "met": a["p99_ms"] / o["p99_ms"] >= GOAL_RATIO}
    out["swaps"] = [{"rate": sw["rate"], "errors": sw["errors"], "mixed_answers": sw["mixed_answers"],
                     "versions": sw["version_sequence"], "swapped_and_back": sw["swapped_and_back"],
                     "p99_ms": sw["p99_ms"], "max_ms": sw["max_ms"],
                     "met": sw["errors"] == 0 and sw["mixed_answers"] == 0 and sw["swapped_and_back"]}
                    for sw in result.get("swaps", [])]
    out["highest_sustained"] = result["highest_sustained"]
    return out


def print_summary(s: dict) -> None:
    print(f"\nsummary (sustained = {s['definition_sustained']}; failed requests count at the timeout in percentiles)")
    if "ours_p99_ms_single_at_top" in s:
        o = s["ours_p99_ms_single_at_top"]
        print(f"  ours, 1 key at {o['rate']:g}/s: p99 {o['p99_ms']} ms, errors {o['errors']} "
              f"(goal < {o['goal_ms']:g} ms): {'met' if o['met'] else 'NOT met'}")
    for key, r in s.items():
        if key.startswith("ratio_"):
            size = key.rsplit("_", 1)[1]
            how = "the anchor's highest sustained rate" if r["anchor_sustained_it"] else \
                "the lowest rate tried (the anchor sustained none)"
            floor = "at least " if r["anchor_p99_is_the_timeout"] else ""
            print(f"  {size} key(s) at {r['rate']:g}/s ({how}): anchor p99 {floor}{r['anchor_p99_ms']} ms / ours "
                  f"{r['ours_p99_ms']} ms = {floor}{r['ratio']}x (goal >= {r['goal']:g}x): {'met' if r['met'] else 'NOT met'}")
    for w in s["swaps"]:
        print(f"  hot swap at {w['rate']:g}/s: errors {w['errors']}, mixed answers {w['mixed_answers']}, versions "
              f"{' -> '.join(w['versions'])}, swapped and back: {w['swapped_and_back']}, p99 {w['p99_ms']} ms "
              f"(goal: 0 errors): {'met' if w['met'] else 'NOT met'}")
    for target, by_size in s["highest_sustained"].items():
        print(f"  highest sustained rate, {target}: " + ", ".join(
            f"{size} key(s) {'none' if r is None else f'{r:g}/s'}" for size, r in by_size.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="var", help="a data root where `make demo` ran (relative to the repo)")
    parser.add_argument("--use-case", default="telco_churn")
    parser.add_argument("--rates", type=float, nargs="+", default=[20, 50, 100, 200], help="requests/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="per rate")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100], help="entity keys per request")
    parser.add_argument("--targets", nargs="+", choices=["anchor", "ours"], default=["anchor", "ours"])
    parser.add_argument("--timeout", type=float, default=2.0, help="a request not answered within it is an error")
    parser.add_argument("--swap-rate", type=float, help="default: the top rate, or the anchor's highest sustained if lower")
    parser.add_argument("--no-swap", action="store_true")
    parser.add_argument("--no-skip", action="store_true", help="run the rates above one that collapsed too")
    parser.add_argument("--ramp-seconds", type=float, default=10.0,
                        help="per ramp step beyond the rates (0: no ramp); the ramp looks for the highest sustained rate")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 s per rate, the lowest and the top rate")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--out", type=Path, default=WORK / "serving.json")
    parser.add_argument("--_probe", help=argparse.SUPPRESS)
    parser.add_argument("--_swap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._probe:
        return probe_main(args._probe)
    if args._swap:
        return swap_main(args._swap)
    if args.quick:
        args.seconds, args.rates, args.ramp_seconds = 5.0, sorted({min(args.rates), max(args.rates)}), 0.0
    args.rates = sorted(args.rates)
    root = Path(args.data_root)
    root = (root if root.is_absolute() else REPO / root).resolve()
    if not root.is_dir():
        raise SystemExit(f"no data root at {root}: run `make demo` first (or `make demo DATA_ROOT=<dir>` and pass "
                         "--data-root <dir>)")
    env = {**os.environ, "PAVEDML_DATA_ROOT": str(root), "PAVEDML_SERVING_POLL_SECONDS": os.environ.get("PAVEDML_SERVING_POLL_SECONDS", "1"), "TQDM_DISABLE": "1",
           "FEAST_USAGE": "False", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "GX_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(REPO / "include"),
           # mlflow models serve execs `uvicorn` from PATH: the venv's, as in an activated shell
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = helper(["--_probe", args.use_case], env)
    if done.returncode:
        raise SystemExit(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "the probe failed")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    if len(info["keys"]) < max(args.sizes):
        raise SystemExit(f"{info['features_partition']} has {len(info['keys'])} keys; requests of {max(args.sizes)} "
                         "need at least as many")
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    print(f"serving bench: {args.use_case}, model {info['model_name']} champion v{info['champion']} (versions "
          f"{', '.join(info['versions'])}), {len(info['keys']):,} keys from {info['features_partition']}, online "
          f"store {info['online_store'] or info['feast_dir'] + '/online.db'}; open loop ({loop_name}), "
          f"{args.seconds:g} s per rate, timeout {args.timeout:g} s; sustained = {SUSTAINED}", flush=True)
    logs = WORK / "serving" / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    servers = Servers(logs, env)
    started = dt.datetime.now(dt.UTC)
    try:
        result = asyncio.run(bench(args, info, env, servers))
    finally:
        servers.close()
    result["summary"] = summary(result, args)
    print_summary(result["summary"])
    result["meta"] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "started": started.isoformat(),
                      "cores": os.cpu_count(), "loadavg_after": os.getloadavg(), "data_root": str(root),
                      "use_case": args.use_case, "model_name": info["model_name"], "champion": info["champion"],
                      "versions": info["versions"], "keys": len(info["keys"]), "seconds_per_rate": args.seconds,
                      "rates": args.rates, "sizes": args.sizes, "timeout_s": args.timeout, "event_loop": loop_name,
                      "logs": str(logs)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"figures: {args.out}; server logs: {logs}")


if __name__ == "__main__":
    main()
