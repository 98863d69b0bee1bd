"""Processes that are started in a session of their own and stopped as a whole (Linux, /proc).

A process started with :func:`start` leads a new session: its pid is the session id (and process
group id) of everything it starts. That session is what finds the process tree later, not the
process group (Airflow's task supervisor moves every task into a group of its own) and not the
environment or command line (Airflow's processes rewrite their title over both). Children that
leave the session (``setsid``) are still found while their parent lives: the tree is closed over
parent ids.

:func:`stop` sends SIGTERM to every member, waits a grace period, then SIGKILLs what is left (a
scheduler that ignores SIGTERM included) and waits until it is gone. :class:`Guard` is a watchdog
process that stops the sessions it was told about if the process that started them dies without
stopping them (SIGKILL, a crash).

Standard library only: ``deploy/docker_local.py`` loads this file by path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

#: seconds between SIGTERM and SIGKILL
GRACE_SECONDS = 10.0
#: seconds to wait for SIGKILLed processes to disappear
KILL_WAIT_SECONDS = 10.0
_POLL = 0.1


def start(argv: list[str], **popen_kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` in a new session (the child's pid is its session and group id)."""
    popen_kwargs.pop("start_new_session", None)
    return subprocess.Popen(argv, start_new_session=True, **popen_kwargs)


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart), or None."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def members(sids: Iterable[int]) -> dict[int, int]:
    """Live processes of the sessions ``sids`` and their descendants: pid -> the session it counts for.

    Zombies are left out (they hold no resources and cannot be signalled)."""
    wanted = set(sids) - {0, 1, os.getsid(0), os.getpgrp()}  # never the caller's own session or group
    table: dict[int, tuple[int, int]] = {}  # pid -> (ppid, session or group in wanted, else 0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(entry.name)
        if not fields or fields[0] in ("Z", "X"):
            continue
        ppid, pgrp, sid = int(fields[1]), int(fields[2]), int(fields[3])
        table[int(entry.name)] = (ppid, sid if sid in wanted else pgrp if pgrp in wanted else 0)
    found = {pid: owner for pid, (_, owner) in table.items() if owner}
    grew = True
    while grew:  # children that left the session (setsid) while their parent is still one of ours
        grew = False
        for pid, (ppid, _) in table.items():
            if pid not in found and ppid in found:
                found[pid] = found[ppid]
                grew = True
    found.pop(os.getpid(), None)
    return found


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def ours(sid: int, started: int | None) -> bool:
    """False when ``sid``'s pid now belongs to another process (ours ended, the pid was reused):
    a pid is never reused while a process still has it as its session id."""
    if started is None:
        return True
    now = start_time(sid)
    return now is None or now == started


def stop(sid: int, grace: float = GRACE_SECONDS, proc: subprocess.Popen | None = None,
         term_all: bool = True, started: int | None = None) -> list[int]:
    """Stop session ``sid`` and its descendants: SIGTERM, ``grace`` seconds, then SIGKILL.

    ``term_all`` sends SIGTERM to every member (what Ctrl-C does to a foreground group); False
    sends it to the leader only (dockerd stops its containers itself), the others get SIGKILL
    after the grace period. ``proc`` (the leader's Popen) is reaped. ``started`` is the leader's
    :func:`start_time`: a pid reused by another process is left alone. Returns the pids still
    alive after SIGKILL (none, unless the kernel cannot end them)."""
    return stop_all({sid: started}, grace, procs=[proc] if proc else [], term_all=term_all)


def stop_all(sessions: dict[int, int | None], grace: float = GRACE_SECONDS,
             procs: Iterable[subprocess.Popen] = (), term_all: bool = True) -> list[int]:
    """:func:`stop` for several sessions at once (one grace period for all): session id -> the
    leader's start time (or None). Returns the pids still alive after SIGKILL."""
    sids = [sid for sid, started in sessions.items() if ours(sid, started)]
    procs = list(procs)

    def alive() -> dict[int, int]:
        for proc in procs:
            proc.poll()  # reap a leader that exited: a zombie is not alive
        return members(sids) if sids else {}

    deadline = time.monotonic() + grace
    termed: set[int] = set()
    left = alive()
    while left and time.monotonic() < deadline:
        targets = [pid for pid in left if (term_all or pid in sids) and pid not in termed]
        _signal(targets, signal.SIGTERM)
        termed.update(targets)
        time.sleep(_POLL)
        left = alive()
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while left and time.monotonic() < deadline:
        _signal(left, signal.SIGKILL)
        time.sleep(_POLL)
        left = alive()
    for proc in procs:
        try:
            proc.wait(timeout=0 if left else KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    return sorted(left)


class Guard:
    """A watchdog process: told of each session started and stopped, it stops the sessions still
    open when the process that started it ends without stopping them (its pipe closes).

    The guard leads a session of its own, so a Ctrl-C meant for the test run or the stack does
    not reach it; it exits as soon as its pipe closes."""

    def __init__(self, grace: float = GRACE_SECONDS) -> None:
        # run as a script, isolated (this file is standard library only): no import path needed
        self.proc = start([sys.executable, "-I", str(Path(__file__).resolve()), "guard", str(grace)],
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None  # started with stdin=PIPE
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the guard is gone: the caller's own stop still runs

    def watch(self, sid: int) -> None:
        self._send(f"+ {sid} {start_time(sid) or 0}")

    def forget(self, sid: int) -> None:
        self._send(f"- {sid}")

    def close(self) -> None:
        """Let the guard exit (it stops whatever is still watched)."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass


def _guard(grace: float) -> int:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    watched: dict[int, int | None] = {}
    for line in sys.stdin:
        op, sid, *rest = line.split()
        if op == "+":
            watched[int(sid)] = int(rest[0]) if rest and rest[0] != "0" else None
        else:
            watched.pop(int(sid), None)
    stop_all(watched, grace)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["guard"]:
        sys.exit(_guard(float(sys.argv[2]) if len(sys.argv) > 2 else GRACE_SECONDS))
    print(__doc__)
    sys.exit(2)
