"""``make airflow``: Airflow standalone (UI on http://127.0.0.1:8080) and the MLflow UI
(http://127.0.0.1:5000) over the local profile's stores. Ctrl-C stops both.

Airflow standalone prints the generated admin password on its first start (and keeps it in
``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``): that is the local development
profile's only credential.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def main() -> int:
    from pavedml.settings import get_settings

    s = get_settings()
    env = {**os.environ, "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": "8080"}
    uri = s.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(uri.removeprefix("sqlite:///")), exist_ok=True)
    procs = [
        subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env),
        subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", "5000",
                          "--backend-store-uri", uri, "--default-artifact-root", s.mlflow_artifact_root], env=env),
    ]
    print("Airflow UI: http://127.0.0.1:8080   MLflow UI: http://127.0.0.1:5000   (Ctrl-C stops both)", flush=True)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
