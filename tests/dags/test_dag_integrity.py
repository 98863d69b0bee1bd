"""DAG integrity: no import errors, exactly the expected dag_ids, ownership, retries, docs, tags,
deadline, task graph and sensor settings of every DAG of every use-case file (the shipped ones plus
a second one that differs in every value a check reads), cheap parsing (no heavy library imported
by DAG files), one set of DAGs per use-case file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.dags
PIPELINES = ["feature_pipeline", "training_pipeline", "model_rollback", "batch_scoring", "drift_monitor",
             "performance_monitor"]
HEAVY = ("mlflow", "great_expectations", "evidently", "feast", "sklearn", "pandas")
SHIPPED = REPO / "include" / "use_cases"
EXAMPLES = sorted((REPO / "include" / "examples").glob("*/*.yaml"))
#: every use case the checks run on: each shipped file, the examples of "Bring your own data" (a
#: regression with event times, a classifier without dates), plus acme_churn (below)
USE_CASES = sorted([p.stem for p in SHIPPED.glob("*.yaml")] + [p.stem for p in EXAMPLES] + ["acme_churn"])
DAG_IDS = [f"{uc}_{p}" for uc in USE_CASES for p in PIPELINES]


def acme_churn() -> dict:
    """telco_churn's file under another name, with another owner, deadline, waits and an approval
    step: a check that reads telco_churn's values instead of the use case's fails on it."""
    spec = yaml.safe_load((SHIPPED / "telco_churn.yaml").read_text())
    spec.update(name="acme_churn", owner="acme-data", description="Churn of ACME's customers (a second use case).")
    spec["model"]["registered_name"] = "acme_churn"
    spec["batches"].update(wait_timeout_seconds=420, poke_interval_seconds=17)
    spec["drift"].update(poke_interval_seconds=123, sensor_timeout_minutes=45)
    spec["schedules"]["expected_duration_minutes"] = 25
    spec["evaluation"]["require_approval"] = True
    return spec


def expected_tasks(uc, pipeline: str) -> dict[str, set[str]]:
    """{task_id: downstream task ids} of a use case's DAG."""
    training = {"build_training_set": {"train_challenger"}, "train_challenger": {"evaluate_challenger"},
                "evaluate_challenger": {"promote_challenger"}, "promote_challenger": set()}
    if uc.evaluation.require_approval:
        training.update(evaluate_challenger={"approve_promotion"}, approve_promotion={"promote_challenger"})
    return {
        "feature_pipeline": {
            "wait_for_batch": {"ingest_raw_batch"},
            "ingest_raw_batch": {"validate_raw_batch"},
            "validate_raw_batch": {"build_features"},
            "build_features": {"materialize_features"},
            "materialize_features": set(),
        },
        "training_pipeline": training,
        "model_rollback": {"rollback_model": set()},
        "batch_scoring": {"score_customers": set()},
        "drift_monitor": {"wait_for_drift": {"request_retraining"}, "request_retraining": set()},
        "performance_monitor": {"measure_performance": {"request_performance_retraining", "judge_live_evidence"},
                                "request_performance_retraining": set(), "judge_live_evidence": set()},
    }[pipeline]


def hygiene_problems(dag, uc, pipeline: str) -> list[str]:
    """What is wrong with ``dag`` as DAG ``pipeline`` of use case ``uc`` (empty: nothing)."""
    from pavedml.airflow.operators import StepOperator
    from pavedml.airflow.sensors import StepSensor

    problems = []
    if not (dag.doc_md and "Failures" in dag.doc_md and uc.name in dag.doc_md):
        problems.append("doc_md is not the runbook of this use case")
    if not set(dag.tags or []) >= {"pavedml", uc.name, pipeline}:
        problems.append(f"tags {sorted(dag.tags or [])}")
    if dag.owner != uc.owner:
        problems.append(f"DAG owner {dag.owner!r}")
    for task in dag.tasks:
        if task.retries < 2:
            problems.append(f"{task.task_id} has retries={task.retries}")
        if task.owner != uc.owner:
            problems.append(f"{task.task_id} owner {task.owner!r}")
        if isinstance(task, StepOperator | StepSensor):
            if task.use_case != uc.name or task.argv[3:6] != [task.step, "--use-case", uc.name]:
                problems.append(f"{task.task_id} runs {task.argv[3:6]} for {task.use_case!r}")
    alert = dag.deadline[0] if isinstance(dag.deadline, list) and dag.deadline else dag.deadline
    if alert is None:
        problems.append("no deadline alert")
    else:
        if alert.callback.path != "pavedml.airflow.callbacks.on_deadline_missed":
            problems.append(f"deadline callback {alert.callback.path}")
        if alert.interval.total_seconds() != uc.schedules.expected_duration_minutes * 60:
            problems.append(f"deadline after {alert.interval}")
    return problems


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory) -> Path:
    cases = tmp_path_factory.mktemp("use_cases")
    for path in [*SHIPPED.glob("*.yaml"), *EXAMPLES]:
        shutil.copy(path, cases / path.name)
    (cases / "acme_churn.yaml").write_text(yaml.safe_dump(acme_churn()))
    return cases


