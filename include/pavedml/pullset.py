"""What a step pulls from the lake: its interval's partitions and what its readers need, never the
whole history (production profile, :mod:`pavedml.lake`).

A use case's tree holds two kinds of files:

* **dated partitions**, the bulk, growing by a day at a time: any folder named ``dt=YYYY-MM-DD``
  (``raw/``, ``validation/``, ``validation/labels/``, ``quarantine/``, ``features/``,
  ``predictions/``, ``served/``, ``drift/``, ``performance/``), and **training runs**
  (``training/<run key>/``, one per training DAG run);
* **everything else**: small records that steps on any host read, change and rewrite (the PSI and
  performance histories, the retrain requests, the labels index, the holdouts cache, the
  promotion ledger, live-evidence decisions). These are always pulled.

A step pulls the dated partitions of the days it reads and the training run it belongs to; the
days come from the same configuration its code reads them by:

========================================  ==========================================================
step                                      days pulled (D = ds)
========================================  ==========================================================
ingest, validate, build/materialize       D (every collection)
features, score, request_retraining
build_training_set                        features, labels cache: D - (training window +
                                          features.ttl_days + label delay) .. D; its training run
train/evaluate/promote_challenger         none (its training run only)
rollback_model                            none
check_drift                               features, predictions, served, drift, labels cache: its
                                          window, the reference period (rolling or seasonal), the
                                          seasonal period of its notes, the label delay before them
measure_performance,                      predictions, served, performance, labels cache:
request_performance_retraining            D - performance.lookback_days .. D
judge_live_evidence                       as measure_performance, D - (label delay + 366) .. D
========================================  ==========================================================

A day a step did not pull does not exist in its working copy, and for several readers a missing
partition is not an error but a different result (a training label without features is dropped;
a reference period with fewer rows judges nothing). So the selection is enforced where paths are
made: while a step runs, :class:`pavedml.layout.Layout` raises :class:`OutsidePullSetError` for a
dated partition or a training run outside the step's pull set (a bug in this table, caught by
the tests that run every step against a lake, never a silently different result).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from pavedml.layout import PULL_CHECK

if TYPE_CHECKING:
    from pavedml.context import StepContext

_DAY = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
TRAINING = "training"
#: The longest a challenger may wait in shadow: the days pavedml.steps.live judges it on, and pulls.
MAX_SHADOW_DAYS = 366


class OutsidePullSetError(RuntimeError):
    """A step asked for a partition its pull set left out (pavedml.pullset's table is wrong)."""


@dataclass(frozen=True)
class PullSet:
    """The dated partitions (of ``days``, in ``collections``) and the training runs (``runs``) a
    step pulls; None: all of them."""

    step: str
    days: frozenset[str] | None
    runs: frozenset[str] | None
    #: the dated collections (``features``, ``validation/labels``...) its days apply to
    collections: frozenset[str] | None = None

    def wants(self, rel: str) -> bool:
        """Whether the lake object ``rel`` (relative to the use case's prefix) is pulled."""
        parts = rel.split("/")
        for i, part in enumerate(parts[:-1]):
            m = _DAY.match(part)
            if m:
                return ((self.days is None or m.group(1) in self.days)
                        and (self.collections is None or "/".join(parts[:i]) in self.collections))
        if parts[0] == TRAINING and len(parts) > 2:
            return self.runs is None or parts[1] in self.runs
        return True

    def check_day(self, what: str, ds: date | str) -> None:
        day = str(ds)  # as the folder renders it (a date's str is its ISO form)
        if (self.days is not None and day not in self.days) or (self.collections is not None
                                                                and what not in self.collections):
            raise OutsidePullSetError(
                f"{self.step} reads {what}/dt={day}, outside the days it pulled from the lake ({self.describe()}): "
                "a bug in pavedml.pullset (the step's pull set must hold every day it reads)")

    def check_run(self, run_key: str) -> None:
        if self.runs is not None and run_key not in self.runs:
            raise OutsidePullSetError(
                f"{self.step} reads {TRAINING}/{run_key}, outside the training runs it pulled "
                f"({', '.join(sorted(self.runs)) or 'none'}): a bug in pavedml.pullset")

    def describe(self) -> str:
        if self.days is None:
            return "every day"
        if not self.days:
            return "no day"
        first, last = min(self.days), max(self.days)
        of = f" of {', '.join(sorted(self.collections))}" if self.collections is not None else ""
        return f"{len(self.days)} day(s){of}, {first} .. {last}"


EVERYTHING = PullSet("(all)", None, None)

def active() -> PullSet | None:
    """The pull set of the step running in this context (None: no lake, or outside a step)."""
    check = PULL_CHECK.get()
    return check if isinstance(check, PullSet) else None


@contextmanager
def enforced(pull: PullSet) -> Iterator[PullSet]:
    """While the block runs, :class:`pavedml.layout.Layout` refuses what ``pull`` left in the lake."""
    token = PULL_CHECK.set(pull)
    try:
        yield pull
    finally:
        PULL_CHECK.reset(token)


def checked_locally() -> bool:
    """Whether pull sets are enforced without a lake too (``PAVEDML_CHECK_PULL_SETS=1``: the test
    suite sets it, so every step it runs checks this module's table, not only the lake tests)."""
    return os.environ.get("PAVEDML_CHECK_PULL_SETS") == "1"


def _span(end: date, back: int) -> set[str]:
    """``end`` and the ``back`` days before it."""
    return {(end - timedelta(days=i)).isoformat() for i in range(back + 1)}


def _drift_days(ctx: StepContext) -> set[str]:
    from pavedml.drift import drift_window, reference_period

    uc = ctx.use_case
    window = drift_window(ctx.ds, ctx.params.window_days)
    days = set(window)
    if uc.drift.reference != "training":
        days |= set(reference_period(window, uc.drift.reference, uc.drift.reference_days, uc.drift.season_days).days)
    if uc.drift.reference != "seasonal":  # the seasonality notes compare with one season ago
        days |= set(reference_period(window, "seasonal", uc.drift.reference_days, uc.drift.season_days).days)
    # the target check reads labels landed up to label.delay_days after a day (the validation cache
    # of a labels partition is by its landing day)
    labelled = {(date.fromisoformat(d) - timedelta(days=i)).isoformat() for d in days
                for i in range(uc.label.delay_days + 1)}
    return days | labelled


#: The dated collections the steps that look back read (the daily steps pull every collection of their day).
LABELS = frozenset({"validation/labels", "quarantine/labels"})  # the labels' validation cache
TRAINING_READS = frozenset({"features"}) | LABELS
DRIFT_READS = frozenset({"features", "predictions", "served", "drift"}) | LABELS
PERFORMANCE_READS = frozenset({"predictions", "served", "performance"}) | LABELS


def for_step(step: str, ctx: StepContext) -> PullSet:
    """The pull set of ``step`` run with ``ctx`` (see the module's table)."""
    uc, ds = ctx.use_case, ctx.ds
    if step in ("ingest_raw_batch", "validate_raw_batch", "build_features", "materialize_features",
                "score_customers", "request_retraining"):
        return PullSet(step, frozenset(_span(ds, 0)), frozenset())
    if step == "build_training_set":
        back = ctx.params.training_window_days + uc.features.ttl_days + uc.label.delay_days
        return PullSet(step, frozenset(_span(ds, back)), frozenset({ctx.run_key}), TRAINING_READS)
    if step in ("train_challenger", "evaluate_challenger", "promote_challenger"):
        return PullSet(step, frozenset(), frozenset({ctx.run_key}))
    if step == "rollback_model":
        return PullSet(step, frozenset(), frozenset())
    if step == "check_drift":
        return PullSet(step, frozenset(_drift_days(ctx)), frozenset(), DRIFT_READS)
    if step in ("measure_performance", "request_performance_retraining"):
        return PullSet(step, frozenset(_span(ds, uc.performance.lookback_days)), frozenset(), PERFORMANCE_READS)
    if step == "judge_live_evidence":
        return PullSet(step, frozenset(_span(ds, uc.label.delay_days + MAX_SHADOW_DAYS)), frozenset(),
                       PERFORMANCE_READS)
    return PullSet(step, None, None)  # a step not in the table pulls everything (and nothing is refused)
