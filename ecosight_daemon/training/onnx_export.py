"""Each version's model for devices without TensorFlow: one ONNX file from a clip's log-mel
patches to its class probabilities (YAMNet's converted body, the pooling and the
classifier), with the front end it expects described in front_end.json beside it.

Made by the training process (which has TensorFlow and tf2onnx) next to the end-to-end
SavedModel, from the body the daemon already converted and verified, and checked against
that body followed by the Keras classifier before it is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.artifacts.priority_rule import describe_rule, priority_label_tensor
from ecosight_daemon.embedding import frontend as front
from ecosight_daemon.embedding.interface import YAMNET_DIM
from ecosight_daemon.pooling import AudiosetHead
from ecosight_daemon.training.device_files import sliding_windows_note, write_device_files

PATCHES_MODEL = "patches_to_probabilities.onnx"
FRONT_END_FILE = "front_end.json"
MAX_PROBABILITY_DIFF = 1e-4  # the composed model against the body + the Keras classifier


def front_end_description(classes: list[str], pooling: str, priority_index: int | None,
                          threshold: float | None) -> dict[str, Any]:
    """What a device computes before the model and how it reads the outputs."""
    return {
        "model": PATCHES_MODEL,
        "input": "patches: float32 [patches, 96, 64], the log-mel patches of one clip",
        "outputs": {"probabilities": "float32 [classes]", "label_index": "int32 scalar (the rule below applied)"},
        "classes": classes,
        "pooling": pooling,
        "label_rule": describe_rule(classes, priority_index, threshold),
    }


def export_patches_model(body_file: Path, classifier: Any, classes: list[str], pooling: str,
                         priority_index: int | None, threshold: float | None, target: Path,
                         head: AudiosetHead | None = None, version: str = "", window_patches: int = 4) -> float:
    """Write PATCHES_MODEL, the device files (device_files.py) and FRONT_END_FILE into
    `target`; returns the largest probability difference found in the check (raises if it
    is over MAX_PROBABILITY_DIFF)."""
    import onnx
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from ecosight_daemon.training.keras_head import pool_tensor

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # its per-step notes are not ours to log
    body = onnx.load(str(body_file))
    opset = next(entry.version for entry in body.opset_import if entry.domain in ("", "ai.onnx"))
    signature = [tf.TensorSpec([None, YAMNET_DIM], tf.float32, name="embeddings")]

    @tf.function(input_signature=signature)
    def classify(embeddings: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pooled = pool_tensor(embeddings, pooling, head)
        probabilities = classifier(pooled[tf.newaxis, :], training=False)[0]
        label_index = priority_label_tensor(probabilities, priority_index, threshold)
        return tf.identity(probabilities, name="probabilities"), tf.identity(label_index, name="label_index")

    # Frozen first: the classifier's weights (a normalization layer's included) become
    # constants, where converting the function itself left them as extra inputs.
    frozen = convert_variables_to_constants_v2(classify.get_concrete_function())
    classifier_model, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs],
        output_names=[t.name for t in frozen.outputs], opset=opset)
    classifier_model.ir_version = body.ir_version
    classifier_input = classifier_model.graph.input[0].name
    window_model = _named_copy(classifier_model, "embeddings", ["probabilities", "label_index"])
    embeddings_model = _named_copy(body, "patches", ["embeddings"])
    classifier_model = onnx.compose.add_prefix(classifier_model, "classifier/")
    merged = onnx.compose.merge_models(
        body, classifier_model, io_map=[(body.graph.output[0].name, "classifier/" + classifier_input)])
    _rename(merged, merged.graph.input[0], "patches")
    for output, name in zip(merged.graph.output, ["probabilities", "label_index"], strict=True):
        _rename(merged, output, name)
    onnx.checker.check_model(merged)
    worst = _check(merged, body_file, classifier, pooling, head)
    if worst > MAX_PROBABILITY_DIFF:
        raise ValueError(f"the ONNX model's probabilities differ from the classifier's by {worst:.2e}")
    target.mkdir(parents=True, exist_ok=True)
    description = {**front_end_description(classes, pooling, priority_index, threshold), "checked_max_diff": worst,
                   "sliding_windows": sliding_windows_note(window_patches)}
    description = write_device_files(target, embeddings_model, window_model, merged, version, body_file.parent.name,
                                     description)
    (target / FRONT_END_FILE).write_text(json.dumps(description, indent=2))
    return worst


def _named_copy(model: Any, input_name: str, output_names: list[str]) -> Any:
    """A copy of an ONNX model with its (first) input and its outputs given plain names."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _rename(copy, copy.graph.input[0], input_name)
    for output, name in zip(copy.graph.output, output_names, strict=True):
        _rename(copy, output, name)
    onnx.checker.check_model(copy)
    return copy


def _rename(model: Any, value_info: Any, name: str) -> None:
    """A graph input or output renamed where it is made and used (tf2onnx names them after
    TensorFlow's tensors, "Identity:0" and the like)."""
    old = value_info.name
    for node in model.graph.node:
        node.output[:] = [name if value == old else value for value in node.output]
        node.input[:] = [name if value == old else value for value in node.input]
    value_info.name = name


def _check(merged: Any, body_file: Path, classifier: Any, pooling: str, head: AudiosetHead | None) -> float:
    """The composed model against the verified body followed by the Keras classifier, on
    log-mel patches of a few synthetic clips of different lengths."""
    import onnxruntime

    from ecosight_daemon.pooling import pool_patches

    composed = onnxruntime.InferenceSession(merged.SerializeToString(), providers=["CPUExecutionProvider"])
    body = onnxruntime.InferenceSession(str(body_file), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    worst = 0.0
    for seconds in (0.5, 3.0, 11.0):
        waveform = (0.1 * rng.standard_normal(int(seconds * front.SAMPLE_RATE))).astype(np.float32)
        patches = front.log_mel_patches(waveform)
        embeddings = body.run(None, {body.get_inputs()[0].name: patches})[0].reshape(-1, YAMNET_DIM)
        pooled = pool_patches(embeddings, pooling, head)[np.newaxis]
        expected = np.asarray(classifier(pooled, training=False))[0]
        probabilities = composed.run(["probabilities"], {"patches": patches})[0]
        worst = max(worst, float(np.abs(probabilities - expected).max()))
    return worst
