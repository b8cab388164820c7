"""Isolation Forest: fit on feature rows, export to a small ONNX graph that scores like sklearn.

skl2onnx's stock IsolationForest converter emits ~30 nodes per tree (5,800 for 200 trees),
which is slow to build and slow to run. Here every tree goes into ONE ``TreeEnsembleRegressor``
whose leaf weights are the per-tree path lengths sklearn would add up (leaf depth plus the
``c(n)`` correction for the training samples left in the leaf), summed over trees; a handful of
arithmetic nodes turn that sum into ``decision_function``.

Parity with sklearn is exact up to float rounding, by construction rather than by luck:

* sklearn casts the input to float32 and compares it, as float64, with float64 thresholds, and
  accumulates path lengths in float64. ONNX Runtime's TreeEnsembleRegressor keeps thresholds in
  the input's type, so the trees run on a float64 copy of the (float32) scaled input, with the
  float64 thresholds and leaf weights stored as ``*_as_tensor`` attributes.
* RobustScaler on float32 input computes ``float32(float32(x - center) / scale)`` with a float64
  ``scale_``. skl2onnx's own scaler converter multiplies by a float32 ``1/scale``, which is off by
  an ulp now and then, and an ulp on the wrong side of a threshold moves a whole tree. Our scaler
  converter repeats sklearn's arithmetic instead: float32 subtraction, float64 division, cast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, numpy_helper
from skl2onnx import to_onnx, update_registered_converter
from skl2onnx._supported_operators import sklearn_operator_name_map
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
from skl2onnx.shape_calculators.scaler import calculate_sklearn_scaler_output_shapes
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import RobustScaler

INPUT_NAME = "X"
LABEL_OUTPUT = "label"
SCORE_OUTPUT = "scores"
#: ai.onnx.ml 3 is the last opset with TreeEnsembleRegressor and its ``*_as_tensor`` attributes.
TARGET_OPSET: dict[str, int] = {"": 18, "ai.onnx.ml": 3}

_ML_DOMAIN = "ai.onnx.ml"
_ML_OPSET = TARGET_OPSET[_ML_DOMAIN]
_IFOREST_ALIAS = "EdgeAgentPathLengthIsolationForest"
_SCALER_ALIAS = "EdgeAgentExactRobustScaler"
_REGISTRY_LOCK = threading.Lock()


def fit_iforest(
    features: NDArray[np.float32],
    n_estimators: int = 200,
    max_samples: int | str = 256,
    contamination: float | str = "auto",
    seed: int = 0,
    n_jobs: int = 1,
) -> Pipeline:
    """RobustScaler + IsolationForest on float32 feature rows (the dtype the agent scores).

    Feed the returned pipeline float32 rows too: a float64 row is scaled in float64 and can
    land on the other side of a threshold than the ONNX model, which only sees float32.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"features must be a 2-D array with at least 2 rows, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf; drop those rows before fitting")
    pipeline = Pipeline(
        [
            ("scaler", RobustScaler()),
            (
                "iforest",
                IsolationForest(
                    n_estimators=n_estimators,
                    max_samples=max_samples,
                    contamination=contamination,
                    random_state=seed,
                    n_jobs=n_jobs,
                ),
            ),
        ]
    )
    return pipeline.fit(x)


def scaler_params(pipeline: Pipeline) -> dict[str, list[float]]:
    """The RobustScaler's center and scale, for the manifest (identity where disabled)."""
    scaler = _steps(pipeline)[0]
    n = int(scaler.n_features_in_)
    center = scaler.center_ if scaler.center_ is not None else np.zeros(n)
    scale = scaler.scale_ if scaler.scale_ is not None else np.ones(n)
    return {
        "center": [float(v) for v in np.asarray(center, dtype=np.float64)],
        "scale": [float(v) for v in np.asarray(scale, dtype=np.float64)],
    }


