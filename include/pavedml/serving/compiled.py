"""A per-row scoring path for the fitted pipelines of :func:`pavedml.steps.training.make_pipeline`
that leaves pandas and scikit-learn's per-call overhead: plain numpy over rows and trees.

:func:`compile_model` reads the fitted pipeline once into flat arrays and :meth:`CompiledModel.score`
replays exactly what scikit-learn computes (tested equal to :func:`pavedml.metrics.model_scores` on
every test row, NaNs, unknown and infrequent categories included):

- ``SimpleImputer`` (fill NaN with ``statistics_``, drop all-empty columns) and ``StandardScaler``
  (``(x - mean_) / scale_``); an infinite value is refused as scikit-learn refuses it;
- ``OneHotEncoder``: each category's output column is read off the encoder's own ``transform``
  (frequent, infrequent and unknown categories alike), so its rules are not reimplemented;
- linear models: the same ``X @ coef`` product, ``expit`` for a classifier;
- tree ensembles: every tree's nodes in flat arrays. Trees of at most 64 leaves (gradient
  boosting) find their exit leaf without walking (QuickScorer: each node that sends a row right
  clears the leaves of its left subtree in an 8- to 64-bit mask; the exit leaf is the lowest bit
  left);
  deeper trees (random forests) advance all trees one level per step. Comparisons follow
  scikit-learn: ``x <= threshold`` goes left, NaN follows ``missing_go_to_left``, random forests
  compare ``float32(x)``; the trees' outputs are summed in scikit-learn's order.

:func:`scorer` gives the compiled model when the pipeline compiles, else a wrapper calling
``model_scores`` on a DataFrame (it logs why once).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pavedml.config import UseCase

log = logging.getLogger(__name__)
#: At most this many leaves per tree for the bit-mask exit-leaf search (one uint64 per tree).
MASK_LEAVES = 64
#: Rows scored together (more would spill the per-node arrays out of the CPU cache).
CHUNK_ROWS = 128
#: The position of the lowest 0 bit of every 16-bit number (the leftmost leaf no node ruled out).
_LOWEST_ZERO = (np.frexp((~np.arange(1 << 16) & -~np.arange(1 << 16)).astype(np.float64))[1] - 1).astype(np.uint8)
#: A category no encoder knows: what the compiler feeds the encoder to learn its unknown column.
_PROBE = "\x00pavedml-unknown-category\x00"


class UnsupportedModel(ValueError):
    """The pipeline has a step (or a setting of one) the compiled path cannot replay exactly."""


class Scorer(Protocol):
    task: str
    numeric: list[str]
    categorical: list[str]

    def score(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray: ...

    def score_frame(self, df) -> np.ndarray: ...


# --------------------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class _NumericBlock:
    """Numeric columns (positions in the numeric input) through imputer/scaler steps."""

    columns: np.ndarray  # intp positions in the numeric input
    steps: tuple[tuple[str, Any, Any], ...]  # ("impute", statistics, keep) | ("scale", mean|None, scale|None)
    width: int


@dataclass(frozen=True)
class _CategoricalBlock:
    """Categorical columns (positions in the categorical input) one-hot encoded: per column a dict
    category -> output column (relative to the block), and the column of an unknown value (-1: none)."""

    columns: np.ndarray
    lookups: tuple[dict[str, int], ...]
    unknown: tuple[int, ...]
    width: int


def _numeric_block(name: str, transformer, columns: list[str], uc: UseCase) -> _NumericBlock:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    where = f"step 'preprocess' transformer {name!r}"
    positions = _positions(columns, uc.numeric_features, where, "numeric")
    steps = transformer.steps if isinstance(transformer, Pipeline) else [(name, transformer)]
    out: list[tuple[str, Any, Any]] = []
    width = len(columns)
    for step_name, step in steps:
        if type(step) is SimpleImputer:
            missing = step.missing_values
            if not (isinstance(missing, float) and np.isnan(missing)) or step.add_indicator:
                raise UnsupportedModel(f"{where} step {step_name!r}: SimpleImputer with missing_values={missing!r}, "
                                       f"add_indicator={step.add_indicator} (only NaN, no indicator)")
            stats = np.asarray(step.statistics_, dtype="float64")
            keep = ~np.isnan(stats) if not step.keep_empty_features else np.ones(len(stats), dtype=bool)
            stats = np.where(np.isnan(stats), 0.0, stats) if step.keep_empty_features else stats
            out.append(("impute", stats, None if keep.all() else keep))
            width = int(keep.sum())
        elif type(step) is StandardScaler:
            mean = np.asarray(step.mean_, dtype="float64") if step.with_mean else None
            scale = np.asarray(step.scale_, dtype="float64") if step.with_std else None
            out.append(("scale", mean, scale))
        else:
            raise UnsupportedModel(f"{where} step {step_name!r}: cannot compile {type(step).__name__} "
                                   "(only SimpleImputer and StandardScaler)")
    if not out or out[0][0] != "impute":
        raise UnsupportedModel(f"{where}: the numeric steps must start with a SimpleImputer")
    return _NumericBlock(columns=positions, steps=tuple(out), width=width)


def _categorical_block(name: str, encoder, columns: list[str], uc: UseCase) -> _CategoricalBlock:
    import pandas as pd
    from sklearn.preprocessing import OneHotEncoder

    where = f"step 'preprocess' transformer {name!r}"
    if type(encoder) is not OneHotEncoder:
        raise UnsupportedModel(f"{where}: cannot compile {type(encoder).__name__} on categorical columns "
                               "(only OneHotEncoder)")
    if encoder.sparse_output:
        raise UnsupportedModel(f"{where}: OneHotEncoder(sparse_output=True)")
    positions = _positions(columns, uc.categorical_features, where, "categorical")
    for col, cats in zip(columns, encoder.categories_, strict=True):
        if not all(isinstance(c, str) for c in cats):
            raise UnsupportedModel(f"{where}: column {col!r} has non-text categories (features are text)")
    # Each category's (and an unknown value's) output column, read off the encoder itself: one
    # column varies, the others hold a value no encoder knows (all zeros under handle_unknown=ignore).
    width = None
    lookups, unknown = [], []
    for j, (col, cats) in enumerate(zip(columns, encoder.categories_, strict=True)):
        values = [*cats, _PROBE]
        probe = pd.DataFrame({c: (values if k == j else [_PROBE] * len(values)) for k, c in enumerate(columns)},
                             dtype=object)
        try:
            with warnings.catch_warnings():  # "unknown categories ... encoded as all zeros": the point
                warnings.simplefilter("ignore", UserWarning)
                encoded = np.asarray(encoder.transform(probe))
        except ValueError as exc:  # handle_unknown="error"
            raise UnsupportedModel(f"{where}: OneHotEncoder refuses unknown categories ({exc})") from None
        width = encoded.shape[1]
        hot = encoded != 0
        if not np.isin(encoded, (0.0, 1.0)).all() or (hot.sum(axis=1) > 1).any():
            raise UnsupportedModel(f"{where}: column {col!r} does not encode to one column per category")
        target = np.where(hot.any(axis=1), hot.argmax(axis=1), -1)
        lookups.append({str(c): int(t) for c, t in zip(cats, target[:-1], strict=True) if t >= 0})
        unknown.append(int(target[-1]))
        # a category that encodes to nothing (a dropped one) is looked up as unknown: it must be zeros too
        if unknown[-1] >= 0 and (target[:-1] < 0).any():
            raise UnsupportedModel(f"{where}: column {col!r} both drops a category and maps unknowns")
    return _CategoricalBlock(columns=positions, lookups=tuple(lookups), unknown=tuple(unknown),
                             width=int(width or 0))


def _positions(columns, inputs: list[str], where: str, kind: str) -> np.ndarray:
    if not isinstance(columns, list | tuple) or not all(isinstance(c, str) for c in columns):
        raise UnsupportedModel(f"{where}: columns must be selected by name, not {columns!r}")
    unknown = [c for c in columns if c not in inputs]
    if unknown:
        raise UnsupportedModel(f"{where}: column(s) {', '.join(unknown)} are not the use case's {kind} features")
    return np.asarray([inputs.index(c) for c in columns], dtype=np.intp)


# --------------------------------------------------------------------------------------- model heads
@dataclass(frozen=True)
class _Linear:
    coef: np.ndarray  # as scikit-learn multiplies it: (d,) for Ridge, (d, 1) for LogisticRegression
    intercept: Any
    logistic: bool

    def raw(self, Z: np.ndarray) -> np.ndarray:
        return np.reshape(Z @ self.coef + self.intercept, (-1,))

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        raw = self.raw(Z)
        return expit(raw) if self.logistic else raw


@dataclass(frozen=True)
class _Trees:
    """All trees' nodes in flat arrays.

    Level walk (any depth): ``feature``, ``threshold``, ``miss_right`` per node, ``child`` as
    ``[left, right]`` pairs (a leaf points at itself twice), ``roots``, ``depth`` (deepest leaf).
    Mask search (every tree <= 64 leaves): the distinct tests (``m_feature``, ``m_threshold``);
    per internal node (one never-true sentinel first in each tree) its test ``m_test``,
    ``m_miss_right`` and ``m_cleared`` (the bits of its left subtree's leaves, ruled out when the
    node sends the row right), every tree padded with sentinels to ``m_nodes`` nodes; and ``m_values`` (tree t's
    k-th leaf from the left at ``t * 64 + k``).
    ``values`` per node for the level walk. ``float32``: compare ``float32(x)`` (random forests).
    """

    feature: np.ndarray
    threshold: np.ndarray
    miss_right: np.ndarray
    child: np.ndarray
    roots: np.ndarray
    values: np.ndarray
    depth: int
    float32: bool
    any_miss_right: bool
    m_feature: np.ndarray | None = None
    m_threshold: np.ndarray | None = None
    m_test: np.ndarray | None = None
    m_miss_right: np.ndarray | None = None
    m_cleared: np.ndarray | None = None
    m_nodes: int = 0
    m_values: np.ndarray | None = None

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    def leaf_values(self, Z: np.ndarray) -> np.ndarray:
        """(n_trees, n): each tree's output for each row of the model input ``Z`` (n, width)."""
        if len(Z) > CHUNK_ROWS:  # keeps the (nodes x rows) arrays in cache
            return np.concatenate([self.leaf_values(Z[i:i + CHUNK_ROWS]) for i in range(0, len(Z), CHUNK_ROWS)],
                                  axis=1)
        ZT = np.ascontiguousarray(Z.T)  # a row per feature: every step below runs over the rows at once
        if self.float32:
            ZT = ZT.astype(np.float32).astype(np.float64)
        nan = self.any_miss_right and bool(np.isnan(ZT).any())
        if self.m_cleared is not None:
            return self._by_mask(ZT, nan)
        return self._by_level(ZT, nan)

    def _by_mask(self, ZT: np.ndarray, nan: bool) -> np.ndarray:
        assert self.m_feature is not None and self.m_threshold is not None and self.m_test is not None
        assert self.m_cleared is not None and self.m_values is not None
        assert self.m_miss_right is not None
        x = np.take(ZT, self.m_feature, axis=0)  # each distinct (feature, threshold) test once
        right = np.take(x > self.m_threshold[:, None], self.m_test, axis=0)  # not (x <= t): NaN goes left here
        if nan:
            right |= np.take(np.isnan(x), self.m_test, axis=0) & self.m_miss_right[:, None]
        # a node sending the row right rules out its left subtree's leaves; the exit leaf is the
        # leftmost one no node rules out
        ruled = right * self.m_cleared[:, None]
        ruled_out = np.bitwise_or.reduce(ruled.reshape(self.n_trees, self.m_nodes, -1), axis=1)
        if ruled_out.dtype.itemsize <= 2:  # up to 16 leaves: a table of the lowest 0 bit
            leaf = np.take(_LOWEST_ZERO, ruled_out)
        else:
            kept = ~ruled_out
            lowest = kept & (~kept + kept.dtype.type(1))
            leaf = np.frexp(lowest.astype(np.float64))[1] - 1  # exact: a power of two
        return np.take(self.m_values, leaf + (np.arange(self.n_trees, dtype=np.intp) * MASK_LEAVES)[:, None])

    def _by_level(self, ZT: np.ndarray, nan: bool) -> np.ndarray:
        p, n = ZT.shape
        flat = ZT.reshape(-1)
        idx = np.repeat(self.roots, n)  # (tree, row) pairs, tree-major
        col = np.tile(np.arange(n, dtype=np.intp), self.n_trees)
        done = np.empty_like(idx)
        where = np.arange(len(idx))
        for level in range(self.depth):
            x = np.take(flat, np.take(self.feature, idx) * n + col)
            right = x > np.take(self.threshold, idx)
            if nan:
                right |= np.isnan(x) & np.take(self.miss_right, idx)
            idx = np.take(self.child, 2 * idx + right)
            if level % 4 == 3 and level + 1 < self.depth:  # set the pairs at a leaf aside
                at_leaf = np.take(self.child, 2 * idx) == idx
                done[where[at_leaf]] = idx[at_leaf]
                walking = ~at_leaf
                idx, col, where = idx[walking], col[walking], where[walking]
                if not len(idx):
                    break
        done[where] = idx
        return np.take(self.values, done).reshape(self.n_trees, n)


