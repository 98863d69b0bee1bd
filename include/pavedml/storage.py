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


@contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}{suffix}"
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: str | os.PathLike):
    """Yield a temporary folder; replace ``final`` with it only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
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
