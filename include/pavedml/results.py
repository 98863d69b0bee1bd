"""Small, frozen step results. Each step returns one; the CLI prints ``as_dict()`` as JSON on the
last line of stdout, and that is what lands in XCom. Large data moves by URI, never through here.

Model versions are named one way: ``model_name`` is the registered model, ``model_version`` the
one version a result is about (trained, scored with, checked for drift). A result about two
versions names each by its role: ``challenger_version`` and ``champion_version`` (a decision), or
``from_version`` and ``to_version`` (a move of the champion alias, as its ledger entry records it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepResult:
    step: str
    use_case: str
    ds: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SnapshotResult(StepResult):
    sha256: str
    uri: str
    manifest: str
    rows: int
    source_uri: str
    created: bool


@dataclass(frozen=True)
class ValidationSummary(StepResult):
    sha256: str
    success: bool
    evaluated: int
    failed_errors: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    data_docs: str = ""
    result_json: str = ""


@dataclass(frozen=True)
class FeatureResult(StepResult):
    sha256: str
    partition: str
    rows: int
    columns: int


@dataclass(frozen=True)
class MaterializeResult(StepResult):
    sha256: str
    rows: int
    start: str
    end: str
    feature_view: str
    seconds: float
    asset_extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SimulateResult(StepResult):
    days: list[str]
    landing: str
    injected: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetResult(StepResult):
    path: str
    rows: dict
    digests: dict
    dropped_without_features: int


@dataclass(frozen=True)
class TrainResult(StepResult):
    model_name: str
    model_version: str
    run_id: str
    metrics: dict
    reused: bool
    seconds: dict = field(default_factory=dict)
    #: posted to chat by the worker (pavedml.airflow.events); None for a reused version
    registry_event: dict | None = None


@dataclass(frozen=True)
class PromotionDecision(StepResult):
    outcome: str  # promote | keep_champion | reject
    promote: bool
    reasons: list
    model_name: str
    challenger_version: str
    champion_version: str | None
    metrics: dict
    record: str = ""
    #: the version's model card (HTML)
    card: str = ""


@dataclass(frozen=True)
class PromotionResult(StepResult):
    action: str  # promoted | kept | rolled_back | skipped
    model_name: str
    #: the champion before and after the step (equal when it was kept)
    from_version: str | None
    to_version: str | None
    reason: str
    ledger: str
    card: str = ""
    registry_event: dict | None = None


@dataclass(frozen=True)
class ScoringResult(StepResult):
    model_name: str
    model_version: str
    rows: int
    partition: str
    feature_snapshot_sha256: str
    seconds: float
    #: a classifier's share of rows predicted positive; a regressor's mean predicted value
    positive_rate: float | None = None
    prediction_mean: float | None = None
    #: the challenger scored in shadow on the same rows (None: none in shadow) and the canary rows served its score
    challenger_version: str | None = None
    canary_rows: int = 0
    asset_extra: dict = field(default_factory=dict)
    #: with ``scoring.explain``: the seconds the per-row top features cost
    explain_seconds: float | None = None


@dataclass(frozen=True)
class DriftCheckResult(StepResult):
    status: str  # waiting | no_drift | drift | insufficient_data
    window: list
    model_version: str | None
    data_hash: str
    alerts: list
    warnings: list
    psi: dict
    report: str = ""
    evidently_report: str = ""
    reason: str = ""
    model_name: str = ""
    #: PSI of the model's output (score PSI) on the window against the reference; part of the verdict
    #: only when ``drift.judge_on`` names ``predictions``; None when not checked
    prediction_psi: float | None = None
    #: PSI of the target (the newest labels known by ds) against the reference; part of the verdict
    #: only when ``drift.judge_on`` names ``target``; None when not checked
    target_psi: float | None = None
    #: what the window was compared with: training | rolling | seasonal
    reference: str = "training"
    #: the prediction service's traffic in the window (its log): its status (ok/drift/insufficient_data)
    #: and rows; None without served traffic. Part of the verdict only when ``drift.judge_on`` names ``served``
    served_status: str | None = None
    served_rows: int | None = None


@dataclass(frozen=True)
class LandingCheckResult(StepResult):
    """One look for the interval's landing batch (a poke of ``wait_for_batch``)."""

    status: str  # ready | waiting
    uri: str
    #: waiting only: why, where it looked, what to do, and the reason a timeout reports
    reason: str = ""
    evidence: list = field(default_factory=list)
    next: str = ""
    on_timeout: str = ""


@dataclass(frozen=True)
class RetrainRequestResult(StepResult):
    requested: bool
    reason: str
    window: list
    asset_extra: dict = field(default_factory=dict)
    #: the ``drift_detected`` alert; the task that ran the step records and e-mails it
    #: (:func:`pavedml.airflow.operators.finish_step`): a step never holds the SMTP connection
    alert: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PerformanceResult(StepResult):
    """One run of ``measure_performance``: which scored days were measured (their labels or
    predictions changed), left as they were, or wait for labels; the champion's realized primary
    metric on the newest labelled day."""

    measured: list
    unchanged: list
    #: scored days whose labels have not landed yet
    waiting: list
    primary_metric: str
    model_version: str | None
    value: float | None
    lo: float | None
    hi: float | None
    n: int
    newest_day: str | None
    history: str = ""
    #: the plot (performance/history.png), linked from the task ("Realized performance")
    performance_plot: str = ""
    seconds: float = 0.0


def registry_event(kind: str, ctx, version: str, from_version: str | None, to_version: str | None,
                   summary: str) -> dict:
    """A registry event of the step running in ``ctx`` (a result's ``registry_event``; posted to chat
    by the worker: pavedml.airflow.events)."""
    return {"event": kind, "use_case": ctx.use_case.name, "model": ctx.use_case.model.registered_name,
            "version": str(version), "from_version": from_version, "to_version": to_version,
            "summary": summary[:1000], "dag_id": ctx.dag_id, "run_id": ctx.run_id}
