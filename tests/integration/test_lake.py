"""The lake: two working copies (two hosts) stay consistent through S3 (a local moto server);
only changes move, temporary files never leave, deletions propagate, a step's failure evidence is
pushed, and an unreachable lake fails with a named, retryable reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

import pytest

pytestmark = pytest.mark.integration


def keys(client, prefix="pavedml/telco_churn/") -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix=prefix)
    return {o["Key"][len(prefix):] for page in pages for o in page.get("Contents", [])}


def test_two_working_copies_stay_consistent(lake_env, tmp_path):
    from pavedml.lake import Lake

    a = Lake("s3://lake/pavedml/telco_churn", tmp_path / "host-a" / "telco_churn")
    b = Lake("s3://lake/pavedml/telco_churn", tmp_path / "host-b" / "telco_churn")
    (a.root / "raw/dt=2025-01-01").mkdir(parents=True)
    (a.root / "raw/dt=2025-01-01/abc.parquet").write_bytes(b"snapshot")
    (a.root / "raw/dt=2025-01-01/.tmp-abc.parquet-1234").write_bytes(b"half written")  # a write in flight
    (a.root / "features/.tmp-dt=2025-01-01-xyz").mkdir(parents=True)  # an atomic_dir in flight
    (a.root / "features/.tmp-dt=2025-01-01-xyz/part.parquet").write_bytes(b"half")
    (a.root / "feast").mkdir()
    (a.root / "feast/online.db").write_bytes(b"local feast state")

    pushed = a.push()
    assert keys(lake_env) == {"raw/dt=2025-01-01/abc.parquet"}
    assert pushed.transferred == 1
    assert a.push().transferred == 0  # nothing changed: nothing moves

    pulled = b.pull()
    assert pulled.files == ["raw/dt=2025-01-01/abc.parquet"]
    assert (b.root / "raw/dt=2025-01-01/abc.parquet").read_bytes() == b"snapshot"
    assert b.pull().transferred == 0

    # host b rewrites a partition (a new file, an old one deleted); host a sees exactly that
    (b.root / "features/dt=2025-01-01").mkdir(parents=True)
    (b.root / "features/dt=2025-01-01/part-1.parquet").write_bytes(b"features")
    (b.root / "raw/dt=2025-01-01/abc.parquet").unlink()
    stats = b.push()
    assert (stats.transferred, stats.deleted) == (1, 1)
    assert keys(lake_env) == {"features/dt=2025-01-01/part-1.parquet"}
    stats = a.pull()
    assert (stats.transferred, stats.deleted) == (1, 1)
    assert not (a.root / "raw/dt=2025-01-01/abc.parquet").exists()
    assert (a.root / "features/dt=2025-01-01/part-1.parquet").read_bytes() == b"features"
    assert (a.root / "feast/online.db").exists()  # local-only state is never touched

    # a local change not pushed yet (a failed push, a step still running) is never overwritten by a pull
    (a.root / "features/dt=2025-01-01/part-1.parquet").write_bytes(b"rewritten here")
    assert a.pull().transferred == 0
    assert (a.root / "features/dt=2025-01-01/part-1.parquet").read_bytes() == b"rewritten here"
    assert a.push().files == ["features/dt=2025-01-01/part-1.parquet"]
    # keys the working copy cannot hold are ignored: folder markers, paths leaving the copy
    lake_env.put_object(Bucket="lake", Key="pavedml/telco_churn/raw/", Body=b"")
    lake_env.put_object(Bucket="lake", Key="pavedml/telco_churn/raw/../../escape", Body=b"x")
    assert a.pull().transferred == 0
    assert not (tmp_path / "host-a" / "escape").exists()

    # an object changed in the lake (same size) is downloaded again
    lake_env.put_object(Bucket="lake", Key="pavedml/telco_churn/features/dt=2025-01-01/part-1.parquet",
                        Body=b"FEATURES")
    assert a.pull().files == ["features/dt=2025-01-01/part-1.parquet"]
    assert (a.root / "features/dt=2025-01-01/part-1.parquet").read_bytes() == b"FEATURES"


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pavedml", *args], env=env, capture_output=True, text=True)


def test_steps_run_on_a_working_copy_of_the_lake(lake_env, tmp_path, monkeypatch):
    """ingest on host a, validate on host b (fresh cache): b pulls a's snapshot; a failed validation
    still pushes its report and quarantine copy."""
    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "landing-host"))
    monkeypatch.setenv("PAVEDML_LANDING_URI", "s3://lake/landing")
    from pavedml.tools.simulate import simulate

    simulate("telco_churn", date(2025, 5, 1), 2, rows_per_day=300, bad={"2025-05-02": "out_of_range"})
    base = {**os.environ, "PAVEDML_LAKE_URI": "s3://lake/pavedml"}
    host_a = {**base, "PAVEDML_DATA_ROOT": str(tmp_path / "host-a")}
    host_b = {**base, "PAVEDML_DATA_ROOT": str(tmp_path / "host-b")}
    for ds in ("2025-05-01", "2025-05-02"):
        out = run_cli("ingest_raw_batch", "--use-case", "telco_churn", "--ds", ds, env=host_a)
        assert out.returncode == 0, out.stderr[-2000:]
    sha = json.loads(out.stdout.splitlines()[-1])["sha256"]
    assert f"raw/dt=2025-05-02/{sha}.parquet" in keys(lake_env)

    ok = run_cli("validate_raw_batch", "--use-case", "telco_churn", "--ds", "2025-05-01", env=host_b)
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = run_cli("validate_raw_batch", "--use-case", "telco_churn", "--ds", "2025-05-02", env=host_b)
    assert bad.returncode == 3, bad.stderr[-2000:]
    assert "FAILED validate_raw_batch [validation_failed]" in bad.stderr
    in_lake = keys(lake_env)
    assert any(k.startswith(f"quarantine/dt=2025-05-02/{sha}/") for k in in_lake), sorted(in_lake)
    assert any(k.startswith("validation/dt=2025-05-02/") and k.endswith(".html") for k in in_lake)
    assert not any("/.tmp-" in k or k.startswith(".lake") for k in in_lake)

    unreachable = {**host_b, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens on port 9
    down = run_cli("validate_raw_batch", "--use-case", "telco_churn", "--ds", "2025-05-01", env=unreachable)
    assert down.returncode == 1
    assert "FAILED validate_raw_batch [lake_unavailable]" in down.stderr
    assert "s3://lake/pavedml/telco_churn" in down.stderr
    # the landing sensor's poke reads only the landing zone: it never pulls or pushes the lake
    no_lake = {**host_b, "PAVEDML_LAKE_URI": "s3://no-such-bucket/pavedml"}
    down = run_cli("validate_raw_batch", "--use-case", "telco_churn", "--ds", "2025-05-01", env=no_lake)
    assert "FAILED validate_raw_batch [lake_unavailable]" in down.stderr, down.stderr[-2000:]
    poke = run_cli("check_landing_batch", "--use-case", "telco_churn", "--ds", "2025-05-01", env=no_lake)
    assert poke.returncode == 0, poke.stderr[-2000:]
    assert json.loads(poke.stdout.splitlines()[-1])["status"] == "ready"
    assert "no-such-bucket" not in poke.stderr
    # an unreachable landing store is named, one screen, and retried (exit 1), never a traceback
    dead = {**host_b, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    poke = run_cli("check_landing_batch", "--use-case", "telco_churn", "--ds", "2025-05-01", env=dead)
    assert poke.returncode == 1
    assert "FAILED check_landing_batch [landing_unavailable]" in poke.stderr, poke.stderr[-2000:]
    assert "s3://lake/landing/telco_churn/customers/dt=2025-05-01/customers.csv" in poke.stderr
    assert "Traceback" not in poke.stderr


def test_ledger_entries_of_two_working_copies_are_never_lost(lake_env, tmp_path, monkeypatch):
    """Two hosts each append a promotion entry to their own working copy and push: the lake must
    hold both (no unconditional put of one shared file), and a pull gives each host both, in its
    readable ledger.jsonl too."""
    from pavedml.context import StepContext
    from pavedml.lake import Lake
    from pavedml.ledger import append_ledger, read_ledger
    from pavedml.settings import get_settings

    def host(name: str, to_version: str) -> Lake:
        monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / name))
        get_settings.cache_clear()
        ctx = StepContext.build("telco_churn", "2025-01-08", run_id=f"manual__{name}")
        lake = Lake("s3://lake/pavedml/telco_churn", tmp_path / name / "telco_churn")
        lake.pull()
        append_ledger(ctx, {"action": "promoted", "from_version": None, "to_version": to_version})
        return lake

    try:
        a, b = host("host-a", "1"), host("host-b", "2")  # both pulled before either pushed
        a.push()
        b.push()
        assert not any(k.endswith(".lock") for k in keys(lake_env))  # per-host locks stay local
        for lake in (a, b):
            lake.pull()
            view = lake.root / "registry/ledger.jsonl"
            assert sorted(e["to_version"] for e in read_ledger(view)) == ["1", "2"], lake.root
            assert sorted(json.loads(x)["run_id"] for x in view.read_text().splitlines()) == \
                ["manual__host-a", "manual__host-b"]
        # the merged views go back to the lake; a third, fresh host sees both entries
        a.push()
        c = Lake("s3://lake/pavedml/telco_churn", tmp_path / "host-c" / "telco_churn")
        c.pull()
        assert len(read_ledger(c.root / "registry/ledger.jsonl")) == 2
        # the audit export on a fresh host pulls the ledger from the lake and ships its ECS lines back there
        from pavedml.cli import main

        monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "auditor"))
        monkeypatch.setenv("PAVEDML_LAKE_URI", "s3://lake/pavedml")
        get_settings.cache_clear()
        assert main(["audit", "export", "--use-case", "telco_churn", "--output", "s3://lake/audit/registry.jsonl"]) == 0
        body = lake_env.get_object(Bucket="lake", Key="audit/registry.jsonl")["Body"].read().decode()
        docs = [json.loads(line) for line in body.splitlines()]
        assert sorted(d["labels"]["run_id"] for d in docs) == ["manual__host-a", "manual__host-b"]
        assert {d["event"]["action"] for d in docs} == {"model-promoted"} and len({d["event"]["id"] for d in docs}) == 2
    finally:
        get_settings.cache_clear()


def test_a_push_cut_by_the_endpoint_going_down_leaves_no_marker_over_missing_data(lake_env, tmp_path, monkeypatch):
    """The S3 endpoint resets every connection at the push's second object and refuses new ones: the
    push fails with the retryable reason naming the lake; what reached the lake is data without its
    marker (markers go last); once the endpoint is back, the retried push completes it."""
    from pavedml.errors import LakeUnavailableError
    from pavedml.lake import Lake, _guarded
    from tests.helpers.faultproxy import FaultProxy
    from tests.helpers.standalone import free_port

    # (moto's state is per process: another prefix than the other tests')
    port = int(os.environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    proxy = FaultProxy(port, free_port()).up()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fail in a second, not after botocore's backoff
    lake = Lake("s3://lake/cut/telco_churn", tmp_path / "host" / "telco_churn")
    part = lake.root / "features/dt=2025-01-01"
    (part / "extra").mkdir(parents=True)
    for name, body in {"_SOURCE.json": b"{}", "part-0.parquet": b"data", "extra/part-0.parquet": b"more"}.items():
        (part / name).write_bytes(body)
    try:
        proxy.down_at(b"PUT ", 2)
        with pytest.raises(LakeUnavailableError, match="lake push failed between s3://lake/cut/telco_churn") as err:
            _guarded(lake, "push")
        assert err.value.exit_code == 1  # retryable
        assert proxy.tripped.is_set()
        assert keys(lake_env, "cut/telco_churn/") == {"features/dt=2025-01-01/extra/part-0.parquet"}  # the data first; no marker
        proxy.up()
        stats = _guarded(lake, "push")
        assert stats.files == ["features/dt=2025-01-01/part-0.parquet", "features/dt=2025-01-01/_SOURCE.json"]
        assert keys(lake_env, "cut/telco_churn/") == {"features/dt=2025-01-01/extra/part-0.parquet", "features/dt=2025-01-01/part-0.parquet",
                                  "features/dt=2025-01-01/_SOURCE.json"}
    finally:
        proxy.down()


def _history(client, prefix: str, days: int, end: date) -> dict[str, int]:
    """A lake (under ``prefix``: moto's objects outlive a test) holding ``days`` days of every dated
    collection, two training runs and the small shared records; returns key -> size."""
    from datetime import timedelta

    put: dict[str, int] = {}
    for i in range(days):
        d = (end - timedelta(days=i)).isoformat()
        for rel in (f"raw/dt={d}/LATEST.json", f"raw/dt={d}/abc.parquet", f"validation/dt={d}/abc/result.json",
                    f"features/dt={d}/part-0.parquet", f"features/dt={d}/_SOURCE.json",
                    f"predictions/dt={d}/part-0.parquet", f"predictions/dt={d}/_SCORED.json",
                    f"served/dt={d}/part-h-1-0.parquet", f"drift/dt={d}/report.json",
                    f"performance/dt={d}/metrics.json", f"validation/labels/dt={d}/ff/result.json"):
            put[rel] = 1000 if rel.endswith(".parquet") else 10
    for rel in ("training/scheduled__a/train.parquet", "training/manual__b/train.parquet",
                "drift/psi_history.csv", "drift/retrain_requests.jsonl", "performance/history.csv",
                "performance/labels_index.json", "performance/holdouts.json", "registry/live/v3.json",
                "imports.jsonl"):  # (the ledger's files are pulled the same way: test_ledger_entries...)
        put[rel] = 10
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: client.put_object(Bucket="lake", Key=f"{prefix}/telco_churn/{item[0]}",
                                                     Body=b"x" * item[1]), put.items()))
    return put


def test_a_step_pulls_its_days_and_the_shared_records_never_the_history(lake_env, tmp_path, monkeypatch):
    """A fresh working copy's first feature step pulls one day's partitions (whatever the history's
    length) and every shared record; its push uploads what it wrote and deletes nothing it did not
    pull; a training step pulls its window and its own run; a step reading outside its pull set
    fails naming the partition."""
    from pavedml import pullset
    from pavedml.context import StepContext
    from pavedml.lake import Lake, synced

    monkeypatch.setenv("PAVEDML_LAKE_URI", "s3://lake/pullset")
    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "host"))
    end = date(2025, 12, 31)
    put = _history(lake_env, "pullset", 130, end)  # longer than the training pull (90 + 30 + 2 days)
    shared = {k for k in put if "dt=" not in k and not k.startswith("training/")}

    ctx = StepContext.build("telco_churn", end)
    pull = pullset.for_step("build_features", ctx)
    with synced("telco_churn", pull=pull) as lake:
        local = {p.relative_to(lake.root).as_posix() for p in lake.root.rglob("*")
                 if p.is_file() and not p.name.startswith(".lake")}
        assert local == shared | {k for k in put if f"dt={end}" in k}
        # the step writes its partition; a read outside its day fails loudly
        part = ctx.layout.features_partition(end)
        (part / "part-0.parquet").write_bytes(b"rewritten")
        with pytest.raises(pullset.OutsidePullSetError, match=r"features/dt=2025-12-30, outside the days"):
            ctx.layout.features_file("2025-12-30")
        with pytest.raises(pullset.OutsidePullSetError, match="training/manual__b"):
            ctx.layout.training_dir("manual__b")
    assert keys(lake_env, "pullset/telco_churn/") == set(put)  # nothing it did not pull was deleted
    body = lake_env.get_object(Bucket="lake", Key=f"pullset/telco_churn/features/dt={end}/part-0.parquet")["Body"]
    assert body.read() == b"rewritten"
    ctx.layout.features_file("2025-12-30")  # outside a step: no pull set, no check

    # training: its window (training window + features ttl + label delay) and its own run only
    fresh = Lake("s3://lake/pullset/telco_churn", tmp_path / "trainer" / "telco_churn")
    ctx = StepContext.build("telco_churn", end, run_id="manual__b")
    pull = pullset.for_step("build_training_set", ctx)
    stats = fresh.pull(pull)
    window = ctx.params.training_window_days + ctx.use_case.features.ttl_days + ctx.use_case.label.delay_days + 1
    assert len(pull.days) == window
    pulled = set(stats.files)
    assert "training/manual__b/train.parquet" in pulled and "training/scheduled__a/train.parquet" not in pulled
    assert {k.split("dt=")[1][:10] for k in pulled if "dt=" in k} == set(pull.days)
    assert stats.left == len(put) - len(pulled) and stats.left_bytes > 0
    assert "left in the lake" in stats.line()
    assert not any(k.startswith(("raw/", "predictions/", "served/")) for k in pulled)  # not what it reads
    # the same working copy, a later step with another pull set: it adds what it lacks, loses nothing
    again = fresh.pull(pullset.for_step("score_customers", StepContext.build("telco_churn", end)))
    assert set(again.files) == {k for k in put if f"dt={end}" in k} - pulled
    assert again.deleted == 0 and all((fresh.root / k).exists() for k in pulled)


@pytest.mark.parametrize("days", [10, 100])
def test_the_first_feature_step_pulls_the_same_whatever_the_history(lake_env, tmp_path, days):
    from pavedml import pullset
    from pavedml.context import StepContext
    from pavedml.lake import Lake

    end = date(2025, 12, 31)
    _history(lake_env, f"history{days}", days, end)
    lake = Lake(f"s3://lake/history{days}/telco_churn", tmp_path / "fresh" / "telco_churn")
    stats = lake.pull(pullset.for_step("materialize_features", StepContext.build("telco_churn", end)))
    # one day's eleven partition files (four of data) and the seven shared records
    assert (stats.transferred, stats.bytes) == (18, 4 * 1000 + 14 * 10)
    assert stats.left == (days - 1) * 11 + 2  # the other days and both training runs
