"""A hostile day's inputs and faults, each reproduced against the real steps (GX, Feast, SQLite):
labels outside the declared values, a killed step's leftovers, an old day re-materialized after a
newer one, truncated and split deliveries, and non-finite numbers."""

from __future__ import annotations

import pandas as pd
import pytest

from pavedml.errors import ValidationFailedError
from tests.helpers.steps import run_step
from tests.integration.conftest import LAST_DAY

pytestmark = pytest.mark.integration
DAG = "telco_churn_training_pipeline"


@pytest.mark.parametrize("bad", ["yes", "Maybe"])
def test_labels_outside_the_declared_values_fail_and_are_quarantined(history_copy, bad):
    """Before: 'yes'/'Maybe' compared unequal to 'Yes' and became negatives, rc 0, no warning."""
    labels_dir = history_copy / "landing/telco_churn/labels"
    victim = labels_dir / f"dt={LAST_DAY}" / "labels.csv"  # known by LAST_DAY
    original = victim.read_bytes()
    df = pd.read_csv(victim, dtype=str)
    df.loc[df.index[:3], "Churn"] = bad
    df.to_csv(victim, index=False)
    try:
        with pytest.raises(ValidationFailedError, match=r"labels file .*labels\.csv .* failed .*: Churn") as err:
            run_step("build_training_set", LAST_DAY, dag_id=DAG, run_id=f"manual__labels_{bad}", params="{}")
        exc = err.value
        assert any("be_in_set" in e and bad in e and "3 unexpected" in e for e in exc.details["evidence"]), exc.details
        quarantine = history_copy / "telco_churn" / exc.details["quarantine"].split("/telco_churn/", 1)[1]
        assert (quarantine / "labels.csv").read_bytes() == victim.read_bytes()  # nothing lost
        assert (quarantine / "reason.json").exists() and list((quarantine / "report").rglob("*.html"))
        assert not (history_copy / f"telco_churn/training/manual__labels_{bad}").exists()
        # The same file fails again (from the kept result, no second GX run) until it is re-delivered.
        with pytest.raises(ValidationFailedError, match="Churn"):
            run_step("build_training_set", LAST_DAY, dag_id=DAG, run_id=f"manual__labels_{bad}", params="{}")
    finally:
        victim.write_bytes(original)
    # Re-delivered: the training set builds, and its labels hold both classes.
    result = run_step("build_training_set", LAST_DAY, dag_id=DAG, run_id=f"manual__labels_fixed_{bad}", params="{}")
    assert result.rows["train"] > 0


def test_a_labels_file_without_the_label_column_is_quarantined(history_copy):
    labels_dir = history_copy / "landing/telco_churn/labels"
    victim = labels_dir / f"dt={LAST_DAY}" / "labels.csv"  # known by LAST_DAY
    original = victim.read_bytes()
    pd.read_csv(victim, dtype=str).drop(columns=["Churn"]).to_csv(victim, index=False)
    try:
        with pytest.raises(ValidationFailedError, match="Churn") as err:
            run_step("build_training_set", LAST_DAY, dag_id=DAG, run_id="manual__labels_nocol", params="{}")
        assert any("column Churn: column_to_exist" in e for e in err.value.details["evidence"])
    finally:
        victim.write_bytes(original)


def test_a_config_without_label_negative_is_refused(tmp_path):
    import yaml

    from pavedml.config import load_use_case
    from pavedml.errors import ConfigError
    from pavedml.settings import DEFAULT_USE_CASES_DIR

    spec = yaml.safe_load((DEFAULT_USE_CASES_DIR / "telco_churn.yaml").read_text())
    del spec["label"]["negative"]
    path = tmp_path / "telco_churn.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"label\.negative"):
        load_use_case(path)
    spec["label"]["negative"] = "Yes"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"label.positive and label.negative share \['Yes'\]"):
        load_use_case(path)


def _online_values(uc, keys: list[str], column: str) -> dict[str, float]:
    from pavedml.steps.featurestore import get_store

    store, defs = get_store(uc)
    df = store.get_online_features(features=[f"{uc.feature_view}:{column}"],
                                   entity_rows=[{uc.entity.key: k} for k in keys]).to_df()
    return dict(zip(df[uc.entity.key], df[column], strict=True))


