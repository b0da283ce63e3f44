"""Which model a handle names, without loading it: handle -> SavedModel folder ->
fingerprint -> model id, and the pin check. Every runtime (and every benchmark) asks here,
so the same bytes always get the same id."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecosight_daemon.audio import frontend_settings
from ecosight_daemon.embedding.interface import YAMNET_DIM
from ecosight_daemon.errors import ModelLoadError
from ecosight_daemon.util.digest import sha256_of_files


@dataclass(frozen=True)
class ModelIdentity:
    handle: str
    folder: Path
    fingerprint: dict[str, Any]
    model_id: str


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
    return sha256_of_files(folder, [folder / "saved_model.pb", *sorted((folder / "variables").glob("*"))])


def identify(handle: str, folder: Path, pinned_sha256: str = "") -> ModelIdentity:
    """The model in `folder` (which `handle` resolved to), held to the pin if one is set.

    Raises:
        ModelLoadError: `pinned_sha256` is set and the SavedModel's digest differs.
    """
    fingerprint = fingerprint_of(handle, folder)
    if pinned_sha256 and fingerprint["savedmodel_sha256"] != pinned_sha256:
        raise ModelLoadError(
            f"the model at {handle} has sha256 {fingerprint['savedmodel_sha256']}, not the pinned "
            f"[embedding] yamnet_sha256 = {pinned_sha256}; restore the pinned model or update the pin"
        )
    return ModelIdentity(handle, folder, fingerprint, model_id_for(fingerprint))


def identify_local(handle: str, pinned_sha256: str = "") -> ModelIdentity | None:
    """`identify` for a handle already on this disk; None when it is not (yet)."""
    folder = local_model_folder(handle)
    return None if folder is None else identify(handle, folder, pinned_sha256)
