"""Each pooling method has one definition (pooling.pool_with); NumPy runs it for training and
TensorFlow for the exports. The two must give the same clip vectors."""

from __future__ import annotations

import numpy as np
import pytest

from ecosight_daemon.pooling import POOLINGS, AudiosetHead, pool_clips, pool_patches


@pytest.mark.parametrize("method", POOLINGS)
def test_tensorflow_pools_as_numpy_does(method: str) -> None:
    import tensorflow as tf

    from ecosight_daemon.training.keras_head import pool_tensor

    rng = np.random.default_rng(3)
    head = AudiosetHead(rng.standard_normal((16, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32))
    for patches in (1, 2, 37):
        embeddings = rng.standard_normal((patches, 16)).astype(np.float32)
        expected = pool_patches(embeddings, method, head)
        pooled = pool_tensor(tf.constant(embeddings), method, head).numpy()
        np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-5)
        # and the batched NumPy path used for training snapshots
        batched = pool_clips([embeddings, embeddings[:1]], method, head)
        np.testing.assert_allclose(batched[0], expected, rtol=1e-5, atol=1e-5)


def test_an_unknown_method_is_refused_by_both() -> None:
    import tensorflow as tf

    from ecosight_daemon.training.keras_head import pool_tensor

    with pytest.raises(ValueError, match="unknown pooling"):
        pool_patches(np.zeros((2, 4), np.float32), "median")
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_tensor(tf.zeros((2, 4)), "median")
