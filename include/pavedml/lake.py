"""The data lake: object storage as the system of record of a use case's data (production profile).

With ``PAVEDML_LAKE_URI`` set (e.g. ``s3://pavedml/lake``), every step runs against a local working
copy of ``<lake>/<use case>/`` under ``<data root>/<use case>/``: the step CLI *pulls* what changed
in the lake before the step and *pushes* what the step changed after it (also when the step fails,
so a quarantined batch and its report reach the lake). Steps keep their local, atomic
(temp + rename) writes; a step killed mid-write pushes nothing, and its temporary files are never
uploaded. The working copy is a cache: workers on any host, or a task container without volumes,
see the same data.

A push uploads a folder's marker files (``_*``) after its data, so a push cut short never leaves a
marker over missing data; a retried step pushes the rest.

A step pulls only what it reads (:mod:`pavedml.pullset`): the dated partitions of its days, its
training run, and the small records every step may read or rewrite; the lake's listing is read
whole (a LIST per 1,000 objects), the rest of the history stays in the lake.

Change tracking is a small state file per working copy (``.lake-state.json``: path -> size,
mtime, ETag of the last sync), so a pull downloads only objects whose ETag moved and a push uploads
only files whose size or mtime moved. A file the step deleted (a partition rewritten by
``atomic_dir``) is deleted in the lake; enable bucket versioning (the compose stack does) so even
that is recoverable. Pull and push hold an exclusive file lock, so parallel steps on one host
never interleave their bookkeeping.

Local Feast state (``feast/``) is not synced: the production profile keeps the Feast registry in
PostgreSQL and the online store in Redis. Lock files (``*.lock``) are per host and never synced.

Two working copies that change the same file overwrite each other's change (last push wins), so
a record several hosts add to is kept one file per record: the promotion ledger is
``registry/ledger/<time>-<digest>.json``, and its readable view ``registry/ledger.jsonl`` is
rebuilt from those files after a pull that brought any (pavedml.ledger).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pavedml import layout, pullset, storage
from pavedml.settings import Settings, get_settings

log = logging.getLogger(__name__)

STATE_FILE = ".lake-state.json"
LOCK_FILE = ".lake.lock"
#: Top-level folders of a working copy that never go to the lake.
LOCAL_ONLY = frozenset({"feast"})
#: Name prefixes of temporary files and folders (atomic writes in progress, bookkeeping).
TEMP_PREFIXES = (".tmp-", ".old-", ".lake")
#: Name suffixes of per-host lock files.
LOCAL_SUFFIXES = (".lock",)
#: The promotion ledger's view and its entry files (pavedml.layout.Layout.ledger, pavedml.ledger).
LEDGER_VIEW = layout.LEDGER_VIEW
LEDGER_ENTRIES = f"{layout.LEDGER_ENTRIES}/"


@dataclass
class SyncStats:
    direction: str
    transferred: int = 0
    deleted: int = 0
    #: objects of the lake left there: outside the step's pull set
    left: int = 0
    left_bytes: int = 0
    bytes: int = 0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        left = f", {self.left} file(s) ({self.left_bytes / 1e6:.1f} MB) left in the lake" if self.left else ""
        return (f"lake {self.direction}: {self.transferred} file(s), {self.bytes / 1e6:.1f} MB, "
                f"{self.deleted} deleted{left}, {self.seconds:.2f}s")


def is_synced(rel: str) -> bool:
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):  # folder markers ("x/") and paths leaving the copy
        return False
    return (parts[0] not in LOCAL_ONLY and not any(p.startswith(TEMP_PREFIXES) for p in parts)
            and not parts[-1].endswith(LOCAL_SUFFIXES))


class Lake:
    """The lake prefix of one use case and its local working copy."""

    def __init__(self, uri: str, root: Path) -> None:
        if not storage.is_s3(uri):
            from pavedml.errors import ConfigError

            raise ConfigError(f"PAVEDML_LAKE_URI={uri!r}: expected s3://bucket/prefix")
        self.uri = uri.rstrip("/")
        self.root = Path(root)
        self.bucket, prefix = storage._split(self.uri)
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    @classmethod
    def for_use_case(cls, use_case: str, settings: Settings | None = None) -> Lake | None:
        s = settings or get_settings()
        if not s.lake_uri:
            return None
        return cls(storage.join(s.lake_uri, use_case), s.data_root / use_case)

    # -- bookkeeping
    @contextmanager
    def _locked(self) -> Iterator[dict]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state_path = self.root / STATE_FILE
                state = json.loads(state_path.read_text()) if state_path.exists() else {}
                try:
                    yield state
                finally:  # also after a failed sync: every entry is updated only once its transfer is done
                    with storage.atomic_path(state_path) as tmp:
                        tmp.write_text(json.dumps(state, sort_keys=True))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _remote(self, client) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(self.prefix):]
                if rel and is_synced(rel):
                    out[rel] = (obj["ETag"].strip('"'), int(obj["Size"]))
        return out

    def _local(self) -> dict[str, os.stat_result]:
        out: dict[str, os.stat_result] = {}
        if not self.root.exists():
            return out
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            dirnames[:] = [d for d in dirnames
                           if is_synced(d if rel_dir == "." else f"{rel_dir}/{d}")]
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if is_synced(rel):
                    out[rel] = os.stat(os.path.join(dirpath, name))
        return out

    @staticmethod
    def _same(entry: dict | None, st: os.stat_result | None) -> bool:
        return bool(entry and st and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns)

    # -- the two directions
    def pull(self, select: pullset.PullSet | None = None) -> SyncStats:
        """Bring the working copy up to date with the lake (downloads only what changed), or, with
        ``select``, only the objects that pull set wants (a step's: pavedml.pullset)."""
        stats, started = SyncStats("pull"), time.perf_counter()
        client = storage._s3()
        with self._locked() as state:
            remote = self._remote(client)
            for rel, (etag, size) in sorted(remote.items()):
                if select is not None and not select.wants(rel):
                    stats.left += 1
                    stats.left_bytes += size
                    continue
                path = self.root / rel
                entry = state.get(rel)
                if entry and entry["etag"] == etag:  # unchanged in the lake; a local change is the push's
                    continue
                if rel == LEDGER_VIEW and path.exists():  # its lines not yet in entry files become files first
                    from pavedml.ledger import rebuild_ledger

                    rebuild_ledger(path)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
                try:
                    client.download_file(self.bucket, self.prefix + rel, str(tmp))
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)
                st = path.stat()
                state[rel] = {"etag": etag, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
                stats.transferred += 1
                stats.bytes += size
                stats.files.append(rel)
            for rel in [r for r in state if r not in remote]:  # deleted in the lake since the last sync
                path = self.root / rel
                gone = path.stat() if path.exists() else None
                if gone is None or self._same(state[rel], gone):
                    path.unlink(missing_ok=True)
                    del state[rel]
                    stats.deleted += 1
                # else: changed here since; the next push uploads it again
            if any(rel == LEDGER_VIEW or rel.startswith(LEDGER_ENTRIES) for rel in stats.files):
                from pavedml.ledger import rebuild_ledger

                rebuild_ledger(self.root / LEDGER_VIEW)  # the next push uploads the merged view
        stats.seconds = time.perf_counter() - started
        log.info("%s (%s -> %s%s)", stats.line(), self.uri, self.root,
                 f"; {select.step}: {select.describe()}" if select is not None else "")
        return stats

    def push(self) -> SyncStats:
        """Upload what changed in the working copy; delete in the lake what was deleted here."""
        stats, started = SyncStats("push"), time.perf_counter()
        client = storage._s3()
        with self._locked() as state:
            local = self._local()
            for rel, st in sorted(local.items(), key=lambda item: _push_order(item[0])):
                if self._same(state.get(rel), st):
                    continue
                with open(self.root / rel, "rb") as fh:
                    etag = client.put_object(Bucket=self.bucket, Key=self.prefix + rel, Body=fh)["ETag"].strip('"')
                state[rel] = {"etag": etag, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
                stats.transferred += 1
                stats.bytes += st.st_size
                stats.files.append(rel)
            for rel in [r for r in state if r not in local]:
                client.delete_object(Bucket=self.bucket, Key=self.prefix + rel)
                del state[rel]
                stats.deleted += 1
        stats.seconds = time.perf_counter() - started
        log.info("%s (%s -> %s)", stats.line(), self.root, self.uri)
        return stats


def _push_order(rel: str) -> tuple[str, ...]:
    """Sort key of a push: a folder's markers (``_SOURCE.json``, ``_SCORED.json``: names starting
    with ``_``) go up after everything else in and under that folder, so a push cut short (the
    endpoint down, the host dead) leaves data without its marker, never a marker naming missing data."""
    *folders, name = rel.split("/")
    return (*folders, "\x7f" + name if name.startswith("_") else name)


@contextmanager
def synced(use_case: str, settings: Settings | None = None,
           pull: pullset.PullSet | None = None) -> Iterator[Lake | None]:
    """Pull before the block (only ``pull``'s set, if given, which the block then may not read
    outside of) and push after it (also when it raises). No-op without a lake."""
    lake = Lake.for_use_case(use_case, settings)
    if lake is None:
        yield None
        return
    _guarded(lake, "pull", pull)
    try:
        if pull is None:
            yield lake
        else:
            with pullset.enforced(pull):
                yield lake
    except BaseException:
        try:  # the step's failure evidence (quarantine, report) still goes to the lake
            _guarded(lake, "push")
        except Exception as push_error:  # noqa: BLE001 - the step's own error is the one to report
            log.error("%s", push_error)
        raise
    _guarded(lake, "push")


def _guarded(lake: Lake, direction: str, pull: pullset.PullSet | None = None) -> SyncStats:
    """Run a sync; a storage failure becomes a retryable error naming the lake and the cause."""
    from botocore.exceptions import BotoCoreError, ClientError

    from pavedml.errors import LakeUnavailableError

    try:
        return lake.pull(pull) if direction == "pull" else lake.push()
    except (BotoCoreError, ClientError, OSError) as exc:
        raise LakeUnavailableError(
            f"lake {direction} failed between {lake.uri} and {lake.root}: {type(exc).__name__}: {exc}",
            details={"next": "check the S3 endpoint and credentials (AWS_*), then clear the task; "
                             "nothing was lost: the working copy and the lake are both intact"}) from exc


def lake_command(args) -> dict:
    """``python -m pavedml lake pull|push --use-case NAME``: sync a working copy by hand."""
    from pavedml.errors import ConfigError

    lake = Lake.for_use_case(args.use_case)
    if lake is None:
        raise ConfigError("PAVEDML_LAKE_URI is not set: there is no lake to sync with")
    stats = _guarded(lake, args.direction)
    return {"direction": stats.direction, "files": stats.transferred, "deleted": stats.deleted,
            "bytes": stats.bytes, "lake": lake.uri, "working_copy": str(lake.root)}
