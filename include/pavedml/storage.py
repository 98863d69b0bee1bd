"""Tiny storage layer over local paths and ``s3://`` URIs (boto3), with atomic writes.

Local writes go to a temporary file in the target folder and are renamed into place, so a killed
step never leaves a partial file under its final name. S3 PUTs are atomic by nature.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def join(base: str, *parts: str) -> str:
    base = str(base)
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def _s3():
    import boto3  # noqa: PLC0415 - heavy, only for S3 paths

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def _split(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = _split(uri)
        resp = _s3().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return any(o["Key"] == key for o in resp.get("Contents", []))
    return Path(uri).exists()


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = _split(uri)
        return _s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(uri).read_bytes()


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically (temp + rename locally, a single PUT on S3)."""
    if is_s3(uri):
        bucket, key = _split(uri)
        _s3().put_object(Bucket=bucket, Key=key, Body=data)
        return
    with atomic_path(uri) as tmp:
        Path(tmp).write_bytes(data)


def download(uri: str, dest: str | os.PathLike) -> None:
    """Stream ``uri`` into the local file ``dest`` (no whole-object buffer in memory)."""
    if is_s3(uri):
        bucket, key = _split(uri)
        _s3().download_file(bucket, key, str(dest))
        return
    shutil.copyfile(uri, dest)


def list_prefix(uri: str) -> list[str]:
    """Files directly or indirectly under ``uri`` (sorted)."""
    if is_s3(uri):
        bucket, key = _split(uri)
        paginator = _s3().get_paginator("list_objects_v2")
        out = []
        for page in paginator.paginate(Bucket=bucket, Prefix=key.rstrip("/") + "/"):
            out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
        return sorted(out)
    root = Path(uri)
    return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def copy(src: str, dst: str) -> None:
    write_bytes(dst, read_bytes(src))


#: Who writes a temporary file: ``<host id>-<pid>``, so a later writer on the same host can tell
#: a leftover of a killed writer (its pid is gone) from a write in progress.
def _host_id() -> str:
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def owner_tag() -> str:
    return f"{_host_id()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: Leftovers of writers on other hosts (or without an owner tag) are removed after this long.
STALE_AFTER_SECONDS = 24 * 3600


def is_stale_leftover(path: Path, prefix: str) -> bool:
    """True if ``path`` (named ``<prefix><host id>-<pid>-<random>...``) was left by a writer that is
    gone: same host and its pid is dead, or older than ``STALE_AFTER_SECONDS``."""
    import time

    if not path.name.startswith(prefix):
        return False
    parts = path.name[len(prefix):].rsplit("-", 3)  # [target name,] host id, pid, random(+suffix)
    try:
        age = time.time() - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    if len(parts) >= 3 and parts[-3] == _host_id() and parts[-2].isdigit():
        pid = int(parts[-2])
        return pid != os.getpid() and not _pid_alive(pid)
    return age > STALE_AFTER_SECONDS


def sweep_leftovers(folder: str | os.PathLike, prefix: str) -> list[str]:
    """Remove entries of ``folder`` named ``<prefix>...`` that a killed writer left behind."""
    folder = Path(folder)
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if entry.name.startswith(prefix) and is_stale_leftover(entry, prefix):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(str(entry))
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``final``; rename it into place only if the block succeeds.
    Temporary files of earlier writers of ``final`` that were killed are removed first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".tmp-{final.name}-"
    sweep_leftovers(final.parent, prefix)
    tmp = final.parent / f"{prefix}{owner_tag()}-{uuid.uuid4().hex[:8]}{suffix}"
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            _remove(tmp)


@contextmanager
def atomic_dir(final: str | os.PathLike, staging: str | os.PathLike | None = None):
    """Yield a temporary folder; replace ``final`` with it only if the block succeeds.

    ``staging`` (a folder on the same file system) holds the temporary and the replaced folder
    instead of ``final``'s parent: use it when readers list the parent (a dataset root), so they
    never see a write in progress or a killed writer's leftovers. Leftovers of earlier killed
    writers of ``final`` are removed first.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    where = Path(staging) if staging is not None else final.parent
    where.mkdir(parents=True, exist_ok=True)
    old_prefix = f".old-{final.name}-"
    if not final.exists():  # killed between moving the old folder aside and the new one in: restore
        for entry in sorted(where.glob(f"{old_prefix}*"), key=lambda p: p.lstat().st_mtime, reverse=True):
            if entry.is_dir() and is_stale_leftover(entry, old_prefix):
                os.replace(entry, final)
                break
    for prefix in (f".tmp-{final.name}-", old_prefix):
        sweep_leftovers(where, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-{owner_tag()}-", dir=where))
    try:
        yield tmp
        old = None
        if final.exists():
            old = where / f".old-{final.name}-{owner_tag()}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(uri: str, obj) -> None:
    import json

    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(uri: str):
    import json

    return json.loads(read_bytes(uri))
