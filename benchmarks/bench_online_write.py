"""Materialization into the online store: our writer against Feast's own ``write_to_online_store``
on the same rows, and against the store's raw bulk-write rate (#21 item 2).

Needs the data root ``bench_feature_pipeline.py --rows N`` leaves (two built days); run that first
with the same ``--rows`` (and ``--online`` for Redis). Each figure is one fresh
``python -m pavedml materialize_features`` process writing the first day into an emptied store
(SQLite: the file removed; Redis: the database flushed), so both writers pay the same Feast apply:

* ours: the step as shipped (``pavedml.adapters.online_sqlite`` / ``online_redis``);
* Feast: the same step with ``PAVEDML_ONLINE_WRITER=feast`` (Feast's ``write_to_online_store``);
* raw: the store alone writing the same rows, already encoded, no Python per row: SQLite copies
  the table ours wrote into an empty one of Feast's layout (``INSERT ... SELECT``, in C); Redis
  gets the hashes ours wrote, read back first, sent again in pipelines of 10,000 ``HSET``s under
  other keys (the time of sending only).

    .venv/bin/python benchmarks/bench_feature_pipeline.py --rows 1000000 --reps 1
    .venv/bin/python benchmarks/bench_online_write.py --rows 1000000
    .venv/bin/python benchmarks/bench_feature_pipeline.py --rows 1000000 --reps 1 --online redis://127.0.0.1:6379/15
    .venv/bin/python benchmarks/bench_online_write.py --rows 1000000 --online redis://127.0.0.1:6379/15

``--skip-feast`` leaves Feast's writer out (it takes minutes at 1M rows).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_feature_pipeline import FIRST, USE_CASES  # noqa: E402
from common import WORK, run_worker  # noqa: E402

USE_CASE = "bench_churn"


def _reset(root: Path, online: str) -> None:
    if online.startswith("redis://"):
        import redis

        redis.Redis.from_url(online).flushdb()
    else:
        for name in ("online.db", "online.db-journal", "applied.json"):
            (root / USE_CASE / "feast" / name).unlink(missing_ok=True)


def _materialize(root: Path, online: str, writer: str) -> float:
    _reset(root, online)
    env = {"PAVEDML_DATA_ROOT": str(root), "PAVEDML_USE_CASES_DIR": str(USE_CASES), "PAVEDML_FEAST_ONLINE_STORE": online,
           "PAVEDML_ONLINE_WRITER": writer, "TQDM_DISABLE": "1"}
    return run_worker(["-m", "pavedml", "materialize_features", "--use-case", USE_CASE, "--ds", FIRST], env)["process_wall_s"]


def _raw_sqlite(root: Path) -> tuple[float, int]:
    db = root / USE_CASE / "feast" / "online.db"
    table = f"{USE_CASE}_customer_features"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA cache_size = -262144")
        conn.execute("DROP TABLE IF EXISTS raw_copy")
        conn.execute("CREATE TABLE raw_copy (entity_key BLOB, feature_name TEXT, value BLOB, value_text TEXT, "
                     "vector_value BLOB, event_ts timestamp, created_ts timestamp, PRIMARY KEY(entity_key, feature_name))")
        conn.execute("CREATE INDEX raw_copy_ek ON raw_copy (entity_key)")
        conn.commit()
        started = time.perf_counter()
        with conn:
            n = conn.execute(f'INSERT INTO raw_copy SELECT * FROM "{table}"').rowcount
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE raw_copy")
    return seconds, n


def _raw_redis(online: str) -> tuple[float, int]:
    import redis

    client = redis.Redis.from_url(online)
    keys = list(client.scan_iter(count=10_000))
    hashes = []
    for i in range(0, len(keys), 10_000):
        with client.pipeline(transaction=False) as pipe:
            for key in keys[i:i + 10_000]:
                pipe.hgetall(key)
            hashes += pipe.execute()
    started = time.perf_counter()
    for i in range(0, len(keys), 10_000):
        with client.pipeline(transaction=False) as pipe:
            for key, mapping in zip(keys[i:i + 10_000], hashes[i:i + 10_000], strict=True):
                pipe.hset(key + b"#raw", mapping=mapping)
            pipe.execute()
    seconds = time.perf_counter() - started
    return seconds, sum(len(h) for h in hashes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--online", default="", help="PAVEDML_FEAST_ONLINE_STORE (default: SQLite)")
    parser.add_argument("--skip-feast", action="store_true")
    args = parser.parse_args()
    root = WORK / f"feature_root_{args.rows}"
    if not (root / USE_CASE / "features" / f"dt={FIRST}").exists():
        raise SystemExit(f"no built day in {root}: run bench_feature_pipeline.py --rows {args.rows} first")
    store = "Redis" if args.online.startswith("redis://") else "SQLite"
    ours = _materialize(root, args.online, "pavedml")
    raw, values = _raw_redis(args.online) if store == "Redis" else _raw_sqlite(root)
    print(f"{store}, {args.rows:,} entity rows ({values:,} stored values), first day into an empty store:")
    print(f"  ours (step process, Feast apply included)  {ours:8.1f} s")
    print(f"  raw bulk write of the same rows            {raw:8.1f} s   (ours / raw {ours / raw:.2f})")
    if not args.skip_feast:
        feast = _materialize(root, args.online, "feast")
        print(f"  Feast's write_to_online_store (step)       {feast:8.1f} s   (Feast / ours {feast / ours:.1f}x)")
    _reset(root, args.online)


if __name__ == "__main__":
    main()