def _pack(trees: list[dict], float32: bool) -> _Trees:
    """Flat arrays from per-tree dicts of left, right (-1 at a leaf), feature, threshold,
    miss_left and value (per node)."""
    feature: list[np.ndarray] = []
    threshold: list[np.ndarray] = []
    miss_right: list[np.ndarray] = []
    child: list[np.ndarray] = []
    values: list[np.ndarray] = []
    roots: list[int] = []
    depth = 0
    offset = 0
    masks_ok = True
    most = 0
    m_feature: list[np.ndarray] = []
    m_threshold: list[np.ndarray] = []
    m_miss: list[np.ndarray] = []
    m_mask: list[list[int]] = []
    m_values: list[np.ndarray] = []
    for tree in trees:
        left, right = tree["left"], tree["right"]
        count = len(left)
        leaf = left < 0
        roots.append(offset)
        here = np.arange(count, dtype=np.intp) + offset
        pairs = np.stack([np.where(leaf, here, left + offset), np.where(leaf, here, right + offset)], axis=1)
        child.append(pairs.reshape(-1))
        feature.append(np.where(leaf, 0, tree["feature"]).astype(np.intp))
        threshold.append(np.where(leaf, np.inf, tree["threshold"]).astype(np.float64))
        miss_right.append(~leaf & ~tree["miss_left"].astype(bool))
        values.append(tree["value"].astype(np.float64))
        # leaves left to right, depth, and each node's leaves (an iterative walk: trees may be deep)
        order: list[int] = []
        node_depth = np.zeros(count, dtype=np.intp)
        first = np.zeros(count, dtype=np.intp)
        last = np.zeros(count, dtype=np.intp)
        stack: list[tuple[int, bool]] = [(0, False)]
        while stack:
            node, done = stack.pop()
            if leaf[node]:
                first[node] = last[node] = len(order)
                order.append(node)
            elif done:
                first[node], last[node] = first[left[node]], last[right[node]]
            else:
                node_depth[left[node]] = node_depth[right[node]] = node_depth[node] + 1
                stack += [(node, True), (int(right[node]), False), (int(left[node]), False)]
        depth = max(depth, int(node_depth[leaf].max()))
        if len(order) > MASK_LEAVES:
            masks_ok = False
        if masks_ok:
            inner = np.flatnonzero(~leaf)
            m_feature.append(np.concatenate([[0], tree["feature"][inner]]).astype(np.intp))
            m_threshold.append(np.concatenate([[np.inf], tree["threshold"][inner]]).astype(np.float64))
            m_miss.append(np.concatenate([[False], ~tree["miss_left"][inner].astype(bool)]))
            cleared = [0]  # going right rules out the left subtree's leaves
            for k in inner:
                lo, hi = int(first[left[k]]), int(last[left[k]])
                cleared.append(((1 << (hi - lo + 1)) - 1) << lo)
            m_mask.append(cleared)
            most = max(most, len(order))
            leaf_values = np.zeros(MASK_LEAVES)
            leaf_values[: len(order)] = tree["value"][order]
            m_values.append(leaf_values)
        offset += count
    masked: dict[str, Any] = {}
    if masks_ok:  # every tree padded with never-true sentinels to the same number of nodes
        width = max(len(f) for f in m_feature)
        m_feature = [np.concatenate([f, np.zeros(width - len(f), dtype=np.intp)]) for f in m_feature]
        m_threshold = [np.concatenate([t, np.full(width - len(t), np.inf)]) for t in m_threshold]
        m_miss = [np.concatenate([m, np.zeros(width - len(m), dtype=bool)]) for m in m_miss]
        m_mask = [c + [0] * (width - len(c)) for c in m_mask]
        feat, thr = np.concatenate(m_feature), np.concatenate(m_threshold)
        tests: dict[tuple[int, float], int] = {}
        test = np.asarray([tests.setdefault(pair, len(tests)) for pair in zip(feat.tolist(), thr.tolist(), strict=True)],
                          dtype=np.intp)
        unique = np.asarray(list(tests), dtype=object).reshape(-1, 2)
        dtype = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if np.iinfo(t).bits >= most)
        masked = {"m_feature": unique[:, 0].astype(np.intp), "m_threshold": unique[:, 1].astype(np.float64),
                  "m_test": test, "m_miss_right": np.concatenate(m_miss),
                  "m_cleared": np.asarray([c for tree in m_mask for c in tree], dtype=dtype),
                  "m_nodes": width, "m_values": np.concatenate(m_values)}
    miss = np.concatenate(miss_right)
    return _Trees(feature=np.concatenate(feature), threshold=np.concatenate(threshold), miss_right=miss,
                  child=np.concatenate(child), roots=np.asarray(roots, dtype=np.intp),
                  values=np.concatenate(values), depth=depth, float32=float32, any_miss_right=bool(miss.any()),
                  **masked)


