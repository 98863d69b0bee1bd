"""``make test`` runs two pytest-xdist workers (tests/conftest.py): each module runs whole on one
worker, the distributed and docker packages whole too (their fixtures must not start twice), the
slowest first. xdist's own grouping silently did nothing under pytest 9: this runs a real
``pytest -n 2`` and looks where each test ran."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import defaultdict

import pytest

from tests.conftest import REPO, SLOWEST_FIRST, group_of

pytestmark = pytest.mark.unit

BODY = textwrap.dedent("""
    import os, time
    import pytest

    @pytest.mark.parametrize("i", range(4))
    def test_here(i, request):
        time.sleep(0.3)
        with open(os.environ["WHERE"], "a") as fh:
            fh.write(f"{os.environ['PYTEST_XDIST_WORKER']} {request.node.nodeid}\\n")
""")


def test_each_module_and_each_whole_package_runs_on_one_worker(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for rel in ("tests/docker/test_a.py", "tests/docker/test_b.py", "tests/unit/test_c.py", "tests/unit/test_d.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(BODY)
    where = tmp_path / "where.txt"
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q",
                          "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder", str(tmp_path / "tests")],
                         cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "WHERE": str(where)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    workers = defaultdict(set)
    for line in where.read_text().splitlines():
        worker, nodeid = line.split(" ", 1)
        workers[group_of(nodeid)].add(worker)
    assert set(workers) == {"tests/docker", "tests/unit/test_c.py", "tests/unit/test_d.py"}, dict(workers)
    assert all(len(w) == 1 for w in workers.values()), dict(workers)
    assert len(set().union(*workers.values())) == 2  # and both workers were used


def test_the_groups_and_the_slowest_first_list_name_what_exists():
    for group in SLOWEST_FIRST:
        assert (REPO / group).exists(), group
    assert group_of("tests/distributed/test_faults.py::test_x[a]") == "tests/distributed"
    assert group_of("tests/docker/test_docker_guard.py::test_y") == "tests/docker"
    assert group_of("tests/e2e/test_loops.py::test_z[acme]") == "tests/e2e/test_loops.py"
