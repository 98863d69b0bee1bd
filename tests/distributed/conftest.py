"""The distributed suite's cluster, started once for its modules (``test_celery``: results
equal one host's; ``test_faults``: faults survived): the production services
(tests.helpers.prodstack, the steps reaching S3 through a fault proxy), the Celery cluster
(tests.helpers.cluster) with two worker hosts, the seeded history, and the workload's runs.
"""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import REPO
from tests.distributed.workload import (
    DAY,
    DAYS,
    SECOND,
    SECOND_RUN_DAYS,
    TRAINING,
    USE_CASE,
    WORKERS,
    entity_keys,
    finished,
    online_rows,
    pulled_predictions,
    seed_history,
    single_host,
    trigger,
    use_env,
    write_use_cases,
)
from tests.helpers.cluster import CeleryCluster
from tests.helpers.prodstack import PIPELINE_USER, ProductionServices


@pytest.fixture(scope="package")
def prod(tmp_path_factory):
    base = tmp_path_factory.mktemp("distributed")
    cases = base / "use_cases"
    write_use_cases(cases)
    single = single_host(base / "single-host", cases)
    # its own PostgreSQL: test_faults stops it under a run, while other tests may use the machine's
    services = ProductionServices(base / "services", s3_proxy=True, own_postgres=True).start()
    stack = None
    try:
        seed_history(services, base / "seed-host", cases)
        step_env = services.step_env(base / "control" / "data")
        stack = CeleryCluster(base / "control", base / "control" / "data", cases, services.dbs["airflow"],
                              # each worker host: an empty working copy, everything comes from the lake
                              {name: services.step_env(base / name / "data") for name in WORKERS},
                              extra_env=step_env, pg=services.pg).start()
        for pipeline in ("feature_pipeline", "training_pipeline", "batch_scoring", "drift_monitor"):
            stack.wait_for_dag(f"{USE_CASE}_{pipeline}")
        stack.wait_for_dag(f"{SECOND}_feature_pipeline")
        # the steps' MLflow password lives only here, in an Airflow connection (stored encrypted)
        stack.api("POST", "/connections", {"connection_id": "pavedml_mlflow", "conn_type": "http",
                                           "login": PIPELINE_USER, "password": services.pipeline_password})
        dag, second = f"{USE_CASE}_feature_pipeline", f"{SECOND}_feature_pipeline"
        started = [trigger(stack, dag, ds, wait=False)["dag_run_id"] for ds in DAYS]  # at once: both workers busy
        started_second = [trigger(stack, second, ds, wait=False)["dag_run_id"] for ds in SECOND_RUN_DAYS]  # beside them
        runs = {"features": {ds: finished(stack, dag, run_id) for ds, run_id in zip(DAYS, started, strict=True)},
                "second": {ds: finished(stack, second, run_id)
                           for ds, run_id in zip(SECOND_RUN_DAYS, started_second, strict=True)}}
        runs["training"] = trigger(stack, f"{USE_CASE}_training_pipeline", DAY, TRAINING)
        runs["scoring"] = trigger(stack, f"{USE_CASE}_batch_scoring", DAY)
        runs["drift"] = trigger(stack, f"{USE_CASE}_drift_monitor", DAY)
        mp = use_env({**step_env, "PAVEDML_USE_CASES_DIR": str(cases)})
        try:
            online = online_rows(entity_keys(pulled_predictions(services, base / "check")))
            second_online = online_rows(list(single["second_online"]), SECOND)
        finally:
            mp.undo()
        yield {"services": services, "stack": stack, "runs": runs, "single": single, "online": online,
               "second_online": second_online, "base": base}
    finally:
        if stack is not None:
            stack.stop()
        services.stop()


@pytest.fixture(scope="package", autouse=True)
def _keep_logs_on_failure(request, tmp_path_factory):
    yield
    if request.session.testsfailed:
        target = REPO / "test-artifacts" / "distributed"
        base = tmp_path_factory.getbasetemp()
        for log in base.rglob("*.log"):
            rel = log.relative_to(base)
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, target / rel)
        print(f"distributed suite logs copied to {target}")

