"""What a step knows about the run it belongs to: the use case, the logical date and its data
interval, the run (and its folder key), and the run's parameters validated once, when the step starts.

The CLI builds one :class:`StepContext` per step from ``--use-case``, ``--ds``, ``--dag-id``,
``--run-id``, ``--try-number`` and ``--params``. A bad ``--ds`` or a bad parameter is a
:class:`~pavedml.errors.ConfigError` naming it (exit 3) before the step reads any data; a
parameter the run did not give takes the use case's value (:class:`RunParams`).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pavedml.config import UseCase, get_use_case
from pavedml.errors import ConfigError
from pavedml.layout import Layout
from pavedml.settings import Settings, get_settings

log = logging.getLogger(__name__)


def parse_ds(value: str | date) -> date:
    """The logical date of ``--ds`` (``YYYY-MM-DD``); anything else is a ConfigError naming it."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    try:
        return date.fromisoformat(str(value or ""))
    except ValueError:
        raise ConfigError(f"--ds {value!r} is not a date (expected YYYY-MM-DD)",
                          details={"next": "give the logical date of the data interval as YYYY-MM-DD"}) from None


def parse_overrides(raw: Any) -> dict:
    """The trigger form's hyper-parameter overrides: a JSON object (or its text)."""
    if raw in (None, "", {}):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"hyperparameters is not JSON: {exc.msg} at column {exc.colno} of {raw[:200]!r}",
                              details={"next": 'give an object such as {"max_depth": 6}'}) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"hyperparameters must be an object of name: value, not {type(raw).__name__} {raw!r}"[:300],
                          details={"next": 'give an object such as {"max_depth": 6}'})
    return raw


class RunParams(BaseModel):
    """The run's parameters (the DAG's trigger form, ``--params``), typed. Each DAG passes all of its
    params to each of its steps; a parameter the run did not give (or gave empty) takes the use
    case's value: :meth:`for_use_case` is the one place those defaults are read."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    #: training: train on the labels known by ds from the last N days
    training_window_days: int = Field(ge=7, le=3650)  # the bounds of model.training_window_days
    #: training: overrides of model.params (a JSON object or its text)
    hyperparameters: dict[str, Any] = {}
    #: why this run (ledger); empty: how the run started
    reason: str = ""
    #: training: promote even if the policy says no
    force_promote: bool = False
    #: drift: scored days in the window ending at ds
    window_days: int = Field(ge=1, le=3650)
    #: drift: PSI at or above which a feature alerts
    alert_threshold: float = Field(gt=0)
    #: drift: PSI at or above which a feature warns: the use case's, kept below the alert threshold
    #: (derived, not a form field)
    warn_threshold: float = Field(gt=0)
    #: rollback: ``previous`` or a version number
    target_version: str = Field(default="previous", pattern=r"^(previous|[0-9]+)$")
    #: training with ``evaluation.require_approval``: the approval task's answer (status, by, comment,
    #: at: :func:`pavedml.airflow.approval.answer`), handed to the promotion step; None: no answer
    approval: dict[str, Any] | None = None

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _overrides(cls, value: Any) -> dict:
        return parse_overrides(value)

    @field_validator("reason", "target_version", mode="before")
    @classmethod
    def _stripped(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # {"target_version": 3} from the CLI
        return value.strip() if isinstance(value, str) else value

    @classmethod
    def for_use_case(cls, uc: UseCase, raw: dict[str, Any] | None = None) -> RunParams:
        """Validate ``raw`` (the run's params) with ``uc``'s defaults. Raises ConfigError naming the param."""
        given = {k: v for k, v in (raw or {}).items() if v not in (None, "") and k != "warn_threshold"}
        defaults: dict[str, Any] = {"training_window_days": uc.model.training_window_days,
                                    "window_days": uc.drift.window_days, "alert_threshold": uc.drift.alert}
        values = {**defaults, **given}
        try:
            alert = float(values["alert_threshold"])
        except (TypeError, ValueError):
            alert = uc.drift.alert  # the validation below names the bad value
        values["warn_threshold"] = min(uc.drift.warn, alert * 0.99)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(params)'}={e.get('input')!r}: "
                                 f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
            raise ConfigError(f"invalid run parameter(s) of {uc.name}: {problems}"[:1000],
                              details={"next": "fix the parameter in the trigger form (or --params), then run again"}
                              ) from None


def run_key_of(run_id: str, ds: date) -> str:
    """A folder name for the DAG run (``manual__2025-...`` -> safe characters)."""
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", run_id or f"cli__{ds.isoformat()}")


@dataclass(frozen=True)
class StepContext:
    use_case: UseCase
    ds: date
    params: RunParams
    dag_id: str = ""
    run_id: str = ""
    try_number: int = 1
    settings: Settings = field(default_factory=get_settings)

    @classmethod
    def build(cls, use_case: str, ds: str | date, dag_id: str = "", run_id: str = "",
              try_number: int = 1, params: str | dict | None = None) -> StepContext:
        """The context of one step: ``ds`` and ``params`` validated here, once (ConfigError naming them)."""
        settings = get_settings()
        uc = get_use_case(use_case, settings.use_cases_dir)
        day = parse_ds(ds)
        if isinstance(params, str):
            try:
                params = json.loads(params) if params else {}
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--params is not valid JSON: {exc}") from None
        if not isinstance(params, dict | None):
            raise ConfigError(f"--params must be a JSON object, not {type(params).__name__}")
        return cls(use_case=uc, ds=day, params=RunParams.for_use_case(uc, params), dag_id=dag_id, run_id=run_id,
                   try_number=int(try_number or 1), settings=settings)

    @property
    def ds_iso(self) -> str:
        """``ds`` as ``YYYY-MM-DD`` (results, paths, MLflow tags)."""
        return self.ds.isoformat()

    @property
    def interval_start(self) -> datetime:
        """Start of the data interval: ``ds`` 00:00 UTC (intervals are one day)."""
        return datetime(self.ds.year, self.ds.month, self.ds.day, tzinfo=UTC)

    @property
    def interval_end(self) -> datetime:
        """End of the data interval (exclusive): ``ds`` + 1 day, 00:00 UTC."""
        return self.interval_start + timedelta(days=1)

    @property
    def run_key(self) -> str:
        """The run's folder name under ``training/`` (``manual__2025-...`` -> safe characters)."""
        return run_key_of(self.run_id, self.ds)

    @property
    def dag_run_key(self) -> str:
        """The DAG run a model version or MLflow run belongs to (tag ``pavedml.dag_run``)."""
        return f"{self.dag_id or 'cli'}/{self.run_id or self.ds_iso}"

    @cached_property
    def layout(self) -> Layout:
        return Layout.for_use_case(self.use_case.name, self.settings)

    @property
    def reason(self) -> str:
        """Why this run: the run's ``reason`` param, else how it started (from Airflow's run id prefix)."""
        if self.params.reason:
            return self.params.reason
        kind = self.run_id.split("__", 1)[0] if "__" in self.run_id else ""
        return {"scheduled": "scheduled", "manual": "manual run", "backfill": "backfill",
                "asset_triggered": "retrain request (asset event)"}.get(kind, "unspecified")
