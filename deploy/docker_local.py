"""A Docker engine and the task image on a machine without a registry (used by `make image-local`
and the `docker` test suite).

    python deploy/docker_local.py up      # engine (started if none runs), base image, wheelhouse, task image
    python deploy/docker_local.py down    # stop the engine if `up` started it, with all it started

1. Engine: if `docker info` fails, start `dockerd --iptables=false --bridge=none` (root needed;
   containers then use host networking only, so all test traffic stays on loopback) and remember
   its pid in var/docker/dockerd.pid, so `down` stops only what `up` started. dockerd leads a
   session of its own; `down` sends it SIGTERM (it stops its containers and containerd), waits
   30 s, then SIGKILLs whatever of its session and descendants is left (include/pavedml/tools/procs.py).
2. Base image `pavedml-base:bookworm-py311`, made once and reused: `debootstrap --variant=minbase
   --include=python3,python3-venv,ca-certificates bookworm` from the Debian mirror apt uses, then
   `docker import`. Nothing is ever pulled.
3. Wheelhouse `./wheelhouse/` of every pin (pip wheel), rebuilt only when the pins change.
4. Task image `pavedml-task:<commit>` (`-dirty` when the tree has uncommitted changes): the
   Dockerfile's `task` target with BASE_IMAGE set to (2) and an offline install from (3).

Every failure says what failed and where its log is. Standard library only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / "var" / "docker"
PIDFILE = STATE / "dockerd.pid"
BASE_IMAGE = "pavedml-base:bookworm-py311"
WHEELHOUSE = REPO / "wheelhouse"
PIN_FILES = (REPO / "requirements.txt", REPO / "deploy" / "requirements-mlflow.txt",
             REPO / "deploy" / "local" / "requirements-local.txt")  # the last: the images of `make up-local`
BUILD_TOOLS = ("setuptools>=68", "wheel")
STOP_GRACE_SECONDS = 30.0


def _procs():
    """include/pavedml/tools/procs.py, loaded by path (standard library only; no venv needed)."""
    spec = importlib.util.spec_from_file_location("pavedml_procs", REPO / "include" / "pavedml" / "tools" / "procs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class DockerLocalError(RuntimeError):
    pass


def docker_bin() -> str:
    """Debian's docker.io client first: it builds with BuildKit by itself (DOCKER_BUILDKIT=1),
    where a newer CLI would need the buildx plugin."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise DockerLocalError("no docker client: apt-get install docker.io")


def docker(*args: str, check: bool = True, capture: bool = True, **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run([docker_bin(), *args], capture_output=capture, text=True, **kwargs)
    if check and out.returncode != 0:
        raise DockerLocalError(f"docker {' '.join(args[:3])} failed ({out.returncode}): {(out.stderr or '')[-2000:]}")
    return out


def engine_running() -> bool:
    try:
        return docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=20).returncode == 0
    except (subprocess.TimeoutExpired, DockerLocalError):
        return False