NEWER_DAY = "2025-01-09"


def _deliver_newer_day(uc) -> None:
    """Day 1's customers again on a later day, every MonthlyCharges changed (idempotent)."""
    from pavedml.layout import Layout

    layout = Layout.for_use_case(uc.name)
    src = layout.landing_file(uc.batches.dataset, "2025-01-01", "csv")
    dst = layout.landing_file(uc.batches.dataset, NEWER_DAY, "csv")
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    df["MonthlyCharges"] = (df["MonthlyCharges"].astype(float) + 7.25).round(2).astype(str)
    from pathlib import Path

    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(dst, index=False)
    for step in ("ingest_raw_batch", "validate_raw_batch", "build_features"):
        run_step(step, NEWER_DAY)


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_rematerializing_an_old_day_keeps_the_newer_values_online(history_copy, monkeypatch, online):
    """Before: rerunning an old day after a newer one moved every entity present on both days back
    to the old values in the SQLite store (Feast's contract: the newest event timestamp wins)."""
    import os

    from pavedml.config import get_use_case

    uc = get_use_case("telco_churn")
    first, last = "2025-01-01", NEWER_DAY
    _deliver_newer_day(uc)
    if online == "redis":
        import redis

        url = os.environ.get("PAVEDML_TEST_REDIS", "redis://127.0.0.1:6379")
        db = int(os.environ.get("PAVEDML_TEST_REDIS_DB_HOSTILE", "12"))
        client = redis.Redis.from_url(f"{url}/{db}")
        client.flushdb()
        monkeypatch.setenv("PAVEDML_FEAST_ONLINE_STORE", f"{url}/{db}")
    run_step("materialize_features", last)
    old = pd.read_parquet(history_copy / f"telco_churn/features/dt={first}/part-0.parquet")
    new = pd.read_parquet(history_copy / f"telco_churn/features/dt={last}/part-0.parquet")
    both = old.merge(new, on=uc.entity.key, suffixes=("_old", "_new"))
    changed = both[both["MonthlyCharges_old"] != both["MonthlyCharges_new"]]
    assert len(changed) == len(old)
    keys = changed[uc.entity.key].head(50).tolist()
    want = dict(zip(changed[uc.entity.key], changed["MonthlyCharges_new"], strict=True))
    try:
        assert _online_values(uc, keys, "MonthlyCharges") == {k: want[k] for k in keys}
        run_step("materialize_features", first)  # an operator reruns an old day
        assert _online_values(uc, keys, "MonthlyCharges") == {k: want[k] for k in keys}
    finally:
        if online == "redis":
            client.flushdb()


KILL_MID_WRITE = """
import os, signal, sys
import pandas as pd
from pavedml import storage

real = pd.DataFrame.to_parquet

def half_then_die(self, path, *args, **kwargs):
    real(self, path, *args, **kwargs)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)

pd.DataFrame.to_parquet = half_then_die
from tests.helpers.steps import run_step
run_step(sys.argv[1], sys.argv[2])
"""


