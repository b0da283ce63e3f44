"""A small CNN's second opinion on gun shots, read from the log-mel patch itself, each band
less its running median (what stands out of the site, not the site's level or colour).
Trained by training/shot_spectrogram_fit.py in the training process (Keras); run here on
ONNX Runtime from a graph built out of its weights (the same graph the device export
holds; ~8x faster than the NumPy forward kept beside it as the reference), so the daemon
needs no TensorFlow. Its log-odds are added to YAMNet's "Gunshot,
gunfire" logit where the retrain found that ranks shots better out of fold
(benchmarks/detection_cnn.py: the exploration that chose it).

Layers, in order: BLOCKS x (3x3 convolution, same padding, ReLU; batch normalisation;
2x2 max-pooling), a last 3x3 convolution with ReLU, the max over time and bands, a dense
unit. Weights as `arrays` (name -> array), the names as Keras gives them in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ecosight_daemon.artifacts.graph_session import graph_session
from ecosight_daemon.embedding.frontend import (
    MEL_BANDS,
    PATCH_FRAMES,
    PATCH_HOP_FRAMES,
    log_mel_in_blocks,
    pad_to_whole_patches,
)

LEVEL_STRIDE = 20  # frames (0.2 s) between the values a band's level is the median of
LEVEL_HALF = 75  # such values each side: the level is the median over ~30 s
LEVEL_HOLD = 5  # such values (1 s) one level is held for: it moves slowly, and the median is the cost
POOL = 2  # the patch's frames and bands averaged in POOL x POOL blocks before the CNN
BN_EPSILON = 1e-3  # Keras's default
BATCH = 64
INPUT_SHAPE = (PATCH_FRAMES // POOL, MEL_BANDS // POOL)  # (48, 32): what the CNN reads per patch
CODE_STEP = 0.1  # of log-mel (natural log) per int8 code: 0.43 dB steps, +-12.7 (+-55 dB) around the median


def band_normalized(frames: np.ndarray) -> np.ndarray:
    """Log-mel frames (T, 64) less each band's level: every LEVEL_HOLD-th value of the running
    median of every LEVEL_STRIDE-th frame over 2 LEVEL_HALF + 1 of them (edges repeat the end
    value), held for the frames it stands for. ~0.15 s per hour of audio."""
    sampled = frames[::LEVEL_STRIDE]
    padded = np.concatenate([np.repeat(sampled[:1], LEVEL_HALF, axis=0), sampled,
                             np.repeat(sampled[-1:], LEVEL_HALF, axis=0)])
    windows = sliding_window_view(padded, 2 * LEVEL_HALF + 1, axis=0)[::LEVEL_HOLD]  # (levels, bands, values)
    level = np.partition(windows, LEVEL_HALF, axis=-1)[..., LEVEL_HALF]
    held = np.repeat(level, LEVEL_STRIDE * LEVEL_HOLD, axis=0)[:len(frames)]
    return np.asarray(frames - held, np.float32)


def spectrogram_inputs(waveform: np.ndarray) -> np.ndarray:
    """(patches, 48, 32) int8 codes: the CNN's input for every patch of a 16 kHz waveform."""
    return spectrogram_inputs_from_frames(log_mel_in_blocks(pad_to_whole_patches(waveform)))


