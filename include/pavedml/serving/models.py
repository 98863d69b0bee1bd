"""The models a prediction service answers with, and their hot swap.

A :class:`ModelWatcher` asks the registry every ``serving.poll_seconds`` (or at once on
:meth:`ModelWatcher.refresh`, e.g. from ``POST /v1/<use case>/reload``) which versions the
``champion`` and ``challenger`` aliases name. A version not loaded yet is loaded, compiled
(:mod:`pavedml.serving.compiled`) and warmed *beside* the one serving; then one reference
(:attr:`ModelWatcher.bundle`, an immutable :class:`Bundle`) is replaced. A request reads that
reference once, so it is answered wholly by the old set or wholly by the new one, never a mix, and
nothing waits for a load. A registry that cannot be reached keeps the loaded models serving
(logged and counted); a version that fails to load is not swapped in (the old one keeps serving).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pavedml.config import UseCase
from pavedml.settings import Settings

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Loaded:
    """One registered version, compiled and warmed."""

    version: str
    scorer: Any  # pavedml.serving.compiled.CompiledModel (or its sklearn fallback)
    run_id: str
    loaded_at: float
    seconds: float


@dataclass(frozen=True)
class Bundle:
    """What answers requests: the champion and, while one is in shadow, the challenger."""

    champion: Loaded
    challenger: Loaded | None = None
    #: the day the challenger's shadow state was judged for (re-judged on the next poll of a new day)
    day: str = ""
    swapped_at: float = field(default_factory=time.time)


class ModelWatcher:
    """Loads ``models:/<name>@champion`` (and an in-shadow ``@challenger``) and swaps on alias moves."""

    def __init__(self, uc: UseCase, settings: Settings, *, poll_seconds: float | None = None,
                 on_swap=None, on_error=None) -> None:
        self.uc = uc
        self.settings = settings
        self.poll_seconds = poll_seconds if poll_seconds is not None else uc.serving.poll_seconds
        self.bundle: Bundle | None = None
        self.last_error: str = "the champion is not loaded yet"
        self.last_poll: float = 0.0
        self._cache: dict[str, Loaded] = {}
        self._failures: dict[str, tuple[float, int, str]] = {}  # version -> (next try, failures, why)
        self._lock = threading.Lock()  # one refresh at a time (the poller and a push)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self._on_swap = on_swap or (lambda old, new: None)
        self._on_error = on_error or (lambda reason: None)

    # -- registry
    def client(self):
        if self._client is None:
            import mlflow

            from pavedml.adapters.tracking import connect

            connect(self.settings, self.uc.name, wait_s=0)  # the poller tries again; a request never waits
            self._client = mlflow.MlflowClient()
        return self._client

    def _load(self, version: str) -> Loaded:
        cached = self._cache.get(version)
        if cached is not None:
            return cached
        import mlflow
        import numpy as np

        from pavedml.serving.compiled import scorer

        started = time.perf_counter()
        name = self.uc.model.registered_name
        pipeline = mlflow.sklearn.load_model(f"models:/{name}/{version}")
        compiled = scorer(pipeline, self.uc)
        # warm: the first call of every code path before any request sees it
        n_num, n_cat = len(self.uc.numeric_features), len(self.uc.categorical_features)
        for rows in (1, 8):
            numeric = np.zeros((rows, n_num), dtype="float64")
            categorical = np.full((rows, n_cat), "__missing__", dtype=object)
            compiled.score(numeric, categorical)
        mv = self.client().get_model_version(name, version)
        loaded = Loaded(version=str(version), scorer=compiled, run_id=mv.run_id or "", loaded_at=time.time(),
                        seconds=round(time.perf_counter() - started, 3))
        log.info("loaded %s v%s in %.2fs (%s)", name, version, loaded.seconds, type(compiled).__name__)
        self._cache[str(version)] = loaded
        return loaded

    def _load_or_backoff(self, version: str) -> Loaded:
        """Load ``version``; one that failed is not tried again before its backoff (30 s, doubling to
        15 min): a broken version is not downloaded and unpickled beside the requests every poll."""
        failed = self._failures.get(version)
        if failed is not None and time.monotonic() < failed[0]:
            raise RuntimeError(f"v{version} failed to load ({failed[2]}); next try in "
                               f"{failed[0] - time.monotonic():.0f} s")
        try:
            loaded = self._load(version)
        except Exception as exc:
            wait = min(900.0, 30.0 * 2 ** (failed[1] if failed else 0))
            self._failures[version] = (time.monotonic() + wait, (failed[1] + 1) if failed else 1,
                                       f"{type(exc).__name__}: {str(exc)[:200]}")
            raise
        self._failures.pop(version, None)
        return loaded

    def refresh(self) -> bool:
        """Ask the registry now; load what moved and swap. True when the bundle changed."""
        from pavedml.adapters.tracking import alias_version
        from pavedml.steps.scoring import in_shadow

        with self._lock:
            self.last_poll = time.time()
            name = self.uc.model.registered_name
            try:
                client = self.client()
                champion_mv = alias_version(client, name, CHAMPION)
                if champion_mv is None:
                    self.last_error = f"{name} has no champion yet (run {self.uc.dag_id('training_pipeline')})"
                    self._on_error("no_champion")
                    return False
                challenger_mv = alias_version(client, name, CHALLENGER)
                today = datetime.now(UTC).date()
                shadow = challenger_mv if in_shadow(self.uc, challenger_mv, champion_mv, today) else None
                current = self.bundle
                wanted = (str(champion_mv.version), str(shadow.version) if shadow is not None else None)
                if current is not None and (current.champion.version,
                                            current.challenger.version if current.challenger else None) == wanted:
                    self.last_error = ""
                    return False
                champion = self._load_or_backoff(wanted[0])
                challenger = None
                if wanted[1] is not None:
                    try:
                        challenger = self._load_or_backoff(wanted[1])
                    except Exception as exc:  # noqa: BLE001 - the champion swaps in without it
                        log.warning("challenger v%s not loaded (%s): serving without it", wanted[1], exc)
                        self._on_error("challenger")
                if current is not None and (current.champion.version,
                                            current.challenger.version if current.challenger else None) == \
                        (champion.version, challenger.version if challenger else None):
                    self.last_error = ""
                    return False
            except Exception as exc:  # noqa: BLE001 - keep serving what is loaded; say why
                from pavedml.redact import redact_urls

                self.last_error = redact_urls(f"registry or model load failed: {type(exc).__name__}: {exc}")[:500]
                log.warning("%s; %s", self.last_error,
                            "still serving v" + self.bundle.champion.version if self.bundle else "not ready")
                self._on_error("registry")
                return False
            new = Bundle(champion=champion, challenger=challenger, day=today.isoformat())
            old, self.bundle = self.bundle, new  # the swap: one reference
            self.last_error = ""
            keep = {champion.version} | ({challenger.version} if challenger else set())
            for version in list(self._cache):  # a version swapped out is dropped (a swap back reloads it)
                if version not in keep:
                    del self._cache[version]
            log.info("serving %s champion v%s%s (was %s)", name, champion.version,
                     f", challenger v{challenger.version} in shadow" if challenger else "",
                     f"v{old.champion.version}" if old else "nothing")
            self._on_swap(old, new)
            # what a load allocated (modules, the models) is long-lived: out of the collector's way, so
            # a full collection scans only what requests allocate (no tens-of-ms pauses in the tail)
            import gc

            gc.collect()
            gc.freeze()
            return True

    # -- background polling
    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, name="model-watcher", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds if self.bundle is not None else min(self.poll_seconds, 2.0)):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
