"""Create (or re-key) the MLflow user the pipeline steps log in as. Idempotent; one-shot.

Run by the `mlflow-init` compose service with the admin credentials, after the MLflow server is
healthy. The steps then hold only this non-admin user (MLFLOW_TRACKING_USERNAME/PASSWORD of the
worker): it owns, hence manages, the experiments and registered models it creates, and cannot
manage users or other people's resources.

Environment: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (the admin),
PIPELINE_MLFLOW_USERNAME, PIPELINE_MLFLOW_PASSWORD.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request

WAIT_SECONDS = 180


def wait_healthy(uri: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"MLflow at {uri} did not become healthy within {WAIT_SECONDS}s")
        time.sleep(3)


def main() -> int:
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    uri = os.environ["MLFLOW_TRACKING_URI"]
    username = os.environ["PIPELINE_MLFLOW_USERNAME"]
    password = os.environ["PIPELINE_MLFLOW_PASSWORD"]
    admin = os.environ["MLFLOW_TRACKING_USERNAME"]
    if username == admin:
        raise SystemExit("the pipeline user must not be the MLflow admin")
    wait_healthy(uri)
    client = AuthServiceClient(uri)
    try:
        client.create_user(username, password)
        print(f"created MLflow user {username!r}", file=sys.stderr)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_user_password(username, password)
        print(f"MLflow user {username!r} exists: password set from the environment", file=sys.stderr)
    if client.get_user(username).is_admin:
        client.update_user_admin(username, False)
        print(f"revoked admin rights of {username!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
