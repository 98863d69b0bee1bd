"""Step credentials kept in Airflow connections (the only part of the step environment contract
that needs Airflow): read when a task or a sensor poke runs its step."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pavedml.settings import Settings


def connection_environment(settings: Settings | None = None, get_connection=None) -> tuple[dict[str, str], dict[str, str]]:
    """(public, private) step variables taken from Airflow connections when the task runs.

    Production keeps the step credentials in Airflow connections (or a secrets backend), not in
    the worker's environment: ``PAVEDML_MLFLOW_CONN_ID`` gives MLFLOW_TRACKING_USERNAME/PASSWORD,
    ``PAVEDML_AWS_CONN_ID`` gives AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL
    from the extra ``endpoint_url``). Airflow masks a fetched connection's password in every log.
    """
    from pavedml.settings import get_settings

    s = settings or get_settings()
    if not (s.mlflow_conn_id or s.aws_conn_id):
        return {}, {}
    if get_connection is None:
        from airflow.sdk import Connection

        get_connection = Connection.get
    public: dict[str, str] = {}
    private: dict[str, str] = {}

    def fetch(conn_id: str, variable: str):
        try:
            return get_connection(conn_id)
        except Exception as exc:  # AirflowNotFoundException and friends: say which setting points where
            from pavedml.errors import ConfigError

            raise ConfigError(f"Airflow connection {conn_id!r} ({variable}) could not be read: {exc}; "
                              f"create it (Admin > Connections) or unset {variable}") from None

    if s.mlflow_conn_id:
        conn = fetch(s.mlflow_conn_id, "PAVEDML_MLFLOW_CONN_ID")
        if conn.login:
            public["MLFLOW_TRACKING_USERNAME"] = conn.login
        if conn.password:
            private["MLFLOW_TRACKING_PASSWORD"] = conn.password
    if s.aws_conn_id:
        conn = fetch(s.aws_conn_id, "PAVEDML_AWS_CONN_ID")
        if conn.login:
            private["AWS_ACCESS_KEY_ID"] = conn.login
        if conn.password:
            private["AWS_SECRET_ACCESS_KEY"] = conn.password
        endpoint = (getattr(conn, "extra_dejson", None) or {}).get("endpoint_url")
        if endpoint:
            public["AWS_ENDPOINT_URL"] = endpoint
    return public, private
