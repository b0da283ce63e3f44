"""What a device developer needs beside `patches_to_probabilities.onnx`, to run a version on
windows of a long recording without TensorFlow and without running YAMNet's CNN K times:

- `patches_to_embeddings.onnx`: YAMNet's body, one 1024-d embedding per log-mel patch;
- `embeddings_to_probabilities.onnx`: the pooling and classifier over a window's K
  consecutive embeddings (K >= 1), so a sliding window reuses each patch's embedding;
- `test_vector.npz`: a waveform, the front end's intermediate arrays (window, mel matrix,
  log-mel frames, patches), the embeddings and the probabilities, to check a port against;
- `front_end.json`: the front end step by step (frames not centred, the 400-sample frame
  zero-padded to 512, the mel matrix's construction, the natural log, the padding formula,
  down-mix and resampling), and the version and sha256 of every file.

Each ONNX file carries the version, the YAMNet model id and its role in its metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.embedding import frontend as front
from ecosight_daemon.util.digest import sha256_of

EMBEDDINGS_MODEL = "patches_to_embeddings.onnx"
WINDOW_MODEL = "embeddings_to_probabilities.onnx"
TEST_VECTOR = "test_vector.npz"
TEST_VECTOR_SECONDS = 3.3  # not a whole number of patches: the padding is part of the check


def front_end_spec() -> dict[str, Any]:
    """The front end in words and numbers, enough to re-implement it (checked by a test that does)."""
    return {
        "input_audio": {
            "down_mix": "the mean of the channels",
            "resampling": f"to {front.SAMPLE_RATE} Hz with a band-limited resampler (this program: soxr, quality "
                          "HQ; streamed in blocks for long recordings)",
            "scale": "float32 in [-1, 1] (16-bit PCM / 32768)",
        },
        "padding": {
            "formula": f"N = 1 + ceil(max(0, L - {front.PATCH_SAMPLES}) / {front.PATCH_HOP_SAMPLES}) patches; zeros "
                       f"appended up to {front.PATCH_SAMPLES} + {front.PATCH_HOP_SAMPLES} * (N - 1) samples (an empty "
                       "clip is one patch of zeros)",
            "patch_samples": front.PATCH_SAMPLES, "patch_hop_samples": front.PATCH_HOP_SAMPLES,
        },
        "frames": {
            "window_samples": front.WINDOW, "hop_samples": front.HOP,
            "centred": False,
            "layout": f"frame k is samples [{front.HOP} k, {front.HOP} k + {front.WINDOW}) of the padded waveform; "
                      f"no padding at either end beyond the step above (frames = 1 + (L_padded - {front.WINDOW}) "
                      f"// {front.HOP})",
            "window": "periodic Hann: w[n] = 0.5 - 0.5 cos(2 pi n / 400), n = 0..399",
        },
        "fft": {
            "length": front.FFT_LENGTH,
            "zero_padding": "each windowed 400-sample frame is zero-padded at its end to 512 samples",
            "magnitude": "|rfft| of the 512 samples: 257 bins, 0 to 8000 Hz, bin b at 8000 b / 256 Hz",
        },
        "mel": {
            "bands": front.MEL_BANDS, "min_hz": front.MEL_MIN_HZ, "max_hz": front.MEL_MAX_HZ,
            "scale": "HTK: mel(f) = 1127 ln(1 + f / 700)",
            "matrix": "257 x 64, as tf.signal.linear_to_mel_weight_matrix: 66 edges spread evenly in mel from "
                      "mel(125) to mel(7500); band j rises from edge j to edge j+1 and falls to edge j+2; the "
                      "weight of bin b (b >= 1) in band j is max(0, min((m_b - e_j) / (e_j+1 - e_j), "
                      "(e_j+2 - m_b) / (e_j+2 - e_j+1))) with m_b = mel(8000 b / 256); the DC bin (b = 0) "
                      "has weight 0 in every band. test_vector.npz holds it as mel_matrix",
            "product": "magnitudes (frames x 257) times the matrix: frames x 64",
        },
        "log": {"function": "natural log", "formula": f"ln(mel + {front.LOG_OFFSET})"},
        "patches": {"frames": front.PATCH_FRAMES, "hop_frames": front.PATCH_HOP_FRAMES,
                    "shape": "[N, 96, 64] float32, patch i = frames [48 i, 48 i + 96)"},
        "arithmetic": "float32 throughout; a port within 1e-4 of test_vector.npz's patches is right",
        "reference": "ecosight_daemon/embedding/frontend.py: log_mel_patches(waveform)",
    }


def sliding_windows_note(window_patches: int) -> str:
    hop, patch = front.PATCH_HOP_SECONDS, front.PATCH_SECONDS
    return (f"For a long recording: run {EMBEDDINGS_MODEL} once per patch (patches {hop:g} s apart), then "
            f"{WINDOW_MODEL} on each run of {window_patches} consecutive embeddings (a window of "
            f"{(window_patches - 1) * hop + patch:.2f} s, one hop apart); consecutive windows with the same "
            "label (background excluded) are one event. The event detector the daemon runs is "
            "event_detector.onnx beside this file when the version has one (its inputs, onset features and label "
            "rule under event_detector below; docs/detection.md)")


def write_device_files(target: Path, body: Any, window_model: Any, composed: Any, version: str, model_id: str,
                       description: dict[str, Any]) -> dict[str, Any]:
    """Write the ONNX files (with metadata) and the test vector into `target`; returns
    `description` completed with the spec, the version and every file's sha256."""
    import onnx

    roles = {EMBEDDINGS_MODEL: (body, "log-mel patches [N, 96, 64] -> embeddings [N, 1024]"),
             WINDOW_MODEL: (window_model, "embeddings [K, 1024] of one window -> probabilities, label_index"),
             description["model"]: (composed, "log-mel patches [N, 96, 64] of one clip -> probabilities, label_index")}
    for name, (model, role) in roles.items():
        onnx.helper.set_model_props(model, {"ecosight_version": version, "yamnet_model_id": model_id,
                                            "role": role, "front_end": "front_end.json (beside this file)"})
        onnx.save(model, str(target / name))
    _write_test_vector(target, body, composed)
    files = {name: sha256_of(target / name) for name in (*roles, TEST_VECTOR)}
    return {**description, "version": version, "yamnet_model_id": model_id, "front_end": front_end_spec(),
            "window_model": {"model": WINDOW_MODEL, "input": "embeddings: float32 [K, 1024], K >= 1",
                             "embeddings_model": EMBEDDINGS_MODEL},
            "files_sha256": files}