def iforest_to_onnx(pipeline: Pipeline, n_features: int) -> onnx.ModelProto:
    """Convert the fitted pipeline with the path-length converters (see the module docstring).

    Input ``X`` float32 [None, n_features]; outputs ``label`` int64 [None] (1 normal, -1 anomaly,
    as ``predict``) and ``scores`` float32 [None, 1] (``decision_function``).
    """
    scaler, forest = _steps(pipeline)
    if scaler.n_features_in_ != n_features or forest.n_features_in_ != n_features:
        raise ValueError(
            f"pipeline was fitted on {forest.n_features_in_} features, not {n_features}"
        )
    with _path_length_converters():
        model = to_onnx(
            pipeline,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            target_opset=TARGET_OPSET,
        )
    if not isinstance(model, onnx.ModelProto):  # to_onnx is typed loosely
        raise TypeError(f"skl2onnx returned {type(model).__name__}, not a ModelProto")
    return model


def export_iforest(pipeline: Pipeline, n_features: int, path: Path) -> dict[str, Any]:
    """Write the ONNX model to ``path``; return what the manifest needs to know about it."""
    start = time.perf_counter()
    model = iforest_to_onnx(pipeline, n_features)
    convert_seconds = time.perf_counter() - start
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return {
        "input_name": INPUT_NAME,
        "score_output": SCORE_OUTPUT,
        "score_sign": -1,  # decision_function is high for normal rows; the agent wants the opposite
        "input_shape": [None, n_features],
        "nodes": len(model.graph.node),
        "convert_seconds": convert_seconds,
    }


def _steps(pipeline: Pipeline) -> tuple[RobustScaler, IsolationForest]:
    if len(pipeline.steps) != 2:
        raise TypeError("expected Pipeline([('scaler', RobustScaler()), ('iforest', ...)])")
    scaler, forest = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(scaler, RobustScaler) or not isinstance(forest, IsolationForest):
        raise TypeError(
            f"expected RobustScaler then IsolationForest, got "
            f"{type(scaler).__name__} then {type(forest).__name__}"
        )
    return scaler, forest


@contextmanager
def _path_length_converters() -> Iterator[None]:
    """Register our converters for one conversion, then put skl2onnx's back.

    Restoring keeps the stock converter available to anything else in the process (the
    benchmark compares against it); the lock keeps two conversions from interleaving.
    """
    with _REGISTRY_LOCK:
        saved = {cls: sklearn_operator_name_map.get(cls) for cls in (IsolationForest, RobustScaler)}
        update_registered_converter(
            IsolationForest,
            _IFOREST_ALIAS,
            _iforest_output_shapes,
            _convert_iforest,
            options={"score_samples": [False]},
        )
        update_registered_converter(
            RobustScaler, _SCALER_ALIAS, calculate_sklearn_scaler_output_shapes, _convert_scaler
        )
        try:
            yield
        finally:
            for cls, alias in saved.items():
                if alias is None:
                    sklearn_operator_name_map.pop(cls, None)
                else:
                    sklearn_operator_name_map[cls] = alias


# --- skl2onnx converters ---------------------------------------------------------------------


def _iforest_output_shapes(operator: Any) -> None:
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = Int64TensorType([n])
    operator.outputs[1].type = FloatTensorType([n, 1])


def _convert_scaler(scope: Any, operator: Any, container: Any) -> None:
    """``float32(float32(x - center) / scale)``, in the precision sklearn does each step."""
    scaler: RobustScaler = operator.raw_operator
    current = operator.inputs[0].full_name
    out = operator.outputs[0].full_name
    steps: list[tuple[str, str, NDArray[Any]]] = []
    if scaler.center_ is not None:
        steps.append(("Sub", "center", np.asarray(scaler.center_)))
    if scaler.scale_ is not None:
        steps.append(("Div", "scale", np.asarray(scaler.scale_)))
    if not steps:
        container.add_node("Identity", current, out, name=scope.get_unique_operator_name("Id"))
        return
    for i, (op_type, label, values) in enumerate(steps):
        result = out if i == len(steps) - 1 else scope.get_unique_variable_name(label + "d")
        if _exact_in_float32(values):
            # float32 op == float64 op rounded to float32 for float32 operands (double rounding
            # is harmless for + - * / when 53 >= 2*24 + 2), so no casts are needed.
            const = _add_constant(scope, container, label, values.astype(np.float32))
            _node(scope, container, op_type, [current, const], result)
        else:
            wide = _node(scope, container, "Cast", [current], None, to=TensorProto.DOUBLE)
            const = _add_constant(scope, container, label, values.astype(np.float64))
            wide_result = _node(scope, container, op_type, [wide, const], None)
            _node(scope, container, "Cast", [wide_result], result, to=TensorProto.FLOAT)
        current = result


