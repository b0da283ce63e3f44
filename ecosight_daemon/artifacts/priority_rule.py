"""The gun-shot rule, the one place it is written: labels are the argmax, except that the
priority class also wins wherever its probability reaches the threshold. A threshold can
only add priority detections, never remove one. No threshold (or no priority class in the
model) is plain argmax.

The rule runs in NumPy (evaluation, predict, drift, the gate) and inside the exported
graphs (the end-to-end SavedModel and the ONNX model for devices); both come from here,
and tests/training/test_priority_rule.py holds them to the same labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def apply_priority_threshold(
    probabilities: np.ndarray, priority_index: int | None, threshold: float | None
) -> np.ndarray:
    """Class indices for rows of class probabilities."""
    probabilities = np.atleast_2d(probabilities)
    labels = np.asarray(probabilities.argmax(axis=1))
    if priority_index is None or threshold is None:
        return labels
    return np.where(probabilities[:, priority_index] >= threshold, priority_index, labels)


def priority_label_tensor(probabilities: Any, priority_index: int | None, threshold: float | None) -> Any:
    """The same rule in a TensorFlow graph, for one clip's probabilities: an int32 scalar."""
    import tensorflow as tf

    label_index = tf.argmax(probabilities, output_type=tf.int32)
    if priority_index is None or threshold is None:
        return label_index
    return tf.where(probabilities[priority_index] >= float(threshold),
                    tf.constant(priority_index, tf.int32), label_index)


def describe_rule(classes: list[str], priority_index: int | None, threshold: float | None) -> str:
    """The rule in words, for front_end.json."""
    if priority_index is None or threshold is None:
        return "argmax"
    return f"{classes[priority_index]} when its probability >= {threshold}, else argmax"