@dataclass(frozen=True)
class _Boosting:
    """HistGradientBoosting: baseline + each tree's leaf in order, through the loss's inverse link."""

    trees: _Trees
    baseline: float
    inverse: Any

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        leaves = self.trees.leaf_values(Z)
        terms = np.empty((leaves.shape[0] + 1, leaves.shape[1]))
        terms[0] = self.baseline
        terms[1:] = leaves
        raw = np.cumsum(terms, axis=0)[-1]  # sequential, as scikit-learn adds tree after tree
        return np.asarray(self.inverse(raw), dtype=np.float64)


@dataclass(frozen=True)
class _Forest:
    """RandomForest: the trees' outputs (positive-class fraction or value) added in order, / n."""

    trees: _Trees

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        total = np.cumsum(self.trees.leaf_values(Z), axis=0)[-1]  # tree after tree, as scikit-learn
        return total / self.trees.n_trees


def _head(est, task: str):
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge

    classifier = task != "regression"
    kind = type(est)
    where = f"step 'model' ({kind.__name__})"
    if classifier and kind in (HistGradientBoostingClassifier, RandomForestClassifier, LogisticRegression):
        if len(est.classes_) != 2:
            raise UnsupportedModel(f"{where}: {len(est.classes_)} classes (a binary classifier needs 2)")
    elif classifier or kind not in (HistGradientBoostingRegressor, RandomForestRegressor, Ridge):
        raise UnsupportedModel(f"{where}: cannot compile a {kind.__name__} for task {task}")
    if kind in (LogisticRegression, Ridge):
        coef = np.asarray(est.coef_, dtype=np.float64)
        if kind is LogisticRegression:
            return _Linear(coef=coef.T, intercept=est.intercept_, logistic=True)
        if coef.ndim != 1:
            raise UnsupportedModel(f"{where}: {coef.shape[0]} targets (one is supported)")
        return _Linear(coef=coef, intercept=est.intercept_, logistic=False)
    if kind in (RandomForestClassifier, RandomForestRegressor):
        if est.n_outputs_ != 1:
            raise UnsupportedModel(f"{where}: {est.n_outputs_} outputs (one is supported)")
        column = 1 if classifier else 0
        trees = [{"left": t.tree_.children_left, "right": t.tree_.children_right, "feature": t.tree_.feature,
                  "threshold": t.tree_.threshold, "miss_left": t.tree_.missing_go_to_left,
                  "value": t.tree_.value[:, 0, column]} for t in est.estimators_]
        return _Forest(_pack(trees, float32=True))
    # HistGradientBoosting
    if getattr(est, "_preprocessor", None) is not None or est.n_trees_per_iteration_ != 1:
        raise UnsupportedModel(f"{where}: categorical_features or more than one tree per iteration")
    trees = []
    for (predictor,) in est._predictors:
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise UnsupportedModel(f"{where}: categorical splits")
        leaf = nodes["is_leaf"].astype(bool)
        trees.append({"left": np.where(leaf, -1, nodes["left"].astype(np.intp)),
                      "right": np.where(leaf, -1, nodes["right"].astype(np.intp)),
                      "feature": nodes["feature_idx"], "threshold": nodes["num_threshold"],
                      "miss_left": nodes["missing_go_to_left"], "value": nodes["value"]})
    baseline = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)
    return _Boosting(_pack(trees, float32=False), baseline=float(baseline[0]), inverse=est._loss.link.inverse)


