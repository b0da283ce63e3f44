"""The context trees run on ONNX Runtime and in NumPy exactly as scikit-learn fitted them, after
a real fit on features that need the neighbours; the features see the patches around each one."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from ecosight_daemon.artifacts.context_trees import CONTEXT_LOGITS, NEIGHBOURS, ContextTrees, context_features


def test_features_hold_each_patch_and_its_neighbours_the_ends_standing_in() -> None:
    logits = np.arange(10 * 521, dtype=np.float32).reshape(10, 521)
    onsets = -np.arange(10 * 4, dtype=np.float32).reshape(10, 4)
    features = context_features(logits, onsets)
    own = len(CONTEXT_LOGITS) + 4 + 1
    assert features.shape == (10, own + len(NEIGHBOURS) * (len(CONTEXT_LOGITS) + 4))
    np.testing.assert_array_equal(features[5, :len(CONTEXT_LOGITS)], logits[5, list(CONTEXT_LOGITS)])
    assert features[5, own - 1] == logits[5, 420:426].max()
    three_before = features[:, own:own + len(CONTEXT_LOGITS)]  # NEIGHBOURS[0] == -3
    np.testing.assert_array_equal(three_before[5], logits[2, list(CONTEXT_LOGITS)])
    np.testing.assert_array_equal(three_before[1], logits[0, list(CONTEXT_LOGITS)])  # before the start: the first
    three_after = features[:, -len(CONTEXT_LOGITS) - 4:-4]  # NEIGHBOURS[-1] == 3
    np.testing.assert_array_equal(three_after[5], logits[8, list(CONTEXT_LOGITS)])
    np.testing.assert_array_equal(three_after[8], logits[9, list(CONTEXT_LOGITS)])  # past the end: the last


def test_trees_match_scikit_learn_on_onnx_runtime_and_in_numpy_and_survive_a_round_trip() -> None:
    rng = np.random.default_rng(0)
    logits = (3 * rng.standard_normal((4000, 521))).astype(np.float32)
    onsets = rng.standard_normal((4000, 4)).astype(np.float32)
    shot = (logits[:, 421] + np.roll(logits[:, 420], 2) + onsets[:, 0]) > 3  # needs a neighbour to learn
    features = context_features(logits, onsets)
    fitted = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(features, shot)
    theirs = fitted.decision_function(features)
    ours = ContextTrees.from_arrays(ContextTrees.from_sklearn(fitted).arrays())
    assert np.abs(ours.log_odds_numpy(features) - theirs).max() < 1e-5
    assert np.abs(ours.log_odds(features) - theirs).max() < 1e-4  # float32 on ONNX Runtime, as the daemon would
    assert np.std(theirs) > 1.0  # the fit split on the features: not a comparison of constants
    assert len(ours.log_odds(features[:0])) == 0


def echoed_shots(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random logits and onsets in which only the patch two after a shot gives it away (its echo)."""
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((3000, 521))).astype(np.float32)
    onsets = rng.standard_normal((3000, 4)).astype(np.float32)
    shot = np.zeros(3000, np.int64)
    shot[rng.choice(np.arange(5, 2995), 60, replace=False)] = 1
    logits[np.flatnonzero(shot) + 2, 426] += 12.0
    return logits, onsets, shot


def test_the_fit_learns_a_shot_that_only_its_neighbours_give_away_and_refuses_one_class() -> None:
    from ecosight_daemon.training.context_trees_fit import fit_context_trees

    logits, onsets, shot = echoed_shots(1)
    trees = fit_context_trees(context_features(logits, onsets), shot, seed=0)
    logits, onsets, shot = echoed_shots(2)  # other draws: what it learned, not what it memorised
    scores = trees.log_odds(context_features(logits, onsets))
    assert scores[shot == 1].min() > np.quantile(scores[shot == 0], 0.99)
    with pytest.raises(ValueError, match="both"):
        fit_context_trees(context_features(logits, onsets), np.zeros(3000), seed=0)
