"""DAG integrity: no import errors, exactly the expected dag_ids, ownership, retries, docs, tags,
cheap parsing (no heavy library imported by DAG files), one set of DAGs per use-case file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.dags
PIPELINES = ["feature_pipeline", "training_pipeline", "model_rollback", "batch_scoring", "drift_monitor"]
HEAVY = ("mlflow", "great_expectations", "evidently", "feast", "sklearn", "pandas")
EXPECTED_TASKS = {
    "feature_pipeline": {
        "ingest_raw_batch": {"validate_raw_batch"},
        "validate_raw_batch": {"build_features"},
        "build_features": {"materialize_features"},
        "materialize_features": set(),
    },
    "training_pipeline": {
        "build_training_set": {"train_challenger"},
        "train_challenger": {"evaluate_challenger"},
        "evaluate_challenger": {"promote_challenger"},
        "promote_challenger": set(),
    },
    "model_rollback": {"rollback_model": set()},
    "batch_scoring": {"score_customers": set()},
    "drift_monitor": {"wait_for_drift": {"request_retraining"}, "request_retraining": set()},
}


def _parse_in_subprocess(extra_env: dict | None = None) -> dict:
    """Parse the DAG folder in a fresh interpreter; report dag ids, errors and heavy modules."""
    code = textwrap.dedent(f"""
        import json, sys
        import airflow.sdk
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        print(json.dumps({{
            "dags": sorted(bag.dags),
            "errors": {{k: v[-6000:] for k, v in bag.import_errors.items()}},
            "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules),
        }}))
    """)
    env = {**os.environ, **(extra_env or {})}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(bag):
    assert bag.import_errors == {}


def test_exactly_the_expected_dag_ids(bag):
    assert sorted(bag.dags) == sorted(f"telco_churn_{p}" for p in PIPELINES)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_dag_hygiene(bag, pipeline):
    dag = bag.dags[f"telco_churn_{pipeline}"]
    assert dag.doc_md and "Failures" in dag.doc_md and "telco_churn" in dag.doc_md
    assert set(dag.tags) >= {"pavedml", "telco_churn", pipeline}
    assert dag.owner == "ml-platform"
    for task in dag.tasks:
        assert task.retries >= 2, f"{task.task_id} has retries={task.retries}"
        assert task.owner == "ml-platform"
    # a run that misses its expected completion time raises a deadline alert
    assert dag.deadline is not None, "no deadline alert"
    alert = dag.deadline[0] if isinstance(dag.deadline, list) else dag.deadline
    assert alert.callback.path == "pavedml.alerts.on_deadline_missed"
    assert alert.interval.total_seconds() == 60 * 60  # telco_churn.yaml: expected_duration_minutes: 60


@pytest.mark.parametrize("pipeline", list(EXPECTED_TASKS))
def test_task_graph(bag, pipeline):
    dag = bag.dags[f"telco_churn_{pipeline}"]
    assert {t.task_id: set(t.downstream_task_ids) for t in dag.tasks} == EXPECTED_TASKS[pipeline]


def test_dag_files_do_not_import_heavy_libraries():
    result = _parse_in_subprocess()
    assert result["errors"] == {}
    assert result["heavy"] == [], f"DAG parsing imported {result['heavy']}"


def test_a_second_use_case_file_yields_an_independent_set_of_dags(tmp_path):
    from pavedml.settings import DEFAULT_USE_CASES_DIR

    shutil.copy(DEFAULT_USE_CASES_DIR / "telco_churn.yaml", tmp_path / "telco_churn.yaml")
    text = (DEFAULT_USE_CASES_DIR / "telco_churn.yaml").read_text()
    text = text.replace("name: telco_churn", "name: acme_churn").replace("registered_name: telco_churn",
                                                                         "registered_name: acme_churn")
    (tmp_path / "acme_churn.yaml").write_text(text)
    result = _parse_in_subprocess({"PAVEDML_USE_CASES_DIR": str(tmp_path)})
    assert result["errors"] == {}
    assert result["dags"] == sorted([f"acme_churn_{p}" for p in PIPELINES] + [f"telco_churn_{p}" for p in PIPELINES])

    from pavedml.config import load_use_case
    from pavedml.layout import Layout

    acme = load_use_case(tmp_path / "acme_churn.yaml")
    assert acme.model.registered_name == "acme_churn"
    assert Layout.for_use_case("acme_churn").root != Layout.for_use_case("telco_churn").root


def test_dag_files_stay_thin():
    """DAG files import only airflow.sdk, the standard library and the package's cheap modules."""
    for path in Path(REPO / "dags").glob("*.py"):
        for line in path.read_text().splitlines():
            if line.startswith(("import ", "from ")):
                mod = line.split()[1]
                assert mod.split(".")[0] in {"__future__", "airflow", "pavedml", "datetime"}, f"{path.name}: {line}"