@pytest.fixture(scope="module")
def ucs(cases_dir) -> dict:
    from pavedml.config import load_use_case

    return {name: load_use_case(cases_dir / f"{name}.yaml") for name in USE_CASES}


@pytest.fixture(scope="module")
def bag(cases_dir):
    from airflow.dag_processing.dagbag import DagBag

    from pavedml.settings import get_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("PAVEDML_USE_CASES_DIR", str(cases_dir))
    get_settings.cache_clear()
    try:
        yield DagBag(dag_folder=str(REPO / "dags"))
    finally:
        mp.undo()
        get_settings.cache_clear()


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


def test_no_import_errors(bag):
    assert bag.import_errors == {}


def test_exactly_the_expected_dag_ids(bag):
    """Every DAG in the bag is one the parametrized checks below visit, and each of those exists."""
    assert sorted(bag.dags) == sorted(DAG_IDS)


def _split(dag_id: str) -> tuple[str, str]:
    pipeline = next(p for p in PIPELINES if dag_id.endswith(f"_{p}"))
    return dag_id[: -len(pipeline) - 1], pipeline


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_hygiene(bag, ucs, dag_id):
    name, pipeline = _split(dag_id)
    assert hygiene_problems(bag.dags[dag_id], ucs[name], pipeline) == []


def test_the_hygiene_check_catches_each_problem(ucs):
    """A DAG that breaks every rule is reported on every count (the check above can fail)."""
    from datetime import datetime

    from airflow.sdk import DAG

    from pavedml.airflow.factory import step_argv
    from pavedml.airflow.operators import StepOperator

    acme = ucs["acme_churn"]
    with DAG("acme_churn_feature_pipeline", schedule=None, start_date=datetime(2025, 1, 1), tags=["pavedml"],
             doc_md="what it does", default_args={"owner": "ml-platform", "retries": 1}) as dag:
        StepOperator(task_id="ingest_raw_batch", argv=step_argv("ingest_raw_batch", "telco_churn"),
                     step="ingest_raw_batch", use_case="telco_churn", runtime="local")
    problems = "\n".join(hygiene_problems(dag, acme, "feature_pipeline"))
    for expected in ("doc_md", "tags", "DAG owner 'ml-platform'", "retries=1", "ingest_raw_batch owner",
                     "runs ['ingest_raw_batch', '--use-case', 'telco_churn']", "no deadline alert"):
        assert expected in problems, (expected, problems)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_task_graph(bag, ucs, dag_id):
    name, pipeline = _split(dag_id)
    dag = bag.dags[dag_id]
    assert {t.task_id: set(t.downstream_task_ids) for t in dag.tasks} == expected_tasks(ucs[name], pipeline)


@pytest.mark.parametrize("use_case", USE_CASES)
def test_sensors_wait_as_their_use_case_says(bag, ucs, use_case):
    """Both waits free their worker slot between pokes (reschedule) and take poke interval and
    timeout from their use case; a missing batch fails (retried: each retry looks once more; the final
    failure alerts), a missing scoring window skips."""
    from pavedml.airflow.sensors import PsiDriftSensor, StepSensor

    uc = ucs[use_case]
    batch = bag.dags[uc.dag_id("feature_pipeline")].get_task("wait_for_batch")
    drift = bag.dags[uc.dag_id("drift_monitor")].get_task("wait_for_drift")
    assert isinstance(batch, StepSensor) and batch.step == "check_landing_batch"
    assert (batch.mode, batch.poke_interval, batch.timeout, batch.soft_fail, batch.retry_on_timeout) == (
        "reschedule", uc.batches.poke_interval_seconds, uc.batches.wait_timeout_seconds, False, True)
    assert batch.retries == 2
    assert isinstance(drift, PsiDriftSensor) and drift.step == "check_drift"
    assert (drift.mode, drift.poke_interval, drift.timeout, drift.soft_fail, drift.retry_on_timeout) == (
        "reschedule", uc.drift.poke_interval_seconds, uc.drift.sensor_timeout_minutes * 60, True, False)


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


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_every_trigger_form_field_has_a_title_and_an_explanation(bag, dag_id):
    """The trigger dialog shows each Param's title (not its key) and its description."""
    dag = bag.dags[dag_id]
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
