"""YAMNet without TensorFlow: the NumPy front end and the converted CNN body in ONNX
Runtime. Same model id and the same embeddings as the TensorFlow runtime (within the
cache's float16 quantum), so a cache made by either serves both."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.audio import TARGET_SAMPLE_RATE
from ecosight_daemon.embedding.frontend import PATCH_HOP_SAMPLES, PATCH_SAMPLES, log_mel_patches, patch_count
from ecosight_daemon.embedding.identity import identify_local
from ecosight_daemon.embedding.interface import YAMNET_DIM
from ecosight_daemon.embedding.onnx_conversion import BODY_FILE, HEAD_FILE, OnnxUnavailable, ensure_body
from ecosight_daemon.pooling import AudiosetHead
from ecosight_daemon.util.cpus import usable_cpus

logger = logging.getLogger(__name__)

FRONT_END_CHUNK_PATCHES = 128  # ~61 s of audio through the front end at a time
BATCH_PATCHES = 128  # patches per ONNX call: memory stays that of one batch for any clip length
# Per call when a file runs on each core: the same speed on 2 cores (1.07 s for the first
# 120 dev clips against 1.09 s with 128) and a quarter of the session's working memory,
# which two runs at once would otherwise hold twice (the daemon's idle RSS went 335 -> 405 MiB).
PER_FILE_BATCH_PATCHES = 32


def runtime_threads() -> int:
    """Threads for the CNN on one clip: every core (measured on 2 cores: 1,039 patches/s
    with 2 threads, 644 with 1, decoding on a third thread included). Many clips go
    faster still as one single-threaded run per core (`for_concurrent_files`)."""
    return usable_cpus()


def body_session(body_file: Path, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No spinning between runs: the decoding thread needs those cycles (end to end on 2
    # cores: 870 patches/s without spinning, 817 with).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(body_file), options, providers=["CPUExecutionProvider"])


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
    _body_file: Path | None = None
    _per_file: OnnxEmbedder | None = None
    _batch_patches: int = BATCH_PATCHES
    runtime: str = "onnxruntime"

    @classmethod
    def load(cls, handle: str, models_dir: Path, pinned_sha256: str = "") -> OnnxEmbedder:
        import onnxruntime

        identity = identify_local(handle, pinned_sha256)
        if identity is None:
            raise OnnxUnavailable(f"{handle} is not on this disk yet (a TF Hub URL is fetched by TensorFlow)")
        fingerprint, model_id = identity.fingerprint, identity.model_id
        body = ensure_body(handle, models_dir, model_id)
        one_blas_thread()
        session = body_session(body / BODY_FILE, runtime_threads())
        with np.load(body / HEAD_FILE) as head:
            audioset = AudiosetHead(head["kernel"], head["bias"])
        logger.info("YAMNet %s runs on ONNX Runtime %s (%d threads)", model_id, onnxruntime.__version__,
                    runtime_threads())
        return cls(handle, model_id, fingerprint, session, audioset, _input=session.get_inputs()[0].name,
                   _body_file=body / BODY_FILE)

    def embed(self, waveform: np.ndarray) -> np.ndarray:
        """Front end and CNN FRONT_END_CHUNK_PATCHES patches at a time: the front end held
        the whole clip's frames before (~0.4 GiB for 600 s, once per worker). Patch k reads
        only samples [k * hop, k * hop + patch), so segments that overlap by patch - hop give
        the patches of one call over the whole clip."""
        total = patch_count(len(waveform))
        return np.concatenate([
            self.embed_features(log_mel_patches(
                waveform[first * PATCH_HOP_SAMPLES:(min(total, first + FRONT_END_CHUNK_PATCHES) - 1) * PATCH_HOP_SAMPLES
                         + PATCH_SAMPLES]))
            for first in range(0, total, FRONT_END_CHUNK_PATCHES)
        ])

    def for_concurrent_files(self) -> tuple[OnnxEmbedder, int]:
        """The same model on a single-threaded session, for one file per core at once:
        a whole file (decoding, front end, CNN) per thread, no thread ever waiting for
        another. Measured on 2 cores, 120 dev clips: 1.42 s against 1.53 s for decoding on
        one thread beside a two-threaded CNN. Made on first use (the CLI's one-clip
        commands never need it)."""
        if self._per_file is None:
            assert self._body_file is not None
            session = body_session(self._body_file, threads=1)
            self._per_file = replace(self, _session=session, _per_file=None, _batch_patches=PER_FILE_BATCH_PATCHES)
        return self._per_file, runtime_threads()

    def embed_features(self, patches: np.ndarray) -> np.ndarray:
        """The CNN body on log-mel patches, a batch at a time."""
        size = self._batch_patches
        return np.concatenate([
            np.asarray(self._session.run(None, {self._input: patches[first:first + size]})[0],
                       dtype=np.float32).reshape(-1, YAMNET_DIM)
            for first in range(0, len(patches), size)
        ])

    def audioset_head(self) -> AudiosetHead:
        return self._head
