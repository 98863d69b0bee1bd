"""The prediction service's log: every answered row (and every shadow score) as Parquet, in daily
partitions of the use case's data root (``served/dt=<UTC day>/``), with the columns of batch
predictions (``pavedml.steps.scoring``) plus the request's id and time and the features it used,
so the drift and performance monitors read served traffic as they read batch predictions.

Rows are buffered in memory and written every ``serving.log_flush_seconds`` or
``serving.log_flush_rows`` rows, and on shutdown: one file per flush and day,
``part-<host>-<pid>-<seq>.parquet``, written under a name starting with ``.`` and renamed, so a
reader never sees a partial file and two service processes (or hosts) never write the same name.
A write that fails (disk full) keeps the rows buffered for the next flush, up to ``max_buffer``
rows; past that the oldest are dropped and counted, never the service. In the production profile
(``PAVEDML_LAKE_URI``) each complete file is also put to ``<lake>/<use case>/served/dt=<day>/``
(one PUT: whole or absent), where the monitors' steps find it when they pull their working copy.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)


class PredictionLog:
    def __init__(self, root_of_day: Callable[[str], Path], columns: list[str], *, flush_seconds: float,
                 flush_rows: int, max_buffer: int = 1_000_000, on_drop=None, on_write=None,
                 mirror: Callable[[Path], None] | None = None) -> None:
        self._partition = root_of_day
        self.columns = columns
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.max_buffer = max_buffer
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seq = 0
        # host, process and a random part: two logs never share a file name (two hosts, two processes,
        # or two services one after the other in one process)
        self._tag = f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._on_drop = on_drop or (lambda n: None)
        self._on_write = on_write or (lambda n, seconds: None)
        #: called with each file once it is complete (the production profile copies it to the lake)
        self._mirror = mirror
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.dropped = 0
        self.written = 0

    def start(self) -> PredictionLog:
        self._thread.start()
        return self

    def append(self, rows: list[tuple]) -> None:
        """Queue rows (tuples in ``columns`` order); cheap, never blocks on disk."""
        with self._lock:
            self._rows.extend(rows)
            n = len(self._rows)
            excess = n - self.max_buffer
            if excess > 0:  # the writer cannot keep up (or the disk is gone): memory stays bounded
                del self._rows[:excess]
                self.dropped += excess
        if excess > 0:
            self._on_drop(excess)
        if n >= self.flush_rows:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the writer never dies; flush() already counted what it lost
                log.exception("prediction log flush failed")

    def flush(self) -> int:
        """Write what is buffered now, one file per UTC day; returns the rows written. A day whose
        write fails keeps its rows buffered (nothing written twice)."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        started = time.perf_counter()
        served_at = self.columns.index("served_at")
        by_epoch_day: dict[int, list[tuple]] = {}
        for row in rows:
            by_epoch_day.setdefault(int(row[served_at] // 86400), []).append(row)
        by_day = {datetime.fromtimestamp(d * 86400, UTC).date().isoformat(): r for d, r in by_epoch_day.items()}
        written, failed = 0, []
        for day, day_rows in by_day.items():
            try:
                self._write(day, day_rows)
                written += len(day_rows)
            except OSError as exc:
                log.error("prediction log write of %s failed (%s): %d rows kept for the next flush", day, exc,
                          len(day_rows))
                failed += day_rows
            except Exception as exc:  # noqa: BLE001 - rows that cannot be encoded: dropped, counted, said
                log.error("prediction log: %d rows of %s cannot be written (%s: %s): dropped", len(day_rows), day,
                          type(exc).__name__, str(exc)[:300])
                self.dropped += len(day_rows)
                self._on_drop(len(day_rows))
        if failed:
            with self._lock:
                self._rows[:0] = failed
                excess = len(self._rows) - self.max_buffer
                if excess > 0:
                    del self._rows[:excess]
                    self.dropped += excess
                    self._on_drop(excess)
        self.written += written
        if written:
            self._on_write(written, time.perf_counter() - started)
        return written

    def _write(self, day: str, rows: list[tuple]) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        # one transposition in C, then whole columns (this runs beside the request path: short GIL holds)
        data: dict = dict(zip(self.columns, (list(col) for col in zip(*rows, strict=True)), strict=True))
        for name in ("served_at", "event_timestamp"):
            if name in data:
                seconds = np.array([np.nan if t is None else t for t in data[name]], dtype="float64")
                micros = pa.array(np.round(seconds * 1e6), mask=np.isnan(seconds)).cast(pa.int64())
                data[name] = micros.cast(pa.timestamp("us", tz="UTC"))
        table = pa.Table.from_pydict(data)
        partition = self._partition(day)
        partition.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"part-{self._tag}-{self._seq:06d}.parquet"
        tmp = partition / f".{name}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, partition / name)
        finally:
            tmp.unlink(missing_ok=True)
        if self._mirror is not None:
            try:
                self._mirror(partition / name)
            except Exception as exc:  # noqa: BLE001 - the local file stays; the next flushes try their own
                from pavedml.redact import redact_urls

                log.error("prediction log: %s not copied to the lake (%s: %s)", name, type(exc).__name__,
                          redact_urls(str(exc))[:300])

    def close(self) -> None:
        """Stop the writer and flush what is left (graceful shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        self.flush()
