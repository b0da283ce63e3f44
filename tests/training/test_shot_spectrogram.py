"""The shot spectrogram CNN runs on ONNX Runtime and in NumPy exactly as Keras trained it
(the daemon has no TensorFlow), on real Keras weights after a real fit; its inputs are what the device export
describes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from ecosight_daemon.artifacts.shot_spectrogram import ShotSpectrogramModel, decoded, spectrogram_inputs
from ecosight_daemon.embedding.frontend import log_mel_in_blocks, pad_to_whole_patches, patch_count
from ecosight_daemon.training.detector_export import spectrogram_spec
from ecosight_daemon.training.shot_spectrogram_fit import build, weights_of


def test_numpy_forward_matches_keras_and_survives_a_round_trip() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(-20, 20, size=(300, 48, 32)).astype(np.int8)
    is_shot = (rng.random(300) < 0.1).astype(np.float32)
    codes[is_shot == 1, 10:14, :] += 30  # a broadband onset: something for the fit to learn
    model = build(seed=1)
    model.fit(decoded(codes)[..., None], is_shot, epochs=2, verbose=0)
    ours = ShotSpectrogramModel.from_arrays(weights_of(model).arrays())
    theirs = model.predict(decoded(codes)[..., None], verbose=0)[:, 0]
    assert np.abs(ours.log_odds_numpy(codes) - theirs).max() < 1e-4
    assert np.abs(ours.log_odds(codes) - theirs).max() < 1e-4  # on ONNX Runtime, as the daemon runs it
    assert np.std(theirs) > 0.01  # the fit moved the weights: not a comparison of constants


def port_of_the_spectrograms(frames: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """The CNN's input written from front_end.json's words alone, as a device developer would."""
    steps = " ".join(spec["steps"])
    stride = int(re.search(r"take every (\d+)th frame", steps).group(1))  # type: ignore[union-attr]
    half = int(re.search(r"with (\d+) copies", steps).group(1))  # type: ignore[union-attr]
    hold = int(re.search(r"for every (\d+)th value", steps).group(1))  # type: ignore[union-attr]
    step = float(re.search(r"round\(value / ([0-9.]+)\)", steps).group(1))  # type: ignore[union-attr]
    values = frames[::stride]
    padded = np.concatenate([np.repeat(values[:1], half, axis=0), values, np.repeat(values[-1:], half, axis=0)])
    level = np.zeros_like(frames)
    for j in range(0, len(values), hold):
        level[stride * j:stride * (j + hold)] = np.median(padded[j:j + 2 * half + 1], axis=0)
    normalised = frames - level
    patches = [normalised[48 * i:48 * i + 96].reshape(48, 2, 32, 2).mean(axis=(1, 3))
               for i in range((len(frames) - 96) // 48 + 1)]
    return np.clip(np.round(np.array(patches) / step), -127, 127).astype(np.int8)


def test_the_cnn_inputs_described_for_devices_are_the_ones_computed(field_corpus: Path) -> None:
    """A port of front_end.json's words (what a recorder-side port reads) gives the daemon's codes,
    on real field audio with a thunder clap in it."""
    bed, rate = soundfile.read(field_corpus / "background" / "blanket_birds_0.flac", dtype="float32")
    thunder = next((field_corpus / "confusers").glob("*thunder*"))
    clap, _ = soundfile.read(thunder, dtype="float32")
    assert rate == 16_000
    waveform = bed[:40 * 16_000].copy()
    waveform[20 * 16_000:20 * 16_000 + len(clap[:5 * 16_000])] += clap[:5 * 16_000]
    codes = spectrogram_inputs(waveform)
    ported = port_of_the_spectrograms(log_mel_in_blocks(pad_to_whole_patches(waveform)), spectrogram_spec())
    assert ported.shape == codes.shape == (patch_count(len(waveform)), 48, 32)
    assert np.abs(ported.astype(np.int16) - codes).max() <= 1  # float rounding at a code's edge
    assert np.mean(ported == codes) > 0.999 and codes.max() > 30  # the clap stands out of the bed
