"""What a step knows about the run it belongs to: the use case, the data interval and the run."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any

from pavedml.config import UseCase, get_use_case
from pavedml.errors import ConfigError
from pavedml.layout import Layout
from pavedml.settings import Settings, get_settings

log = logging.getLogger(__name__)


def parse_ds(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--ds {value!r} is not a date (expected YYYY-MM-DD)") from None


def parse_ts(value: str) -> datetime:
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"timestamp {value!r} is not ISO 8601") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@dataclass(frozen=True)
class StepContext:
    use_case: UseCase
    ds: str | None
    interval_start: datetime | None = None
    interval_end: datetime | None = None
    dag_id: str = ""
    run_id: str = ""
    try_number: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    settings: Settings = field(default_factory=get_settings)

    @classmethod
    def build(cls, use_case: str, ds: str | None, interval_start: str | None = None,
              interval_end: str | None = None, dag_id: str = "", run_id: str = "",
              try_number: int = 1, params: str | dict | None = None) -> StepContext:
        settings = get_settings()
        uc = get_use_case(use_case, settings.use_cases_dir)
        start = end = None
        if ds:
            day = parse_ds(ds)
            start = parse_ts(interval_start) if interval_start else datetime(day.year, day.month, day.day, tzinfo=UTC)
            end = parse_ts(interval_end) if interval_end else start + timedelta(days=1)
        if isinstance(params, str):
            try:
                params = json.loads(params) if params else {}
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--params is not valid JSON: {exc}") from None
        return cls(use_case=uc, ds=ds, interval_start=start, interval_end=end, dag_id=dag_id,
                   run_id=run_id, try_number=int(try_number or 1), params=dict(params or {}), settings=settings)

    @cached_property
    def layout(self) -> Layout:
        return Layout.for_use_case(self.use_case.name, self.settings)

    @property
    def reason(self) -> str:
        """Why this run: the run's ``reason`` param, else how it started (from Airflow's run id prefix)."""
        given = str(self.params.get("reason") or "").strip()
        if given:
            return given
        kind = self.run_id.split("__", 1)[0] if "__" in self.run_id else ""
        return {"scheduled": "scheduled", "manual": "manual run", "backfill": "backfill",
                "asset_triggered": "retrain request (asset event)"}.get(kind, "unspecified")

    def require_ds(self) -> str:
        if not self.ds:
            raise ConfigError("this step needs --ds YYYY-MM-DD")
        return self.ds
