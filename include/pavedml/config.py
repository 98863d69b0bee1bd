"""Use-case configuration: one YAML file per use case, validated on load.

Errors name the file and the key path (``model.params.max_depthh``) and say what was expected.
Loading is cheap (PyYAML + pydantic, no pandas) because DAG files call it at parse time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pavedml.errors import ConfigError

PIPELINES = ("feature_pipeline", "training_pipeline", "batch_scoring", "drift_monitor", "performance_monitor",
             "model_rollback")

TASKS = ("binary_classification", "regression")

#: Hyper-parameters each model family accepts, per task (the estimator's get_params names; a unit
#: test keeps these lists equal to scikit-learn's so the DAG files never import sklearn to validate).
FAMILIES_BY_TASK: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "binary_classification": {
        "hist_gradient_boosting": (
            "sklearn.ensemble:HistGradientBoostingClassifier",
            ("categorical_features", "class_weight", "early_stopping", "interaction_cst", "l2_regularization",
             "learning_rate", "loss", "max_bins", "max_depth", "max_features", "max_iter", "max_leaf_nodes",
             "min_samples_leaf", "monotonic_cst", "n_iter_no_change", "random_state", "scoring", "tol",
             "validation_fraction", "verbose", "warm_start"),
        ),
        "random_forest": (
            "sklearn.ensemble:RandomForestClassifier",
            ("bootstrap", "ccp_alpha", "class_weight", "criterion", "max_depth", "max_features", "max_leaf_nodes",
             "max_samples", "min_impurity_decrease", "min_samples_leaf", "min_samples_split",
             "min_weight_fraction_leaf", "monotonic_cst", "n_estimators", "n_jobs", "oob_score", "random_state",
             "verbose", "warm_start"),
        ),
        "logistic_regression": (
            "sklearn.linear_model:LogisticRegression",
            ("C", "class_weight", "dual", "fit_intercept", "intercept_scaling", "l1_ratio", "max_iter",
             "n_jobs", "penalty", "random_state", "solver", "tol", "verbose", "warm_start"),
        ),
    },
    "regression": {
        "hist_gradient_boosting": (
            "sklearn.ensemble:HistGradientBoostingRegressor",
            ("categorical_features", "early_stopping", "interaction_cst", "l2_regularization", "learning_rate",
             "loss", "max_bins", "max_depth", "max_features", "max_iter", "max_leaf_nodes", "min_samples_leaf",
             "monotonic_cst", "n_iter_no_change", "quantile", "random_state", "scoring", "tol",
             "validation_fraction", "verbose", "warm_start"),
        ),
        "random_forest": (
            "sklearn.ensemble:RandomForestRegressor",
            ("bootstrap", "ccp_alpha", "criterion", "max_depth", "max_features", "max_leaf_nodes", "max_samples",
             "min_impurity_decrease", "min_samples_leaf", "min_samples_split", "min_weight_fraction_leaf",
             "monotonic_cst", "n_estimators", "n_jobs", "oob_score", "random_state", "verbose", "warm_start"),
        ),
        "ridge": (
            "sklearn.linear_model:Ridge",
            ("alpha", "copy_X", "fit_intercept", "max_iter", "positive", "random_state", "solver", "tol"),
        ),
    },
}
#: The binary classifiers (kept under its old name: the classification task's families).
MODEL_FAMILIES = FAMILIES_BY_TASK["binary_classification"]
METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "binary_classification": ("roc_auc", "pr_auc", "f1", "precision", "recall", "log_loss", "brier"),
    "regression": ("rmse", "mae", "r2"),
}
METRICS = METRICS_BY_TASK["binary_classification"]
#: The primary metric a use case gets when its file names none.
DEFAULT_PRIMARY_METRIC = {"binary_classification": "roc_auc", "regression": "rmse"}
#: Group metrics the fairness gate can limit (``evaluation.fairness.max_difference``), per task: each is
#: computed per group of a sensitive column with fairlearn's MetricFrame on the holdout, and its spread
#: (largest minus smallest group value) must stay within the limit.
FAIRNESS_METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "binary_classification": ("true_positive_rate", "false_positive_rate", "selection_rate", "accuracy"),
    "regression": ("mean_prediction", "mae"),
}
#: Metrics where lower is better (a floor on one is a ceiling; an uplift is a reduction).
LOWER_IS_BETTER = ("log_loss", "brier", "rmse", "mae")
#: The PSI thresholds a use case gets when its file names none (drift.warn, drift.alert): the one place.
PSI_WARN, PSI_ALERT = 0.1, 0.25
#: Rows below which a drift check refuses to judge (drift.min_samples).
PSI_MIN_SAMPLES = 500
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,40}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    type: Literal["string", "category", "int", "float", "bool", "timestamp"]
    nullable: bool = True
    unique: bool = False
    allowed: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    blank_as_null: bool = False
    max_null_fraction: float | None = Field(default=None, ge=0, le=1)
    severity: Literal["error", "warning"] = "error"


class Expectation(_Strict):
    type: str = Field(pattern=r"^expect_[a-z_]+$")
    kwargs: dict[str, Any] = {}
    severity: Literal["error", "warning"] = "error"


class RowCount(_Strict):
    min: int = Field(default=1, ge=0)
    max: int | None = None


class Schema(_Strict):
    columns: dict[str, ColumnSpec]
    row_count: RowCount = RowCount()
    freshness_days: int | None = Field(default=None, ge=0)
    extra_expectations: list[Expectation] = []


class Entity(_Strict):
    name: str
    key: str


class TimestampColumn(_Strict):
    """Each row's event time comes from this column of the batch (parsed as UTC when it carries no
    zone); every row must fall inside the run's data interval."""

    column: str


