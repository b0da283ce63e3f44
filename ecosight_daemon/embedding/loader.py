"""YAMNet on the configured runtime: ONNX Runtime by default, TensorFlow as the fallback."""

from __future__ import annotations

import logging
from pathlib import Path

from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.embedding.onnx_conversion import OnnxUnavailable
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
from ecosight_daemon.embedding.tensorflow_runtime import YamnetEmbedder

logger = logging.getLogger(__name__)

def load_embedder(handle: str, models_dir: Path, runtime: str, pinned_sha256: str = "") -> Embedder:
    """YAMNet on the configured runtime; ONNX Runtime falls back to TensorFlow, once and
    with the reason in the log, where the body cannot be made or used."""
    if runtime == "onnxruntime":
        try:
            return OnnxEmbedder.load(handle, models_dir, pinned_sha256)
        except OnnxUnavailable as exc:
            logger.warning("ONNX Runtime cannot run YAMNet here (%s); using TensorFlow", exc)
    return YamnetEmbedder.load(handle, pinned_sha256)
