from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pavedml.config import FAMILIES_BY_TASK, load_use_case
from pavedml.errors import ConfigError
from pavedml.settings import DEFAULT_USE_CASES_DIR

pytestmark = pytest.mark.unit
TELCO = DEFAULT_USE_CASES_DIR / "telco_churn.yaml"


def _write(tmp_path, mutate, name="telco_churn"):
    raw = yaml.safe_load(TELCO.read_text())
    mutate(raw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bundled_use_case_loads():
    uc = load_use_case(TELCO)
    assert uc.entity.key == "customerID"
    assert uc.dag_id("feature_pipeline") == "telco_churn_feature_pipeline"
    assert "avg_monthly_spend" in uc.numeric_features
    assert uc.feature_service == uc.model.registered_name


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, lambda r: r["drift"].update(threshhold=0.3))
    with pytest.raises(ConfigError) as err:
        load_use_case(path)
    assert str(path) in str(err.value)
    assert "drift.threshhold: unknown key" in str(err.value)


def test_wrong_type_names_key(tmp_path):
    path = _write(tmp_path, lambda r: r["drift"].update(min_samples="lots"))
    with pytest.raises(ConfigError, match=r"drift\.min_samples: .*integer"):
        load_use_case(path)


def test_missing_required_key(tmp_path):
    path = _write(tmp_path, lambda r: r.pop("label"))
    with pytest.raises(ConfigError, match=r"label: required key is missing"):
        load_use_case(path)


def test_missing_file():
    with pytest.raises(ConfigError, match=r"use-case file not found: /nonexistent/x\.yaml"):
        load_use_case("/nonexistent/x.yaml")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "telco_churn.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_use_case(path)


def test_unknown_hyper_parameter_is_named(tmp_path):
    path = _write(tmp_path, lambda r: r["model"]["params"].update(max_depthh=3))
    with pytest.raises(ConfigError, match=r"model.params: unknown hyper-parameter\(s\) max_depthh for model family"):
        load_use_case(path)


def test_feature_must_be_a_schema_column(tmp_path):
    path = _write(tmp_path, lambda r: r["features"]["numeric"].append("NoSuchColumn"))
    with pytest.raises(ConfigError, match="features.numeric: 'NoSuchColumn' is not a column"):
        load_use_case(path)


def test_name_must_match_file_stem(tmp_path):
    path = _write(tmp_path, lambda r: None, name="other_name")
    with pytest.raises(ConfigError, match="must equal the file stem"):
        load_use_case(path)


def test_drift_thresholds_ordered(tmp_path):
    path = _write(tmp_path, lambda r: r["drift"].update(warn=0.3, alert=0.2))
    with pytest.raises(ConfigError, match=r"drift: warn \(0.3\) must be below alert \(0.2\)"):
        load_use_case(path)


@pytest.mark.parametrize(("task", "family"), sorted((t, f) for t, fams in FAMILIES_BY_TASK.items() for f in fams))
def test_hyper_parameter_lists_match_scikit_learn(task, family):
    """The static allowlists (kept so DAG parsing never imports sklearn) equal the estimators' params,
    for every family of every task."""
    import importlib

    target, allowed = FAMILIES_BY_TASK[task][family]
    module, cls = target.split(":")
    estimator = getattr(importlib.import_module(module), cls)()
    assert set(allowed) == set(estimator.get_params())


def test_config_import_is_cheap():
    code = "import sys, pavedml.config, pavedml.airflow.factory; print(sorted(m for m in ('pandas','numpy','sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("source", "expect"), [
    ({"url": "postgresql://bob@db/x?password=s3cret", "query": "SELECT 1"}, "url holds a password"),
    ({"url": "postgresql://bob:s3cret@db/x", "query": "SELECT 1"}, "url holds a password"),
    ({"url_env": "SHOP_DB", "query": "SELECT * FROM t WHERE d = :ds::date"}, "CAST(:ds AS <type>)"),
    ({"url_env": "SHOP_DB", "query": "SELECT * FROM t WHERE d = :day"}, "unknown parameter(s) :day"),
])
def test_a_sql_source_is_refused_when_it_would_leak_or_fail(tmp_path, source, expect):
    path = _write(tmp_path, lambda r: r["batches"].update(source=source))
    with pytest.raises(ConfigError) as err:
        load_use_case(path)
    assert expect in err.value.message and "s3cret" not in err.value.message


def test_a_cast_after_a_bound_parameter_is_fine_when_spelled_with_cast(tmp_path):
    path = _write(tmp_path, lambda r: r["batches"].update(source={
        "url_env": "SHOP_DB", "query": "SELECT * FROM t WHERE d = CAST(:ds AS date) AND x::text <> ''"}))
    assert load_use_case(path).batches.source.query.startswith("SELECT")


def test_the_pipelines_own_event_timestamp_is_not_a_schema_column(tmp_path):
    path = _write(tmp_path, lambda r: r["schema"]["columns"].update(event_timestamp={"type": "timestamp"}))
    with pytest.raises(ConfigError, match="event_timestamp: the name is the pipeline's own"):
        load_use_case(path)


def test_batches_and_labels_land_in_folders_of_their_own(tmp_path):
    path = _write(tmp_path, lambda r: r["label"].update(dataset=r["batches"]["dataset"]))
    with pytest.raises(ConfigError, match="batches.dataset and label.dataset are both"):
        load_use_case(path)
