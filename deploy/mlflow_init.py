"""Prepare MLflow for the pipeline user the steps log in as. Idempotent; one-shot.

Run by the `mlflow-init` compose service with the admin credentials once the MLflow server is
healthy:

1. create the non-admin user (or reset its password to the one in .env);
2. create one experiment per use case (include/use_cases/*.yaml, experiment name = use case
   name) with the server's default artifact location, ``mlflow-artifacts:/<experiment id>``,
   and grant the user MANAGE on it.

Why 2: the basic-auth app authorizes proxied artifact uploads by the experiment id that starts
the artifact path. An experiment created by the steps themselves gets
``<PAVEDML_MLFLOW_ARTIFACT_ROOT>/<name>`` (pavedml.adapters.tracking.setup), a path without an id, which
falls back to default_permission (READ): the uploads of a non-admin user would be refused. The
steps find the experiment by name and use it as it is.

The steps then hold only this user (MLFLOW_TRACKING_USERNAME/PASSWORD of the worker): it
manages its experiments and the registered models it creates, and can neither manage users nor
write to other people's resources.

Environment: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (the admin),
PIPELINE_MLFLOW_USERNAME, PIPELINE_MLFLOW_PASSWORD, PAVEDML_USE_CASES_DIR (image default).
Standard library only (plain REST calls), PyYAML when present.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

WAIT_SECONDS = 300
API = "/api/2.0/mlflow/users"
EXPERIMENTS = "/api/2.0/mlflow/experiments"
GRANT = "/api/3.0/mlflow/users/permissions"


class MlflowError(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(f"HTTP {status}: {body.get('error_code')} {body.get('message', '')}".strip())
        self.status = status
        self.error_code = body.get("error_code")


def call(uri: str, auth: tuple[str, str], method: str, path: str, body: dict | None = None,
         query: dict | None = None) -> dict:
    url = uri.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            payload = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            payload = {"message": raw[:200].decode(errors="replace")}
        raise MlflowError(exc.code, payload) from None
    return json.loads(raw) if raw.strip() else {}


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


def ensure_user(uri: str, admin: tuple[str, str], username: str, password: str) -> str:
    """Create ``username`` or reset its password; make sure it is not an admin. Returns what it did."""
    if username == admin[0]:
        raise SystemExit("the pipeline user must not be the MLflow admin")
    try:
        call(uri, admin, "POST", f"{API}/create", {"username": username, "password": password})
        done = "created"
    except MlflowError as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        call(uri, admin, "PATCH", f"{API}/update-password", {"username": username, "password": password})
        done = "password reset"
    user = call(uri, admin, "GET", f"{API}/get", query={"username": username}).get("user", {})
    if user.get("is_admin"):
        call(uri, admin, "PATCH", f"{API}/update-admin", {"username": username, "is_admin": False})
        done += ", admin rights revoked"
    return done


def use_case_names(folder: Path) -> list[str]:
    names = []
    for path in sorted(folder.glob("*.y*ml")):
        text = path.read_text()
        try:
            import yaml

            name = (yaml.safe_load(text) or {}).get("name")
        except ImportError:
            match = re.search(r"^name:\s*['\"]?([A-Za-z0-9_.-]+)", text, re.MULTILINE)
            name = match.group(1) if match else None
        if name:
            names.append(str(name))
    return names


def ensure_experiment(uri: str, admin: tuple[str, str], username: str, name: str) -> str:
    """The experiment ``name`` with an id-based artifact location, managed by ``username``."""
    try:
        exp_id = call(uri, admin, "POST", f"{EXPERIMENTS}/create", {"name": name})["experiment_id"]
        done = "created"
    except MlflowError as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        exp = call(uri, admin, "GET", f"{EXPERIMENTS}/get-by-name", query={"experiment_name": name})["experiment"]
        exp_id, done = exp["experiment_id"], "exists"
        location = exp.get("artifact_location", "")
        if not re.match(rf"^mlflow-artifacts:/+{exp_id}(/|$)", location):
            print(f"mlflow-init: WARNING experiment {name!r} stores artifacts at {location}: proxied uploads "
                  f"there are authorized by default_permission only (see deploy/mlflow_init.py)", file=sys.stderr)
    grant = {"username": username, "resource_type": "experiment", "resource_id": exp_id, "permission": "MANAGE"}
    try:
        call(uri, admin, "POST", f"{GRANT}/grant", grant)
    except MlflowError as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        call(uri, admin, "POST", f"{GRANT}/revoke", {k: grant[k] for k in ("username", "resource_type", "resource_id")})
        call(uri, admin, "POST", f"{GRANT}/grant", grant)
    return f"{done} (id {exp_id}), MANAGE granted to {username!r}"


def main() -> int:
    uri = os.environ["MLFLOW_TRACKING_URI"]
    admin = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
    username = os.environ["PIPELINE_MLFLOW_USERNAME"]
    wait_healthy(uri)
    done = ensure_user(uri, admin, username, os.environ["PIPELINE_MLFLOW_PASSWORD"])
    print(f"mlflow-init: user {username!r}: {done}", file=sys.stderr)
    folder = Path(os.environ.get("PAVEDML_USE_CASES_DIR", "/opt/pavedml/include/use_cases"))
    names = use_case_names(folder)
    if not names:
        raise SystemExit(f"mlflow-init: no use case found in {folder}")
    for name in names:
        print(f"mlflow-init: experiment {name!r}: {ensure_experiment(uri, admin, username, name)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