def _convert_iforest(scope: Any, operator: Any, container: Any) -> None:
    forest: IsolationForest = operator.raw_operator
    n_trees = len(forest.estimators_)
    c_max = float(_average_path_length([_max_samples(forest)])[0])
    if n_trees == 0 or c_max == 0.0:
        raise ValueError("cannot convert an IsolationForest fitted on fewer than 2 samples")

    x64 = _node(
        scope, container, "Cast", [operator.inputs[0].full_name], None, to=TensorProto.DOUBLE
    )
    path_sum32 = scope.get_unique_variable_name("path_length_sum")
    container.add_node(
        "TreeEnsembleRegressor",
        x64,
        path_sum32,
        op_domain=_ML_DOMAIN,
        op_version=_ML_OPSET,
        name=scope.get_unique_operator_name("TreeEnsembleRegressor"),
        **_tree_ensemble_attributes(forest),
    )
    # The op's output is float32 whatever its input; the sum of ~200 path lengths keeps ~7
    # significant digits, far below the 1e-3 the agent could ever notice.
    path_sum = _node(scope, container, "Cast", [path_sum32], None, to=TensorProto.DOUBLE)
    # sklearn: score_samples = -2 ** -(sum / (n_trees * c)); decision = score_samples - offset_.
    # Negating the divisor and folding the sign into the offset is exact, so this is the same
    # float64 arithmetic in two fewer nodes.
    neg_denominator = _add_constant(
        scope, container, "neg_denominator", np.array([-(n_trees * c_max)], dtype=np.float64)
    )
    exponent = _node(scope, container, "Div", [path_sum, neg_denominator], None)
    two = _add_constant(scope, container, "two", np.array([2.0], dtype=np.float64))
    positive_score = _node(scope, container, "Pow", [two, exponent], None)
    neg_offset = _add_constant(
        scope, container, "neg_offset", np.array([-float(forest.offset_)], dtype=np.float64)
    )
    decision = _node(scope, container, "Sub", [neg_offset, positive_score], None)
    _node(scope, container, "Cast", [decision], operator.outputs[1].full_name, to=TensorProto.FLOAT)

    zero = _add_constant(scope, container, "zero", np.array([0.0], dtype=np.float64))
    is_anomaly = _node(scope, container, "Less", [decision, zero], None)
    minus_one = _add_constant(scope, container, "minus_one", np.array([-1], dtype=np.int64))
    one = _add_constant(scope, container, "one", np.array([1], dtype=np.int64))
    label_column = _node(scope, container, "Where", [is_anomaly, minus_one, one], None)
    flat = _add_constant(scope, container, "flat", np.array([-1], dtype=np.int64))
    _node(scope, container, "Reshape", [label_column, flat], operator.outputs[0].full_name)


# --- the forest as one TreeEnsembleRegressor -------------------------------------------------


def _max_samples(forest: IsolationForest) -> int:
    """The sample count sklearn normalises by (``_max_samples``; same value as ``max_samples_``)."""
    return int(getattr(forest, "_max_samples", forest.max_samples_))


