"""import-history: a user's table landed the way the pipeline expects it, or refused in one line
with nothing landed. Runs the CLI as a user types it (``python -m pavedml import-history``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration
EXAMPLES = REPO / "include" / "examples"
PATIENTS = EXAMPLES / "breast_cancer" / "patients.csv"
VISITS = EXAMPLES / "diabetes_visits" / "visits.csv"


@pytest.fixture
def env(tmp_path):
    uc_dir = tmp_path / "use_cases"
    uc_dir.mkdir()
    for name in ("breast_cancer", "diabetes_visits"):
        shutil.copy(EXAMPLES / name / f"{name}.yaml", uc_dir)
    return {**os.environ, "PAVEDML_DATA_ROOT": str(tmp_path / "data"), "PAVEDML_USE_CASES_DIR": str(uc_dir)}


def run(env, *args):
    return subprocess.run([sys.executable, "-m", "pavedml", "import-history", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def landed(env) -> list[str]:
    root = Path(env["PAVEDML_DATA_ROOT"])
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def refused(env, *args) -> str:
    proc = run(env, *args)
    assert proc.returncode == 3, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("import-history: refused: "), proc.stderr
    assert landed(env) == [], "a refusal must land nothing"
    return lines[-1]


def test_a_table_without_dates_lands_as_even_daily_slices_with_labels_a_delay_later(env):
    proc = run(env, "--use-case", "breast_cancer", "--from", str(PATIENTS), "--days", "12", "--start", "2025-02-01")
    assert proc.returncode == 0, proc.stderr
    assert "12 day(s) 2025-02-01 .. 2025-02-12, 569 rows (47-48 a day), 569 labelled, label rate 0.373" in proc.stdout
    root = Path(env["PAVEDML_DATA_ROOT"]) / "landing" / "breast_cancer"
    batches = sorted(root.glob("patients/dt=*/patients.csv"))
    assert [p.parent.name for p in batches] == [f"dt=2025-02-{d:02d}" for d in range(1, 13)]
    first = pd.read_csv(batches[0], dtype=str)
    assert "diagnosis" not in first.columns and first["patient_id"].iloc[0] == "P0000" and len(first) == 48
    labels = pd.read_csv(root / "labels" / "dt=2025-02-02" / "labels.csv", dtype=str)
    assert list(labels.columns) == ["patient_id", "diagnosis", "snapshot_date"]
    assert set(labels["snapshot_date"]) == {"2025-02-01"} and labels["patient_id"].tolist() == first["patient_id"].tolist()
    source = pd.read_csv(PATIENTS, dtype=str)
    assert labels["diagnosis"].tolist() == source["diagnosis"].iloc[:48].tolist()
    total = sum(len(pd.read_csv(p)) for p in batches)
    assert total == len(source)

    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.csv")}
    again = run(env, "--use-case", "breast_cancer", "--from", str(PATIENTS), "--days", "12", "--start", "2025-02-01")
    assert again.returncode == 0 and "0 written, 0 replaced, 24 unchanged" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.csv")} == before, "a rerun must change nothing"


def test_different_content_for_a_landed_day_is_refused_unless_replace(env, tmp_path):
    assert run(env, "--use-case", "breast_cancer", "--from", str(PATIENTS), "--days", "12",
               "--start", "2025-02-01").returncode == 0
    changed = tmp_path / "changed.csv"
    df = pd.read_csv(PATIENTS, dtype=str)
    df.loc[0, "mean_radius"] = "18.5"
    df.to_csv(changed, index=False)
    files = landed(env)
    proc = run(env, "--use-case", "breast_cancer", "--from", str(changed), "--days", "12", "--start", "2025-02-01")
    assert proc.returncode == 3 and "already hold different content" in proc.stderr and "--replace" in proc.stderr
    assert landed(env) == files
    proc = run(env, "--use-case", "breast_cancer", "--from", str(changed), "--days", "12", "--start", "2025-02-01",
               "--replace")
    assert proc.returncode == 0 and "0 written, 1 replaced, 23 unchanged" in proc.stdout, proc.stdout


def test_an_event_time_column_splits_by_day_and_travels_with_the_labels(env):
    proc = run(env, "--use-case", "diabetes_visits", "--from", str(VISITS))
    assert proc.returncode == 0, proc.stderr
    assert "12 day(s) 2025-03-01 .. 2025-03-12, 442 rows" in proc.stdout and "label mean 152.1" in proc.stdout
    root = Path(env["PAVEDML_DATA_ROOT"]) / "landing" / "diabetes_visits"
    day = pd.read_csv(root / "visits" / "dt=2025-03-05" / "visits.csv", dtype=str)
    times = pd.to_datetime(day["visit_time"], utc=True)
    assert (times.dt.strftime("%Y-%m-%d") == "2025-03-05").all() and times.dt.hour.nunique() > 1
    labels = pd.read_csv(root / "labels" / "dt=2025-03-06" / "labels.csv", dtype=str)
    assert list(labels.columns) == ["visit_id", "progression", "snapshot_date", "event_timestamp"]
    assert labels["event_timestamp"].tolist() == day["visit_time"].tolist()


@pytest.mark.parametrize("case", ["missing_key", "missing_label", "missing_date_column", "unparseable_dates",
                                  "regression_text", "undeclared_label", "too_little_history", "too_few_rows_a_day",
                                  "days_for_a_timed_use_case", "no_such_file", "cut_short", "duplicate_keys"])
def test_bad_input_is_refused_in_one_line_and_nothing_lands(env, tmp_path, case):
    visits = pd.read_csv(VISITS, dtype=str)
    patients = pd.read_csv(PATIENTS, dtype=str)
    bad = tmp_path / "bad.csv"
    uc, extra, expect = "diabetes_visits", [], ""
    if case == "missing_key":
        visits.drop(columns=["visit_id"]).to_csv(bad, index=False)
        expect = "has no column 'visit_id' (the entity.key; a table without a key column can take the row number: --row-key)"
    elif case == "missing_label":
        visits.drop(columns=["progression"]).to_csv(bad, index=False)
        expect = "has no column 'progression' (the label.column)"
    elif case == "missing_date_column":
        visits.drop(columns=["visit_time"]).to_csv(bad, index=False)
        expect = "has no column 'visit_time' (batches.timestamp.column)"
    elif case == "unparseable_dates":
        visits.loc[[3, 7], "visit_time"] = ["next tuesday", "2025-13-45"]
        visits.to_csv(bad, index=False)
        expect = "column 'visit_time' has 2 value(s) that are not dates (e.g. 'next tuesday', '2025-13-45')"
    elif case == "regression_text":
        visits.loc[[1, 2], "progression"] = ["high", "lots"]
        visits.to_csv(bad, index=False)
        expect = "label column 'progression' holds 2 value(s) that are not numbers (e.g. 'high', 'lots')"
    elif case == "undeclared_label":
        patients.loc[5, "diagnosis"] = "unsure"
        patients.to_csv(bad, index=False)
        uc, extra = "breast_cancer", ["--days", "12"]
        expect = "label column 'diagnosis' holds 1 value(s) outside label.positive ['malignant']"
    elif case == "too_little_history":
        patients.to_csv(bad, index=False)
        uc, extra = "breast_cancer", ["--days", "4"]
        expect = "4 labelled day(s) of history; the time split needs at least 5"
    elif case == "too_few_rows_a_day":
        patients.to_csv(bad, index=False)
        uc, extra = "breast_cancer", ["--days", "30"]
        expect = "hold fewer rows than schema.row_count.min=30"
    elif case == "days_for_a_timed_use_case":
        visits.to_csv(bad, index=False)
        extra = ["--days", "12"]
        expect = "splits by that column (--date-column visit_time), not into --days slices"
    elif case == "cut_short":
        text = PATIENTS.read_text()
        bad.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 30])  # the last row cut mid-way
        uc, extra = "breast_cancer", ["--days", "12"]
        expect = "1 row(s) have fewer fields than the header (first at data row 569; a file cut short?)"
    elif case == "duplicate_keys":
        patients.loc[3, "patient_id"] = "P0002"
        patients.to_csv(bad, index=False)
        uc, extra = "breast_cancer", ["--days", "12"]
        expect = "2 labelled rows share their patient_id and day with another (e.g. 'P0002')"
    elif case == "no_such_file":
        bad = tmp_path / "nowhere.csv"
        expect = "nowhere.csv: no such file"
    line = refused(env, "--use-case", uc, "--from", str(bad), *extra)
    assert expect in line, line


def test_labels_from_a_separate_file_must_name_known_keys(env, tmp_path):
    patients = pd.read_csv(PATIENTS, dtype=str)
    table, labels = tmp_path / "patients.csv", tmp_path / "labels.csv"
    patients.drop(columns=["diagnosis"]).to_csv(table, index=False)
    extra = pd.DataFrame({"patient_id": ["P9998", "P9999"], "diagnosis": ["benign", "malignant"]})
    pd.concat([patients[["patient_id", "diagnosis"]], extra]).to_csv(labels, index=False)
    line = refused(env, "--use-case", "breast_cancer", "--from", str(table), "--labels", str(labels), "--days", "12")
    assert "2 label(s) for patient_id value(s) not in the history (e.g. 'P9998', 'P9999')" in line

    patients[["patient_id", "diagnosis"]].iloc[::-1].to_csv(labels, index=False)  # any order
    proc = run(env, "--use-case", "breast_cancer", "--from", str(table), "--labels", str(labels), "--days", "12")
    assert proc.returncode == 0, proc.stderr
    assert "569 labelled, label rate 0.373" in proc.stdout


def test_numeric_labels_from_parquet_land_as_the_use_case_spells_them(env, tmp_path):
    """A database or Parquet file types a 0/1 label as numbers (1.0): it lands as the declared "1"."""
    patients = pd.read_csv(PATIENTS)
    patients["diagnosis"] = (patients["diagnosis"] == "malignant").astype(float)
    source = tmp_path / "patients.parquet"
    patients.to_parquet(source, index=False)
    path = Path(env["PAVEDML_USE_CASES_DIR"]) / "breast_cancer.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["label"].update(positive=1, negative=0)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = run(env, "--use-case", "breast_cancer", "--from", str(source), "--days", "12", "--start", "2025-02-01")
    assert proc.returncode == 0, proc.stderr
    labels = pd.read_csv(Path(env["PAVEDML_DATA_ROOT"]) / "landing/breast_cancer/labels/dt=2025-02-02/labels.csv",
                         dtype=str)
    assert set(labels["diagnosis"]) <= {"0", "1"} and "label rate 0.373" in proc.stdout


def test_history_from_a_postgresql_query(env, tmp_path):
    """The same table read with --sql from a real PostgreSQL database lands the same files."""
    from tests.helpers.prodstack import _pg_admin, pg_url

    db = f"pavedml_test_import_{uuid.uuid4().hex[:8]}"
    _pg_admin(f"CREATE DATABASE {db}")
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(pg_url(db))
        with engine.begin() as conn:
            pd.read_csv(VISITS).assign(visit_time=lambda d: pd.to_datetime(d["visit_time"], utc=True)).to_sql(
                "visits", conn, index=False)
        engine.dispose()
        proc = run(env, "--use-case", "diabetes_visits", "--from", pg_url(db), "--sql",
                   "SELECT * FROM visits ORDER BY visit_id")
        assert proc.returncode == 0, proc.stderr
        from_db = sorted(landed(env))
        files = {f: (Path(env["PAVEDML_DATA_ROOT"]) / f).read_bytes() for f in from_db}
        shutil.rmtree(env["PAVEDML_DATA_ROOT"])
        assert run(env, "--use-case", "diabetes_visits", "--from", str(VISITS)).returncode == 0
        assert sorted(landed(env)) == from_db
        day = "landing/diabetes_visits/visits/dt=2025-03-04/visits.csv"
        a = pd.read_csv(Path(env["PAVEDML_DATA_ROOT"]) / day)
        b = pd.read_csv(pd.io.common.BytesIO(files[day]))
        pd.testing.assert_frame_equal(a.sort_values("visit_id").reset_index(drop=True),
                                      b.sort_values("visit_id").reset_index(drop=True), check_dtype=False)
        env_var = {**env, "PAVEDML_TEST_HISTORY_DB": pg_url(db)}
        shutil.rmtree(env["PAVEDML_DATA_ROOT"])
        proc = run(env_var, "--use-case", "diabetes_visits", "--db-url-env", "PAVEDML_TEST_HISTORY_DB", "--sql",
                   "SELECT * FROM nowhere")
        assert proc.returncode == 3 and landed(env) == []
        assert "nowhere" in proc.stderr
    finally:
        _pg_admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_history_from_s3_into_an_s3_landing_zone(env, monkeypatch):
    """--from s3://... (a local S3 server) into PAVEDML_LANDING_URI on S3; a rerun changes nothing."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3env = {**env, "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test-only",
                 "AWS_SECRET_ACCESS_KEY": "test-only", "AWS_DEFAULT_REGION": "us-east-1",
                 "PAVEDML_LANDING_URI": "s3://landing/zone"}
        import boto3

        client = boto3.client("s3", endpoint_url=s3env["AWS_ENDPOINT_URL"], aws_access_key_id="test-only",
                              aws_secret_access_key="test-only", region_name="us-east-1")
        for bucket in ("landing", "exports"):
            client.create_bucket(Bucket=bucket)
        client.put_object(Bucket="exports", Key="visits.csv", Body=VISITS.read_bytes())
        proc = run(s3env, "--use-case", "diabetes_visits", "--from", "s3://exports/visits.csv")
        assert proc.returncode == 0, proc.stderr
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="landing")["Contents"])
        assert len(keys) == 24 and "zone/diabetes_visits/visits/dt=2025-03-01/visits.csv" in keys
        assert "zone/diabetes_visits/labels/dt=2025-03-13/labels.csv" in keys
        again = run(s3env, "--use-case", "diabetes_visits", "--from", "s3://exports/visits.csv")
        assert again.returncode == 0 and "0 written, 0 replaced, 24 unchanged" in again.stdout
        missing = run(s3env, "--use-case", "diabetes_visits", "--from", "s3://exports/nothing.csv")
        assert missing.returncode == 3 and "s3://exports/nothing.csv" in missing.stderr
    finally:
        server.stop()


