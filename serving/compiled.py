"""The champion's trees as flat NumPy arrays, walked for every tree at once.

Why: scikit-learn's ``HistGradientBoostingClassifier.predict_proba`` walks its
trees one Python call at a time (an OpenMP region each), and the Pipeline in
front of it builds a pandas frame. For one row and hundreds of trees nearly
all of that time is overhead. Here every node of every tree lives in one set of
arrays, leaves point at themselves, and a row descends all trees together in
``max_depth`` vectorised steps: the same fitted model, the same arithmetic
(a test compares it with ``predict_proba`` on the mart's rows), in a fraction of
the time (``bench/serve.py`` sets the API against ``mlflow models serve`` on the
same model version).

Only the pipeline shape ``ml.factories.gradient_boosting`` builds is compiled
(ordinal-encoded categoricals + passthrough numerics → binary HGB), with or
without the Platt scaling ``ml.factories.platt_scaled`` adds on the validation
window (two numbers applied to the raw score); ``compile_pipeline`` returns
None for anything else and the caller falls back to scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CompiledModel:
    """All trees of a binary HistGradientBoostingClassifier, flattened."""

    codes: list[dict[Any, float]]  # per categorical feature: category → ordinal code
    feature: np.ndarray  # int64 column of X each node tests (0 at leaves)
    threshold: np.ndarray  # float64 numeric threshold
    left: np.ndarray  # int64 global node index; leaves point at themselves
    right: np.ndarray
    missing_left: np.ndarray  # bool: NaN (and unknown categories) go left
    category_row: np.ndarray  # int64 row into go_left_by_code, -1 for numeric splits
    go_left_by_code: np.ndarray  # bool (n_categorical_splits + 1, 256): direction per category code
    value: np.ndarray  # float64 leaf value (0 at inner nodes)
    roots: np.ndarray  # int64 first node of each tree
    depth: int
    baseline: float
    # Platt scaling (a, b): P = 1 / (1 + exp(a * raw + b)); None: P = 1 / (1 + exp(-raw)).
    platt: tuple[float, float] | None = None

    def encode(self, rows: Sequence[dict[str, Any]], categorical: list[str], numeric: list[str]) -> np.ndarray:
        """Rows of raw features → the float matrix the trees test, as the Pipeline's encoder does."""
        x = np.empty((len(rows), len(categorical) + len(numeric)), dtype=np.float64)
        for i, row in enumerate(rows):
            for j, name in enumerate(categorical):
                x[i, j] = self.codes[j].get(row.get(name), -1.0)
            for j, name in enumerate(numeric, start=len(categorical)):
                value = row.get(name)
                x[i, j] = np.nan if value is None else float(value)
        return x

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """P(positive class) for each row of the encoded matrix."""
        n_rows = x.shape[0]
        node = np.broadcast_to(self.roots, (n_rows, self.roots.size)).copy()
        row_index = np.arange(n_rows)[:, None]
        for _ in range(self.depth):
            value = x[row_index, self.feature[node]]
            missing = np.isnan(value)
            go_left = value <= self.threshold[node]
            category_row = self.category_row[node]
            categorical = category_row >= 0
            if categorical.any():
                # Negative codes (unknown or missing) and codes outside the
                # learned bitsets follow the missing direction, as in sklearn.
                code = np.where(missing | (value < 0), 255, value).astype(np.int64).clip(0, 255)
                by_code = self.go_left_by_code[category_row, code]  # numeric splits read the spare last row
                go_left = np.where(categorical, by_code, go_left)
                missing |= categorical & (value < 0)
            go_left = np.where(missing, self.missing_left[node], go_left)
            node = np.where(go_left, self.left[node], self.right[node])
        raw = self.baseline + self.value[node].sum(axis=1)
        if self.platt is not None:
            a, b = self.platt
            return 1.0 / (1.0 + np.exp(a * raw + b))
        return 1.0 / (1.0 + np.exp(-raw))


def _bits(bitset: np.ndarray) -> np.ndarray:
    """An (8,) uint32 sklearn bitset → a (256,) bool membership table."""
    return np.unpackbits(bitset.astype("<u4").view(np.uint8), bitorder="little").astype(bool)