#: A bound parameter as SQLAlchemy's text() finds one (a name right before ``::`` is not one).
SQL_PARAM_RE = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
SQL_CAST_RE = re.compile(r"(?<![:\w\\]):(\w+)::")
SQL_PARAMS = ("interval_start", "interval_end", "ds")


class SqlSource(_Strict):
    """The daily batch is the result of a SQL query instead of a landed file. The query is a
    template with bound parameters ``:interval_start``, ``:interval_end`` (UTC timestamps) and
    ``:ds`` (the date), never string formatting. The database URL (SQLAlchemy) is either ``url``
    (without a password: a local socket or trust auth) or read at run time from the environment
    variable ``url_env`` (where a password belongs)."""

    url: str | None = None
    url_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    query: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_url(self) -> SqlSource:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url (no password) or url_env (the environment variable "
                             "holding the SQLAlchemy URL)")
        if self.url is not None:
            from urllib.parse import urlsplit

            try:
                password = urlsplit(self.url).password
            except ValueError as exc:
                raise ValueError(f"url is not a SQLAlchemy URL: {exc}") from None
            from urllib.parse import parse_qs
            from urllib.parse import urlsplit as _split

            query_keys = {k.lower() for k in parse_qs(_split(self.url).query)}
            if password or query_keys & {"password", "passwd", "pwd"}:
                raise ValueError("url holds a password: put the URL in an environment variable and name it "
                                 "in url_env (no secrets in use-case files)")
            if "://" not in self.url:
                raise ValueError(f"url {self.url!r} is not a SQLAlchemy URL (dialect://...)")
        cast = SQL_CAST_RE.search(self.query)
        if cast:
            raise ValueError(f"query: ':{cast.group(1)}::' is a PostgreSQL cast SQLAlchemy cannot bind; write "
                             f"CAST(:{cast.group(1)} AS <type>) instead")
        unknown = sorted(set(SQL_PARAM_RE.findall(self.query)) - set(SQL_PARAMS))
        if unknown:
            raise ValueError(f"query uses unknown parameter(s) {', '.join(':' + u for u in unknown)}; "
                             f"known: {', '.join(':' + p for p in SQL_PARAMS)}")
        return self


