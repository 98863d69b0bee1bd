"""``python -m pavedml serve --use-case NAME``: the use case's online prediction service.

``POST /v1/<use case>/predict`` with ``{"keys": [...]}`` (entity keys: features read from the Feast
online store the feature pipeline materializes, one round trip for all keys) or ``{"rows": [...]}``
(raw rows with the batch schema's columns: features derived by the same ``compute_features`` as
training and batch scoring). The answer names the model, version and alias per row and the
features' freshness. Models: ``models:/<name>@champion``, hot-swapped when the alias moves
(:mod:`pavedml.serving.models`); ``serving.canary_fraction`` of entities (a stable hash of the key)
is answered by an in-shadow challenger, and ``serving.shadow`` scores the challenger on every
request off the response path. Every answer and shadow score goes to the prediction log
(:mod:`pavedml.serving.predlog`).

Operations: ``/healthz`` (the process is up), ``/readyz`` (a model is loaded and the feature store
answers; 503 with the reason otherwise), ``/metrics`` (Prometheus), one JSON access-log line per
request, graceful shutdown (in-flight requests finish, the log is flushed). With
``PAVEDML_SERVING_TOKEN`` (or ``PAVEDML_SERVING_TOKEN_CONN``, an Airflow connection id whose
password is the token, read from ``AIRFLOW_CONN_<ID>``) every ``/v1`` call needs
``Authorization: Bearer <token>``; ``--require-token`` (the production profile) refuses to start
without one.

Errors, each JSON ``{"error": <reason>, "detail": <text naming the thing>}``: 400 malformed JSON,
422 a wrong field (named: ``keys[3]``, ``rows[0].tenure``), 413 more keys than
``serving.max_keys``, 404 unknown entity keys (named) unless ``serving.unknown_entity: default``,
503 no model yet or the feature store down (never an answer on missing features unless
``serving.allow_imputation``), 401 a missing or wrong token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import queue
import sys
import threading
import time
import uuid
from typing import Any

import numpy as np
from fastapi import Request  # module level: the endpoints' annotations are resolved against these globals

from pavedml.config import UseCase
from pavedml.settings import Settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("pavedml.serving.access")

MISSING = "__missing__"
#: Shadow work waiting beyond this many requests is dropped (counted): overload never reaches the response path.
SHADOW_QUEUE = 1_000
#: After the feature store fails, requests are refused (503) at once for this long instead of each waiting on it.
STORE_RETRY_SECONDS = 2.0


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float (JSON allows 10**400)
        return False


class ServingError(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


def token_from_env(env=None) -> str:
    """The bearer token: ``PAVEDML_SERVING_TOKEN``, else the password of the Airflow connection named by
    ``PAVEDML_SERVING_TOKEN_CONN`` (``AIRFLOW_CONN_<ID>``, URI or JSON form); empty: no auth."""
    from urllib.parse import unquote, urlsplit

    env = os.environ if env is None else env
    if env.get("PAVEDML_SERVING_TOKEN"):
        return env["PAVEDML_SERVING_TOKEN"]
    conn_id = env.get("PAVEDML_SERVING_TOKEN_CONN", "")
    if not conn_id:
        return ""
    raw = env.get(f"AIRFLOW_CONN_{conn_id.upper()}", "")
    if not raw:
        raise ValueError(f"PAVEDML_SERVING_TOKEN_CONN={conn_id}: no AIRFLOW_CONN_{conn_id.upper()} in the environment")
    if raw.lstrip().startswith("{"):
        password = json.loads(raw).get("password") or ""
    else:
        password = unquote(urlsplit(raw).password or "")
    if not password:
        raise ValueError(f"the Airflow connection {conn_id} has no password (the token)")
    return password


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self, use_case: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        buckets = (.001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .25, .5, 1, 2.5)
        self.latency = Histogram("pavedml_serving_request_seconds", "Predict request latency (server side)",
                                 ["use_case", "kind"], buckets=buckets, registry=self.registry)
        self.feature_latency = Histogram("pavedml_serving_feature_store_seconds", "Online store read latency",
                                         ["use_case"], buckets=buckets, registry=self.registry)
        self.errors = Counter("pavedml_serving_errors_total", "Refused or failed requests by reason",
                              ["use_case", "reason"], registry=self.registry)
        self.predictions = Counter("pavedml_serving_predictions_total", "Rows answered, by the alias that answered",
                                   ["use_case", "alias"], registry=self.registry)
        self.canary = Counter("pavedml_serving_canary_total", "Rows answered by the challenger (canary)",
                              ["use_case"], registry=self.registry)
        self.shadow = Counter("pavedml_serving_shadow_total", "Rows scored by the challenger in shadow",
                              ["use_case"], registry=self.registry)
        self.shadow_dropped = Counter("pavedml_serving_shadow_dropped_total",
                                      "Shadow work dropped because the queue was full", ["use_case"],
                                      registry=self.registry)
        self.log_dropped = Counter("pavedml_serving_log_dropped_total", "Prediction-log rows dropped (disk)",
                                   ["use_case"], registry=self.registry)
        self.version = Gauge("pavedml_serving_model_version", "Registered version serving, by alias",
                             ["use_case", "alias"], registry=self.registry)
        self.swaps = Counter("pavedml_serving_model_swaps_total", "Hot swaps of the served models", ["use_case"],
                             registry=self.registry)
        self.uc = use_case

    def error(self, reason: str) -> None:
        self.errors.labels(self.uc, reason).inc()


class PredictionService:
    """The request logic, apart from HTTP (tests drive it directly too)."""

    def __init__(self, uc: UseCase, settings: Settings, *, features=None, watcher=None,
                 poll_seconds: float | None = None, token: str = "") -> None:
        from pavedml.layout import Layout
        from pavedml.serving.models import ModelWatcher
        from pavedml.serving.predlog import PredictionLog

        self.uc = uc
        self.settings = settings
        self.layout = Layout.for_use_case(uc.name, settings)
        self.metrics = Metrics(uc.name)
        self.token = token
        self.key = uc.entity.key
        self.numeric, self.categorical = list(uc.numeric_features), list(uc.categorical_features)
        self.score_column = "prediction" if uc.is_regression else "probability"
        if features is None:
            from pavedml.serving.online import OnlineFeatures

            features = OnlineFeatures(uc, settings, self.layout)
        self.features = features
        self.watcher = watcher or ModelWatcher(uc, settings, poll_seconds=poll_seconds, on_swap=self._swapped,
                                               on_error=lambda reason: self.metrics.error(f"registry_{reason}"))
        self.columns = [self.key, "event_timestamp", self.score_column,
                        *(["prediction"] if not uc.is_regression else []),
                        "model_name", "model_version", "served_by", "champion_version", "champion_score",
                        "challenger_version", "challenger_score", "request_id", "served_at", "source",
                        "feature_age_seconds", "default", "imputed", *self.numeric, *self.categorical]
        serving = uc.serving
        self.predlog = PredictionLog(self.layout.served_partition, self.columns, flush_seconds=serving.log_flush_seconds,
                                     flush_rows=serving.log_flush_rows,
                                     on_drop=lambda n: self.metrics.log_dropped.labels(uc.name).inc(n),
                                     mirror=self._to_lake if settings.lake_uri else None)
        self._shadow_q: queue.Queue = queue.Queue(maxsize=SHADOW_QUEUE)
        self._shadow_thread = threading.Thread(target=self._shadow_loop, name="shadow", daemon=True)
        self._ready_cache: tuple[float, str] = (0.0, "not checked yet")
        self._store_down: tuple[float, str] = (0.0, "")
        self.started = False

    def _to_lake(self, path) -> None:
        """Put a complete log file where the monitors' working copies pull from (the lake)."""
        from pavedml import storage

        rel = path.relative_to(self.layout.root).as_posix()
        storage.write_bytes(storage.join(self.settings.lake_uri, self.uc.name, rel), path.read_bytes())

    # -- lifecycle
    def start(self) -> None:
        self.watcher.refresh()
        self.watcher.start()
        self.predlog.start()
        self._shadow_thread.start()
        self.started = True

    def stop(self) -> None:
        """Graceful: stop polling, finish the shadow work queued, flush the log."""
        self.watcher.stop()
        if self._shadow_thread.is_alive():
            self._shadow_q.put(None)
            self._shadow_thread.join(timeout=15)
        self.predlog.close()
        close = getattr(self.features, "close", None)
        if close:
            close()

    def _swapped(self, old, new) -> None:
        self.metrics.swaps.labels(self.uc.name).inc()
        self.metrics.version.labels(self.uc.name, "champion").set(float(new.champion.version))
        self.metrics.version.labels(self.uc.name, "challenger").set(
            float(new.challenger.version) if new.challenger else 0)

    def ready(self) -> str:
        """Empty when ready, else why not (the feature store is pinged at most once a second)."""
        if self.watcher.bundle is None:
            return self.watcher.last_error or "the champion is not loaded yet"
        now = time.monotonic()
        checked, reason = self._ready_cache
        if now - checked > 1.0:
            try:
                self.features.ping()
                reason = ""
            except Exception as exc:  # noqa: BLE001 - the reason is the answer
                reason = f"feature store unreachable: {exc}"
            self._ready_cache = (now, reason)
        return reason

    # -- auth
    def check_token(self, header: str | None) -> None:
        if not self.token:
            return
        given = (header or "").removeprefix("Bearer ").strip() if (header or "").startswith("Bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise ServingError(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)")

    # -- request parsing
    def max_body(self) -> int:
        """Bytes a request body may have: room for ``serving.max_keys`` raw rows of a few KiB each."""
        return max(1 << 20, self.uc.serving.max_keys * 4096)

    def parse(self, body: bytes) -> tuple[str, list]:
        if len(body) > self.max_body():
            raise ServingError(413, "too_large", f"the body has {len(body)} bytes, at most {self.max_body()}")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ServingError(400, "malformed_json", f"the body is not JSON: {exc}") from None
        if not isinstance(payload, dict) or ("keys" in payload) == ("rows" in payload):
            raise ServingError(422, "invalid_request", 'expected an object with exactly one of "keys" (entity keys) '
                                                       'or "rows" (raw rows)')
        unknown = sorted(set(payload) - {"keys", "rows"})
        if unknown:
            raise ServingError(422, "invalid_request", f"unknown field(s): {', '.join(unknown)}")
        kind = "keys" if "keys" in payload else "rows"
        items = payload[kind]
        if not isinstance(items, list) or not items:
            raise ServingError(422, "invalid_request", f"{kind}: expected a non-empty list")
        limit = self.uc.serving.max_keys
        if len(items) > limit:
            raise ServingError(413, "too_many_keys", f"{kind}: {len(items)} items, at most {limit} per request "
                                                     "(serving.max_keys)")
        if kind == "keys":
            for i, k in enumerate(items):
                if not isinstance(k, str) or not k:
                    raise ServingError(422, "invalid_request",
                                       f"keys[{i}]: expected a non-empty string ({self.key}), got {json.dumps(k)[:80]}")
        else:
            self._check_rows(items)
        return kind, items

    def _check_rows(self, rows: list) -> None:
        columns = self.uc.schema_.columns
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ServingError(422, "invalid_request", f"rows[{i}]: expected an object")
            for name, spec in columns.items():
                where = f"rows[{i}].{name}"
                if name not in row:
                    raise ServingError(422, "invalid_request", f"{where}: missing")
                value = row[name]
                if value is None:
                    if name == self.key or not spec.nullable:
                        raise ServingError(422, "invalid_request", f"{where}: null is not allowed")
                    continue
                if spec.type in ("int", "float"):
                    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value)
                    if not ok and spec.blank_as_null and isinstance(value, str) and not value.strip():
                        ok = True
                    if not ok:
                        raise ServingError(422, "invalid_request",
                                           f"{where}: expected a finite number, got {json.dumps(value)[:80]}")
                elif not isinstance(value, str):
                    raise ServingError(422, "invalid_request",
                                       f"{where}: expected a string, got {json.dumps(value)[:80]}")

    # -- features
    def _features_of_keys(self, keys: list[str]):
        from pavedml.serving.online import FeatureStoreUnavailable

        started = time.perf_counter()
        try:
            down_until, why = self._store_down
            if time.monotonic() < down_until:  # a store that just failed is not waited on again by every request
                raise FeatureStoreUnavailable(f"{why} (not retried for {STORE_RETRY_SECONDS:g} s)")
            try:
                rows = self.features.read(keys)
            except FeatureStoreUnavailable as exc:
                self._store_down = (time.monotonic() + STORE_RETRY_SECONDS, str(exc))
                raise
        except FeatureStoreUnavailable as exc:
            self.metrics.error("feature_store_down")
            if not self.uc.serving.allow_imputation:
                raise ServingError(503, "feature_store_unavailable",
                                   f"{exc}; no prediction on missing features (serving.allow_imputation is off)") from None
            n = len(keys)
            numeric = np.full((n, len(self.numeric)), np.nan)
            categorical = np.full((n, len(self.categorical)), MISSING, dtype=object)
            return (numeric, categorical, np.ones(n, dtype=bool), np.full(n, np.nan), True)
        finally:
            self.metrics.feature_latency.labels(self.uc.name).observe(time.perf_counter() - started)
        found = np.asarray(rows.found, dtype=bool)
        if not found.all():
            missing = [k for k, f in zip(keys, found, strict=True) if not f]
            if self.uc.serving.unknown_entity == "error":
                self.metrics.error("unknown_entity")
                shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
                raise ServingError(404, "unknown_entity",
                                   f"{self.key} not in the online store of {self.uc.feature_view}: {shown}")
        categorical = np.asarray(rows.categorical, dtype=object)
        if categorical.size:
            categorical = np.where(categorical == None, MISSING, categorical)  # noqa: E711 - elementwise
        return (np.asarray(rows.numeric, dtype="float64"), categorical, found, np.asarray(rows.event_ts, dtype="float64"),
                False)

    def _features_of_rows(self, rows: list[dict]):
        import pandas as pd

        from pavedml.errors import FeatureCheckError
        from pavedml.steps.features import compute_features

        columns = list(self.uc.schema_.columns)
        df = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
        for name, spec in self.uc.schema_.columns.items():
            if spec.type in ("int", "float"):
                df[name] = pd.to_numeric(df[name].replace(r"^\s*$", None, regex=True), errors="coerce")
        now = time.time()
        df["event_timestamp"] = pd.Timestamp(now, unit="s", tz="UTC")
        try:
            features = compute_features(df, self.uc)
        except FeatureCheckError as exc:
            raise ServingError(422, "invalid_features", exc.message) from None
        # compute_features sorts by key (stable): put the rows back in request order
        perm = np.argsort(df[self.key].astype(str).to_numpy(dtype=object), kind="stable")
        features = features.iloc[np.argsort(perm, kind="stable")].reset_index(drop=True)
        numeric = features[self.numeric].to_numpy(dtype="float64") if self.numeric else np.empty((len(df), 0))
        categorical = features[self.categorical].to_numpy(dtype=object) if self.categorical \
            else np.empty((len(df), 0), dtype=object)
        keys = features[self.key].astype(str).tolist()
        return keys, numeric, categorical, np.ones(len(df), dtype=bool), np.full(len(df), now), False

    # -- predict
    def predict(self, kind: str, items: list) -> dict[str, Any]:
        from pavedml.steps.scoring import canary_rows

        bundle = self.watcher.bundle
        if bundle is None:
            self.metrics.error("not_ready")
            raise ServingError(503, "not_ready", self.watcher.last_error or "the champion is not loaded yet")
        now = time.time()
        if kind == "keys":
            keys = items
            numeric, categorical, found, event_ts, imputed = self._features_of_keys(keys)
        else:
            keys, numeric, categorical, found, event_ts, imputed = self._features_of_rows(items)
        n = len(keys)
        champion, challenger = bundle.champion, bundle.challenger
        champion_scores = champion.scorer.score(numeric, categorical)
        challenger_scores = None
        canary = np.zeros(n, dtype=bool)
        fraction = self.uc.serving.canary_fraction
        if challenger is not None and fraction > 0:
            import pandas as pd

            canary = canary_rows(pd.Series(keys), fraction) & found
            if canary.any():
                try:
                    challenger_scores = challenger.scorer.score(numeric, categorical)
                except Exception as exc:  # noqa: BLE001 - the champion answers; the challenger's failure is counted
                    log.warning("challenger v%s failed to score (%s: %s): the champion answers its canary rows",
                                challenger.version, type(exc).__name__, str(exc)[:200])
                    self.metrics.error("challenger_failed")
                    canary = np.zeros(n, dtype=bool)
        published = champion_scores if challenger_scores is None else np.where(canary, challenger_scores,
                                                                                champion_scores)
        default = ~found
        if default.any():
            published = np.where(default, float(self.uc.serving.default_score or 0.0), published)
        request_id = uuid.uuid4().hex
        regression = self.uc.is_regression
        ages = np.round(now - event_ts, 3)
        predictions = []
        for i in range(n):
            score = float(published[i])
            by = "challenger" if canary[i] else "champion"
            row: dict[str, Any] = {"key": keys[i], self.score_column: score}
            if not regression:
                row["prediction"] = int(score >= 0.5)
            row["model_version"] = challenger.version if canary[i] else champion.version  # type: ignore[union-attr]
            row["alias"] = by
            age = ages[i]
            row["feature_age_seconds"] = None if np.isnan(age) else float(age)
            if default[i]:
                row.update(model_version=None, alias=None, default=True)
            if imputed:
                row["imputed"] = True
            predictions.append(row)
        self.metrics.predictions.labels(self.uc.name, "champion").inc(int(n - canary.sum() - default.sum()))
        if canary.any():
            self.metrics.canary.labels(self.uc.name).inc(int(canary.sum()))
            self.metrics.predictions.labels(self.uc.name, "challenger").inc(int(canary.sum()))
        work = (request_id, now, kind, keys, numeric, categorical, found, event_ts, imputed, champion_scores,
                challenger_scores, published, canary, bundle)
        if challenger is not None and challenger_scores is None and self.uc.serving.shadow:
            try:
                self._shadow_q.put_nowait(work)
            except queue.Full:
                self.metrics.shadow_dropped.labels(self.uc.name).inc()
                self._log(*work)
        else:
            self._log(*work)
        return {"use_case": self.uc.name, "model_name": self.uc.model.registered_name, "request_id": request_id,
                "predictions": predictions}

    def _shadow_loop(self) -> None:
        while (work := self._shadow_q.get()) is not None:
            work = list(work)
            try:
                work[10] = work[-1].challenger.scorer.score(work[4], work[5])
                self.metrics.shadow.labels(self.uc.name).inc(len(work[3]))
            except Exception as exc:  # noqa: BLE001 - shadow never fails the service: the answers are logged anyway
                log.warning("shadow scoring by the challenger failed (%s: %s)", type(exc).__name__, str(exc)[:200])
                self.metrics.error("challenger_failed")
            try:
                self._log(*work)
            except Exception:  # noqa: BLE001
                log.exception("prediction log append failed")
        # drain whatever is still queued (shutdown): log what was answered
        while True:
            try:
                work = self._shadow_q.get_nowait()
            except queue.Empty:
                break
            if work is not None:
                self._log(*work)

    def _log(self, request_id, now, kind, keys, numeric, categorical, found, event_ts, imputed, champion_scores,
             challenger_scores, published, canary, bundle) -> None:
        champion, challenger = bundle.champion, bundle.challenger
        name = self.uc.model.registered_name
        regression = self.uc.is_regression
        num_rows = numeric.tolist()
        cat_rows = categorical.tolist()
        rows = []
        for i, key in enumerate(keys):
            ts = event_ts[i]
            score = float(published[i])
            default = not found[i]
            by = "default" if default else ("challenger" if canary[i] else "champion")
            version = None if default else (challenger.version if canary[i] else champion.version)
            row = [key, None if np.isnan(ts) else float(ts), score]
            if not regression:
                row.append(int(score >= 0.5))
            row += [name, version, by, champion.version, float(champion_scores[i]),
                    challenger.version if (challenger is not None and challenger_scores is not None) else None,
                    float(challenger_scores[i]) if challenger_scores is not None else None,
                    request_id, now, kind, None if np.isnan(ts) else round(now - float(ts), 3), default, imputed]
            row += num_rows[i]
            row += cat_rows[i]
            rows.append(tuple(row))
        self.predlog.append(rows)


