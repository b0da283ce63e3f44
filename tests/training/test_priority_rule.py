"""The gun-shot rule has one definition in NumPy and one in a TensorFlow graph (for the
exports): they must label every clip alike, thresholds on the boundary included."""

from __future__ import annotations

import numpy as np
import pytest

from ecosight_daemon.artifacts.priority_rule import apply_priority_threshold, describe_rule, priority_label_tensor


def random_probabilities(rows: int, classes: int, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).standard_normal((rows, classes)).astype(np.float32) * 2
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(("priority_index", "threshold"), [(None, None), (1, None), (None, 0.3), (1, 0.05),
                                                           (2, 0.3), (0, 0.5)])
def test_numpy_and_tensorflow_label_alike(priority_index: int | None, threshold: float | None) -> None:
    import tensorflow as tf

    probabilities = random_probabilities(400, 4, seed=7)
    if threshold is not None and priority_index is not None:
        probabilities[:5, priority_index] = threshold  # exactly on the threshold: the priority class wins
    expected = apply_priority_threshold(probabilities, priority_index, threshold)
    graph = [int(priority_label_tensor(tf.constant(row), priority_index, threshold)) for row in probabilities]
    assert graph == expected.tolist()
    if threshold is not None and priority_index is not None:
        assert (expected[:5] == priority_index).all()
        assert (expected == priority_index).sum() > (probabilities.argmax(axis=1) == priority_index).sum()


def test_a_threshold_only_adds_priority_labels() -> None:
    probabilities = random_probabilities(1000, 3, seed=1)
    plain = apply_priority_threshold(probabilities, 1, None)
    ruled = apply_priority_threshold(probabilities, 1, 0.2)
    assert ((plain == 1) <= (ruled == 1)).all()
    assert (ruled[plain != ruled] == 1).all()


def test_the_rule_in_words() -> None:
    assert describe_rule(["clips", "gun_shot"], 1, 0.25) == "gun_shot when its probability >= 0.25, else argmax"
    assert describe_rule(["clips", "gun_shot"], None, 0.25) == "argmax"