def _write_test_vector(target: Path, body: Any, composed: Any) -> None:
    import onnxruntime

    rng = np.random.default_rng(11)
    seconds = np.arange(int(TEST_VECTOR_SECONDS * front.SAMPLE_RATE)) / front.SAMPLE_RATE
    waveform = (0.3 * np.sin(2 * np.pi * 440 * seconds) * np.exp(-seconds)
                + 0.05 * rng.standard_normal(len(seconds))).astype(np.float32)
    frames = front.log_mel(front.pad_to_whole_patches(waveform))
    patches = front.log_mel_patches(waveform)
    run = onnxruntime.InferenceSession(body.SerializeToString(), providers=["CPUExecutionProvider"])
    embeddings = run.run(None, {run.get_inputs()[0].name: patches})[0].reshape(len(patches), -1)
    whole = onnxruntime.InferenceSession(composed.SerializeToString(), providers=["CPUExecutionProvider"])
    probabilities, label_index = whole.run(None, {"patches": patches})
    np.savez(target / TEST_VECTOR, waveform=waveform, sample_rate=np.int32(front.SAMPLE_RATE),
             hann_window=front.periodic_hann(), mel_matrix=front.mel_matrix(), log_mel_frames=frames,
             patches=patches, embeddings=embeddings.astype(np.float32),
             probabilities=np.asarray(probabilities, np.float32), label_index=np.int32(label_index))
