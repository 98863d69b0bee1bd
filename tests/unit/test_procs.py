"""Processes the tests, ``make airflow`` and ``make docker-down`` start are stopped as a whole:
the leader, its group, children in process groups of their own (as Airflow runs each task) and
children that left the session, SIGKILL after the grace period for those that ignore SIGTERM;
the test run fails naming any process that outlived it; SIGTERM and SIGKILL to the run still
stop what it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pavedml.tools import procs as core
from tests.conftest import REPO
from tests.helpers import procs
from tests.helpers.deploy import deploy_module

pytestmark = pytest.mark.unit

#: a process tree: the leader and three children (one in its group, one in a process group of its
#: own, one in a session of its own); with "ignore", every one of them ignores SIGTERM. Writes
#: their pids to argv[1] once all are running.
TREE = textwrap.dedent("""
    import os, signal, sys, time
    if sys.argv[2] == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    def child(kind):
        pid = os.fork()
        if pid == 0:
            if kind == "group":
                os.setpgid(0, 0)
            elif kind == "session":
                os.setsid()
            while True:
                time.sleep(1)
        return pid
    pids = [os.getpid()] + [child(kind) for kind in ("same", "group", "session")]
    with open(sys.argv[1] + ".tmp", "w") as fh:
        fh.write(" ".join(map(str, pids)))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    while True:
        time.sleep(1)
""")


def tree_argv(pids_file: Path, mode: str = "ignore") -> list[str]:
    return [sys.executable, "-c", TREE, str(pids_file), mode]


def wait_for(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} not written within {timeout}s"
        time.sleep(0.05)
    return path.read_text()


def read_tree(pids_file: Path) -> dict[int, int | None]:
    """pid -> start time of the tree's processes (a reused pid is not taken for one of them)."""
    return {int(p): core.start_time(int(p)) for p in wait_for(pids_file).split()}


def alive(tree: dict[int, int | None]) -> list[int]:
    """The tree's processes that still run (a zombie does not: it only waits to be reaped)."""
    left = []
    for pid, started in tree.items():
        fields = core._stat(pid)
        if fields and fields[0] not in ("Z", "X") and started in (None, int(fields[19])):
            left.append(pid)
    return left


def wait_gone(tree: dict[int, int | None], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := alive(tree)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill(tree: dict[int, int | None]) -> None:
    """Cleanup after a failed assertion: SIGKILL what is left of the tree."""
    for pid in alive(tree):
        os.kill(pid, signal.SIGKILL)


def test_stop_ends_the_whole_tree_sigkill_after_the_grace_period(tmp_path):
    proc = procs.spawn("tree", tree_argv(tmp_path / "pids"))
    tree = read_tree(tmp_path / "pids")
    try:
        assert len(alive(tree)) == 4
        # the children in a group and a session of their own are out of reach of killpg
        assert len({os.getpgid(pid) for pid in tree}) == 3 and len({os.getsid(pid) for pid in tree}) == 2
        assert set(procs.alive()[proc.pid]) == set(tree)
        started = time.monotonic()
        procs.stop(proc, grace=1.0)
        took = time.monotonic() - started
        assert alive(tree) == [], [core.cmdline(p) for p in alive(tree)]
        assert 1.0 <= took < 6, took  # waited out the grace period (all ignore SIGTERM), then SIGKILL
        assert proc.returncode == -signal.SIGKILL
        assert proc.pid not in procs.alive()
    finally:
        kill(tree)


def test_stop_does_not_wait_for_a_tree_that_obeys_sigterm(tmp_path):
    proc = procs.spawn("tree", tree_argv(tmp_path / "pids", "obey"))
    tree = read_tree(tmp_path / "pids")
    try:
        started = time.monotonic()
        procs.stop(proc, grace=30)
        assert time.monotonic() - started < 5
        assert alive(tree) == []
        assert proc.returncode == -signal.SIGTERM
    finally:
        kill(tree)


STACK = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from pavedml.tools import devstack
    devstack.STOP_GRACE_SECONDS = 1.0
    stack = devstack.Stack(Path(sys.argv[1]), 0, 0)
    stack._start("tree", [sys.executable, "-c", sys.argv[4], sys.argv[2], "ignore"], dict(os.environ))
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.05)
    print("guard", stack._guard.proc.pid, flush=True)
    if sys.argv[3] == "stop":
        print("left", stack.stop(), flush=True)
    else:
        time.sleep(600)
""")


def test_make_airflow_stops_each_components_whole_session(tmp_path):
    """``make airflow``'s stop: a component's children in other groups and sessions (Airflow's
    tasks) end too, SIGKILL after the grace period; its watchdog exits with it."""
    out = subprocess.run([sys.executable, "-c", STACK, str(tmp_path), str(tmp_path / "pids"), "stop", TREE],
                         capture_output=True, text=True, timeout=60)
    tree = read_tree(tmp_path / "pids")
    try:
        assert out.returncode == 0, out.stderr
        assert "left []" in out.stdout, out.stdout
        assert alive(tree) == [], [core.cmdline(p) for p in alive(tree)]
        guard = int(out.stdout.split("guard ")[1].split()[0])
        assert wait_gone({guard: None}, 10) == []
    finally:
        kill(tree)


def test_make_airflow_killed_outright_its_watchdog_stops_the_components(tmp_path):
    proc = procs.spawn("stack", [sys.executable, "-c", STACK, str(tmp_path), str(tmp_path / "pids"), "wait", TREE],
                       stdout=subprocess.PIPE, text=True)
    tree = read_tree(tmp_path / "pids")
    try:
        assert proc.stdout.readline().startswith("guard ")
        os.kill(proc.pid, signal.SIGKILL)  # no handler, no finally: only the watchdog is left to act
        assert wait_gone(tree, 15) == [], [core.cmdline(p) for p in alive(tree)]
    finally:
        procs.stop(proc)
        kill(tree)


def docker_local():
    return deploy_module("docker_local")


#: a stand-in for dockerd: exits on SIGTERM, but its child (containerd, a shim: a process group of
#: its own) ignores it
ENGINE = textwrap.dedent("""
    import os, signal, sys, time
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    with open(sys.argv[1], "w") as fh:
        fh.write(f"{os.getpid()} {pid}")
    while True:
        time.sleep(1)
