"""The embedding model behind a small protocol; the only module that imports tensorflow_hub."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ecosight_daemon.audio import TARGET_SAMPLE_RATE, frontend_settings
from ecosight_daemon.cache.store import EmbeddingStore
from ecosight_daemon.embedding.tf_start_up import start_up_notes_hidden
from ecosight_daemon.errors import ModelLoadError
from ecosight_daemon.pooling import AudiosetHead

logger = logging.getLogger(__name__)

YAMNET_DIM = 1024
AUDIOSET_CLASSES = 521
PATCH_SAMPLES = 15_600  # 0.975 s: one YAMNet patch
HOP_SAMPLES = 7_680  # 0.48 s between patch starts
CHUNK_PATCHES = 128  # patches per YAMNet call (~1 minute of audio, ~0.1 GiB of TensorFlow memory)


class Embedder(Protocol):
    """Turns 16 kHz mono float32 audio into per-patch embeddings."""

    model_id: str
    fingerprint: dict[str, Any]
    sample_rate: int
    dim: int

    def embed(self, waveform: np.ndarray) -> np.ndarray:
        """Return an (N, dim) float32 array, one row per 0.96 s patch."""
        ...

    def audioset_head(self) -> AudiosetHead:
        """The model's own classifier layer over the embeddings (for mean_max_audioset pooling)."""
        ...


def patch_count(num_samples: int) -> int:
    """YAMNet's number of patches for a clip of num_samples (it zero-pads short clips)."""
    extra = max(0, num_samples - PATCH_SAMPLES)
    return 1 + -(-extra // HOP_SAMPLES)


def model_id_for(fingerprint: dict[str, Any]) -> str:
    """A short stable id from the parts of a fingerprint that change the numbers.

    The handle is recorded but not part of the id: the same SavedModel bytes
    moved to another folder give the same embeddings and must not be re-embedded.
    """
    identity = {key: value for key, value in fingerprint.items() if key != "handle"}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"yamnet-{digest[:16]}"


def local_model_folder(handle: str, environ: dict[str, str] | None = None) -> Path | None:
    """The SavedModel folder a handle loads from, found without importing TensorFlow.

    A local path is itself; a URL is looked up where tensorflow_hub caches it
    (TFHUB_CACHE_DIR, keyed by the sha1 of the handle). None when not on disk yet.
    """
    environ = dict(os.environ) if environ is None else environ
    if "://" not in handle:
        folder = Path(handle)
    else:
        cache_root = Path(environ.get("TFHUB_CACHE_DIR") or Path(tempfile.gettempdir(), "tfhub_modules"))
        folder = cache_root / hashlib.sha1(handle.encode("utf-8")).hexdigest()
    return folder if (folder / "saved_model.pb").is_file() else None


def fingerprint_of(handle: str, folder: Path) -> dict[str, Any]:
    """What identifies the embeddings a SavedModel folder produces with our front end."""
    return {
        "handle": handle,
        "savedmodel_sha256": savedmodel_digest(folder),
        "dim": YAMNET_DIM,
        **frontend_settings(),
    }


def savedmodel_digest(folder: Path) -> str:
    """sha256 over the files that define a SavedModel's graph and weights."""
    digest = hashlib.sha256()
    files = [folder / "saved_model.pb", *sorted((folder / "variables").glob("*"))]
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


@dataclass
class YamnetEmbedder:
    """YAMNet loaded with tensorflow_hub from a URL or a local SavedModel folder."""

    handle: str
    model_id: str
    fingerprint: dict[str, Any]
    _model: Any
    sample_rate: int = TARGET_SAMPLE_RATE
    dim: int = YAMNET_DIM

    @classmethod
    def load(cls, handle: str, pinned_sha256: str = "") -> YamnetEmbedder:
        """Load the model; raise ModelLoadError with what to do when it fails, or when
        `pinned_sha256` is set and the SavedModel's digest differs."""
        try:
            with start_up_notes_hidden():
                import tensorflow_hub as hub
        except ImportError as exc:
            raise ModelLoadError(
                f"cannot import tensorflow_hub ({exc}); run `make install` "
                "(tensorflow-hub needs setuptools<82 for pkg_resources)"
            ) from exc
        try:
            folder = Path(hub.resolve(handle))
            with start_up_notes_hidden():
                model = hub.load(str(folder))
        except Exception as exc:  # TF raises many unrelated types for a bad handle
            raise ModelLoadError(
                f"cannot load YAMNet from {handle!r} ({type(exc).__name__}: {exc}); set "
                "[embedding] yamnet_handle or ECOSIGHT_YAMNET_HANDLE to a local copy of "
                "the SavedModel (this machine may have no internet)"
            ) from exc
        fingerprint = fingerprint_of(handle, folder)
        if pinned_sha256 and fingerprint["savedmodel_sha256"] != pinned_sha256:
            raise ModelLoadError(
                f"the model at {handle} has sha256 {fingerprint['savedmodel_sha256']}, not the pinned "
                f"[embedding] yamnet_sha256 = {pinned_sha256}; restore the pinned model or update the pin"
            )
        model_id = model_id_for(fingerprint)
        logger.info("loaded YAMNet from %s as %s (sha256 %s)", handle, model_id, fingerprint["savedmodel_sha256"])
        return cls(handle=handle, model_id=model_id, fingerprint=fingerprint, _model=model)

    def audioset_head(self) -> AudiosetHead:
        """YAMNet's final dense layer (embedding -> AudioSet logits), found by its shapes.

        Raises:
            ModelLoadError: the model has no such layer (not YAMNet's call contract).
        """
        kernels = [v for v in self._model.variables if tuple(v.shape) == (YAMNET_DIM, AUDIOSET_CLASSES)]
        biases = [v for v in self._model.variables if tuple(v.shape) == (AUDIOSET_CLASSES,)]
        if len(kernels) != 1 or len(biases) != 1:
            raise ModelLoadError(
                f"{self.handle} has no single {YAMNET_DIM}x{AUDIOSET_CLASSES} AudioSet layer; "
                "set [training] pooling = \"mean_max\" to train without YAMNet's AudioSet scores"
            )
        return AudiosetHead(np.asarray(kernels[0].numpy(), np.float32), np.asarray(biases[0].numpy(), np.float32))

    def embed(self, waveform: np.ndarray) -> np.ndarray:
        """Per-patch embeddings, computed CHUNK_PATCHES patches at a time.

        One call on a 600 s clip took 1.2 GiB above idle; in chunks the memory is that
        of one chunk whatever the clip's length. Patch k depends only on samples
        [k * HOP, k * HOP + PATCH) and YAMNet has no state across patches, so chunks
        whose waveforms overlap by PATCH - HOP give the same patches as one call.
        """
        import tensorflow as tf

        total = patch_count(len(waveform))
        chunks = []
        for first in range(0, total, CHUNK_PATCHES):
            last = min(total, first + CHUNK_PATCHES)
            segment = waveform[first * HOP_SAMPLES:(last - 1) * HOP_SAMPLES + PATCH_SAMPLES]
            _, embeddings, _ = self._model(tf.constant(segment, dtype=tf.float32))
            chunks.append(np.asarray(embeddings, dtype=np.float32))
        return np.concatenate(chunks)


def remember_audioset_head(store: EmbeddingStore, embedder: Embedder) -> AudiosetHead:
    """Store YAMNet's AudioSet layer with its model id (once), so pooling needs no TensorFlow."""
    head = store.audioset_head(embedder.model_id)
    if head is None:
        head = embedder.audioset_head()
        store.save_audioset_head(embedder.model_id, head)
    return head
