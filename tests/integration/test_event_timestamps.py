"""Each row's event time from a batch column (``batches.timestamp: {column: ...}``): intra-day
times (any ISO 8601 form: a zone, an offset, none = UTC) become the snapshot's ``event_timestamp``
in UTC and reach the Feast offline partition and the online store; a row outside the run's day and
a time that does not parse each stop the batch in validation, quarantined with a clear message."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from pavedml.errors import ValidationFailedError
from tests.helpers.steps import run_step

pytestmark = pytest.mark.integration
UC = "timed_visits"
DS = "2025-03-05"


def use_case() -> dict:
    return {
        "name": UC, "task": "regression",
        "entity": {"name": "visit", "key": "visit_id"},
        "batches": {"dataset": "visits", "timestamp": {"column": "visit_time"}},
        "schedules": {"start_date": "2025-03-01"},
        "schema": {"row_count": {"min": 1}, "columns": {
            "visit_id": {"type": "string", "nullable": False, "unique": True},
            "visit_time": {"type": "timestamp", "nullable": False},
            "age": {"type": "float", "min": 0, "max": 120},
            "bmi": {"type": "float", "min": 10, "max": 80}}},
        "label": {"column": "progression", "delay_days": 1},
        "features": {"numeric": ["age", "bmi"]},
        "model": {"registered_name": UC, "family": "ridge", "split": {"holdout_days": 1, "validation_days": 1}},
    }


#: visit_time as delivered -> the UTC time it means
TIMES = {
    "2025-03-05T00:00:00Z": "2025-03-05 00:00:00",  # the interval's first instant belongs to it
    "2025-03-05T07:30:00+02:00": "2025-03-05 05:30:00",  # an offset is converted
    "2025-03-05 13:15": "2025-03-05 13:15:00",  # no zone: UTC
    "2025-03-05T23:59:59.500000Z": "2025-03-05 23:59:59.5",  # the last instant before the next day
}


@pytest.fixture
def timed(tmp_path, monkeypatch):
    cases = tmp_path / "use_cases"
    cases.mkdir()
    (cases / f"{UC}.yaml").write_text(yaml.safe_dump(use_case()))
    root = tmp_path / "data"
    monkeypatch.setenv("PAVEDML_DATA_ROOT", str(root))
    monkeypatch.setenv("PAVEDML_USE_CASES_DIR", str(cases))
    return root


def land(root, times: list[str], ds: str = DS) -> None:
    folder = root / "landing" / UC / "visits" / f"dt={ds}"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"visit_id": [f"V{i:03d}" for i in range(len(times))], "visit_time": times,
                  "age": [30 + i for i in range(len(times))], "bmi": [20.5 + i for i in range(len(times))]}
                 ).to_csv(folder / "visits.csv", index=False)


def test_intra_day_times_flow_into_the_snapshot_features_and_online_store(timed):
    land(timed, list(TIMES))
    snap = run_step("ingest_raw_batch", DS, UC)
    expected = pd.to_datetime(list(TIMES.values()), format="ISO8601").tz_localize("UTC")
    raw = pd.read_parquet(snap.uri)
    assert str(raw["event_timestamp"].dtype).endswith(", UTC]")
    assert raw["event_timestamp"].tolist() == expected.tolist()
    assert raw["visit_time"].tolist() == expected.tolist()  # the column itself, parsed as UTC
    assert run_step("validate_raw_batch", DS, UC).success
    run_step("build_features", DS, UC)
    part = pd.read_parquet(timed / UC / "features" / f"dt={DS}" / "part-0.parquet")
    assert part.sort_values("visit_id")["event_timestamp"].tolist() == expected.tolist()
    materialized = run_step("materialize_features", DS, UC)
    assert materialized is not None

    from pavedml.config import get_use_case
    from pavedml.steps.featurestore import get_store

    uc = get_use_case(UC)
    store, defs = get_store(uc, apply=False)
    online = store.get_online_features(features=defs["feature_service"],
                                       entity_rows=[{"visit_id": "V001"}, {"visit_id": "V003"}]).to_df()
    assert online.sort_values("visit_id")["age"].tolist() == [31.0, 33.0]


def _quarantined(root) -> list[str]:
    q = root / UC / "quarantine" / f"dt={DS}"
    return sorted(str(p.relative_to(q)) for p in q.rglob("*") if p.is_file()) if q.exists() else []


@pytest.mark.parametrize("outside", ["2025-03-06T00:00:00Z", "2025-03-04T23:59:59Z", "2025-03-05T01:00:00+02:00"])
def test_a_row_outside_the_runs_interval_is_refused_and_quarantined(timed, outside):
    land(timed, ["2025-03-05T10:00:00Z", outside, "2025-03-05T11:00:00Z"])
    run_step("ingest_raw_batch", DS, UC)
    with pytest.raises(ValidationFailedError) as err:
        run_step("validate_raw_batch", DS, UC)
    exc = err.value
    assert "failed 1 of" in exc.message and "visit_time (rows outside the run's data interval)" in exc.message
    (line,) = exc.details["evidence"]
    assert line.startswith("column visit_time: rows outside the run's data interval; 1 unexpected"), line
    shown = pd.Timestamp(outside).tz_convert("UTC").isoformat()
    assert shown in line, line
    names = _quarantined(timed)
    assert any(n.endswith(".parquet") for n in names) and any(n.endswith("visits.csv") for n in names)
    with pytest.raises(ValidationFailedError, match="has not passed validation"):
        run_step("build_features", DS, UC)
    assert not (timed / UC / "features" / f"dt={DS}").exists()


def test_a_time_that_does_not_parse_is_refused_and_quarantined(timed):
    land(timed, ["2025-03-05T10:00:00Z", "next tuesday", "2025-13-45", "2025-03-05T11:00:00Z"])
    snap = run_step("ingest_raw_batch", DS, UC)
    manifest = pd.read_json(snap.manifest, typ="series")
    assert manifest["type_errors"] == {"visit_time": {"count": 2, "examples": ["next tuesday", "2025-13-45"]}}
    with pytest.raises(ValidationFailedError, match=r"failed 1 of .*: visit_time$") as err:
        run_step("validate_raw_batch", DS, UC)
    (line,) = err.value.details["evidence"]
    assert "column visit_time: column_values_to_be_in_type_list" in line
    assert "next tuesday" in line and "2025-13-45" in line, line
    assert any(n.endswith("visits.csv") for n in _quarantined(timed))


def test_a_missing_time_is_refused(timed):
    land(timed, ["2025-03-05T10:00:00Z", "", "2025-03-05T11:00:00Z"])
    run_step("ingest_raw_batch", DS, UC)
    with pytest.raises(ValidationFailedError, match="visit_time") as err:
        run_step("validate_raw_batch", DS, UC)
    assert any("column visit_time: column_values_to_not_be_null; 1 unexpected" in e
               for e in err.value.details["evidence"]), err.value.details
