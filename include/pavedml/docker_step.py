"""The ``docker`` step runtime's operator: DockerOperator plus the credentials the step holds in
Airflow connections (PAVEDML_MLFLOW_CONN_ID, PAVEDML_AWS_CONN_ID), read when the task runs and
passed as private (never rendered) environment. Imported only when PAVEDML_RUNTIME=docker."""

from __future__ import annotations

from typing import Any

from airflow.providers.docker.operators.docker import DockerOperator


class DockerStepOperator(DockerOperator):
    def execute(self, context) -> Any:
        from pavedml.settings import connection_environment

        public, private = connection_environment()
        self.environment = {**(self.environment or {}), **public}
        self.private_environment = {**(self.private_environment or {}), **private}
        return super().execute(context)