class Batches(_Strict):
    dataset: str = "batch"
    format: Literal["csv", "parquet"] = "csv"
    #: ``interval_start`` (every row of a daily snapshot at the interval's start) or ``{column: name}``.
    timestamp: Literal["interval_start"] | TimestampColumn = "interval_start"
    #: A SQL query per run instead of a landed file (see :class:`SqlSource`).
    source: SqlSource | None = None
    wait_timeout_seconds: int = Field(default=0, ge=0)
    poke_interval_seconds: int = Field(default=5, ge=1)
    #: A CSV batch must end with a line break: a file cut mid-row (a partial upload) is refused.
    #: Turn off only for an exporter that never writes the last line break.
    require_final_newline: bool = True


class Label(_Strict):
    """The target. Binary classification: ``positive`` and ``negative`` (a value or a list of
    values each; any other value fails the labels suite and the file is quarantined, never a silent
    negative), or ``threshold`` (a numeric label is positive when ``>= threshold``). Regression: the
    column only (a numeric target)."""

    dataset: str = "labels"
    column: str
    positive: Any = None
    negative: Any = None
    threshold: float | None = None
    delay_days: int = Field(ge=0)

    @model_validator(mode="after")
    def _distinct(self):
        if self.threshold is not None:
            if self.positive is not None or self.negative is not None:
                raise ValueError("give either label.threshold or label.positive/negative, not both")
            return self
        if (self.positive is None) != (self.negative is None):
            raise ValueError("label.positive and label.negative go together (the values of each class)")
        overlap = {str(v) for v in self.positive_values} & {str(v) for v in self.negative_values}
        if overlap:
            raise ValueError(f"label.positive and label.negative share {sorted(overlap)}")
        return self

    @property
    def positive_values(self) -> list:
        return list(self.positive) if isinstance(self.positive, list) else ([] if self.positive is None
                                                                            else [self.positive])

    @property
    def negative_values(self) -> list:
        return list(self.negative) if isinstance(self.negative, list) else ([] if self.negative is None
                                                                            else [self.negative])


class Features(_Strict):
    numeric: list[str]
    categorical: list[str] = []
    fill_null: dict[str, float | str] = {}
    non_null: list[str] = []
    derived_hook: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")
    derived: dict[str, Literal["numeric", "categorical"]] = {}
    #: How old a feature row may be and still serve (Feast FeatureView ttl).
    ttl_days: int = Field(default=30, ge=1)
    #: Rows per online-store write (bounds memory of materialize_features).
    online_write_chunk_rows: int = Field(default=10000, ge=100)


class Split(_Strict):
    holdout_days: int = Field(ge=1)
    validation_days: int = Field(ge=1)


class ModelSpec(_Strict):
    registered_name: str
    family: str
    params: dict[str, Any] = {}
    split: Split
    min_train_rows: int = Field(default=100, ge=1)
    #: Train on the labels known by the run's date from the last N days (the training form's default).
    training_window_days: int = Field(default=90, ge=7, le=3650)

    @field_validator("family")
    @classmethod
    def _family_known(cls, value: str) -> str:
        known = sorted({f for families in FAMILIES_BY_TASK.values() for f in families})
        if value not in known:
            raise ValueError(f"unknown model family {value!r}; known: {', '.join(known)}")
        return value


class Fairness(_Strict):
    """The fairness gate: a challenger whose group metrics on the holdout spread wider than a limit is
    refused (outcome ``reject``), whether or not there is a champion."""
    #: Columns whose groups are compared: schema columns. One that is not a model feature is kept
    #: beside the features for evaluation only (never given to the model).
    sensitive: list[str] = Field(min_length=1)
    #: Per metric (:data:`FAIRNESS_METRICS_BY_TASK`), the largest allowed difference between the
    #: groups of each sensitive column (e.g. ``true_positive_rate: 0.10``).
    max_difference: dict[str, float] = {}
    #: Groups with fewer holdout rows than this are reported, not judged.
    min_group_rows: int = Field(default=100, ge=1)

    @field_validator("max_difference")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not v > 0]
        if bad:
            raise ValueError(f"limits must be > 0: {', '.join(bad)}")
        return value


class Governance(_Strict):
    """Who answers for the model and what it may be used for: set as ``governance.*`` tags on every
    registered version and printed on its model card."""
    #: Default: the use case's ``owner``.
    owner: str = ""
    business_unit: str = ""
    regulatory_context: str = ""
    data_classification: Literal["public", "internal", "confidential", "restricted"] = "internal"
    intended_use: str = ""
    limitations: str = ""