# --------------------------------------------------------------------------------------- the model
class CompiledModel:
    """A fitted pipeline as numpy arrays: :meth:`score` equals ``model_scores`` on the same rows."""

    def __init__(self, task: str, numeric: list[str], categorical: list[str], blocks: list, width: int, head):
        self.task = task
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self._blocks = blocks  # (start column, block) in output order
        self._width = width
        self._head = head

    def __repr__(self) -> str:
        return f"CompiledModel({self.task}, {type(self._head).__name__}, {len(self.numeric)}+{len(self.categorical)} features)"

    def transform(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """The model's input (what the pipeline's ``preprocess`` step gives) as float64 (n, width)."""
        numeric = np.asarray(numeric, dtype=np.float64)
        categorical = np.asarray(categorical, dtype=object)
        n = numeric.shape[0] if numeric.ndim == 2 else -1
        if numeric.shape != (n, len(self.numeric)) or categorical.shape != (n, len(self.categorical)):
            raise ValueError(f"expected numeric ({n}, {len(self.numeric)}) and categorical ({n}, "
                             f"{len(self.categorical)}) arrays, got {numeric.shape} and {categorical.shape}")
        Z = np.zeros((n, self._width))
        for start, block in self._blocks:
            if isinstance(block, _NumericBlock):
                x = np.take(numeric, block.columns, axis=1)
                if np.isinf(x).any():  # scikit-learn's imputer refuses infinity too
                    bad = [self.numeric[c] for c, col in zip(block.columns, np.isinf(x).T, strict=True) if col.any()]
                    raise ValueError(f"numeric feature(s) {', '.join(bad)} hold infinity (the pipeline refuses it)")
                for step, a, b in block.steps:
                    if step == "impute":
                        x = np.where(np.isnan(x), a, x)
                        if b is not None:
                            x = x[:, b]
                    else:
                        if a is not None:
                            x = x - a
                        if b is not None:
                            x = x / b
                Z[:, start:start + block.width] = x
            else:
                cols = np.empty((n, len(block.lookups)), dtype=np.intp)
                for j, (c, lookup, unknown) in enumerate(zip(block.columns, block.lookups, block.unknown,
                                                             strict=True)):
                    cols[:, j] = [lookup.get(v, unknown) for v in categorical[:, c]]
                rows, which = np.nonzero(cols >= 0)
                Z[rows, start + cols[rows, which]] = 1.0
        return Z

    def score(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """Positive-class probability (classifier) or predicted value (regressor), float64 (n,).

        Args:
            numeric: (n, len(self.numeric)) float64 in :attr:`numeric` order, NaN = missing.
            categorical: (n, len(self.categorical)) object array of str in :attr:`categorical` order.
        """
        return self._head(self.transform(numeric, categorical))

    def score_frame(self, df) -> np.ndarray:
        """:meth:`score` of a DataFrame holding the feature columns."""
        return self.score(df[self.numeric].to_numpy(dtype=np.float64, na_value=np.nan),
                          df[self.categorical].to_numpy(dtype=object))


def compile_model(pipeline, uc: UseCase) -> CompiledModel:
    """Compile a fitted ``make_pipeline`` pipeline. Raises :class:`UnsupportedModel` naming the
    step (and setting) it cannot replay exactly."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline):
        raise UnsupportedModel(f"cannot compile a {type(pipeline).__name__} (a fitted Pipeline of "
                               "'preprocess' and 'model' is expected)")
    names = [name for name, _ in pipeline.steps]
    if len(names) != 2:
        extra = names[1:-1] or names
        raise UnsupportedModel(f"cannot compile step(s) {', '.join(map(repr, extra))}: the pipeline must be "
                               f"['preprocess', 'model'], not {names}")
    (pre_name, pre), (_, est) = pipeline.steps
    if type(pre) is not ColumnTransformer:
        raise UnsupportedModel(f"cannot compile step {pre_name!r}: {type(pre).__name__} (a ColumnTransformer is expected)")
    if getattr(pre, "sparse_output_", False):
        raise UnsupportedModel(f"step {pre_name!r}: sparse output")
    blocks: list[tuple[int, Any]] = []
    width = 0
    for name, transformer, columns in pre.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if isinstance(transformer, str) or len(columns) == 0:
            if len(columns) == 0:
                continue
            raise UnsupportedModel(f"step {pre_name!r} transformer {name!r}: {transformer!r} is not compiled")
        columns = list(columns)
        if all(c in uc.numeric_features for c in columns) and not isinstance(_last(transformer), _ohe()):
            block: Any = _numeric_block(name, transformer, columns, uc)
        else:
            block = _categorical_block(name, transformer, columns, uc)
        blocks.append((width, block))
        width += block.width
    if width != getattr(est, "n_features_in_", width):
        raise UnsupportedModel(f"step 'model' expects {est.n_features_in_} inputs, preprocess gives {width}")
    return CompiledModel(uc.task, uc.numeric_features, uc.categorical_features, blocks, width, _head(est, uc.task))


def _last(transformer):
    steps = getattr(transformer, "steps", None)
    return steps[-1][1] if steps else transformer


def _ohe():
    from sklearn.preprocessing import OneHotEncoder

    return OneHotEncoder


class PipelineScorer:
    """The scorer of a pipeline that does not compile: ``model_scores`` on a DataFrame."""

    def __init__(self, pipeline, uc: UseCase, reason: str):
        self.task = uc.task
        self.numeric = list(uc.numeric_features)
        self.categorical = list(uc.categorical_features)
        self.pipeline = pipeline
        self.reason = reason

    def score(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame(np.asarray(numeric, dtype=np.float64), columns=self.numeric)
        cats = np.asarray(categorical, dtype=object)
        for j, col in enumerate(self.categorical):
            frame[col] = pd.Series(cats[:, j], dtype=object)
        return self.score_frame(frame)

    def score_frame(self, df) -> np.ndarray:
        from pavedml.metrics import model_scores

        return model_scores(self.pipeline, df[[*self.numeric, *self.categorical]], self.task)


def scorer(pipeline, uc: UseCase) -> CompiledModel | PipelineScorer:
    """The compiled model when the pipeline compiles, else a :class:`PipelineScorer` (logged once)."""
    try:
        return compile_model(pipeline, uc)
    except UnsupportedModel as exc:
        log.warning("use case %s: scoring through scikit-learn per call (slower): %s", uc.name, exc)
        return PipelineScorer(pipeline, uc, str(exc))