def spectrogram_inputs_from_frames(frames: np.ndarray) -> np.ndarray:
    """(patches, 48, 32) int8 codes from the log-mel frames of a waveform padded to whole
    patches. Coded here, not only in the cache, so training, a live run and a re-score from
    the cache all feed the CNN the same values (1.5 KB a patch cached)."""
    # Averaging POOL x POOL blocks commutes with cutting patches (they start on even frames):
    # pool the frames once, then cut, instead of pooling every overlapping patch.
    pooled_frames = pooled_in_blocks(band_normalized(frames))
    count = (len(frames) - PATCH_FRAMES) // PATCH_HOP_FRAMES + 1
    windows = sliding_window_view(pooled_frames, PATCH_FRAMES // POOL, axis=0)[::PATCH_HOP_FRAMES // POOL][:count]
    codes = np.clip(np.round(windows.transpose(0, 2, 1) / np.float32(CODE_STEP)), -127, 127)
    return np.ascontiguousarray(codes, np.int8)


def pooled_in_blocks(frames: np.ndarray) -> np.ndarray:
    """(T // POOL, 32): the mean of each POOL x POOL block of frames and bands. Strided sums,
    not `reshape(...).mean(axis=(1, 3))`: that took 5x as long, ~3% of detection's time."""
    usable = len(frames) // POOL * POOL
    frame_sums = np.array(frames[0:usable:POOL], np.float32)
    for k in range(1, POOL):
        frame_sums += frames[k:usable:POOL]
    block_sums = frame_sums[:, 0::POOL].copy()
    for k in range(1, POOL):
        block_sums += frame_sums[:, k::POOL]
    pooled: np.ndarray = block_sums / np.float32(POOL ** 2)
    return pooled


def decoded(codes: np.ndarray) -> np.ndarray:
    """The CNN's float input from spectrogram_inputs' codes."""
    values: np.ndarray = np.asarray(codes, np.float32) * np.float32(CODE_STEP)
    return values


@dataclass(frozen=True)
class ShotSpectrogramModel:
    convolutions: list[tuple[np.ndarray, np.ndarray]]  # (3, 3, in, out) kernels and their biases
    normalizations: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # gamma, beta, mean, variance
    dense: tuple[np.ndarray, np.ndarray]  # (features, 1), (1,)

    def log_odds(self, codes: np.ndarray) -> np.ndarray:
        """(N,) float32 for (N, 48, 32) spectrogram_inputs codes (or the same flat, as cached)."""
        codes = np.ascontiguousarray(codes, np.int8).reshape(-1, *INPUT_SHAPE)
        if len(codes) == 0:
            return np.zeros(0, np.float32)
        return np.asarray(self._session.run(None, {"spectrograms": codes})[0][:, 0], np.float32)

    def log_odds_numpy(self, codes: np.ndarray) -> np.ndarray:
        """log_odds in NumPy alone: the reference the ONNX graph is held to."""
        codes = np.asarray(codes).reshape(-1, *INPUT_SHAPE)
        out = [self._batch(decoded(codes[i:i + BATCH])) for i in range(0, len(codes), BATCH)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def warm_up(self) -> None:
        self._session  # noqa: B018 (built now, once)

    @cached_property
    def _session(self) -> Any:
        from onnx import TensorProto, helper, numpy_helper

        constants: dict[str, np.ndarray] = {}
        nodes = cnn_nodes(self, constants)
        graph = helper.make_graph(
            nodes, "ecosight_shot_cnn", [helper.make_tensor_value_info("spectrograms", TensorProto.INT8,
                                                                       ["N", *INPUT_SHAPE])],
            [helper.make_tensor_value_info("cnn_log_odds", TensorProto.FLOAT, ["N", 1])],
            initializer=[numpy_helper.from_array(value, name) for name, value in constants.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return graph_session(model.SerializeToString())

    def _batch(self, inputs: np.ndarray) -> np.ndarray:
        x = np.asarray(inputs, np.float32)[..., None]
        for (kernel, bias), (gamma, beta, mean, variance) in zip(self.convolutions, self.normalizations,
                                                                 strict=False):
            x = np.maximum(convolve_same(x, kernel, bias), 0.0)
            x = (x - mean) / np.sqrt(variance + BN_EPSILON) * gamma + beta
            n, h, w, c = x.shape
            x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
        kernel, bias = self.convolutions[-1]
        x = np.maximum(convolve_same(x, kernel, bias), 0.0).max(axis=(1, 2))
        return np.asarray(x @ self.dense[0] + self.dense[1], np.float32)[:, 0]

    def arrays(self) -> dict[str, np.ndarray]:
        named = {}
        for i, (kernel, bias) in enumerate(self.convolutions):
            named[f"conv{i}_kernel"], named[f"conv{i}_bias"] = kernel, bias
        for i, values in enumerate(self.normalizations):
            for name, value in zip(("gamma", "beta", "mean", "variance"), values, strict=True):
                named[f"norm{i}_{name}"] = value
        named["dense_kernel"], named["dense_bias"] = self.dense
        return named

    @classmethod
    def from_arrays(cls, named: dict[str, np.ndarray]) -> ShotSpectrogramModel:
        convolutions = [(named[f"conv{i}_kernel"], named[f"conv{i}_bias"])
                        for i in range(sum(k.startswith("conv") and k.endswith("_kernel") for k in named))]
        normalizations = [tuple(named[f"norm{i}_{n}"] for n in ("gamma", "beta", "mean", "variance"))
                          for i in range(len(convolutions) - 1)]
        return cls(convolutions, normalizations, (named["dense_kernel"], named["dense_bias"]))  # type: ignore[arg-type]


def cnn_nodes(cnn: ShotSpectrogramModel, constants: dict[str, np.ndarray]) -> list[Any]:
    """spectrograms int8 [N, 48, 32] -> cnn_log_odds [N, 1], as ShotSpectrogramModel runs it."""
    from onnx import TensorProto, helper

    constants["code_step"] = np.array(CODE_STEP, np.float32)
    constants["axes_channel"] = np.array([1], np.int64)
    nodes = [helper.make_node("Cast", ["spectrograms"], ["codes"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["codes", "code_step"], ["decoded"]),
             helper.make_node("Unsqueeze", ["decoded", "axes_channel"], ["x0"])]
    x = "x0"
    for i, (kernel, bias) in enumerate(cnn.convolutions):
        constants[f"conv{i}_w"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), np.float32)  # HWIO -> OIHW
        constants[f"conv{i}_b"] = bias.astype(np.float32)
        nodes += [helper.make_node("Conv", [x, f"conv{i}_w", f"conv{i}_b"], [f"conv{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"])]
        x = f"relu{i}"
        if i < len(cnn.normalizations):
            for name, value in zip(("gamma", "beta", "mean", "var"), cnn.normalizations[i], strict=True):
                constants[f"norm{i}_{name}"] = value.astype(np.float32)
            nodes += [helper.make_node("BatchNormalization", [x] + [f"norm{i}_{n}" for n in ("gamma", "beta", "mean",
                                       "var")], [f"norm{i}"], epsilon=BN_EPSILON),
                      helper.make_node("MaxPool", [f"norm{i}"], [f"pool{i}"], kernel_shape=[2, 2], strides=[2, 2])]
            x = f"pool{i}"
    constants["dense_w"], constants["dense_b"] = (a.astype(np.float32) for a in cnn.dense)
    return nodes + [helper.make_node("ReduceMax", [x], ["pooled_max"], axes=[2, 3], keepdims=0),
                    helper.make_node("MatMul", ["pooled_max", "dense_w"], ["dense"]),
                    helper.make_node("Add", ["dense", "dense_b"], ["cnn_log_odds"])]


def convolve_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3x3 convolution with zero padding, as Keras's Conv2D(padding="same") computes it."""
    n, h, w, c = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = sliding_window_view(padded, (3, 3), axis=(1, 2))  # (n, h, w, c, 3, 3)
    columns = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * h * w, 9 * c)
    return np.asarray(columns @ kernel.reshape(9 * c, -1) + bias, np.float32).reshape(n, h, w, -1)