class Evaluation(_Strict):
    #: Default by task (roc_auc; rmse for regression). A lower-is-better metric's uplift is a reduction.
    primary_metric: str = "roc_auc"
    min_uplift: float = Field(default=0.0, ge=0)
    floors: dict[str, float] = {}
    guardrails: dict[str, float] = {}
    slices: list[str] = []
    max_slice_regression: float = Field(default=0.05, ge=0)
    require_approval: bool = False
    #: The fairness gate (None: no gate); see :class:`Fairness`.
    fairness: Fairness | None = None
    #: Permutation importance of the challenger on the holdout (model card, ``explain.*`` tags): the
    #: holdout rows sampled for it (0: not computed).
    importance_rows: int = Field(default=2000, ge=0)
    #: A registered challenger that was not promoted is scored in shadow (beside the champion, never
    #: served) for this many days after it was registered; 0: never. One waiting for live evidence
    #: (``require_shadow_days``) is scored in shadow until it is decided, whatever this says.
    shadow_days: int = Field(default=7, ge=0, le=365)
    #: Promotion on live evidence: a challenger that wins offline is not promoted at once but scored in
    #: shadow until it has this many labelled shadow days, then promoted only if it beats the champion
    #: on the same rows by the policy (uplift with confidence; a tie keeps the champion). 0: offline only.
    require_shadow_days: int = Field(default=0, ge=0, le=90)
    #: Canary: this fraction of entities (a stable hash of the entity key) is served the challenger's
    #: score in the published predictions while a challenger is in shadow; recorded per row.
    canary_fraction: float = Field(default=0.0, ge=0, le=0.5)
    #: Labelled rows (all shadow days together) below which live evidence is not judged.
    live_min_rows: int = Field(default=200, ge=10)
    #: Confidence of the live uplift: the lower bound of this two-sided interval (paired bootstrap
    #: over rows) must be above ``min_uplift``.
    live_confidence: float = Field(default=0.9, gt=0.5, lt=1)

    @field_validator("primary_metric")
    @classmethod
    def _primary_known(cls, value: str) -> str:
        known = sorted({m for metrics in METRICS_BY_TASK.values() for m in metrics})
        if value not in known:
            raise ValueError(f"unknown metric {value!r}; known: {', '.join(known)}")
        return value


class Drift(_Strict):
    warn: float = Field(default=PSI_WARN, gt=0)
    alert: float = Field(default=PSI_ALERT, gt=0)
    min_alert_features: int = Field(default=1, ge=1)
    min_samples: int = Field(default=PSI_MIN_SAMPLES, ge=1)
    bins: int = Field(default=10, ge=2, le=100)
    cooldown_days: int = Field(default=0, ge=0)
    #: How many scored days make one drift window (ending at the run's ds).
    window_days: int = Field(default=1, ge=1)
    #: The drift sensor checks whether the window is scored this often (reschedule mode: no worker
    #: slot is held in between) and gives up, as skipped, after ``sensor_timeout_minutes``.
    poke_interval_seconds: int = Field(default=600, ge=1)
    sensor_timeout_minutes: float = Field(default=360, gt=0)
    #: Rows per chunk when streaming the window through the PSI accumulator.
    chunk_rows: int = Field(default=500_000, ge=1000)
    #: Rows sampled from each side for the Evidently HTML report (its cost grows fast with rows).
    report_sample_rows: int = Field(default=20_000, ge=100)
    per_feature: dict[str, dict[Literal["warn", "alert"], float]] = {}
    #: What the window is compared with: ``training`` (the champion's training split, frozen with the
    #: version), ``rolling`` (the ``reference_days`` scored days just before the window) or ``seasonal``
    #: (``reference_days`` scored days centred on the same day ``season_days`` ago: seasonal inputs stay
    #: quiet, a real change still shows).
    reference: Literal["training", "rolling", "seasonal"] = "training"
    reference_days: int = Field(default=28, ge=1, le=366)
    season_days: int = Field(default=365, ge=7, le=3650)
    #: What counts toward the verdict (a retrain request): input features, the model's output
    #: (score PSI), once labels land the target, and the prediction service's traffic (``served``: the
    #: features it answered on, from its log). Everything is reported either way.
    judge_on: list[Literal["features", "predictions", "target", "served"]] = ["features"]

    @model_validator(mode="after")
    def _ordered(self) -> Drift:
        if self.warn >= self.alert:
            raise ValueError(f"warn ({self.warn}) must be below alert ({self.alert})")
        return self


