"""build_features: validated raw snapshot -> the interval's offline feature partition.

Deterministic: the same snapshot gives the same rows in the same order. The partition is written
to a temporary folder and swapped in whole, so a killed step leaves the previous partition (or
none) and never a partial one. Features are checked (no NaN/inf where the config requires a value)
before anything is written.
"""

from __future__ import annotations

import importlib
import logging

from pavedml import storage
from pavedml.config import UseCase
from pavedml.context import StepContext
from pavedml.errors import ConfigError, FeatureCheckError
from pavedml.layout import PART_FILE, SOURCE_FILE
from pavedml.results import FeatureResult

log = logging.getLogger(__name__)


def load_hook(target: str):
    module, _, func = target.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"features.derived_hook {target!r} cannot be loaded: {exc}") from None


def compute_features(df, uc: UseCase):
    """Pure feature engineering from a normalized raw frame (keeps key and event_timestamp, and the
    use case's evaluation-only columns, :attr:`pavedml.config.UseCase.evaluation_columns`)."""
    import numpy as np
    import pandas as pd

    key = uc.entity.key
    out = df.copy()
    if uc.features.derived_hook:
        out = load_hook(uc.features.derived_hook)(out)
        missing = [c for c in uc.features.derived if c not in out.columns]
        if missing:
            raise FeatureCheckError(f"derived_hook {uc.features.derived_hook} did not produce {', '.join(missing)}")
    for col, value in uc.features.fill_null.items():
        out[col] = out[col].fillna(value)
    cols = [key, "event_timestamp", *uc.feature_columns, *uc.evaluation_columns]
    out = out[cols]
    for col in uc.numeric_features:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    # evaluation-only columns (fairness groups, slices) are group labels: text like categoricals
    for col in [*uc.categorical_features, *uc.evaluation_columns]:
        out[col] = out[col].astype("string").fillna("__missing__").astype(object)
    out[key] = out[key].astype(str)
    out = out.sort_values(key, kind="stable").reset_index(drop=True)
    problems = []
    for col in uc.features.non_null:
        values = out[col]
        bad = values.isna()
        if col in uc.numeric_features:
            bad |= ~np.isfinite(values.to_numpy(dtype="float64", na_value=np.nan))
        if bad.any():
            examples = out.loc[bad, key].head(5).tolist()
            problems.append(f"{col}: {int(bad.sum())} NaN/inf values (e.g. {key} {examples})")
    if problems:
        raise FeatureCheckError("features violate non_null: " + "; ".join(problems),
                                details={"evidence": problems,
                                         "next": "fix the derived-feature hook or features.fill_null, "
                                                 "then clear build_features"})
    return out


def remove_reader_visible_leftovers(root) -> list[str]:
    """Temporary folders an earlier version wrote (and a kill left) inside a dataset root: Feast's
    offline store reads hidden folders too, so one partial file there broke every later read.
    Nothing writes temporaries there any more (they are staged in ``Layout.staging``)."""
    import shutil
    from pathlib import Path

    removed = []
    root = Path(root)
    for entry in sorted(root.iterdir()) if root.is_dir() else ():
        target = root / entry.name.removeprefix(".old-").rsplit("-", 1)[0]
        if entry.name.startswith(".old-") and entry.is_dir() and target.name.startswith("dt=") and not target.exists():
            entry.rename(target)  # killed between moving the partition aside and the new one in
            log.warning("restored %s from %s (a write killed between its two renames)", target, entry.name)
            continue
        if entry.name.startswith((".tmp-", ".old-")):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry.name)
    if removed:
        log.warning("removed %d leftover temporary folder(s) of killed writes from %s: %s", len(removed), root,
                    ", ".join(removed))
    return removed


def build_features(ctx: StepContext) -> FeatureResult:
    import pandas as pd

    from pavedml.steps.ingest import latest_snapshot
    from pavedml.steps.validation import require_validated

    ds = ctx.ds_iso
    sha, snapshot = latest_snapshot(ctx)
    require_validated(ctx, sha)
    features = compute_features(pd.read_parquet(snapshot), ctx.use_case)
    partition = ctx.layout.features_partition(ds)
    remove_reader_visible_leftovers(ctx.layout.features_root)
    with storage.atomic_dir(partition, staging=ctx.layout.staging) as tmp:
        features.to_parquet(tmp / PART_FILE, index=False)
        storage.write_json(str(tmp / SOURCE_FILE), {"sha256": sha, "rows": len(features), "dag_run": ctx.run_id})
    log.info("wrote %d feature rows to %s", len(features), partition)
    return FeatureResult(step="build_features", use_case=ctx.use_case.name, ds=ds, sha256=sha,
                         partition=str(partition), rows=len(features), columns=features.shape[1])
