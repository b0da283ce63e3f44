"""Gradient-boosted trees on YAMNet's view of the seconds around a patch: a third opinion on gun
shots beside YAMNet's "Gunshot, gunfire" logit and the shot CNN (benchmarks/detection_stacked.py
found it ranked shots better in 18 of 25 folds); artifacts/event_detector.py adds it to their sum
where a retrain found that ranks shots better out of fold.

Features per patch (`context_features`): CONTEXT_LOGITS of its 521 AudioSet logits (the gun
family, its impulsive look-alikes, weather, dogs, engines), its four onset features and the gun
family's highest logit; then the same logits and onsets of the NEIGHBOURS patches before and
after (the recording's first and last patches stand in beyond its ends). Trees as flat arrays
(`ContextTrees`), evaluated by ONNX Runtime from a `TreeEnsembleRegressor` graph built out of
them, with a NumPy forward as the reference it is held to.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ecosight_daemon.artifacts.graph_session import graph_session

GUN_FAMILY = tuple(range(420, 426))  # explosion, gunshot, machine gun, fusillade, artillery, cap gun
CONTEXT_LOGITS = (tuple(range(420, 436)) + (280, 281, 277, 279, 283, 292, 293, 58, 352, 353, 413, 460, 461, 463,
                                           466, 69, 70, 117, 337, 338, 342, 343, 346, 0, 494, 500))
NEIGHBOURS = (-3, -2, -1, 1, 2, 3)  # patches away: - before, + after
CONTEXT_FEATURES = (len(CONTEXT_LOGITS) + 4) * (1 + len(NEIGHBOURS)) + 1  # the picked logits and 4 onsets, + gun max
ONNX_ML_OPSET = 3


def context_features(logits: np.ndarray, onsets: np.ndarray) -> np.ndarray:
    """(patches, features) float32 from a whole run of patches' (patches, 521) logits and (patches, 4) onsets."""
    picked = np.asarray(logits[:, CONTEXT_LOGITS], np.float32)
    onsets = np.asarray(onsets, np.float32)
    parts = [picked, onsets, np.asarray(logits[:, GUN_FAMILY], np.float32).max(axis=1, keepdims=True)]
    for offset in NEIGHBOURS:
        parts += [neighbour(picked, offset), neighbour(onsets, offset)]
    return np.concatenate(parts, axis=1)


def neighbour(values: np.ndarray, offset: int) -> np.ndarray:
    """Row i of the result is row i + offset of `values`, the first or last row beyond its ends."""
    rows = np.clip(np.arange(len(values)) + offset, 0, max(0, len(values) - 1))
    return values[rows]