def create_app(service: PredictionService):
    """The FastAPI app around ``service`` (started on startup, stopped gracefully on shutdown)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse, Response

    uc = service.uc

    @asynccontextmanager
    async def lifespan(app):
        if not service.started:
            await asyncio.to_thread(service.start)
        yield
        await asyncio.to_thread(service.stop)

    app = FastAPI(title=f"pavedml serving: {uc.name}", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    def error(exc: ServingError) -> Response:
        return Response(json.dumps({"error": exc.reason, "detail": exc.detail}), status_code=exc.status,
                        media_type="application/json")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        reason = await asyncio.to_thread(service.ready)
        if reason:
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        bundle = service.watcher.bundle
        return {"ready": True, "champion_version": bundle.champion.version,
                "challenger_version": bundle.challenger.version if bundle.challenger else None}

    @app.get("/metrics")
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def refused(use_case: str, request: Request) -> Response | None:
        """The error answer when the path names another use case or the token is wrong, else None."""
        try:
            _check_use_case(use_case)
            service.check_token(request.headers.get("authorization"))
        except ServingError as exc:
            return error(exc)
        return None

    @app.get("/v1/{use_case}")
    async def info(use_case: str, request: Request):
        if (answer := refused(use_case, request)) is not None:
            return answer
        bundle = service.watcher.bundle
        return {"use_case": uc.name, "model_name": uc.model.registered_name,
                "champion_version": bundle.champion.version if bundle else None,
                "challenger_version": bundle.challenger.version if bundle and bundle.challenger else None,
                "canary_fraction": uc.serving.canary_fraction, "shadow": uc.serving.shadow,
                "poll_seconds": service.watcher.poll_seconds}

    def _check_use_case(use_case: str) -> None:
        if use_case != uc.name:
            raise ServingError(404, "unknown_use_case", f"this service serves {uc.name}, not {use_case!r}")

    @app.post("/v1/{use_case}/reload")
    async def reload(use_case: str, request: Request):
        if (answer := refused(use_case, request)) is not None:
            return answer
        changed = await asyncio.to_thread(service.watcher.refresh)
        bundle = service.watcher.bundle
        return {"changed": changed, "champion_version": bundle.champion.version if bundle else None,
                "error": service.watcher.last_error or None}

    @app.post("/v1/{use_case}/predict")
    async def predict(use_case: str, request: Request):
        started = time.perf_counter()
        status, n, kind, body = 200, 0, "", b""
        try:
            _check_use_case(use_case)
            service.check_token(request.headers.get("authorization"))
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > service.max_body():  # refused before it is read
                raise ServingError(413, "too_large", f"the body has {declared} bytes, at most {service.max_body()}")
            chunks, size = [], 0
            async for chunk in request.stream():  # a chunked body without a length is capped as it arrives
                size += len(chunk)
                if size > service.max_body():
                    raise ServingError(413, "too_large", f"the body has more than {service.max_body()} bytes")
                chunks.append(chunk)
            body = b"".join(chunks)
            kind, items = service.parse(body)
            n = len(items)
            result = service.predict(kind, items)
            response = Response(json.dumps(result), media_type="application/json")
        except ServingError as exc:
            status = exc.status
            if exc.status not in (404, 503):  # those two count their own, more specific reason
                service.metrics.error(exc.reason)
            response = error(exc)
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 with its type, logged in full
            log.exception("predict failed")
            status = 500
            service.metrics.error("internal")
            response = error(ServingError(500, "internal", f"{type(exc).__name__} (see the service log)"))
        seconds = time.perf_counter() - started
        service.metrics.latency.labels(uc.name, kind if status == 200 else "error").observe(seconds)
        access_log.info(json.dumps({"ts": round(time.time(), 3), "method": "POST", "path": request.url.path,
                                    "status": status, "ms": round(seconds * 1000, 3), "kind": kind, "n": n,
                                    "client": request.client.host if request.client else None}))
        return response

    return app


def _service_from_env() -> PredictionService:
    from pavedml.config import get_use_case
    from pavedml.settings import get_settings

    poll = os.environ.get("PAVEDML_SERVING_POLL_SECONDS")
    return PredictionService(get_use_case(os.environ["PAVEDML_SERVING_USE_CASE"]), get_settings(),
                             poll_seconds=float(poll) if poll else None, token=token_from_env())


def worker_app():
    """The app of one worker process (``--workers N``): each loads the models and reads the store itself."""
    # the event loop answers requests; the registry poll, log writer and shadow scoring run in threads:
    # hand the GIL back to the loop sooner than Python's default 5 ms
    sys.setswitchinterval(0.0005)
    _json_logging(os.environ.get("PAVEDML_SERVING_ACCESS_LOG", "1") == "1")
    return create_app(_service_from_env())


def serve_command(args) -> None:
    """``python -m pavedml serve``: run the service until SIGTERM/SIGINT (graceful)."""
    import uvicorn

    from pavedml.config import get_use_case

    uc = get_use_case(args.use_case)  # a bad use case or config fails here, in one line
    token = token_from_env()
    if args.require_token and not token:
        raise SystemExit("serve: --require-token: set PAVEDML_SERVING_TOKEN or PAVEDML_SERVING_TOKEN_CONN")
    os.environ["PAVEDML_SERVING_USE_CASE"] = uc.name
    os.environ["PAVEDML_SERVING_ACCESS_LOG"] = "1" if args.access_log else "0"
    _json_logging(args.access_log)
    log.info("serving %s on http://%s:%d with %d worker(s) (auth %s)", uc.name, args.host, args.port, args.workers,
             "on" if token else "off")
    common = {"host": args.host, "port": args.port, "log_config": None, "access_log": False,
              "timeout_graceful_shutdown": 15, "loop": "auto", "http": "auto"}
    if args.workers > 1:
        uvicorn.run("pavedml.serving.app:worker_app", factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(worker_app(), **common)
    return None


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from pavedml.redact import redact_urls

        if record.name == access_log.name:
            return record.getMessage()
        return json.dumps({"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                           "message": redact_urls(record.getMessage())})


def _json_logging(access: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    access_log.disabled = not access
