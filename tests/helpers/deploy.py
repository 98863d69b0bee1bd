"""deploy/<name>.py (standard-library scripts, not a package), loaded by path for the tests."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def deploy_module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