""")


def test_docker_down_stops_what_dockerd_started(tmp_path, monkeypatch):
    dl = docker_local()
    monkeypatch.setattr(dl, "PIDFILE", tmp_path / "dockerd.pid")
    proc = procs.spawn("engine", [sys.executable, "-c", ENGINE, str(tmp_path / "pids")])
    wait_for(tmp_path / "pids")
    tree = read_tree(tmp_path / "pids")
    dl.PIDFILE.write_text(f"{proc.pid} {core.start_time(proc.pid)}")  # what start_engine writes
    try:
        assert dl.stop_engine(grace=1.0) is True
        assert alive(tree) == [], [core.cmdline(p) for p in alive(tree)]
        assert not dl.PIDFILE.exists()
        assert dl.stop_engine() is False  # nothing left to stop
    finally:
        procs.stop(proc)
        kill(tree)


def test_docker_down_leaves_a_reused_pid_alone(tmp_path, monkeypatch):
    dl = docker_local()
    monkeypatch.setattr(dl, "PIDFILE", tmp_path / "dockerd.pid")
    proc = procs.spawn("not dockerd", [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dl.PIDFILE.write_text(f"{proc.pid} {core.start_time(proc.pid) - 1}")  # dockerd had this pid before
        assert dl.stop_engine(grace=1.0) is False
        assert proc.poll() is None
    finally:
        procs.stop(proc)


def inner_pytest(tmp_path: Path, body: str, args: tuple[str, ...] = (), **popen_kwargs) -> subprocess.Popen:
    """A test run of its own (with tests/conftest.py's hooks) on one test file."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(body))
    return procs.spawn("inner pytest", [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                                        "-q", *args, str(tmp_path / "test_inner.py")],
                       cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen_kwargs)


@pytest.mark.parametrize("workers", [(), ("-n", "2", "--dist", "loadgroup")], ids=["one-process", "xdist"])
def test_the_run_fails_naming_a_process_a_test_left_behind(tmp_path, workers):
    """Also under xdist (what make test runs): the worker that found it hands it to the controller."""
    proc = inner_pytest(tmp_path, f"""
        import os, sys, time
        from tests.helpers import procs

        def test_forgets_what_it_started():
            procs.spawn("forgotten sleeper", [sys.executable, "-c", {TREE!r}, {str(tmp_path / "pids")!r}, "obey"])
            while not os.path.exists({str(tmp_path / "pids")!r}):
                time.sleep(0.05)
    """, workers)
    try:
        out, _ = proc.communicate(timeout=120)
        tree = read_tree(tmp_path / "pids")
        assert "1 passed" in out, out
        assert proc.returncode == pytest.ExitCode.TESTS_FAILED, out
        assert "1 process group(s) started by the tests outlived them" in out, out
        assert f"forgotten sleeper (session {next(iter(tree))}" in out, out
        assert all(f"pid {pid}:" in out for pid in tree), out
        assert alive(tree) == [], [core.cmdline(p) for p in alive(tree)]
    finally:
        procs.stop(proc)


INTERRUPTED = """
    import sys, time
    import pytest
    from tests.helpers import procs

    @pytest.fixture
    def tree():
        proc = procs.spawn("tree", [sys.executable, "-c", {tree!r}, {pids!r}, {mode!r}])
        yield proc
        procs.stop(proc)

    def test_runs_long(tree):
        time.sleep(600)
"""


def test_sigterm_to_the_run_stops_what_its_tests_started(tmp_path):
    proc = inner_pytest(tmp_path, INTERRUPTED.format(tree=TREE, pids=str(tmp_path / "pids"), mode="obey"))
    tree = read_tree(tmp_path / "pids")
    try:
        os.kill(proc.pid, signal.SIGTERM)  # what a CI timeout or `kill` sends
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
        assert "KeyboardInterrupt" in out, out
        assert alive(tree) == [], [core.cmdline(p) for p in alive(tree)]
    finally:
        procs.stop(proc)
        kill(tree)


def test_sigkill_to_the_run_its_watchdog_stops_what_its_tests_started(tmp_path):
    proc = inner_pytest(tmp_path, INTERRUPTED.format(tree=TREE, pids=str(tmp_path / "pids"), mode="obey"))
    tree = read_tree(tmp_path / "pids")
    try:
        os.kill(proc.pid, signal.SIGKILL)
        assert wait_gone(tree, 15) == [], [core.cmdline(p) for p in alive(tree)]
    finally:
        procs.stop(proc)
        kill(tree)
