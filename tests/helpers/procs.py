"""Every process a test starts, started and stopped one way (``pavedml.tools.procs``), and remembered.

* :func:`spawn` starts a process in a session of its own and registers it; :func:`stop` stops the
  whole session (and any descendant that left it): SIGTERM, :data:`GRACE_SECONDS`, SIGKILL.
  Stop it in a ``finally`` or a fixture's teardown: both run on failure and on Ctrl-C.
* SIGTERM to the test run (a CI timeout, ``kill``) becomes a KeyboardInterrupt, so teardowns run
  then too; a watchdog process (``pavedml.tools.procs.Guard``) stops what is still registered if the
  run itself is SIGKILLed.
* At the end of the session, ``tests/conftest.py`` calls :func:`sweep`: anything still alive is
  named, stopped, and fails the run.
"""

from __future__ import annotations

import atexit
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

from pavedml.tools import procs as core

GRACE_SECONDS = core.GRACE_SECONDS


@dataclass
class Started:
    name: str
    argv: list[str]
    started: int | None  # the leader's start time: a reused pid is never taken for ours
    proc: subprocess.Popen | None = field(default=None, repr=False)


_registry: dict[int, Started] = {}
_lock = threading.Lock()
_guard: core.Guard | None = None


def _on_sigterm(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _arm() -> None:
    """Once per process: SIGTERM runs the teardowns (as Ctrl-C does), a watchdog covers SIGKILL,
    and interpreter exit stops what is left."""
    global _guard
    if _guard is not None:
        return
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    _guard = core.Guard(GRACE_SECONDS)
    atexit.register(_at_exit)


def _at_exit() -> None:
    sweep()
    if _guard is not None:
        _guard.close()


def register(name: str, sid: int, argv: list[str] | None = None, proc: subprocess.Popen | None = None) -> None:
    """Remember a session started elsewhere (e.g. the dockerd ``deploy/docker_local.py`` starts)."""
    with _lock:
        _arm()
        _registry[sid] = Started(name, list(argv or [core.cmdline(sid)]), core.start_time(sid), proc)
    _guard.watch(sid)


def spawn(name: str, argv: list[str], **popen_kwargs) -> subprocess.Popen:
    """``subprocess.Popen(argv, **popen_kwargs)`` in a session of its own, registered as ``name``."""
    with _lock:
        _arm()
        proc = core.start([str(a) for a in argv], **popen_kwargs)
    register(name, proc.pid, [str(a) for a in argv], proc)
    return proc


def stop(target: subprocess.Popen | int | None, grace: float = GRACE_SECONDS, term_all: bool = True) -> None:
    """Stop a process started by :func:`spawn` (a Popen or its pid) with everything it started.

    Raises RuntimeError naming what survived SIGKILL (it stays registered, so the session's end
    check reports it too)."""
    if target is None:
        return
    sid = target if isinstance(target, int) else target.pid
    with _lock:
        entry = _registry.get(sid)
    proc = target if isinstance(target, subprocess.Popen) else entry.proc if entry else None
    left = core.stop(sid, grace, proc=proc, term_all=term_all, started=entry.started if entry else None)
    if left:
        raise RuntimeError(f"still alive after SIGKILL: {describe(left)}")
    with _lock:
        _registry.pop(sid, None)
    if _guard is not None:
        _guard.forget(sid)


def alive() -> dict[int, list[int]]:
    """Registered session id -> its live processes (sessions with none are left out)."""
    with _lock:
        sessions = {sid: s for sid, s in _registry.items() if core.ours(sid, s.started)}
    found: dict[int, list[int]] = {}
    for pid, sid in core.members(sessions).items():
        found.setdefault(sid, []).append(pid)
    return found


def describe(pids: list[int]) -> str:
    return "; ".join(f"pid {pid}: {core.cmdline(pid)[:160] or '?'}" for pid in sorted(pids))


def sweep(grace: float = GRACE_SECONDS) -> list[str]:
    """Stop every registered session that still has a live process; one line per such session,
    naming it, its command and its processes (what the session's end check reports)."""
    found = alive()
    with _lock:
        entries = dict(_registry)
    lines = [f"{entries[sid].name} (session {sid}, started as {' '.join(entries[sid].argv)[:200]}): "
             f"{describe(pids)}" for sid, pids in sorted(found.items())]
    started = time.monotonic()
    left = core.stop_all({sid: entries[sid].started for sid in found}, grace,
                         procs=[e.proc for e in entries.values() if e.proc is not None])
    if left:
        lines.append(f"still alive after SIGKILL ({time.monotonic() - started:.0f} s): {describe(left)}")
    still = alive() if left else {}
    with _lock:
        for sid in entries:
            if sid not in still:
                _registry.pop(sid, None)
    if _guard is not None:
        for sid in entries:
            if sid not in still:
                _guard.forget(sid)
    return lines