def _tree_ensemble_attributes(forest: IsolationForest) -> dict[str, Any]:
    """All trees as TreeEnsembleRegressor attributes, leaf weight = sklearn's path length.

    Trees index the columns they were fitted on; sklearn remaps them through
    ``estimators_features_`` only when it subsampled features, and so do we.
    """
    n_features = int(forest.n_features_in_)
    remap = forest._max_features != n_features  # the test sklearn's scorer uses
    tree_ids, node_ids, feature_ids, modes, thresholds, true_ids, false_ids, nan_left = (
        [] for _ in range(8)
    )
    leaf_tree_ids, leaf_node_ids, leaf_weights = [], [], []
    for tree_id, (estimator, features) in enumerate(
        zip(forest.estimators_, forest.estimators_features_, strict=True)
    ):
        tree = estimator.tree_
        left = np.asarray(tree.children_left, dtype=np.int64)
        right = np.asarray(tree.children_right, dtype=np.int64)
        n_nodes = left.shape[0]
        leaf = left == -1
        feature = np.asarray(tree.feature, dtype=np.int64)
        if remap:
            feature = np.where(
                leaf, 0, np.asarray(features, dtype=np.int64)[np.maximum(feature, 0)]
            )
        nodes = np.arange(n_nodes, dtype=np.int64)
        tree_ids.append(np.full(n_nodes, tree_id, dtype=np.int64))
        node_ids.append(nodes)
        feature_ids.append(np.where(leaf, 0, feature))
        modes.append(np.where(leaf, "LEAF", "BRANCH_LEQ"))
        thresholds.append(np.where(leaf, 0.0, np.asarray(tree.threshold, dtype=np.float64)))
        true_ids.append(np.where(leaf, 0, left))
        false_ids.append(np.where(leaf, 0, right))
        # NaN compares false, i.e. goes right, unless told otherwise; sklearn keeps its own
        # per-node choice, so a NaN feature is routed the same way in both.
        nan_left.append(np.where(leaf, 0, np.asarray(tree.missing_go_to_left, dtype=np.int64)))

        # sklearn: depths (root = 1) + _average_path_length(n_node_samples) - 1.0, in this order.
        depth = _node_depths(left, right).astype(np.float64) + 1.0
        correction = _average_path_length(np.asarray(tree.n_node_samples))
        leaf_tree_ids.append(np.full(int(leaf.sum()), tree_id, dtype=np.int64))
        leaf_node_ids.append(nodes[leaf])
        leaf_weights.append((depth + correction - 1.0)[leaf])

    n_leaves = sum(len(ids) for ids in leaf_node_ids)
    return {
        "n_targets": 1,
        "aggregate_function": "SUM",
        "post_transform": "NONE",
        "nodes_treeids": np.concatenate(tree_ids).tolist(),
        "nodes_nodeids": np.concatenate(node_ids).tolist(),
        "nodes_featureids": np.concatenate(feature_ids).tolist(),
        "nodes_modes": np.concatenate(modes).tolist(),
        "nodes_values_as_tensor": numpy_helper.from_array(np.concatenate(thresholds)),
        "nodes_truenodeids": np.concatenate(true_ids).tolist(),
        "nodes_falsenodeids": np.concatenate(false_ids).tolist(),
        "nodes_missing_value_tracks_true": np.concatenate(nan_left).tolist(),
        "target_treeids": np.concatenate(leaf_tree_ids).tolist(),
        "target_nodeids": np.concatenate(leaf_node_ids).tolist(),
        "target_ids": [0] * n_leaves,
        "target_weights_as_tensor": numpy_helper.from_array(np.concatenate(leaf_weights)),
    }


def _node_depths(left: NDArray[np.int64], right: NDArray[np.int64]) -> NDArray[np.int64]:
    """Edges from the root to each node; sklearn numbers a child after its parent."""
    lefts, rights = left.tolist(), right.tolist()
    depth = [0] * len(lefts)
    for node, (lo, hi) in enumerate(zip(lefts, rights, strict=True)):
        if lo != -1:
            depth[lo] = depth[hi] = depth[node] + 1
    return np.asarray(depth, dtype=np.int64)


# --- small graph helpers ---------------------------------------------------------------------


def _exact_in_float32(values: NDArray[Any]) -> bool:
    return bool(np.array_equal(values.astype(np.float32).astype(values.dtype), values))


def _add_constant(scope: Any, container: Any, label: str, values: NDArray[Any]) -> str:
    name: str = scope.get_unique_variable_name(label)
    onnx_type = {
        np.float32: TensorProto.FLOAT,
        np.float64: TensorProto.DOUBLE,
        np.int64: TensorProto.INT64,
    }[values.dtype.type]
    container.add_initializer(name, onnx_type, list(values.shape), values.ravel().tolist())
    return name


def _node(
    scope: Any, container: Any, op_type: str, inputs: list[str], output: str | None, **attrs: Any
) -> str:
    """Add a default-domain node; a fresh output name is made when ``output`` is None."""
    result: str = output or scope.get_unique_variable_name(op_type.lower())
    container.add_node(
        op_type, inputs, result, name=scope.get_unique_operator_name(op_type), **attrs
    )
    return result