def test_a_build_features_killed_mid_write_leaves_nothing_where_readers_look(history_copy):
    """Before: SIGKILL left features/.tmp-dt=<ds>-*/part-0.parquet (half a file); Feast's offline
    store reads hidden folders, so every later build_training_set failed (Parquet magic bytes)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    day = "2025-01-05"
    features = history_copy / "telco_churn/features"
    before = pd.read_parquet(features / f"dt={day}/part-0.parquet")
    env = {**os.environ, "PAVEDML_DATA_ROOT": str(history_copy), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, "build_features", day], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [p.name for p in features.iterdir() if p.name.startswith(".")] == []
    pd.testing.assert_frame_equal(pd.read_parquet(features / f"dt={day}/part-0.parquet"), before)  # still whole
    staging = history_copy / "telco_churn/.tmp-staging"
    assert [p.name for p in staging.iterdir()], "the killed write's half file is in staging, out of readers' way"
    # What the old layout left inside the features root is removed by the next build_features.
    legacy = features / f".tmp-dt={day}-abcd1234"
    legacy.mkdir()
    (legacy / "part-0.parquet").write_bytes(b"PAR1 half a file")
    # A partition the old layout moved aside and never replaced (killed between the two renames).
    import shutil

    other = features / "dt=2025-01-03"
    shutil.move(other, features / ".old-dt=2025-01-03-1a2b3c4d")
    result = run_step("build_features", day)
    assert result.rows == len(before)
    assert (other / "part-0.parquet").exists()  # restored, not deleted
    assert [p.name for p in features.iterdir() if p.name.startswith(".")] == []
    assert list(staging.iterdir()) == []  # the killed writer's leftover is gone too
    built = run_step("build_training_set", LAST_DAY, dag_id=DAG, run_id="manual__after_kill", params="{}")
    assert built.rows["train"] > 0


def test_a_killed_ingest_and_a_killed_materialize_leave_no_leftovers(history_copy, tmp_path, monkeypatch):
    """Their temporary files are tagged with host and pid; the next run removes those of dead writers."""
    import os
    import subprocess
    import sys
    import tempfile

    from pavedml import storage
    from pavedml.adapters import online_sqlite
    from tests.conftest import REPO

    day = "2025-01-06"
    raw = history_copy / f"telco_churn/raw/dt={day}"
    for p in raw.glob("*.parquet"):  # make ingest write the snapshot again
        p.rename(p.with_suffix(".keep"))
    env = {**os.environ, "PAVEDML_DATA_ROOT": str(history_copy), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, "ingest_raw_batch", day], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    leftovers = [p.name for p in raw.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers
    for p in raw.glob("*.keep"):
        p.rename(p.with_suffix(".parquet"))
    run_step("ingest_raw_batch", day)
    assert [p.name for p in raw.iterdir() if p.name.startswith(".tmp-")] == []
    # A materialize killed while staging: its folder in the temp dir carries a dead pid.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        stage = tmp_path / f"{online_sqlite.STAGE_PREFIX}{storage.owner_tag().rsplit('-', 1)[0]}-{dead}-x1y2z3"
        stage.mkdir()
        (stage / "stage0.db").write_bytes(b"x" * 1000)
        alive = tmp_path / f"{online_sqlite.STAGE_PREFIX}{storage.owner_tag()}-inprogress"
        alive.mkdir()
        run_step("materialize_features", day)
        assert not stage.exists() and alive.exists()
    finally:
        tempfile.tempdir = None


@pytest.fixture
def one_day(data_root):
    from datetime import date

    from pavedml.tools.simulate import simulate

    simulate("telco_churn", date(2025, 1, 1), 1, rows_per_day=300)
    return data_root / "landing/telco_churn/customers/dt=2025-01-01"


def _quarantined(data_root) -> list[str]:
    q = data_root / "telco_churn/quarantine"
    return sorted(str(p.relative_to(q)) for p in q.rglob("*") if p.is_file()) if q.exists() else []


def test_a_file_cut_inside_its_last_row_is_refused_and_quarantined(one_day, data_root):
    """Before: TotalCharges 6844.5 cut to '6' passed every step (stored as 6.0), rc 0."""
    from pavedml.steps.ingest import BatchIncompleteError

    csv = one_day / "customers.csv"
    data = csv.read_bytes()
    assert data.endswith(b"\n")
    csv.write_bytes(data[:-4])  # a partial upload: the last value is cut short
    with pytest.raises(BatchIncompleteError, match="does not end with a line break") as err:
        run_step("ingest_raw_batch", "2025-01-01")
    assert err.value.exit_code == 3 and err.value.reason == "batch_incomplete"
    assert any(name.endswith("customers.csv") for name in _quarantined(data_root))
    assert not (data_root / "telco_churn/raw/dt=2025-01-01/LATEST.json").exists()
    # A row cut at a field boundary (the newline was written, fields are missing): refused too.
    lines = data.decode().splitlines()
    csv.write_text("\n".join(lines[:-1] + [",".join(lines[-1].split(",")[:5])]) + "\n")
    with pytest.raises(BatchIncompleteError, match="last row has 5 fields"):
        run_step("ingest_raw_batch", "2025-01-01")
    csv.write_bytes(data)  # re-delivered whole: accepted
    assert run_step("ingest_raw_batch", "2025-01-01").rows == 300


def test_an_exporter_without_a_final_line_break_can_opt_out(one_day, data_root, tmp_path, monkeypatch):
    import yaml

    from pavedml.settings import DEFAULT_USE_CASES_DIR

    spec = yaml.safe_load((DEFAULT_USE_CASES_DIR / "telco_churn.yaml").read_text())
    spec["batches"]["require_final_newline"] = False
    cases = tmp_path / "use_cases"
    cases.mkdir()
    (cases / "telco_churn.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    csv = one_day / "customers.csv"
    csv.write_bytes(csv.read_bytes().rstrip(b"\n"))
    assert run_step("ingest_raw_batch", "2025-01-01").rows == 300


@pytest.mark.parametrize("other", ["customers_part2.csv", "customers.parquet", "part2/customers.csv"])
def test_a_second_file_in_the_batch_folder_is_refused_not_ignored(one_day, data_root, other):
    """Before: a second part (or a .parquet beside the .csv) was ignored with rc 0: half the rows."""
    from pavedml.steps.ingest import BatchIncompleteError

    extra = one_day / other
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_bytes(b"customerID,gender\nX-1,Male\n")
    (one_day / ".customers.csv.uploading").write_bytes(b"ignored: hidden")  # uploads in progress
    (one_day / "_SUCCESS").write_bytes(b"")  # markers
    with pytest.raises(BatchIncompleteError, match=r"holds 2 data files \(customers.csv, " + other) as err:
        run_step("ingest_raw_batch", "2025-01-01")
    assert f"unexpected file: {one_day}/{other}" in err.value.details["evidence"]
    names = _quarantined(data_root)
    assert any(n.endswith("/customers.csv") for n in names) and any(n.endswith(f"delivery/{other}") for n in names)
    extra.unlink()
    assert run_step("ingest_raw_batch", "2025-01-01").rows == 300  # hidden files and markers are not data


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_a_non_finite_number_fails_validation_and_is_quarantined(one_day, data_root, value):
    """Before: inf passed validation and failed later in build_features with advice to fix the hook."""
    csv = one_day / "customers.csv"
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.loc[df.index[4], "TotalCharges"] = value
    df.to_csv(csv, index=False)
    run_step("ingest_raw_batch", "2025-01-01")
    with pytest.raises(ValidationFailedError, match="TotalCharges") as err:
        run_step("validate_raw_batch", "2025-01-01")
    line = next(e for e in err.value.details["evidence"] if "TotalCharges" in e)
    assert "values_to_be_between" in line and "max_value=finite" in line and "1 unexpected" in line, line
    assert any(n.endswith(".parquet") for n in _quarantined(data_root))


# -- the labels contract by kind of label: value lists, a threshold, a regression target, event times

LABELS_DAY = "2025-01-03"


def _labels_use_case(tmp_path, monkeypatch, label: dict, task: str = "binary_classification",
                     timed: bool = False):
    """A tiny use case of that label kind (in its own use-case folder) and its step context."""
    import yaml

    from pavedml.context import StepContext

    columns = {"id": {"type": "string", "nullable": False, "unique": True}, "x": {"type": "float"}}
    batches: dict = {"dataset": "rows"}
    if timed:
        columns["t"] = {"type": "timestamp", "nullable": False}
        batches["timestamp"] = {"column": "t"}
    spec = {"name": "labelled", "task": task, "entity": {"name": "row", "key": "id"}, "batches": batches,
            "schema": {"columns": columns}, "label": {"column": "y", "delay_days": 1, **label},
            "features": {"numeric": ["x"]},
            "model": {"registered_name": "labelled", "family": "ridge" if task == "regression" else "logistic_regression",
                      "split": {"holdout_days": 1, "validation_days": 1}}}
    cases = tmp_path / "use_cases"
    cases.mkdir(exist_ok=True)
    (cases / "labelled.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(tmp_path / "data"))
    return StepContext.build("labelled", LABELS_DAY)


def _check_labels(ctx, columns: dict[str, list[str]]):
    """validate_labels on a labels file holding ``columns`` (read as training reads a CSV: text)."""
    import io

    from pavedml.steps.validation import validate_labels

    n = len(next(iter(columns.values())))
    frame = pd.DataFrame({"id": [f"R{i}" for i in range(n)], **columns, "snapshot_date": ["2025-01-02"] * n})
    data = frame.to_csv(index=False).encode()
    uri = ctx.layout.landing_file("labels", LABELS_DAY, "csv")
    validate_labels(ctx, uri, data, pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False))
    return uri


def test_labels_from_value_lists_take_every_declared_value_and_refuse_others(tmp_path, monkeypatch):
    ctx = _labels_use_case(tmp_path, monkeypatch, {"positive": ["yes", "Y"], "negative": ["no", "N"]})
    _check_labels(ctx, {"y": ["yes", "Y", "N", "no"]})
    with pytest.raises(ValidationFailedError, match=r"failed 1 expectation: y$") as err:
        _check_labels(ctx, {"y": ["yes", "maybe", "N"]})
    (line,) = err.value.details["evidence"]
    assert "column y: column_values_to_be_in_set; 1 unexpected" in line and "maybe" in line, line
    assert "['yes', 'Y', 'no', 'N']" in err.value.details["next"]


def test_labels_by_threshold_must_be_numbers(tmp_path, monkeypatch):
    ctx = _labels_use_case(tmp_path, monkeypatch, {"threshold": 0.5})
    _check_labels(ctx, {"y": ["0.1", "0.9", "1", "0"]})
    with pytest.raises(ValidationFailedError) as err:
        _check_labels(ctx, {"y": ["0.1", "high", "0.7"]})
    exc = err.value
    assert "failed 1 expectation: y; y holds 1 value(s) that are not numbers (e.g. 'high')" in exc.message
    assert any("column_values_to_be_in_type_list" in e and "high" in e for e in exc.details["evidence"])
    assert "positive when >= 0.5" in exc.details["next"]


def test_a_regression_target_with_text_is_refused_and_quarantined(tmp_path, monkeypatch):
    ctx = _labels_use_case(tmp_path, monkeypatch, {}, task="regression")
    _check_labels(ctx, {"y": ["151.0", "75", "-3.5"]})
    with pytest.raises(ValidationFailedError) as err:
        uri = ctx.layout.landing_file("labels", LABELS_DAY, "csv")
        _check_labels(ctx, {"y": ["151.0", "high", "n/a", "80"]})
    exc = err.value
    assert exc.message.startswith(f"labels file {uri} (")
    assert "y holds 2 value(s) that are not numbers (e.g. 'high', 'n/a')" in exc.message
    quarantine = tmp_path / "data" / "labelled" / exc.details["quarantine"].split("/labelled/", 1)[1]
    assert (quarantine / "labels.csv").exists() and (quarantine / "reason.json").exists()
    # a missing target and a non-finite one are refused too
    with pytest.raises(ValidationFailedError, match="y") as err:
        _check_labels(ctx, {"y": ["151.0", "", "inf"]})
    evidence = "\n".join(err.value.details["evidence"])
    assert "column y: column_values_to_not_be_null; 1 unexpected" in evidence
    assert "column y: column_values_to_be_between" in evidence and "max_value=finite" in evidence


def test_labels_of_a_use_case_with_event_times_need_a_parseable_event_timestamp(tmp_path, monkeypatch):
    ctx = _labels_use_case(tmp_path, monkeypatch, {}, task="regression", timed=True)
    _check_labels(ctx, {"y": ["1.5", "2"], "event_timestamp": ["2025-01-02T05:00:00Z", "2025-01-02 07:30"]})
    with pytest.raises(ValidationFailedError, match="event_timestamp") as err:
        _check_labels(ctx, {"y": ["1.5", "2"]})
    assert any("column event_timestamp: column_to_exist" in e for e in err.value.details["evidence"])
    with pytest.raises(ValidationFailedError) as err:
        _check_labels(ctx, {"y": ["1.5", "2", "3"], "event_timestamp": ["2025-01-02T05:00:00Z", "soon", ""]})
    exc = err.value
    assert "event_timestamp holds 1 value(s) that are not times (e.g. 'soon')" in exc.message
    assert "event_timestamp (ISO 8601)" in exc.details["next"]
