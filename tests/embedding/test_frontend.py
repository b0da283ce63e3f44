"""The NumPy front end against TensorFlow's, step by step: window, mel matrix, padding to
whole patches, log-mel frames (the SavedModel's own third output) and patch framing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ecosight_daemon.embedding import frontend

tf = pytest.importorskip("tensorflow")

# (samples, patches) from the model's README, measured on the model.
PATCH_COUNTS = [(0, 1), (1600, 1), (15600, 1), (15601, 2), (16000, 2), (23281, 3), (64000, 8), (160000, 20)]


def test_window_and_mel_matrix_match_tensorflow() -> None:
    window = tf.signal.hann_window(frontend.WINDOW, periodic=True).numpy()
    np.testing.assert_allclose(frontend.periodic_hann(), window, atol=1e-7)
    mel = tf.signal.linear_to_mel_weight_matrix(frontend.MEL_BANDS, frontend.FFT_LENGTH // 2 + 1,
                                                frontend.SAMPLE_RATE, frontend.MEL_MIN_HZ,
                                                frontend.MEL_MAX_HZ).numpy()
    assert frontend.mel_matrix().shape == mel.shape == (257, 64)
    np.testing.assert_allclose(frontend.mel_matrix(), mel, atol=2e-5)
    assert not frontend.mel_matrix()[0].any()  # the DC bin carries no weight


@pytest.mark.parametrize(("samples", "patches"), PATCH_COUNTS)
def test_padding_gives_whole_patches(samples: int, patches: int) -> None:
    padded = frontend.pad_to_whole_patches(np.ones(samples, np.float32))
    assert frontend.patch_count(samples) == patches
    assert len(padded) == 15600 + 7680 * (patches - 1)
    assert padded[:samples].all() and not padded[samples:].any()


def test_log_mel_frames_and_patches_match_the_saved_model(yamnet: Any) -> None:
    rng = np.random.default_rng(7)
    t = np.arange(160_000, dtype=np.float32) / 16_000
    for samples, patches in PATCH_COUNTS:
        waveform = (0.2 * rng.standard_normal(samples) + 0.3 * np.sin(2 * np.pi * 500 * t[:samples]))
        waveform = waveform.astype(np.float32)
        _, _, reference = yamnet._model(tf.constant(waveform))
        ours = frontend.log_mel(frontend.pad_to_whole_patches(waveform))
        assert ours.shape == tuple(reference.shape) == (96 + 48 * (patches - 1), 64)
        np.testing.assert_allclose(ours, reference.numpy(), atol=1e-4)  # float32 FFT round-off: ~3e-5 seen
        framed = frontend.log_mel_patches(waveform)
        assert framed.shape == (patches, 96, 64) and framed.dtype == np.float32
        for k in range(patches):
            np.testing.assert_array_equal(framed[k], ours[48 * k:48 * k + 96])


def test_silence_is_the_log_offset() -> None:
    assert np.allclose(frontend.log_mel_patches(np.zeros(16_000, np.float32)), np.log(frontend.LOG_OFFSET))


@pytest.mark.parametrize("block_frames", [997, frontend.BLOCK_FRAMES])
def test_log_mel_in_blocks_gives_the_frames_of_one_stft(block_frames: int) -> None:
    rng = np.random.default_rng(3)
    waveform = frontend.pad_to_whole_patches((0.1 * rng.standard_normal(16_000 * 75 + 123)).astype(np.float32))
    whole = frontend.log_mel(waveform)
    blocks = frontend.log_mel_in_blocks(waveform, block_frames)
    assert blocks.shape == whole.shape and blocks.dtype == np.float32
    np.testing.assert_allclose(blocks, whole, rtol=0, atol=1e-5)
