"""A stream scored chunk by chunk gives each patch the margins the detector gives the whole
recording: a detector that reads the patches either side has each chunk's last ones scored once
their later neighbours arrived, whatever the chunks' sizes (scikit-learn-fitted trees, a random CNN
and AudioSet head: the arithmetic under test is the stream's, not the models')."""

from __future__ import annotations

import numpy as np
import pytest

from ecosight_daemon.artifacts.event_detector import (
    YAMNET_PLUS_CNN_PLUS_TREES_SCORER,
    YAMNET_PLUS_CNN_SCORER,
    patch_features,
)
from ecosight_daemon.detection.patch_scorer import PatchScorer
from ecosight_daemon.pooling import AudiosetHead
from tests.training.test_event_detector import detector, random_cnn, small_trees


@pytest.mark.parametrize("scorer", [YAMNET_PLUS_CNN_SCORER, YAMNET_PLUS_CNN_PLUS_TREES_SCORER])
@pytest.mark.parametrize("sizes", [[120], [1, 2, 0, 7, 50, 3, 1, 56, 0], [40, 40, 40], [60, 57, 2, 1, 0]])
def test_chunks_of_any_size_score_every_patch_once_as_the_whole_recording(scorer: str, sizes: list[int]) -> None:
    rng = np.random.default_rng(11)
    head = AudiosetHead(rng.normal(0, 0.05, (1024, 521)).astype(np.float32), rng.normal(0, 1, 521).astype(np.float32))
    shipped = detector(scorer, threshold=1.0)
    shipped.cnn, shipped.trees = random_cnn(3), small_trees(9)
    patches = (rng.random((120, 1024)) * np.linspace(0.1, 8, 120)[:, None]).astype(np.float32)
    onsets = rng.normal(0, 4, (120, 4)).astype(np.float32)
    codes = rng.integers(-60, 60, (120, 48, 32)).astype(np.int8)
    whole = shipped.margins(patch_features(patches, onsets, head), codes)

    stream = PatchScorer(shipped, head)
    firsts, labels, probabilities = [], [], []
    edges = np.cumsum([0, *sizes])
    for k, (start, end) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        first, chunk_labels, chunk_probabilities = stream.feed(patches[start:end], onsets[start:end],
                                                               codes[start:end], k == len(sizes) - 1)
        firsts.append(first)
        labels.append(chunk_labels)
        probabilities.append(chunk_probabilities)
        assert first == sum(len(done) for done in labels[:-1])  # each chunk's results follow the last's
        held = end - (first + len(chunk_labels))
        assert held == (0 if k == len(sizes) - 1 or not shipped.reads_context else min(3, end)), (k, held)
    np.testing.assert_allclose(np.concatenate(probabilities), 1 / (1 + np.exp(-whole.astype(np.float64))),
                               rtol=1e-4, atol=1e-5)  # float32 batches of other sizes
    np.testing.assert_array_equal(np.concatenate(labels), shipped.labels(whole))
    assert stream.histogram.sum() > 0