def start_engine(timeout: float = 90) -> bool:
    """Start dockerd unless an engine answers. Returns True when this call started it."""
    if engine_running():
        return False
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not os.access(dockerd, os.X_OK):
        raise DockerLocalError("no Docker engine runs and dockerd is not installed: apt-get install docker.io")
    if os.geteuid() != 0:
        raise DockerLocalError("no Docker engine runs and starting dockerd needs root")
    STATE.mkdir(parents=True, exist_ok=True)
    log = STATE / "dockerd.log"
    with log.open("ab") as out:
        proc = _procs().start([dockerd, "--iptables=false", "--bridge=none"], stdout=out, stderr=subprocess.STDOUT)
    PIDFILE.write_text(f"{proc.pid} {_procs().start_time(proc.pid) or 0}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            PIDFILE.unlink(missing_ok=True)
            raise DockerLocalError(f"dockerd exited ({proc.returncode}) at start; its log ({log}):\n"
                                   + log.read_text(errors="replace")[-3000:])
        if engine_running():
            return True
        time.sleep(1)
    raise DockerLocalError(f"dockerd did not answer within {timeout}s; see {log}")


def stop_engine(grace: float = STOP_GRACE_SECONDS) -> bool:
    """Stop the dockerd that start_engine started (never one it found running) and everything it
    started: SIGTERM to dockerd, then after ``grace`` seconds SIGKILL to what is left of its session
    (containerd, shims and their children included). False when nothing of it was running."""
    if not PIDFILE.exists():
        return False
    pid, _, started = PIDFILE.read_text().strip().partition(" ")
    sid, started = int(pid), int(started or 0) or None
    procs = _procs()
    running = procs.ours(sid, started) and bool(procs.members([sid]))
    left = procs.stop(sid, grace, term_all=False, started=started) if running else []
    if left:
        raise DockerLocalError(f"dockerd's processes still alive after SIGKILL: {left}")
    PIDFILE.unlink()
    return running


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def debian_mirror() -> str:
    """The Debian mirror apt is configured with (deb822 or one-line sources)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        text = path.read_text(errors="replace") if path.is_file() else ""
        for match in re.finditer(r"(?:^URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            uri = match.group(1)
            if "debian" in uri and "security" not in uri:
                return uri
    return "http://deb.debian.org/debian"


def ensure_base_image(tag: str = BASE_IMAGE) -> float:
    """Make the Debian base image once. Returns the seconds spent (0 when it existed)."""
    if image_exists(tag):
        return 0.0
    if not shutil.which("debootstrap"):
        raise DockerLocalError("debootstrap is not installed: apt-get install debootstrap")
    started = time.perf_counter()
    rootfs = Path(tempfile.mkdtemp(prefix="pavedml-rootfs-"))
    log = STATE / "debootstrap.log"
    STATE.mkdir(parents=True, exist_ok=True)
    try:
        with log.open("w") as fh:
            out = subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                                  "bookworm", str(rootfs), debian_mirror()], stdout=fh, stderr=subprocess.STDOUT)
        if out.returncode != 0:
            raise DockerLocalError(f"debootstrap failed ({out.returncode}); see {log}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([docker_bin(), "import", "--change", "ENV LANG=C.UTF-8", "-", tag],
                                  stdin=tar.stdout, capture_output=True, text=True)
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0:
            raise DockerLocalError(f"docker import failed: {imported.stderr[-2000:]}")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return time.perf_counter() - started


def _pins_digest() -> str:
    h = hashlib.sha256()
    for path in PIN_FILES:
        h.update(path.read_bytes())
    h.update(" ".join(BUILD_TOOLS).encode())
    return h.hexdigest()


def _pip() -> list[str]:
    for python in (sys.executable, shutil.which("python3") or "python3"):
        if subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0:
            return [python, "-m", "pip"]
    if shutil.which("uvx"):
        return ["uvx", "pip"]
    raise DockerLocalError("no pip to build the wheelhouse with (python3 -m pip, or uvx)")


def ensure_wheelhouse() -> float:
    """Wheels of every pin in ./wheelhouse (what the offline image build installs from)."""
    stamp = WHEELHOUSE / ".pins.sha256"
    digest = _pins_digest()
    if stamp.exists() and stamp.read_text() == digest:
        return 0.0
    started = time.perf_counter()
    shutil.rmtree(WHEELHOUSE, ignore_errors=True)
    WHEELHOUSE.mkdir(parents=True)
    STATE.mkdir(parents=True, exist_ok=True)
    log = STATE / "wheelhouse.log"
    args = [*_pip(), "wheel", "--quiet", "--wheel-dir", str(WHEELHOUSE)]
    for path in PIN_FILES:
        args += ["--requirement", str(path)]
    with log.open("w") as fh:
        out = subprocess.run([*args, *BUILD_TOOLS], stdout=fh, stderr=subprocess.STDOUT)
    if out.returncode != 0:
        raise DockerLocalError(f"pip wheel failed ({out.returncode}); see {log}")
    stamp.write_text(digest)
    return time.perf_counter() - started


def commit_tag() -> str:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    return (sha or "unknown") + ("-dirty" if dirty else "")


def build_image(target: str, tag: str, dockerfile: Path | None = None, commit: str | None = None,
                args: dict[str, str] | None = None) -> float:
    """Build ``target`` of the project's Dockerfile (or ``dockerfile``) as ``tag``, offline: base
    image (2) and wheelhouse (3); Debian packages, where a target installs any, from the mirror
    apt uses (host network). Returns the seconds taken; the log is var/docker/build-<image>_<tag>.log."""
    started = time.perf_counter()
    log = STATE / f"build-{tag.replace(':', '_').replace('/', '_')}.log"
    STATE.mkdir(parents=True, exist_ok=True)
    build_args = {"BASE_IMAGE": BASE_IMAGE, "WHEELHOUSE": "1", "GIT_COMMIT": commit or commit_tag(), **(args or {})}
    with log.open("w") as fh:
        out = subprocess.run(
            [docker_bin(), "build", "--network", "host", "--target", target,
             *(["--file", str(dockerfile)] if dockerfile else []),
             *[a for name, value in build_args.items() for a in ("--build-arg", f"{name}={value}")],
             "--tag", tag, str(REPO)],
            stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    if out.returncode != 0:
        raise DockerLocalError(f"docker build of {tag} failed ({out.returncode}); see {log}:\n"
                               + log.read_text(errors="replace")[-3000:])
    return time.perf_counter() - started


def build_task_image(commit: str | None = None) -> tuple[str, float]:
    """Build pavedml-task:<commit> offline from the base image and the wheelhouse."""
    commit = commit or commit_tag()
    tag = f"pavedml-task:{commit}"
    return tag, build_image("task", tag, commit=commit)


def image_size_mb(tag: str) -> float:
    return int(docker("image", "inspect", tag, "--format", "{{.Size}}").stdout.strip()) / 1e6


def up() -> dict:
    started_engine = start_engine()
    base_s = ensure_base_image()
    wheels_s = ensure_wheelhouse()
    tag, build_s = build_task_image()
    return {"image": tag, "engine_started": started_engine, "base_image": BASE_IMAGE,
            "base_image_seconds": round(base_s, 1), "wheelhouse_seconds": round(wheels_s, 1),
            "task_image_seconds": round(build_s, 1), "task_image_mb": round(image_size_mb(tag), 1)}


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "up"
    try:
        if command == "up":
            print(json.dumps(up(), indent=2))
        elif command == "down":
            print("stopped dockerd" if stop_engine() else "no dockerd started by docker_local.py")
        else:
            print(__doc__)
            return 2
    except DockerLocalError as exc:
        print(f"docker_local: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