class Performance(_Strict):
    """Realized performance: predictions joined with their labels once they land."""

    #: A realized metric below its floor (a ceiling for lower-is-better metrics) alerts. Default: the
    #: evaluation floors.
    floors: dict[str, float] | None = None
    #: The champion's realized primary metric worse than its training holdout by more than this alerts
    #: (absolute; for rmse/mae a fraction of the holdout value).
    max_drop: float = Field(default=0.05, ge=0)
    #: Labelled rows (pooled over ``judge_days``) below which the monitor refuses to judge.
    min_rows: int = Field(default=200, ge=10)
    #: The newest labelled scored days pooled for the alert judgement.
    judge_days: int = Field(default=1, ge=1, le=90)
    #: Scored days looked back at each run (labels arriving late are picked up within this many days).
    lookback_days: int = Field(default=14, ge=1, le=365)
    #: Bootstrap resamples for the confidence intervals.
    bootstrap: int = Field(default=200, ge=0, le=5000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    #: Request retraining (the drift monitor's Asset, same dedup and cooldown) when the champion alerts.
    request_retraining: bool = True


class Scoring(_Strict):
    """Batch scoring (``<use case>_batch_scoring``)."""

    #: Each scored row also gets ``top_features``: its ``explain_top`` features that move the champion's
    #: score most when set to their training baseline (median / most frequent value), e.g.
    #: ``Contract:+0.210; tenure:+0.080``. Costs one more scoring pass per feature (the result's
    #: ``explain_seconds``).
    explain: bool = False
    explain_top: int = Field(default=3, ge=1, le=20)


class Serving(_Strict):
    """The online prediction service (``python -m pavedml serve``)."""

    #: This fraction of entities (the same stable hash of the key as batch scoring's canary) is answered
    #: by the challenger while one is in shadow (``evaluation.shadow_days``, or awaiting live evidence).
    canary_fraction: float = Field(default=0.0, ge=0, le=0.5)
    #: Also score the in-shadow challenger on every request, off the response path, into the prediction log.
    shadow: bool = False
    #: Entity keys (or rows) in one request above which it is refused (413).
    max_keys: int = Field(default=1000, ge=1, le=100_000)
    #: An entity key not in the online store: ``error`` (404 naming the keys) or ``default`` (answered
    #: with ``default_score`` and ``"default": true``).
    unknown_entity: Literal["error", "default"] = "error"
    default_score: float | None = None
    #: With the feature store down, answer from the model's imputation of missing features (flagged
    #: ``"imputed": true``) instead of 503. Off by default: never a prediction on missing features.
    allow_imputation: bool = False
    #: How often the registry is asked whether the champion/challenger aliases moved (seconds).
    poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: The prediction log is written every this many seconds or rows, whichever comes first.
    log_flush_seconds: float = Field(default=5.0, gt=0, le=3600)
    log_flush_rows: int = Field(default=5000, ge=1)

    @model_validator(mode="after")
    def _default_needs_score(self) -> Serving:
        if self.unknown_entity == "default" and self.default_score is None:
            raise ValueError("serving.unknown_entity: default needs serving.default_score")
        return self


class Schedules(_Strict):
    start_date: date = date(2025, 1, 1)
    feature_pipeline: str | None = "@daily"
    training_pipeline: str | None = "@weekly"
    batch_scoring: str | None = "@daily"
    drift_monitor: str | None = "@daily"
    #: the realized-performance monitor also runs on each labels Asset event
    performance_monitor: str | None = "@daily"
    #: a run still unfinished this long after it was queued sends a deadline alert (fractions allowed)
    expected_duration_minutes: float = Field(default=60, gt=0)


class UseCase(_Strict):
    name: str = Field(pattern=NAME_RE.pattern)
    description: str = ""
    owner: str = "ml-platform"
    task: Literal["binary_classification", "regression"] = "binary_classification"
    entity: Entity
    batches: Batches = Batches()
    schema_: Schema = Field(alias="schema")
    label: Label
    features: Features
    model: ModelSpec
    evaluation: Evaluation = Evaluation()
    drift: Drift = Drift()
    performance: Performance = Performance()
    scoring: Scoring = Scoring()
    serving: Serving = Serving()
    schedules: Schedules = Schedules()
    governance: Governance = Governance()
    #: Where the file came from (set by the loader, not by the file).
    source_file: str = ""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, raw: Any) -> Any:
        """The evaluation's primary metric defaults by task (roc_auc, rmse)."""
        if isinstance(raw, dict) and raw.get("task") in DEFAULT_PRIMARY_METRIC:
            evaluation = raw.get("evaluation")
            if evaluation is None or (isinstance(evaluation, dict) and "primary_metric" not in evaluation):
                raw = {**raw, "evaluation": {**(evaluation or {}),
                                             "primary_metric": DEFAULT_PRIMARY_METRIC[raw["task"]]}}
        return raw

    @model_validator(mode="after")
    def _cross_checks(self) -> UseCase:
        cols = self.schema_.columns
        families = FAMILIES_BY_TASK[self.task]
        if self.model.family not in families:
            raise ValueError(f"model.family {self.model.family!r} is not a {self.task} family; "
                             f"known for {self.task}: {', '.join(families)}")
        allowed = families[self.model.family][1]
        unknown = sorted(set(self.model.params) - set(allowed))
        if unknown:
            raise ValueError(f"model.params: unknown hyper-parameter(s) {', '.join(unknown)} for model family "
                             f"{self.model.family!r} ({self.task}); allowed: {', '.join(allowed)}")
        metrics = METRICS_BY_TASK[self.task]
        ev = self.evaluation
        for where, names in (("evaluation.primary_metric", [ev.primary_metric]),
                             ("evaluation.floors", list(ev.floors)), ("evaluation.guardrails", list(ev.guardrails))):
            wrong = [m for m in names if m not in metrics]
            if wrong:
                raise ValueError(f"{where}: {', '.join(map(repr, wrong))} is not a {self.task} metric; "
                                 f"known: {', '.join(metrics)}")
        floors = self.performance.floors
        if floors:
            wrong = [m for m in floors if m not in metrics]
            if wrong:
                raise ValueError(f"performance.floors: {', '.join(map(repr, wrong))} is not a {self.task} metric; "
                                 f"known: {', '.join(metrics)}")
        if self.task == "regression":
            label = self.label
            if label.positive is not None or label.threshold is not None:
                raise ValueError("label.positive/negative/threshold are for binary_classification; a "
                                 "regression label is the numeric column itself")
        elif self.label.positive is None and self.label.threshold is None:
            raise ValueError("label: binary_classification needs label.positive and label.negative "
                             "(a value or a list each) or label.threshold (positive when >= threshold)")
        if self.batches.dataset == self.label.dataset:
            raise ValueError(f"batches.dataset and label.dataset are both {self.label.dataset!r}: batches and labels "
                             "land in folders of their own")
        if "event_timestamp" in cols:
            raise ValueError("schema.columns.event_timestamp: the name is the pipeline's own (each row's event time): "
                             "rename the column (and name it in batches.timestamp.column if it is the row's time)")
        if self.label.column in cols:
            raise ValueError(f"label.column {self.label.column!r} is also a batch column in schema.columns: labels "
                             f"land separately (the {self.label.dataset} dataset), never in the daily batch")
        ts = self.batches.timestamp
        if not isinstance(ts, str):
            if ts.column not in cols:
                raise ValueError(f"batches.timestamp.column {ts.column!r} is not a column in schema.columns")
            if cols[ts.column].type != "timestamp" or cols[ts.column].nullable:
                raise ValueError(f"schema.columns.{ts.column}: the event-time column must be "
                                 "{type: timestamp, nullable: false}")
        if self.entity.key not in cols:
            raise ValueError(f"entity.key {self.entity.key!r} is not a column in schema.columns")
        if cols[self.entity.key].nullable:
            raise ValueError(f"schema.columns.{self.entity.key}: the entity key must be nullable: false")
        derived = set(self.features.derived)
        for group in ("numeric", "categorical"):
            for col in getattr(self.features, group):
                if col not in cols:
                    raise ValueError(f"features.{group}: {col!r} is not a column in schema.columns")
        for col in self.features.non_null:
            if col not in cols and col not in derived:
                raise ValueError(f"features.non_null: {col!r} is neither a schema column nor a derived feature")
        if derived and not self.features.derived_hook:
            raise ValueError("features.derived needs features.derived_hook ('module:function')")
        for col in self.evaluation.slices:
            if col not in cols:
                raise ValueError(f"evaluation.slices: {col!r} is not a column in schema.columns")
        fairness = self.evaluation.fairness
        if fairness is not None:
            for col in fairness.sensitive:
                if col not in cols and col not in derived:
                    raise ValueError(f"evaluation.fairness.sensitive: {col!r} is neither a column in schema.columns "
                                     "nor a derived feature")
                if col == self.entity.key:
                    raise ValueError(f"evaluation.fairness.sensitive: {col!r} is the entity key (one group per row)")
            known = FAIRNESS_METRICS_BY_TASK[self.task]
            wrong = [m for m in fairness.max_difference if m not in known]
            if wrong:
                raise ValueError(f"evaluation.fairness.max_difference: {', '.join(map(repr, wrong))} is not a "
                                 f"{self.task} group metric; known: {', '.join(known)}")
        return self

    # -- derived names -------------------------------------------------------------------
    def dag_id(self, pipeline: str) -> str:
        return f"{self.name}_{pipeline}"

    @property
    def feature_columns(self) -> list[str]:
        return [*self.numeric_features, *self.categorical_features]

    @property
    def evaluation_columns(self) -> list[str]:
        """Columns evaluation needs that are not model features (fairness's sensitive columns and
        slices): kept beside the features in the offline partitions and joined point in time into the
        training splits, never given to the model."""
        wanted = [*self.evaluation.slices, *(self.evaluation.fairness.sensitive if self.evaluation.fairness else [])]
        features = set(self.feature_columns)
        return list(dict.fromkeys(c for c in wanted if c not in features and c != self.entity.key))

    @property
    def governance_owner(self) -> str:
        return self.governance.owner or self.owner

    @property
    def numeric_features(self) -> list[str]:
        return [*self.features.numeric, *(k for k, v in self.features.derived.items() if v == "numeric")]

    @property
    def categorical_features(self) -> list[str]:
        return [*self.features.categorical, *(k for k, v in self.features.derived.items() if v == "categorical")]

    @property
    def timestamp_column(self) -> str | None:
        """The batch column holding each row's event time, or None (rows at the interval start)."""
        ts = self.batches.timestamp
        return None if isinstance(ts, str) else ts.column

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def families(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        return FAMILIES_BY_TASK[self.task]

    @property
    def feature_view(self) -> str:
        return f"{self.entity.name}_features"

    @property
    def performance_floors(self) -> dict[str, float]:
        """The realized-performance floors: ``performance.floors`` or else the evaluation's."""
        floors = self.performance.floors
        return dict(self.evaluation.floors if floors is None else floors)

    @property
    def feature_service(self) -> str:
        return self.model.registered_name


def _format_errors(err: ValidationError, path: Path) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]).replace("schema_", "schema") or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here; check the spelling)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        if loc == "(top level)" and re.match(r"^[\w.]+: ", msg):
            lines.append(f"  - {msg}")  # a cross-check that names its own key path
            continue
        lines.append(f"  - {loc}: {msg}")
    return f"invalid use-case file {path}:\n" + "\n".join(lines)


