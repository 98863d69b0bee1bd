"""Process-wide settings, read from environment variables with embedded local defaults.

Nothing is read at import time: call :func:`get_settings` (cached) or :meth:`Settings.from_env`.
The local defaults give a one-laptop setup (SQLite, local folders); the production profile sets
the same variables to PostgreSQL, Redis, an MLflow server and S3.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: Use-case files shipped with the package (``include/use_cases`` in a checkout).
DEFAULT_USE_CASES_DIR = PACKAGE_DIR.parent / "use_cases"
RUNTIMES = ("local", "docker")

#: Environment variables a step process may receive. Everything else (Airflow's database URL,
#: Fernet key, JWT secret, any AIRFLOW__* setting) is never handed to a step.
STEP_ENV_PREFIXES = ("PAVEDML_", "MLFLOW_TRACKING_", "AWS_", "FEAST_")
STEP_ENV_NAMES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TZ", "LANG")
#: Fixed values every step gets: quiet progress bars, no telemetry.
STEP_ENV_FIXED = {
    "TQDM_DISABLE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "FEAST_USAGE": "False",
    "PYTHONUNBUFFERED": "1",
}
#: Names that carry secrets: passed to containers as private (unrendered) environment.
SECRET_MARKERS = ("PASSWORD", "SECRET", "TOKEN", "_KEY", "CREDENTIAL")
#: Settings whose value is a URL that carries a password: private too, whatever their name says.
SECRET_NAMES = ("PAVEDML_LOCK_URL",)
FORBIDDEN_STEP_ENV = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "_AIRFLOW_")


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return upper in SECRET_NAMES or any(marker in upper for marker in SECRET_MARKERS)


#: Default of ``PAVEDML_TRACKING_WAIT_SECONDS`` (Settings.tracking_wait_seconds).
TRACKING_WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class Settings:
    """Typed settings. Field docs name the environment variable that sets each one."""

    data_root: Path = field(metadata={"env": "PAVEDML_DATA_ROOT"})
    landing_uri: str = field(metadata={"env": "PAVEDML_LANDING_URI"})
    #: Production: ``s3://bucket/prefix`` holding every use case's data; the data root is then a
    #: working copy each step pulls before and pushes after it (see pavedml.lake).
    lake_uri: str = field(metadata={"env": "PAVEDML_LAKE_URI"})
    use_cases_dir: Path = field(metadata={"env": "PAVEDML_USE_CASES_DIR"})
    mlflow_tracking_uri: str = field(metadata={"env": "MLFLOW_TRACKING_URI"})
    mlflow_artifact_root: str = field(metadata={"env": "PAVEDML_MLFLOW_ARTIFACT_ROOT"})
    #: Where people open MLflow (links from Airflow tasks to model versions).
    mlflow_ui_url: str = field(metadata={"env": "PAVEDML_MLFLOW_UI_URL"})
    feast_repo: Path = field(metadata={"env": "PAVEDML_FEAST_REPO"})
    feast_registry: str = field(metadata={"env": "PAVEDML_FEAST_REGISTRY"})
    feast_online_store: str = field(metadata={"env": "PAVEDML_FEAST_ONLINE_STORE"})
    runtime: str = field(metadata={"env": "PAVEDML_RUNTIME"})
    image: str = field(metadata={"env": "PAVEDML_IMAGE"})
    docker_network: str = field(metadata={"env": "PAVEDML_DOCKER_NETWORK"})
    docker_url: str = field(metadata={"env": "PAVEDML_DOCKER_URL"})
    #: A named volume (or host folder) mounted at the data root in every task container.
    docker_data_volume: str = field(metadata={"env": "PAVEDML_DOCKER_DATA_VOLUME"})
    alerts_file: Path = field(metadata={"env": "PAVEDML_ALERTS_FILE"})
    #: Comma-separated addresses; when set, alerts are also e-mailed through Airflow's SmtpNotifier.
    alert_email_to: str = field(metadata={"env": "PAVEDML_ALERT_EMAIL_TO"})
    #: The Airflow connection (conn type smtp) the e-mail alerts go through.
    alert_smtp_conn_id: str = field(metadata={"env": "PAVEDML_ALERT_SMTP_CONN_ID"})
    python: str = field(metadata={"env": "PAVEDML_PYTHON"})
    #: Airflow connection (login/password) holding the MLflow credentials the steps use; read by
    #: the task when it starts and handed to the step as private environment. Empty: the worker's
    #: own MLFLOW_TRACKING_USERNAME/PASSWORD, if any.
    mlflow_conn_id: str = field(metadata={"env": "PAVEDML_MLFLOW_CONN_ID"})
    #: Airflow connection (login = access key id, password = secret key, extra endpoint_url) for
    #: S3; empty: the worker's own AWS_* variables.
    aws_conn_id: str = field(metadata={"env": "PAVEDML_AWS_CONN_ID"})
    #: PostgreSQL URL (``postgresql://user:password@host/db``, a SQLAlchemy ``+psycopg2`` form is
    #: accepted) of the lock server every host shares: champion moves take an advisory lock there.
    #: Empty: a file lock in the data root, safe on one host only (pavedml.steps.registry).
    lock_url: str = field(default="", metadata={"env": "PAVEDML_LOCK_URL"})
    #: How long a step waits, when it starts, for an MLflow tracking server that does not answer
    #: (a server restarting) before it fails with ``tracking_unavailable`` and leaves the rest to
    #: the task's retries; 0 fails at once.
    tracking_wait_seconds: float = field(default=TRACKING_WAIT_SECONDS,
                                         metadata={"env": "PAVEDML_TRACKING_WAIT_SECONDS"})
    #: Registry events (registered, promoted, rejected, rolled back, approval requested/given) are
    #: posted, from the worker, through the Airflow connection of each id set: a Slack incoming
    #: webhook (conn type ``slackwebhook``, apache-airflow-providers-slack's notifier) and a generic
    #: JSON webhook (Teams, others); each connection's password is the webhook URL. Empty: not posted.
    events_slack_conn_id: str = field(default="", metadata={"env": "PAVEDML_EVENTS_SLACK_CONN_ID"})
    events_webhook_conn_id: str = field(default="", metadata={"env": "PAVEDML_EVENTS_WEBHOOK_CONN_ID"})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_root = Path(env.get("PAVEDML_DATA_ROOT") or Path.home() / ".pavedml").expanduser().resolve()
        runtime = env.get("PAVEDML_RUNTIME", "local")
        if runtime not in RUNTIMES:
            from pavedml.errors import ConfigError

            raise ConfigError(f"PAVEDML_RUNTIME={runtime!r} is not one of {', '.join(RUNTIMES)}")
        return cls(
            data_root=data_root,
            landing_uri=env.get("PAVEDML_LANDING_URI") or str(data_root / "landing"),
            lake_uri=env.get("PAVEDML_LAKE_URI", "").rstrip("/"),
            use_cases_dir=Path(env.get("PAVEDML_USE_CASES_DIR") or DEFAULT_USE_CASES_DIR),
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_root / 'mlflow' / 'mlflow.db'}",
            mlflow_ui_url=strip_userinfo(env.get("PAVEDML_MLFLOW_UI_URL") or (
                env["MLFLOW_TRACKING_URI"] if env.get("MLFLOW_TRACKING_URI", "").startswith("http")
                else "http://127.0.0.1:5000")),
            mlflow_artifact_root=env.get("PAVEDML_MLFLOW_ARTIFACT_ROOT") or (data_root / "mlflow" / "artifacts").as_uri(),
            feast_repo=Path(env.get("PAVEDML_FEAST_REPO") or PACKAGE_DIR.parent.parent / "feature_repo"),
            feast_registry=env.get("PAVEDML_FEAST_REGISTRY", ""),
            feast_online_store=env.get("PAVEDML_FEAST_ONLINE_STORE", ""),
            runtime=runtime,
            image=env.get("PAVEDML_IMAGE", "pavedml-task:dev"),
            docker_network=env.get("PAVEDML_DOCKER_NETWORK", "host"),
            docker_url=env.get("PAVEDML_DOCKER_URL", "unix://var/run/docker.sock"),
            docker_data_volume=env.get("PAVEDML_DOCKER_DATA_VOLUME", ""),
            alerts_file=Path(env.get("PAVEDML_ALERTS_FILE") or data_root / "alerts.jsonl"),
            alert_email_to=env.get("PAVEDML_ALERT_EMAIL_TO", ""),
            alert_smtp_conn_id=env.get("PAVEDML_ALERT_SMTP_CONN_ID", "smtp_default"),
            events_slack_conn_id=env.get("PAVEDML_EVENTS_SLACK_CONN_ID", "").strip(),
            events_webhook_conn_id=env.get("PAVEDML_EVENTS_WEBHOOK_CONN_ID", "").strip(),
            python=env.get("PAVEDML_PYTHON", "python"),
            mlflow_conn_id=env.get("PAVEDML_MLFLOW_CONN_ID", ""),
            aws_conn_id=env.get("PAVEDML_AWS_CONN_ID", ""),
            lock_url=env.get("PAVEDML_LOCK_URL", "").strip(),
            tracking_wait_seconds=_seconds(env, "PAVEDML_TRACKING_WAIT_SECONDS", TRACKING_WAIT_SECONDS),
        )

    @classmethod
    def env_names(cls) -> list[str]:
        return [f.metadata["env"] for f in fields(cls)]


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        from pavedml.errors import ConfigError

        raise ConfigError(f"{name}={raw!r}: expected a number of seconds >= 0")
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()


def step_environment(env: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """The environment contract of a step process, identical for every runtime.

    Returns ``(public, private)``: ``private`` holds the variables whose names mark a secret;
    neither is a template field, so the UI never renders them; every runner sets both in the step's
    environment (:mod:`pavedml.airflow.runners`). Airflow's own settings and secrets never cross.
    """
    env = os.environ if env is None else env
    public: dict[str, str] = {}
    private: dict[str, str] = {}
    for name, value in env.items():
        if name.startswith(FORBIDDEN_STEP_ENV):
            continue
        if name.startswith(STEP_ENV_PREFIXES) or name in STEP_ENV_NAMES:
            (private if is_secret_name(name) else public)[name] = value
    public.update(STEP_ENV_FIXED)
    return dict(sorted(public.items())), dict(sorted(private.items()))


def strip_userinfo(url: str) -> str:
    """``url`` without ``user:password@``: a link shown in the UI never carries credentials (the
    browser signs in to the MLflow UI itself)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