def test_human_approval_step_appears_when_the_use_case_asks(tmp_path):
    from pavedml.settings import DEFAULT_USE_CASES_DIR

    text = (DEFAULT_USE_CASES_DIR / "telco_churn.yaml").read_text().replace("require_approval: false",
                                                                           "require_approval: true")
    assert "require_approval: true" in text
    (tmp_path / "telco_churn.yaml").write_text(text)
    code = textwrap.dedent(f"""
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        dag = bag.dags["telco_churn_training_pipeline"]
        print(json.dumps({{t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PAVEDML_USE_CASES_DIR": str(tmp_path)})
    graph = json.loads(out.stdout.strip().splitlines()[-1])
    assert graph["evaluate_challenger"] == ["approve_promotion"]
    assert graph["approve_promotion"] == ["promote_challenger"]


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_trigger_form_field_has_a_title_and_an_explanation(bag, pipeline):
    """The trigger dialog shows each Param's title (not its key) and its description."""
    dag = bag.dags[f"telco_churn_{pipeline}"]
    for key in dag.params:
        p = dag.params.get_param(key)
        assert p.schema.get("title") and p.schema["title"] != key, f"{dag.dag_id}.{key} has no human title"
        assert len(p.description or "") > 20, f"{dag.dag_id}.{key} has no description"


def test_trigger_form_defaults_are_valid(bag):
    """Each DAG can be triggered with its form as it opens (defaults pass the Params' schema), except
    the rollback, whose reason the operator must type."""
    from airflow.sdk.exceptions import ParamValidationError

    for dag in bag.dags.values():
        if dag.dag_id.endswith("_model_rollback"):
            with pytest.raises(ParamValidationError, match="reason"):
                dag.params.validate()
        else:
            dag.params.validate()


BAD_FILES = {
    "syntax.yaml": "name: syntax\nentity: [unclosed\n",
    "wrong_type.yaml": None,  # telco's file with a wrong-typed key, under its own name
    "stem_mismatch.yaml": None,  # telco's file under another file name
    "dup_key.yaml": None,  # telco's file with a key given twice
    "dup_model.yaml": None,  # a valid file whose registered model is telco_churn's
    "legacy.yml": "name: legacy\n",
}


def test_one_bad_use_case_file_never_takes_the_others_down(tmp_path):
    """Each bad file is an import error naming it; the valid use cases keep all their DAGs; editor
    and hidden files are ignored."""
    from pavedml.settings import DEFAULT_USE_CASES_DIR

    telco = (DEFAULT_USE_CASES_DIR / "telco_churn.yaml").read_text()
    shutil.copy(DEFAULT_USE_CASES_DIR / "telco_churn.yaml", tmp_path / "telco_churn.yaml")
    (tmp_path / "acme_churn.yaml").write_text(telco.replace("name: telco_churn", "name: acme_churn")
                                              .replace("registered_name: telco_churn", "registered_name: acme_churn"))
    (tmp_path / "syntax.yaml").write_text(BAD_FILES["syntax.yaml"])
    (tmp_path / "wrong_type.yaml").write_text(telco.replace("name: telco_churn", "name: wrong_type", 1)
                                              .replace("registered_name: telco_churn", "registered_name: wt")
                                              .replace("delay_days: 2", "delay_days: two"))
    (tmp_path / "stem_mismatch.yaml").write_text(telco.replace("registered_name: telco_churn", "registered_name: sm"))
    (tmp_path / "dup_key.yaml").write_text(telco.replace("name: telco_churn", "name: dup_key", 1)
                                           .replace("registered_name: telco_churn", "registered_name: dk")
                                           .replace("  delay_days: 2", "  delay_days: 2\n  delay_days: 3"))
    (tmp_path / "dup_model.yaml").write_text(telco.replace("name: telco_churn", "name: dup_model", 1))
    (tmp_path / "legacy.yml").write_text(BAD_FILES["legacy.yml"])
    for junk in (".#telco_churn.yaml", "telco_churn.yaml~", ".telco_churn.yaml.swp", "#acme.yaml#"):
        (tmp_path / junk).write_text("{{{ not yaml")
    result = _parse_in_subprocess({"PAVEDML_USE_CASES_DIR": str(tmp_path)})
    assert result["dags"] == sorted([f"acme_churn_{p}" for p in PIPELINES] + [f"telco_churn_{p}" for p in PIPELINES])
    assert list(result["errors"]) == [str(REPO / "dags" / "use_case_config.py")], result["errors"]
    message = next(iter(result["errors"].values()))
    for name in BAD_FILES:
        assert str(tmp_path / name) in message, (name, message)
    assert "not valid YAML" in message and "delay_days" in message and "must equal the file stem" in message
    assert "appears twice" in message and "rename it to legacy.yaml" in message
    assert "'telco_churn' is also the model of use case(s) 'telco_churn'" in message  # telco_churn.yaml keeps it
    for junk in (".#telco_churn.yaml", "telco_churn.yaml~"):
        assert junk not in message


def test_a_use_case_name_is_never_a_path(tmp_path):
    from pavedml.config import get_use_case
    from pavedml.errors import ConfigError

    for name in ("../telco_churn", "telco_churn/../x", "/etc/passwd", "", "a b"):
        with pytest.raises(ConfigError, match="not a plain name"):
            get_use_case(name)
