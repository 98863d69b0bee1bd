"""Where every artifact of a use case lives, down to the file name. One place, so paths never
drift between steps. Days (``ds``) are dates or ``YYYY-MM-DD`` strings: both render as ``dt=YYYY-MM-DD``.

A dataset written atomically (a folder staged, then renamed: :func:`pavedml.storage.atomic_dir`)
names its files by the constants below inside the staging folder; readers use the methods.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

from pavedml import storage
from pavedml.settings import Settings, get_settings

Day = date | str

#: The data file of a features or predictions partition.
PART_FILE = "part-0.parquet"
#: A features partition's record of the raw snapshot it was built from (its sha256).
SOURCE_FILE = "_SOURCE.json"
#: A predictions partition's record of the model version that scored it.
SCORED_FILE = "_SCORED.json"
#: A training run's manifest (rows, digests, lineage) beside its split files.
DATASET_FILE = "dataset.json"
#: The promotion decision of a training run (machine) and its readable page.
DECISION_FILE, DECISION_PAGE = "decision.json", "decision.md"
#: The model card of the version a training run registered (pavedml.modelcard), beside its decision.
CARD_MD, CARD_HTML = "model_card.md", "model_card.html"
#: A validation's result (GX run), in the validation folder.
VALIDATION_RESULT = "result.json"
#: Why a batch was quarantined, in its quarantine folder.
QUARANTINE_REASON = "reason.json"
#: The promotion ledger's readable view, relative to the use case's root, and the folder of its
#: entry files beside it (:mod:`pavedml.ledger`).
LEDGER_VIEW = "registry/ledger.jsonl"
LEDGER_ENTRIES = "registry/ledger"
#: A drift check's files, in ``drift/dt=<ds>/``.
DRIFT_REPORT, PSI_TABLE, EVIDENTLY_REPORT = "report.json", "psi_table.txt", "evidently.html"
#: The PSI history of every drift check (``drift/``) and its plot.
PSI_HISTORY, PSI_HISTORY_PLOT = "psi_history.csv", "psi_history.png"
#: Realized performance: one day's record in ``performance/dt=<ds>/``, the history and its plot in ``performance/``.
PERFORMANCE_DAY, PERFORMANCE_HISTORY, PERFORMANCE_PLOT = "metrics.json", "history.csv", "history.png"


class PullCheck(Protocol):
    """What the running step pulled from the lake (a :class:`pavedml.pullset.PullSet`)."""

    def check_day(self, what: str, ds: Day) -> None: ...

    def check_run(self, run_key: str) -> None: ...


#: Set while a step runs (pavedml.pullset.enforced): every dated partition and training run path
#: made here is checked against it, since one the step did not pull would read as missing.
PULL_CHECK: ContextVar[PullCheck | None] = ContextVar("pavedml_pull_check", default=None)


def _pulled(what: str, ds: Day) -> Day:
    """``ds``, once checked against the running step's pull set."""
    check = PULL_CHECK.get()
    if check is not None:
        check.check_day(what, ds)
    return ds


def split_file(split: str) -> str:
    """The file of one split (``train``, ``validation``, ``holdout``) in a training run's folder."""
    return f"{split}.parquet"


