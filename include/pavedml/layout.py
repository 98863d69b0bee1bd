"""Where every artifact of a use case lives. One place, so paths never drift between steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pavedml import storage
from pavedml.settings import Settings, get_settings


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
    def landing_file(self, dataset: str, ds: str, fmt: str) -> str:
        return storage.join(self.landing, dataset, f"dt={ds}", f"{dataset}.{fmt}")

    def raw_dir(self, ds: str) -> Path:
        return self.root / "raw" / f"dt={ds}"

    def raw_snapshot(self, ds: str, sha: str) -> Path:
        return self.raw_dir(ds) / f"{sha}.parquet"

    def raw_manifest(self, ds: str, sha: str) -> Path:
        return self.raw_dir(ds) / f"{sha}.manifest.json"

    def raw_latest(self, ds: str) -> Path:
        return self.raw_dir(ds) / "LATEST.json"

    def validation_dir(self, ds: str, sha: str) -> Path:
        return self.root / "validation" / f"dt={ds}" / sha

    def quarantine_dir(self, ds: str, sha: str) -> Path:
        return self.root / "quarantine" / f"dt={ds}" / sha

    def labels_validation_dir(self, ds: str, sha: str) -> Path:
        return self.root / "validation" / "labels" / f"dt={ds}" / sha

    def labels_quarantine_dir(self, ds: str, sha: str) -> Path:
        return self.root / "quarantine" / "labels" / f"dt={ds}" / sha

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

    def features_partition(self, ds: str) -> Path:
        return self.features_root / f"dt={ds}"

    @property
    def feast_dir(self) -> Path:
        return self.root / "feast"

    def training_dir(self, run_key: str) -> Path:
        return self.root / "training" / run_key

    @property
    def ledger(self) -> Path:
        return self.root / "registry" / "ledger.jsonl"

    def predictions_partition(self, ds: str) -> Path:
        return self.root / "predictions" / f"dt={ds}"

    @property
    def predictions_root(self) -> Path:
        return self.root / "predictions"

    def drift_dir(self, ds: str) -> Path:
        return self.root / "drift" / f"dt={ds}"

    @property
    def drift_history(self) -> Path:
        return self.root / "drift" / "psi_history.csv"

    @property
    def retrain_requests(self) -> Path:
        return self.root / "drift" / "retrain_requests.jsonl"