USE_CASE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


class DuplicateKeyError(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKeyError(f"key {key!r} appears twice in one mapping (lines {seen[key] + 1} "
                                        f"and {key_node.start_mark.line + 1}); YAML would silently keep the last")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_use_case(path: str | Path) -> UseCase:
    """Load and validate one use-case file. Raises :class:`ConfigError` naming the file and key."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"use-case file not found: {path}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as exc:
        raise ConfigError(f"use-case file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"use-case file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"use-case file {path} must hold a mapping at the top level, not {type(raw).__name__}")
    if "source_file" in raw:
        raise ConfigError(f"invalid use-case file {path}:\n  - source_file: unknown key (set by the loader)")
    try:
        uc = UseCase.model_validate({**raw, "source_file": str(path)})
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, path)) from None
    if uc.name != path.stem:
        raise ConfigError(f"invalid use-case file {path}:\n  - name: {uc.name!r} must equal the file stem {path.stem!r}")
    return uc


def is_ignored_file(path: Path) -> bool:
    """Editor and hidden files in the use-cases folder: ``.#x.yaml`` (Emacs lock), ``.x.yaml.swp``,
    ``x.yaml~``, ``#x.yaml#``, dotfiles."""
    return path.name.startswith((".", "#")) or path.name.endswith(("~", "#", ".swp", ".swo"))


def use_case_files(directory: str | Path) -> list[Path]:
    return sorted(p for p in Path(directory).glob("*.yaml") if not is_ignored_file(p) and p.is_file())


@dataclass
class Scan:
    """Every use-case file of a folder, each loaded on its own: the valid ones, and an error per file
    that is not (so one bad file never hides the others)."""

    use_cases: list[UseCase]
    errors: dict[str, str]


def scan(directory: str | Path) -> Scan:
    directory = Path(directory)
    found, errors = [], {}
    for path in sorted(directory.glob("*.yml")):
        if not is_ignored_file(path):
            errors[str(path)] = (f"use-case file {path} ends in .yml: use-case files end in .yaml "
                                 f"(rename it to {path.with_suffix('.yaml').name})")
    for path in use_case_files(directory):
        try:
            found.append(_load_cached(str(path), path.stat().st_mtime_ns))
        except ConfigError as exc:
            errors[str(path)] = exc.message
        except OSError as exc:  # removed or unreadable between listing and reading
            errors[str(path)] = f"use-case file {path} cannot be read: {exc}"
    # a registered model claimed by two files: the file named after the model keeps it; without one,
    # no claimant can be trusted with it (a rule that does not depend on file times or order)
    claims: dict[str, list[UseCase]] = {}
    for uc in found:
        claims.setdefault(uc.model.registered_name, []).append(uc)
    valid = []
    for model, ucs in claims.items():
        owner = next((u for u in ucs if u.name == model), None) if len(ucs) > 1 else ucs[0]
        for uc in ucs:
            if uc is owner:
                valid.append(uc)
                continue
            others = ", ".join(f"{o.name!r} ({o.source_file})" for o in ucs if o is not uc)
            errors[uc.source_file] = (f"invalid use-case file {uc.source_file}:\n  - model.registered_name: "
                                      f"{model!r} is also the model of use case(s) {others}; each use case "
                                      f"needs its own (the file named {model}.yaml keeps it)")
    return Scan(sorted(valid, key=lambda u: u.name), errors)



@lru_cache(maxsize=64)
def _load_cached(path: str, mtime_ns: int) -> UseCase:
    return load_use_case(path)


def load_all(directory: str | Path) -> list[UseCase]:
    """Every use case in ``directory`` (cached by file mtime, so DAG re-parses stay cheap). Strict:
    the first bad file raises (the CLI's check); DAG files use :func:`scan` instead."""
    result = scan(directory)
    if result.errors:
        raise ConfigError("\n".join(result.errors.values()))
    return result.use_cases


def get_use_case(name: str, directory: str | Path | None = None) -> UseCase:
    from pavedml.settings import get_settings

    directory = Path(directory or get_settings().use_cases_dir)
    if not USE_CASE_NAME.fullmatch(name or ""):
        raise ConfigError(f"use case name {name!r} is not a plain name (letters, digits, underscores; "
                          "it is a file stem in the use-cases folder, never a path)")
    path = directory / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in use_case_files(directory)) or "none"
        raise ConfigError(f"unknown use case {name!r}: no file {path} (known: {known})")
    return load_use_case(path)