@dataclass(frozen=True)
class Layout:
    use_case: str
    root: Path
    landing: str

    @classmethod
    def for_use_case(cls, name: str, settings: Settings | None = None) -> Layout:
        s = settings or get_settings()
        return cls(use_case=name, root=s.data_root / name, landing=storage.join(s.landing_uri, name))

    # landing zone (written by upstream systems / the simulator; never modified by the pipeline)
    def landing_file(self, dataset: str, ds: Day, fmt: str) -> str:
        return storage.join(self.landing, dataset, f"dt={ds}", f"{dataset}.{fmt}")

    def raw_dir(self, ds: Day) -> Path:
        return self.root / "raw" / f"dt={_pulled('raw', ds)}"

    def raw_snapshot(self, ds: Day, sha: str) -> Path:
        return self.raw_dir(ds) / f"{sha}.parquet"

    def raw_manifest(self, ds: Day, sha: str) -> Path:
        return self.raw_dir(ds) / f"{sha}.manifest.json"

    def raw_latest(self, ds: Day) -> Path:
        return self.raw_dir(ds) / "LATEST.json"

    def validation_dir(self, ds: Day, sha: str) -> Path:
        return self.root / "validation" / f"dt={_pulled('validation', ds)}" / sha

    def validation_result(self, ds: Day, sha: str) -> Path:
        return self.validation_dir(ds, sha) / VALIDATION_RESULT

    def quarantine_dir(self, ds: Day, sha: str) -> Path:
        return self.root / "quarantine" / f"dt={_pulled('quarantine', ds)}" / sha

    def labels_validation_dir(self, ds: Day, sha: str) -> Path:
        return self.root / "validation" / "labels" / f"dt={_pulled('validation/labels', ds)}" / sha

    def labels_quarantine_dir(self, ds: Day, sha: str) -> Path:
        return self.root / "quarantine" / "labels" / f"dt={_pulled('quarantine/labels', ds)}" / sha

    @property
    def quarantine_root(self) -> Path:
        return self.root / "quarantine"

    @property
    def staging(self) -> Path:
        """Temporary folders of writes into dataset roots that readers list (features, predictions):
        same file system as the data, outside every folder a reader looks in."""
        return self.root / ".tmp-staging"

    @property
    def features_root(self) -> Path:
        return self.root / "features"

    def features_partition(self, ds: Day) -> Path:
        return self.features_root / f"dt={_pulled('features', ds)}"

    def features_file(self, ds: Day) -> Path:
        return self.features_partition(ds) / PART_FILE

    def features_source(self, ds: Day) -> Path:
        return self.features_partition(ds) / SOURCE_FILE

    @property
    def feast_dir(self) -> Path:
        return self.root / "feast"

    def training_dir(self, run_key: str) -> Path:
        check = PULL_CHECK.get()
        if check is not None:
            check.check_run(run_key)
        return self.root / "training" / run_key

    def training_split(self, run_key: str, split: str) -> Path:
        """``train``, ``validation`` or ``holdout`` of a training run."""
        return self.training_dir(run_key) / split_file(split)

    def training_manifest(self, run_key: str) -> Path:
        return self.training_dir(run_key) / DATASET_FILE

    def decision(self, run_key: str) -> Path:
        return self.training_dir(run_key) / DECISION_FILE

    def decision_page(self, run_key: str) -> Path:
        return self.training_dir(run_key) / DECISION_PAGE

    @property
    def imports_log(self) -> Path:
        """One JSON line per ``import-history`` run that landed files (what, when, which days)."""
        return self.root / "imports.jsonl"

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER_VIEW

    @property
    def ledger_entries(self) -> Path:
        return self.root / LEDGER_ENTRIES

    def predictions_partition(self, ds: Day) -> Path:
        return self.root / "predictions" / f"dt={_pulled('predictions', ds)}"

    def predictions_scored(self, ds: Day) -> Path:
        return self.predictions_partition(ds) / SCORED_FILE

    @property
    def predictions_root(self) -> Path:
        return self.root / "predictions"

    # -- the online prediction service's log (``python -m pavedml serve``)
    @property
    def served_root(self) -> Path:
        return self.root / "served"

    def served_partition(self, ds: Day) -> Path:
        """One UTC day of served predictions: ``part-<host>-<pid>-<seq>.parquet`` files, each written whole
        (a temporary name starting with ``.`` then a rename), so readers list only complete files."""
        return self.served_root / f"dt={_pulled('served', ds)}"

    def served_files(self, ds: Day) -> list[Path]:
        part = self.served_partition(ds)
        return sorted(p for p in part.glob("part-*.parquet")) if part.is_dir() else []

    def drift_dir(self, ds: Day) -> Path:
        return self.root / "drift" / f"dt={_pulled('drift', ds)}"

    def drift_report(self, ds: Day) -> Path:
        return self.drift_dir(ds) / DRIFT_REPORT

    @property
    def drift_history_plot(self) -> Path:
        return self.drift_history.with_name(PSI_HISTORY_PLOT)

    @property
    def drift_history(self) -> Path:
        return self.root / "drift" / PSI_HISTORY

    @property
    def retrain_requests(self) -> Path:
        return self.root / "drift" / "retrain_requests.jsonl"

    # -- realized performance (predictions joined with their labels once they land)
    def performance_dir(self, ds: Day) -> Path:
        return self.root / "performance" / f"dt={_pulled('performance', ds)}"

    def performance_day(self, ds: Day) -> Path:
        """One scored day's realized metrics per model version (``metrics.json``)."""
        return self.performance_dir(ds) / PERFORMANCE_DAY

    @property
    def performance_history(self) -> Path:
        """Realized metrics per scored day, model version and metric (CSV; a rerun replaces its days)."""
        return self.root / "performance" / PERFORMANCE_HISTORY

    @property
    def performance_plot(self) -> Path:
        return self.root / "performance" / PERFORMANCE_PLOT

    def live_decision(self, challenger_version: str) -> Path:
        """The live-evidence decision record of a challenger in shadow (``require_shadow_days``)."""
        return self.root / "registry" / "live" / f"v{challenger_version}.json"