def compile_pipeline(pipeline: Any, categorical: list[str], numeric: list[str]) -> CompiledModel | None:
    """Flatten a fitted ``ml.factories.gradient_boosting`` pipeline, or None if it has another shape."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    steps = getattr(pipeline, "named_steps", {})
    encode, model = steps.get("encode"), steps.get("model")
    model, platt = _platt(model)
    if not isinstance(encode, ColumnTransformer) or not isinstance(model, HistGradientBoostingClassifier):
        return None
    if model.n_trees_per_iteration_ != 1:
        return None
    transformers = {name: (est, cols) for name, est, cols in encode.transformers_}
    ordinal, ordinal_cols = transformers.get("categorical", (None, []))
    passthrough, numeric_cols = transformers.get("numeric", (None, []))
    # A fitted ColumnTransformer holds "passthrough" as an identity FunctionTransformer.
    identity = passthrough == "passthrough" or (
        isinstance(passthrough, FunctionTransformer) and passthrough.func is None
    )
    if list(ordinal_cols) != categorical or list(numeric_cols) != numeric or not identity:
        return None
    if categorical and not isinstance(ordinal, OrdinalEncoder):
        return None

    codes: list[dict[Any, float]] = []
    for categories in ordinal.categories_ if categorical else []:
        # OrdinalEncoder learns None as a category of its own (only NaN counts as missing).
        codes.append({c: float(k) for k, c in enumerate(categories) if c is None or isinstance(c, str)})

    known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
    feature: list[np.ndarray] = []
    threshold: list[np.ndarray] = []
    left: list[np.ndarray] = []
    right: list[np.ndarray] = []
    missing_left: list[np.ndarray] = []
    value: list[np.ndarray] = []
    category_row: list[np.ndarray] = []
    tables: list[np.ndarray] = []
    roots: list[int] = []
    offset, depth = 0, 0
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        roots.append(offset)
        leaf = nodes["is_leaf"].astype(bool)
        own = np.arange(offset, offset + len(nodes))
        feature.append(np.where(leaf, 0, nodes["feature_idx"]))
        threshold.append(nodes["num_threshold"])
        left.append(np.where(leaf, own, nodes["left"].astype(np.int64) + offset))
        right.append(np.where(leaf, own, nodes["right"].astype(np.int64) + offset))
        missing_left.append(nodes["missing_go_to_left"].astype(bool))
        value.append(np.where(leaf, nodes["value"], 0.0))
        rows = np.full(len(nodes), -1, dtype=np.int64)
        for n in np.flatnonzero(nodes["is_categorical"].astype(bool) & ~leaf):
            in_left = _bits(predictor.raw_left_cat_bitsets[nodes["bitset_idx"][n]])
            is_known = _bits(known[f_idx_map[nodes["feature_idx"][n]]])
            # sklearn: in the left bitset → left; known otherwise → right; unknown → missing side.
            table = np.where(in_left, True, np.where(is_known, False, bool(nodes["missing_go_to_left"][n])))
            table[255] = bool(nodes["missing_go_to_left"][n])  # the slot encode() gives missing values
            rows[n] = len(tables)
            tables.append(table)
        category_row.append(rows)
        depth = max(depth, int(nodes["depth"].max()))
        offset += len(nodes)
    tables.append(np.zeros(256, dtype=bool))  # row -1: numeric splits index here and ignore the result
    return CompiledModel(
        codes=codes,
        feature=np.concatenate(feature).astype(np.int64),
        threshold=np.concatenate(threshold).astype(np.float64),
        left=np.concatenate(left),
        right=np.concatenate(right),
        missing_left=np.concatenate(missing_left),
        category_row=np.concatenate(category_row),
        go_left_by_code=np.stack(tables),
        value=np.concatenate(value).astype(np.float64),
        roots=np.asarray(roots, dtype=np.int64),
        depth=depth,
        baseline=float(np.ravel(model._baseline_prediction)[0]),
        platt=platt,
    )


def _platt(model: Any) -> tuple[Any, tuple[float, float] | None]:
    """(the model under the calibration, its Platt (a, b)); (model, None) when it is not calibrated.

    Only ``ml.factories.platt_parts``'s shape is unwrapped; any other calibration
    is returned as is and not compiled.
    """
    from ml.factories import platt_parts

    parts = platt_parts(model)
    if parts is None:
        return model, None
    inner, sigmoid = parts
    return inner, None if sigmoid is None else (float(sigmoid.a_), float(sigmoid.b_))
