"""The version's event detector for devices, beside the per-patch models (device_files.py):
`event_detector.onnx` from a recording's patch embeddings and onset features to each class's
margin and each patch's label, as artifacts/event_detector.py computes them (checked against
it before it is written); the onset features in words in front_end.json; a test vector.
A detector whose gun-shot scorer adds the shot CNN's log-odds takes each patch's CNN input
(artifacts/shot_spectrogram.py) as a third input, `spectrograms`, described there too; one that
adds the context trees computes their features inside the graph from the N patches it is given
(a patch's neighbours are the rows either side), so N must be a whole recording, or a chunk with
CONTEXT_PATCHES patches of overlap either side whose middle is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.artifacts.context_trees import (
    CONTEXT_FEATURES,
    CONTEXT_LOGITS,
    GUN_FAMILY,
    NEIGHBOURS,
    ONNX_ML_OPSET,
    onnx_context_nodes,
)
from ecosight_daemon.artifacts.event_detector import (
    CONTEXT_PATCHES,
    ONSET_FEATURES,
    TRAINED_SCORER,
    YAMNET_GUNSHOT,
    YAMNET_PLUS_CNN_PLUS_TREES_SCORER,
    YAMNET_PLUS_CNN_SCORER,
    YAMNET_SCORER,
    EventDetector,
    onset_features,
    patch_features,
)
from ecosight_daemon.artifacts.shot_spectrogram import (
    CODE_STEP,
    INPUT_SHAPE,
    LEVEL_HALF,
    LEVEL_HOLD,
    LEVEL_STRIDE,
    POOL,
    cnn_nodes,
    spectrogram_inputs,
)
from ecosight_daemon.pooling import AudiosetHead
from ecosight_daemon.training.device_files import TEST_VECTOR
from ecosight_daemon.util.digest import sha256_of

DETECTOR_MODEL = "event_detector.onnx"
DETECTOR_TEST_VECTOR = "event_detector_test_vector.npz"
MAX_MARGIN_DIFF = 1e-3  # ONNX Runtime's float32 against numpy's


def detector_graph(detector: EventDetector, head: AudiosetHead, opset: int = 17) -> Any:
    """embeddings [N, 1024], onsets [N, 4] (and spectrograms int8 [N, 48, 32] where the
    detector reads them) -> margins [N, classes], labels [N] (int64)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    classes = len(detector.classes)
    background = detector.classes.index(detector.background)
    priority = detector.classes.index(detector.priority_class) if detector.priority_class in detector.classes else -1
    not_self = np.where(np.eye(classes, dtype=bool), np.float32(-1e9), np.float32(0.0)).astype(np.float32)
    constants = {
        "head_kernel": head.kernel.astype(np.float32), "head_bias": head.bias.astype(np.float32),
        "mean": detector.fit.mean.astype(np.float32), "std": detector.fit.std.astype(np.float32),
        "kernel": detector.fit.kernel.astype(np.float32), "bias": detector.fit.bias.astype(np.float32),
        "not_self": not_self, "zero": np.array(0.0, np.float32),
        "threshold": np.array(detector.threshold, np.float32), "background": np.array(background, np.int64),
        "axes_1": np.array([1], np.int64), "class_thresholds": detector.label_thresholds(),
    }
    nodes = [
        helper.make_node("MatMul", ["embeddings", "head_kernel"], ["raw_logits"]),
        helper.make_node("Add", ["raw_logits", "head_bias"], ["audioset_logits"]),
        helper.make_node("Concat", ["audioset_logits", "onsets"], ["features"], axis=1),
        helper.make_node("Sub", ["features", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["standardized"]),
        helper.make_node("MatMul", ["standardized", "kernel"], ["weighted"]),
        helper.make_node("Add", ["weighted", "bias"], ["class_logits"]),
        # margin c = logit c - logsumexp(the other logits): each row repeated per class, itself masked out
        helper.make_node("Unsqueeze", ["class_logits", "axes_1"], ["rows"]),
        helper.make_node("Add", ["rows", "not_self"], ["others"]),
        helper.make_node("ReduceLogSumExp", ["others"], ["others_lse"], axes=[2], keepdims=0),
        helper.make_node("Sub", ["class_logits", "others_lse"], ["fitted_margins"]),
    ]
    if detector.priority_scorer != TRAINED_SCORER and priority >= 0:
        # the priority class's column is YAMNet's own "Gunshot, gunfire" logit (plus the CNN's log-odds)
        constants["priority_mask"] = (np.arange(classes) == priority).astype(bool)
        constants["gun_column"] = np.array([YAMNET_GUNSHOT], np.int64)
        nodes.append(helper.make_node("Gather", ["audioset_logits", "gun_column"], ["gun_logit"], axis=1))
        gun = "gun_logit"
        if detector.reads_spectrograms and detector.cnn is not None:
            nodes += cnn_nodes(detector.cnn, constants)
            nodes.append(helper.make_node("Add", ["gun_logit", "cnn_log_odds"], ["gun_margin"]))
            gun = "gun_margin"
        if detector.reads_context and detector.trees is not None:
            nodes += onnx_context_nodes("audioset_logits", "onsets", "context_features", constants)
            nodes += [detector.trees.onnx_node("context_features", "trees_log_odds"),
                      helper.make_node("Add", [gun, "trees_log_odds"], ["gun_margin_in_context"])]
            gun = "gun_margin_in_context"
        nodes.append(helper.make_node("Where", ["priority_mask", gun, "fitted_margins"], ["margins"]))
    else:
        nodes.append(helper.make_node("Identity", ["fitted_margins"], ["margins"]))
    # labels: the class whose margin most exceeds its class threshold where one does, else
    # background; the priority class wins wherever it clears its threshold and never below it
    nodes += [helper.make_node("Sub", ["margins", "class_thresholds"], ["over"]),
              helper.make_node("ArgMax", ["over"], ["best"], axis=1, keepdims=0),
              helper.make_node("ReduceMax", ["over"], ["top"], axes=[1], keepdims=0),
              helper.make_node("Greater", ["top", "zero"], ["positive"]),
              helper.make_node("Where", ["positive", "best", "background"], ["plain_labels"])]
    if priority >= 0:
        constants["priority"] = np.array(priority, np.int64)
        constants["priority_index"] = np.array([priority], np.int64)
        nodes += [helper.make_node("Gather", ["margins", "priority_index"], ["priority_column"], axis=1),
                  helper.make_node("Squeeze", ["priority_column", "axes_1"], ["priority_margin"]),
                  helper.make_node("GreaterOrEqual", ["priority_margin", "threshold"], ["clears"]),
                  helper.make_node("Equal", ["plain_labels", "priority"], ["chose_priority"]),
                  helper.make_node("Where", ["chose_priority", "background", "plain_labels"], ["demoted"]),
                  helper.make_node("Where", ["clears", "priority", "demoted"], ["labels"])]
    else:
        nodes.append(helper.make_node("Identity", ["plain_labels"], ["labels"]))
    inputs = [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", head.kernel.shape[0]]),
              helper.make_tensor_value_info("onsets", TensorProto.FLOAT, ["N", ONSET_FEATURES])]
    if detector.reads_spectrograms:
        inputs.append(helper.make_tensor_value_info("spectrograms", TensorProto.INT8, ["N", *INPUT_SHAPE]))
    graph = helper.make_graph(
        nodes, "ecosight_event_detector", inputs,
        [helper.make_tensor_value_info("margins", TensorProto.FLOAT, ["N", classes]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"])],
        initializer=[numpy_helper.from_array(value, name) for name, value in constants.items()])
    ml = [helper.make_opsetid("ai.onnx.ml", ONNX_ML_OPSET)] if detector.reads_context else []
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *ml])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def detector_inputs(detector: EventDetector, embeddings: np.ndarray, onsets: np.ndarray,
                    spectrograms: np.ndarray) -> dict[str, np.ndarray]:
    feeds = {"embeddings": embeddings.astype(np.float32), "onsets": onsets.astype(np.float32)}
    return feeds | ({"spectrograms": spectrograms.astype(np.int8)} if detector.reads_spectrograms else {})


def check_detector_graph(model: Any, detector: EventDetector, head: AudiosetHead,
                         embeddings: np.ndarray, onsets: np.ndarray, spectrograms: np.ndarray) -> float:
    """The largest margin difference against the numpy detector; raises if any label differs."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    margins, labels = session.run(None, detector_inputs(detector, embeddings, onsets, spectrograms))
    expected = detector.margins(patch_features(embeddings, onsets, head), spectrograms)
    worst = float(np.abs(margins - expected).max())
    near = np.abs(expected[:, detector.classes.index(detector.priority_class)] - detector.threshold) < 1e-3 \
        if detector.priority_class in detector.classes else np.zeros(len(labels), bool)
    near |= (np.abs(expected - detector.label_thresholds()) < 1e-3).any(axis=1)  # float32 rounding at a threshold
    differ = (labels != detector.labels(expected)) & ~near
    if differ.any():
        raise ValueError(f"the ONNX detector labels {int(differ.sum())} patches differently")
    return worst



def onset_spec() -> dict[str, Any]:
    """The four onset features in words and numbers (artifacts/event_detector.py onset_features)."""
    return {
        "input": "the log-mel frames L [frames, 64] of the whole recording padded to whole patches (the front end "
                 "above, natural log), frames 10 ms apart",
        "steps": [
            "decibels D = L * 20 / ln(10)",
            "energy e[k] = 10 log10(mean over the 64 bands of exp(2 L[k]) + 1e-10)",
            f"background b: the median of every 10th frame's energy (e[0], e[10], ...) over a window of "
            f"{int(2 * 15 * 10) + 1} such values centred on each (edges repeat the end value), each value "
            "held for the 10 frames it stands for",
            "contrast c[k] = e[k] - b[k]",
            "rise r[k] = e[k] - mean(e[k-7] .. e[k-3]) (indices below 0 repeat e[0]); r = 0 for k < 3",
            "broadband s[k] = the share of the 64 bands with D[k] - D[k-3] > 6; s = 0 for k < 3",
        ],
        "per_patch": "patch i covers frames [48 i, 48 i + 96): [max c, max r, max s, 90th percentile of c "
                     "(linear interpolation)] over them",
        "output": "onsets float32 [patches, 4]",
        "reference": "ecosight_daemon/artifacts/event_detector.py: onset_features(waveform)",
    }


def spectrogram_spec() -> dict[str, Any]:
    """The shot CNN's input in words (artifacts/shot_spectrogram.py spectrogram_inputs)."""
    return {
        "input": "the log-mel frames L [frames, 64] of the whole recording padded to whole patches, as for onsets",
        "steps": [
            f"band level m: per band, take every {LEVEL_STRIDE}th frame (L[0], L[{LEVEL_STRIDE}], ...): values v; "
            f"pad v with {LEVEL_HALF} copies of its first value before and of its last after; for every "
            f"{LEVEL_HOLD}th value v[j] (j = 0, {LEVEL_HOLD}, ...) the median of the {2 * LEVEL_HALF + 1} padded "
            f"values centred on it, held for the {LEVEL_STRIDE * LEVEL_HOLD} frames from frame {LEVEL_STRIDE} j",
            "normalised N = L - m",
            f"patch i: frames [48 i, 48 i + 96) of N, averaged in {POOL} x {POOL} blocks of frames and bands -> "
            f"[{INPUT_SHAPE[0]}, {INPUT_SHAPE[1]}]",
            f"codes: round(value / {CODE_STEP}) clipped to [-127, 127], int8",
        ],
        "output": f"spectrograms int8 [patches, {INPUT_SHAPE[0]}, {INPUT_SHAPE[1]}]",
        "reference": "ecosight_daemon/artifacts/shot_spectrogram.py: spectrogram_inputs(waveform)",
    }


def context_spec() -> dict[str, Any]:
    """The context trees' features in words (artifacts/context_trees.py context_features); the
    graph computes them from its inputs."""
    return {
        "input": "the N patches given: their AudioSet logits A [N, 521] (inside the graph) and onsets [N, 4]",
        "steps": [
            f"here h[i] = [A[i, j] for j in {list(CONTEXT_LOGITS)}] followed by onsets[i] (46 values)",
            f"gun g[i] = max of A[i, j] for j in {list(GUN_FAMILY)}",
            f"features[i] = h[i], g[i], then h[clip(i + k, 0, N - 1)] for k in {list(NEIGHBOURS)}",
        ],
        "chunks": f"a patch's score reads the {CONTEXT_PATCHES} patches either side: score a whole recording at "
                  f"once, or chunks with {CONTEXT_PATCHES} patches of overlap either side and keep their middle "
                  "(the recording's first and last patches stand in beyond its ends, as above)",
        "output": f"float32 [N, {CONTEXT_FEATURES}], read by the graph's TreeEnsembleRegressor (ai.onnx.ml)",
        "reference": "ecosight_daemon/artifacts/context_trees.py: context_features(logits, onsets)",
    }


def detector_description(detector: EventDetector) -> dict[str, Any]:
    rule = (f"labels: the class whose margin most exceeds its class_thresholds entry where one does, else "
            f"{detector.background!r}; {detector.priority_class!r} wherever its margin >= {detector.threshold:.6g} "
            f"(its calibrated threshold) and never below it")
    gun = "YAMNet's own 'Gunshot, gunfire' logit (AudioSet class 421)"
    scorer = {YAMNET_SCORER: f"{gun} is the priority class's margin",
              YAMNET_PLUS_CNN_SCORER: f"{gun} plus the shot CNN's log-odds (inside this graph, from the spectrograms "
                                      "input) is the priority class's margin",
              YAMNET_PLUS_CNN_PLUS_TREES_SCORER: f"{gun} plus the shot CNN's log-odds plus the context trees' log-odds "
                                                 "(inside this graph, see context_features) is the priority class's "
                                                 "margin",
              }.get(detector.priority_scorer, "the fitted model's margin")
    inputs = {"embeddings": "float32 [N, 1024], patches_to_embeddings.onnx's output for N consecutive patches",
              "onsets": "float32 [N, 4], see onset_features"}
    extra: dict[str, Any] = {}
    if detector.reads_spectrograms:
        inputs["spectrograms"] = f"int8 [N, {INPUT_SHAPE[0]}, {INPUT_SHAPE[1]}], see spectrogram_inputs"
        extra["spectrogram_inputs"] = spectrogram_spec()
    if detector.reads_context:
        extra["context_features"] = context_spec()
    return {"model": DETECTOR_MODEL, "inputs": inputs, **extra,
            "outputs": {"margins": "float32 [N, classes]: log p(class) - log p(any other)",
                        "labels": "int64 [N], indices into classes"},
            "classes": detector.classes, "priority_class": detector.priority_class,
            "priority_scorer": detector.priority_scorer, "priority_margin": scorer,
            "threshold": detector.threshold, "label_rule": rule, "onset_features": onset_spec(),
            "class_thresholds": {c: float(t) for c, t in zip(detector.classes, detector.label_thresholds(),
                                                                 strict=True)},
            "events": "consecutive patches with the same label (background excluded) are one event",
            "test_vector": DETECTOR_TEST_VECTOR}


def write_detector_files(export: Path, front_end_file: str, detector: EventDetector, head: AudiosetHead,
                         version: str) -> float:
    """DETECTOR_MODEL and its test vector into `export` (where the device files are), and the
    detector's section in its front_end.json; returns the largest margin difference in the check."""
    import onnx
    import onnxruntime

    with np.load(export / TEST_VECTOR) as vector:
        waveform, embeddings, frames = vector["waveform"], vector["embeddings"], vector["log_mel_frames"]
    onsets, spectrograms = onset_features(waveform), spectrogram_inputs(waveform)
    model = detector_graph(detector, head)
    rng = np.random.default_rng(5)  # and patches far from the test vector's, where classes saturate
    worst = max(check_detector_graph(model, detector, head, embeddings, onsets, spectrograms),
                check_detector_graph(model, detector, head, 4 * rng.random((64, embeddings.shape[1])),
                                     8 * rng.standard_normal((64, ONSET_FEATURES)),
                                     rng.integers(-60, 60, (64, *INPUT_SHAPE)).astype(np.int8)))
    if worst > MAX_MARGIN_DIFF:
        raise ValueError(f"the ONNX detector's margins differ from the detector's by {worst:.2e}")
    onnx.helper.set_model_props(model, {"ecosight_version": version, "role": "patch embeddings [N, 1024] and "
                                        "onsets [N, 4] -> margins [N, classes], labels [N]",
                                        "front_end": "front_end.json (beside this file)"})
    onnx.save(model, str(export / DETECTOR_MODEL))
    session = onnxruntime.InferenceSession(str(export / DETECTOR_MODEL), providers=["CPUExecutionProvider"])
    margins, labels = session.run(None, detector_inputs(detector, embeddings, onsets, spectrograms))
    np.savez(export / DETECTOR_TEST_VECTOR, waveform=waveform, log_mel_frames=frames, onsets=onsets,
             spectrograms=spectrograms, embeddings=embeddings, margins=margins, labels=labels)
    spec_file = export / front_end_file
    description = json.loads(spec_file.read_text())
    description["event_detector"] = detector_description(detector)
    for name in (DETECTOR_MODEL, DETECTOR_TEST_VECTOR):
        description["files_sha256"][name] = sha256_of(export / name)
    spec_file.write_text(json.dumps(description, indent=2))
    return worst
