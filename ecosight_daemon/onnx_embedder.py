"""YAMNet without TensorFlow: the NumPy front end and the converted CNN body in ONNX
Runtime. Same model id and the same embeddings as the TensorFlow runtime (within the
cache's float16 quantum), so a cache made by either serves both."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import TARGET_SAMPLE_RATE
from .embedder import YAMNET_DIM, Embedder, YamnetEmbedder, fingerprint_of, local_model_folder, model_id_for
from .errors import ModelLoadError
from .features import AudiosetHead
from .onnx_body import BODY_FILE, HEAD_FILE, OnnxUnavailable, ensure_body
from .yamnet_frontend import log_mel_patches

logger = logging.getLogger(__name__)

BATCH_PATCHES = 128  # patches per ONNX call: memory stays that of one batch for any clip length
RUNTIMES = ("onnxruntime", "tensorflow")


def runtime_threads() -> int:
    """Threads for the CNN: every core (measured on 2 cores: 1,039 patches/s with 2
    threads, 644 with 1, decoding on a third thread included)."""
    return max(1, os.cpu_count() or 1)


def one_blas_thread() -> None:
    """NumPy's BLAS (the front end's mel product) on one thread in this process.

    OpenBLAS's own pool spins between calls and takes the cores ONNX Runtime's threads
    need: with it, two ONNX threads ran at 464 patches/s, without it at 1,039. Nothing in
    the embedding process needs a parallel BLAS; the training process is another process.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


@dataclass
class OnnxEmbedder:
    handle: str
    model_id: str
    fingerprint: dict[str, Any]
    _session: Any
    _head: AudiosetHead
    sample_rate: int = TARGET_SAMPLE_RATE
    dim: int = YAMNET_DIM
    _input: str = field(default="")
    runtime: str = "onnxruntime"

    @classmethod
    def load(cls, handle: str, models_dir: Path, pinned_sha256: str = "") -> OnnxEmbedder:
        import onnxruntime

        folder = local_model_folder(handle)
        if folder is None:
            raise OnnxUnavailable(f"{handle} is not on this disk yet (a TF Hub URL is fetched by TensorFlow)")
        fingerprint = fingerprint_of(handle, folder)
        if pinned_sha256 and fingerprint["savedmodel_sha256"] != pinned_sha256:
            raise ModelLoadError(
                f"{handle} has sha256 {fingerprint['savedmodel_sha256']}, not the pinned "
                f"[embedding] yamnet_sha256 = {pinned_sha256}; restore the pinned model or update the pin"
            )
        model_id = model_id_for(fingerprint)
        body = ensure_body(handle, models_dir, model_id)
        one_blas_thread()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = runtime_threads()
        options.inter_op_num_threads = 1
        # No spinning between runs: the decoding thread needs those cycles (end to end on 2
        # cores: 870 patches/s without spinning, 817 with).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(body / BODY_FILE), options, providers=["CPUExecutionProvider"])
        with np.load(body / HEAD_FILE) as head:
            audioset = AudiosetHead(head["kernel"], head["bias"])
        logger.info("YAMNet %s runs on ONNX Runtime %s (%d threads)", model_id, onnxruntime.__version__,
                    options.intra_op_num_threads)
        return cls(handle, model_id, fingerprint, session, audioset, _input=session.get_inputs()[0].name)

    def embed(self, waveform: np.ndarray) -> np.ndarray:
        return self.embed_features(self.front_end(waveform))

    def front_end(self, waveform: np.ndarray) -> np.ndarray:
        """The log-mel patches (the part the embed pipeline runs on its decoding thread)."""
        return log_mel_patches(waveform)

    def embed_features(self, patches: np.ndarray) -> np.ndarray:
        """The CNN body on log-mel patches, BATCH_PATCHES at a time."""
        return np.concatenate([
            np.asarray(self._session.run(None, {self._input: patches[first:first + BATCH_PATCHES]})[0],
                       dtype=np.float32).reshape(-1, YAMNET_DIM)
            for first in range(0, len(patches), BATCH_PATCHES)
        ])

    def audioset_head(self) -> AudiosetHead:
        return self._head


def load_embedder(handle: str, models_dir: Path, runtime: str, pinned_sha256: str = "") -> Embedder:
    """YAMNet on the configured runtime; ONNX Runtime falls back to TensorFlow, once and
    with the reason in the log, where the body cannot be made or used."""
    if runtime == "onnxruntime":
        try:
            return OnnxEmbedder.load(handle, models_dir, pinned_sha256)
        except OnnxUnavailable as exc:
            logger.warning("ONNX Runtime cannot run YAMNet here (%s); using TensorFlow", exc)
    return YamnetEmbedder.load(handle, pinned_sha256)