@dataclass(frozen=True)
class ContextTrees:
    """Every tree's nodes, flat: node k of tree t is row offsets[t] + k."""
    feature: np.ndarray  # int32: the feature a split reads
    threshold: np.ndarray  # float64: go left where the feature <= it
    left: np.ndarray  # int32: child index within its tree
    right: np.ndarray
    leaf: np.ndarray  # bool
    value: np.ndarray  # float64: a leaf's contribution to the log-odds
    offsets: np.ndarray  # int64: each tree's first row
    baseline: float  # the log-odds before any tree

    @classmethod
    def from_sklearn(cls, model: Any) -> ContextTrees:
        """From a fitted binary HistGradientBoostingClassifier on numerical features without
        missing values (scikit-learn's own layout, read once at training)."""
        trees = [predictors[0].nodes for predictors in model._predictors]
        sizes = np.array([len(nodes) for nodes in trees])
        nodes = np.concatenate(trees)
        return cls(nodes["feature_idx"].astype(np.int32), nodes["num_threshold"].astype(np.float64),
                   nodes["left"].astype(np.int32), nodes["right"].astype(np.int32), nodes["is_leaf"].astype(bool),
                   nodes["value"].astype(np.float64), np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
                   float(np.ravel(model._baseline_prediction)[0]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"feature": self.feature, "threshold": self.threshold, "left": self.left, "right": self.right,
                "leaf": self.leaf, "value": self.value, "offsets": self.offsets,
                "baseline": np.array(self.baseline, np.float64)}

    @classmethod
    def from_arrays(cls, named: dict[str, np.ndarray]) -> ContextTrees:
        return cls(named["feature"], named["threshold"], named["left"], named["right"], named["leaf"],
                   named["value"], named["offsets"], float(named["baseline"]))

    def log_odds(self, features: np.ndarray) -> np.ndarray:
        """(N,) float32 for (N, features) context_features."""
        features = np.ascontiguousarray(features, np.float32)
        if len(features) == 0:
            return np.zeros(0, np.float32)
        return np.asarray(self._session.run(None, {"features": features})[0][:, 0], np.float32)

    def log_odds_numpy(self, features: np.ndarray) -> np.ndarray:
        """log_odds in NumPy alone: every tree walked at once, one level a step."""
        x = np.asarray(features, np.float32)
        rows = np.broadcast_to(self.offsets[:, None], (len(self.offsets), len(x))).copy()
        samples = np.arange(len(x))
        while not self.leaf[rows].all():
            at = ~self.leaf[rows]
            here = rows[at]
            goes_left = x[np.broadcast_to(samples, rows.shape)[at], self.feature[here]] <= self.threshold[here]
            tree_start = np.broadcast_to(self.offsets[:, None], rows.shape)[at]
            rows[at] = tree_start + np.where(goes_left, self.left[here], self.right[here])
        return np.asarray(self.baseline + self.value[rows].sum(axis=0), np.float32)

    def warm_up(self) -> None:
        self._session  # noqa: B018 (built now, once)

    @cached_property
    def _session(self) -> Any:
        return graph_session(self.onnx_model().SerializeToString())

    def onnx_model(self) -> Any:
        """features float [N, F] -> trees_log_odds float [N, 1], as log_odds_numpy computes it."""
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [self.onnx_node("features", "trees_log_odds")], "ecosight_context_trees",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", None])],
            [helper.make_tensor_value_info("trees_log_odds", TensorProto.FLOAT, ["N", 1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid("ai.onnx.ml", ONNX_ML_OPSET)])
        model.ir_version = 8
        return model

    def onnx_node(self, features: str, log_odds: str) -> Any:
        """The trees as one ONNX-ML TreeEnsembleRegressor node: `features` [N, F] -> `log_odds` [N, 1]."""
        from onnx import helper

        tree_of = np.repeat(np.arange(len(self.offsets)), np.diff(np.append(self.offsets, len(self.leaf))))
        node_in_tree = np.arange(len(self.leaf)) - self.offsets[tree_of]
        leaves = np.flatnonzero(self.leaf)
        # ONNX compares in float32: thresholds rounded down to float32 keep "x <= threshold" for float32 x.
        thresholds = np.nextafter(self.threshold.astype(np.float32), np.float32(-np.inf),
                                  where=self.threshold.astype(np.float32) > self.threshold,
                                  out=self.threshold.astype(np.float32))
        return helper.make_node(
            "TreeEnsembleRegressor", [features], [log_odds], domain="ai.onnx.ml", n_targets=1,
            nodes_treeids=tree_of.tolist(), nodes_nodeids=node_in_tree.tolist(),
            nodes_featureids=np.where(self.leaf, 0, self.feature).tolist(),
            nodes_values=np.where(self.leaf, 0.0, thresholds).astype(np.float32).tolist(),
            nodes_modes=["LEAF" if leaf else "BRANCH_LEQ" for leaf in self.leaf],
            nodes_truenodeids=np.where(self.leaf, 0, self.left).tolist(),
            nodes_falsenodeids=np.where(self.leaf, 0, self.right).tolist(),
            nodes_missing_value_tracks_true=[0] * len(self.leaf),
            target_treeids=tree_of[leaves].tolist(), target_nodeids=node_in_tree[leaves].tolist(),
            target_ids=[0] * len(leaves), target_weights=self.value[leaves].astype(np.float32).tolist(),
            base_values=[float(self.baseline)], aggregate_function="SUM", post_transform="NONE")


def onnx_context_nodes(logits: str, onsets: str, features: str, constants: dict[str, np.ndarray]) -> list[Any]:
    """ONNX nodes computing context_features of a whole run of patches: `logits` [N, 521] and
    `onsets` [N, 4] -> `features` [N, F]; their constants are added to `constants`."""
    from onnx import helper

    constants |= {"context_logits": np.array(CONTEXT_LOGITS, np.int64),
                  "gun_family": np.array(GUN_FAMILY, np.int64), "context_zero": np.array(0, np.int64),
                  "context_one": np.array(1, np.int64)}
    nodes = [helper.make_node("Gather", [logits, "context_logits"], ["context_picked"], axis=1),
             helper.make_node("Gather", [logits, "gun_family"], ["context_gun_logits"], axis=1),
             helper.make_node("ReduceMax", ["context_gun_logits"], ["context_gun_max"], axes=[1], keepdims=1),
             helper.make_node("Concat", ["context_picked", onsets], ["context_here"], axis=1),
             helper.make_node("Shape", [onsets], ["context_shape"]),
             helper.make_node("Gather", ["context_shape", "context_zero"], ["context_count"], axis=0),
             helper.make_node("Sub", ["context_count", "context_one"], ["context_last"]),
             helper.make_node("Range", ["context_zero", "context_count", "context_one"], ["context_rows"])]
    parts = ["context_here", "context_gun_max"]
    for offset in NEIGHBOURS:
        name = f"context_{'before' if offset < 0 else 'after'}_{abs(offset)}"
        constants[name + "_offset"] = np.array(offset, np.int64)
        nodes += [helper.make_node("Add", ["context_rows", name + "_offset"], [name + "_moved"]),
                  helper.make_node("Max", [name + "_moved", "context_zero"], [name + "_from_first"]),
                  helper.make_node("Min", [name + "_from_first", "context_last"], [name + "_rows"]),
                  helper.make_node("Gather", ["context_here", name + "_rows"], [name], axis=0)]
        parts.append(name)
    return [*nodes, helper.make_node("Concat", parts, [features], axis=1)]