def draft(env, *args):
    return subprocess.run([sys.executable, "-m", "pavedml", "draft-use-case", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_drafted_use_case_loads_and_imports_its_own_table(env, tmp_path):
    """draft-use-case -> a YAML that loads, with types, features and the label inferred; its table
    then imports under it. Raw Telco (blank TotalCharges, a 0/1 column) and a dated regression."""
    from pavedml.config import load_use_case

    cases = Path(env["PAVEDML_USE_CASES_DIR"])
    telco = REPO.parent / "shared" / "data" / "telco-churn" / "WA_Fn-UseC_-Telco-Customer-Churn.csv"
    if not telco.exists():
        telco = REPO / "include" / "pavedml" / "sample_data" / "telco_churn.csv"
    proc = draft(env, "--name", "telco_raw", "--from", str(telco), "--key", "customerID", "--label", "Churn",
                 "--days", "14", "--out", str(cases / "telco_raw.yaml"))
    assert proc.returncode == 0, proc.stderr
    uc = load_use_case(cases / "telco_raw.yaml")
    assert uc.task == "binary_classification" and uc.label.positive == "Yes" and uc.label.negative == "No"
    cols = uc.schema_.columns
    assert cols["TotalCharges"].type == "float" and cols["TotalCharges"].blank_as_null
    assert cols["Contract"].type == "category" and set(cols["Contract"].allowed) == {"Month-to-month", "One year",
                                                                                      "Two year"}
    assert "tenure" in uc.features.numeric and "Contract" in uc.features.categorical
    assert "customerID" not in uc.feature_columns and "Churn" not in cols
    assert run(env, "--use-case", "telco_raw", "--from", str(telco), "--days", "14").returncode == 0

    proc = draft(env, "--name", "visits_raw", "--from", str(VISITS), "--key", "visit_id", "--label", "progression",
                 "--date-column", "visit_time", "--out", str(cases / "visits_raw.yaml"))
    assert proc.returncode == 0, proc.stderr
    uc = load_use_case(cases / "visits_raw.yaml")
    assert uc.task == "regression" and uc.timestamp_column == "visit_time"
    assert str(uc.schedules.start_date) == "2025-03-01" and uc.evaluation.primary_metric == "rmse"
    imported = run(env, "--use-case", "visits_raw", "--from", str(VISITS))
    assert imported.returncode == 0, imported.stderr

    again = draft(env, "--name", "visits_raw", "--from", str(VISITS), "--key", "visit_id", "--label", "progression",
                  "--out", str(cases / "visits_raw.yaml"))
    assert again.returncode == 3 and "exists: pass --force" in again.stderr


def test_draft_refuses_what_it_cannot_decide_in_one_line(env, tmp_path):
    table = tmp_path / "t.csv"
    pd.DataFrame({"id": ["a", "b", "c", "d"], "grade": ["low", "mid", "high", "mid"], "x": [1, 2, 3, 4]}).to_csv(
        table, index=False)
    proc = draft(env, "--name", "grades", "--from", str(table), "--key", "id", "--label", "grade")
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines()[-1].startswith("draft-use-case: refused: label 'grade' has 3 distinct")
    proc = draft(env, "--name", "grades", "--from", str(table), "--key", "id", "--label", "grade",
                 "--positive", "high", "--positive", "mid")
    assert proc.returncode == 0 and "positive: [high, mid]" in proc.stdout and "negative: low" in proc.stdout
    proc = draft(env, "--name", "grades", "--from", str(table), "--key", "customer", "--label", "grade")
    assert proc.returncode == 3 and "no column 'customer' (--key (or --row-key" in proc.stderr


def test_simulate_never_overwrites_imported_history(env):
    """A Telco-shaped use case whose history was imported: simulate refuses (it would overwrite the
    landing files); the import is recorded in imports.jsonl, the demo's sign to run on it."""
    cases = Path(env["PAVEDML_USE_CASES_DIR"])
    shutil.copy(REPO / "include" / "use_cases" / "telco_churn.yaml", cases)
    sample = REPO / "include" / "pavedml" / "sample_data" / "telco_churn.csv"
    assert run(env, "--use-case", "telco_churn", "--from", str(sample), "--days", "10",
               "--start", "2025-01-01").returncode == 0
    files = {f: (Path(env["PAVEDML_DATA_ROOT"]) / f).read_bytes() for f in landed(env)}
    log = Path(env["PAVEDML_DATA_ROOT"]) / "telco_churn" / "imports.jsonl"
    assert log.exists() and '"n_days": 10' in log.read_text()
    proc = subprocess.run([sys.executable, "-m", "pavedml", "simulate", "--use-case", "telco_churn", "--start",
                           "2025-01-01", "--days", "3"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "has imported history" in proc.stderr
    assert {f: (Path(env["PAVEDML_DATA_ROOT"]) / f).read_bytes() for f in landed(env)} == files


def test_dates_in_other_spellings_and_zones_land_on_their_utc_day(env, tmp_path):
    visits = pd.read_csv(VISITS, dtype=str)
    visits.loc[0, "visit_time"] = "2025-03-01T23:30:00-02:00"  # 01:30 UTC on March 2
    visits.loc[1, "visit_time"] = "2025-03-02 10:00"  # no zone: UTC
    visits.loc[2, "visit_time"] = "3/3/2025 08:15"
    bad = tmp_path / "visits.csv"
    visits.to_csv(bad, index=False, lineterminator="\r\n")  # Windows line endings too
    proc = run(env, "--use-case", "diabetes_visits", "--from", str(bad))
    assert proc.returncode == 0, proc.stderr
    root = Path(env["PAVEDML_DATA_ROOT"]) / "landing" / "diabetes_visits" / "visits"
    day2 = pd.read_csv(root / "dt=2025-03-02" / "visits.csv", dtype=str).set_index("visit_id")
    assert day2.loc["V0000", "visit_time"] == "2025-03-02T01:30:00+00:00"
    assert day2.loc["V0001", "visit_time"] == "2025-03-02T10:00:00+00:00"
    day3 = pd.read_csv(root / "dt=2025-03-03" / "visits.csv", dtype=str).set_index("visit_id")
    assert day3.loc["V0002", "visit_time"] == "2025-03-03T08:15:00+00:00"
    assert "V0000" not in pd.read_csv(root / "dt=2025-03-01" / "visits.csv", dtype=str)["visit_id"].tolist()


@pytest.mark.parametrize("case", ["ambiguous_dates", "ordered_by_label", "trailing_separator", "semicolons",
                                  "reserved_column", "far_apart_dates", "not_utf8"])
def test_what_a_hostile_table_brings_is_refused_with_the_way_out(env, tmp_path, case):
    visits = pd.read_csv(VISITS, dtype=str)
    patients = pd.read_csv(PATIENTS, dtype=str)
    bad = tmp_path / "t.csv"
    uc, extra, expect = "diabetes_visits", [], ""
    if case == "ambiguous_dates":
        visits["visit_time"] = pd.to_datetime(visits["visit_time"]).dt.strftime("%d/%m/%Y %H:%M")
        visits.to_csv(bad, index=False)
        expect = "holds dates that read two ways, day first or month first (e.g. '01/03/2025 00:00'"
    elif case == "ordered_by_label":
        patients.sort_values("diagnosis", kind="stable").to_csv(bad, index=False)  # benign first, malignant last
        uc, extra = "breast_cancer", ["--days", "12"]
        expect = "hold only positive labels (the whole table: label rate 0.373): is the table ordered by its label? " \
                 "pass --shuffle SEED"
    elif case == "trailing_separator":
        bad.write_text("\n".join(line + "," if i % 50 == 7 else line
                                 for i, line in enumerate(PATIENTS.read_text().splitlines())) + "\n")
        uc, extra = "breast_cancer", ["--days", "12"]
        expect = "row(s) have more fields than the header's 14 (first at data row 7; a trailing separator"
    elif case == "semicolons":
        patients.to_csv(bad, index=False, sep=";")
        uc, extra = "breast_cancer", ["--days", "12"]
        expect = "the file looks separated by ';': pass --sep ';'"
    elif case == "reserved_column":
        patients.assign(event_timestamp="2025-01-01").to_csv(bad, index=False)
        uc, extra = "breast_cancer", ["--days", "12"]
        expect = "has a column 'event_timestamp': that name is the pipeline's own"
    elif case == "far_apart_dates":
        visits["visit_time"] = [f"{1990 + i % 12}-03-01T10:00:00Z" for i in range(len(visits))]
        visits.to_csv(bad, index=False)
        expect = "only 1 labelled day(s) fall within model.training_window_days=90 of the newest (2001-03-01)"
    elif case == "not_utf8":
        bad.write_bytes(PATIENTS.read_bytes().replace(b"P0001", "P0001\u00e9".encode("cp1252")))
        uc, extra = "breast_cancer", ["--days", "12"]
        expect = "is not UTF-8 text"
    assert expect in refused(env, "--use-case", uc, "--from", str(bad), *extra)


def test_the_ways_out_work(env, tmp_path):
    """--date-format, --shuffle, --sep and --row-key each land what the refusal pointed at; NA spellings
    in a numeric column land as empty cells; a float key lands as an integer; a re-import with fewer
    days names the days it leaves."""
    visits = pd.read_csv(VISITS, dtype=str)
    dated = tmp_path / "dated.csv"
    visits.assign(visit_time=pd.to_datetime(visits["visit_time"]).dt.strftime("%d/%m/%Y %H:%M"),
                  bmi=visits["bmi"].where(visits.index % 40 != 3, "NA")).to_csv(dated, index=False)
    proc = run(env, "--use-case", "diabetes_visits", "--from", str(dated), "--date-format", "%d/%m/%Y %H:%M")
    assert proc.returncode == 0 and "12 day(s) 2025-03-01 .. 2025-03-12" in proc.stdout, proc.stderr
    day = pd.read_csv(Path(env["PAVEDML_DATA_ROOT"]) / "landing/diabetes_visits/visits/dt=2025-03-04/visits.csv",
                      dtype=str, keep_default_na=False)
    assert "NA" not in set(day["bmi"]) and "" in set(day["bmi"])

    patients = pd.read_csv(PATIENTS, dtype=str).sort_values("diagnosis", kind="stable")
    ordered = tmp_path / "ordered.csv"
    patients.drop(columns=["patient_id"]).to_csv(ordered, index=False, sep=";")
    proc = run(env, "--use-case", "breast_cancer", "--from", str(ordered), "--sep", ";", "--row-key", "--days", "12",
               "--shuffle", "7", "--start", "2025-02-01")
    assert proc.returncode == 0, proc.stderr
    first = pd.read_csv(Path(env["PAVEDML_DATA_ROOT"]) / "landing/breast_cancer/patients/dt=2025-02-01/patients.csv",
                        dtype=str)
    assert first["patient_id"].str.fullmatch(r"\d{3}").all() and first["patient_id"].is_unique
    proc = run(env, "--use-case", "breast_cancer", "--from", str(ordered), "--sep", ";", "--row-key", "--days", "10",
               "--shuffle", "7", "--start", "2025-02-01", "--replace")
    assert proc.returncode == 0 and "2 landed day(s) are not part of this import (2025-02-11 .. 2025-02-12)" \
        in proc.stdout, proc.stdout

    keyed = pd.read_csv(PATIENTS).assign(patient_id=lambda d: (d.index + 100000).astype(float))
    source = tmp_path / "float_keys.parquet"
    keyed.to_parquet(source, index=False)
    shutil.rmtree(env["PAVEDML_DATA_ROOT"])
    assert run(env, "--use-case", "breast_cancer", "--from", str(source), "--days", "12").returncode == 0
    labels = next((Path(env["PAVEDML_DATA_ROOT"]) / "landing/breast_cancer/labels").glob("dt=*/labels.csv"))
    assert pd.read_csv(labels, dtype=str)["patient_id"].str.fullmatch(r"1\d{5}").all()


def test_draft_reads_numbers_thresholds_and_tables_without_a_key(env, tmp_path):
    table = tmp_path / "fair.parquet"
    n = 400
    pd.DataFrame({"age": [20 + i % 40 for i in range(n)],
                  "rate": [str(1 + i % 5) if i % 37 else "NA" for i in range(n)],
                  "affairs": [float(i % 7 == 0) * (i % 3 + 0.5) for i in range(n)],
                  "children": [float(i % 2) for i in range(n)]}).to_parquet(table, index=False)
    proc = draft(env, "--name", "fair", "--from", str(table), "--key", "row", "--row-key", "--label", "affairs",
                 "--threshold", "0.01", "--days", "10")
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(proc.stdout)
    assert doc["label"]["threshold"] == 0.01 and doc["task"] == "binary_classification"
    assert doc["schema"]["columns"]["rate"]["type"] == "int" and doc["schema"]["columns"]["rate"]["blank_as_null"]
    assert "rate: NA read as missing" in proc.stdout and "row" not in doc["features"]["numeric"]
    (Path(env["PAVEDML_USE_CASES_DIR"]) / "fair.yaml").write_text(proc.stdout)
    proc = run(env, "--use-case", "fair", "--from", str(table), "--row-key", "--days", "10", "--shuffle", "1")
    assert proc.returncode == 0, proc.stderr
    proc = draft(env, "--name", "fair2", "--from", str(table), "--key", "row", "--row-key", "--label", "children",
                 "--positive", "1")
    assert proc.returncode == 0 and "positive: '1.0'" in proc.stdout, proc.stdout + proc.stderr
    const = tmp_path / "const.csv"
    pd.DataFrame({"id": range(10), "y": [1] * 10, "x": range(10)}).to_csv(const, index=False)
    proc = draft(env, "--name", "const", "--from", str(const), "--key", "id", "--label", "y")
    assert proc.returncode == 3 and "holds 1 distinct value(s) (1): nothing to learn" in proc.stderr


def test_labels_the_pipeline_would_refuse_are_refused_at_import(env, tmp_path):
    """Two labels for one key and day (a key that is not unique by schema), boolean labels
    (Parquet) against positive: true, and a password in --from."""
    cases = Path(env["PAVEDML_USE_CASES_DIR"])
    raw = yaml.safe_load((cases / "breast_cancer.yaml").read_text())
    raw["schema"]["columns"]["patient_id"]["unique"] = False
    (cases / "breast_cancer.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    patients = pd.read_csv(PATIENTS, dtype=str)
    patients.loc[1, "patient_id"] = "P0000"
    bad = tmp_path / "dup.csv"
    patients.to_csv(bad, index=False)
    line = refused(env, "--use-case", "breast_cancer", "--from", str(bad), "--days", "12")
    assert "2 labelled rows share their patient_id and day with another (e.g. 'P0000')" in line

    raw["label"].update(positive=True, negative=False)
    (cases / "breast_cancer.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    table = tmp_path / "bools.parquet"
    pd.read_csv(PATIENTS).assign(diagnosis=lambda d: d["diagnosis"] == "malignant").to_parquet(table, index=False)
    proc = run(env, "--use-case", "breast_cancer", "--from", str(table), "--days", "12", "--start", "2025-02-01")
    assert proc.returncode == 0 and "label rate 0.373" in proc.stdout, proc.stderr
    labels = pd.read_csv(Path(env["PAVEDML_DATA_ROOT"]) / "landing/breast_cancer/labels/dt=2025-02-02/labels.csv",
                         dtype=str)
    assert set(labels["diagnosis"]) <= {"True", "False"}

    shutil.rmtree(env["PAVEDML_DATA_ROOT"])
    line = refused(env, "--use-case", "diabetes_visits", "--from", "postgresql://bob:s3cret@127.0.0.1/x",
                   "--sql", "SELECT * FROM visits")
    assert "url holds a password" in line and "--db-url-env" in line and "s3cret" not in line


def test_a_sql_source_use_case_imports_only_its_labels(env):
    """Its runs extract their own days from the database: landing batch files there would be
    overwritten by the first ingest (and a rerun of the import would then refuse)."""
    path = Path(env["PAVEDML_USE_CASES_DIR"]) / "diabetes_visits.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["batches"]["source"] = {"url_env": "CLINIC_DB", "query": "SELECT * FROM visits WHERE visit_time >= "
                                                               ":interval_start AND visit_time < :interval_end"}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = run(env, "--use-case", "diabetes_visits", "--from", str(VISITS))
    assert proc.returncode == 0, proc.stderr
    assert "batches read by each run from its SQL query" in proc.stdout
    files = landed(env)
    assert files and all("/labels/" in f or f.endswith("imports.jsonl") for f in files), files


def test_small_things_a_real_table_brings(env, tmp_path):
    """A header naming a column twice is refused; an id-like integer column stays out of a draft's
    features; days without rows between the first and the last are named."""
    twice = tmp_path / "twice.csv"
    twice.write_text("patient_id,mean_radius,mean_radius,diagnosis\nP1,1,2,benign\n")
    assert "the header names 'mean_radius' more than once" in refused(
        env, "--use-case", "breast_cancer", "--from", str(twice), "--days", "1")

    table = tmp_path / "ids.csv"
    pd.read_csv(PATIENTS).assign(row_number=range(569)).to_csv(table, index=False)
    proc = draft(env, "--name", "ids", "--from", str(table), "--key", "patient_id", "--label", "diagnosis",
                 "--days", "12")
    assert proc.returncode == 0 and "row_number: a different whole number in every row (an id?)" in proc.stdout
    assert "row_number" not in yaml.safe_load(proc.stdout)["features"]["numeric"]

    visits = pd.read_csv(VISITS, dtype=str)
    gappy = tmp_path / "gappy.csv"
    visits[~visits["visit_time"].str.startswith("2025-03-06")].to_csv(gappy, index=False)
    proc = run(env, "--use-case", "diabetes_visits", "--from", str(gappy))
    assert proc.returncode == 0 and "1 day(s) between 2025-03-01 and 2025-03-12 have no rows" in proc.stdout
