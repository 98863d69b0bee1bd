"""Use-case files for tests: a copy of a shipped use case under a name of the test's own."""

from __future__ import annotations

from pathlib import Path


def write_copy(cases: Path, name: str, base: str = "telco_churn", **sections) -> dict:
    """Write ``<cases>/<name>.yaml``: ``base`` renamed (and its registered model), each keyword a
    top-level section merged over the base's. Returns the spec written."""
    import yaml

    from pavedml.settings import DEFAULT_USE_CASES_DIR

    cases.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((DEFAULT_USE_CASES_DIR / f"{base}.yaml").read_text())
    spec["name"] = name
    spec["model"]["registered_name"] = name
    for section, values in sections.items():
        spec[section] = {**spec.get(section, {}), **values} if isinstance(values, dict) else values
    (cases / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return spec
