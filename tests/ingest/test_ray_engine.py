"""`embed --engine ray` on a local Ray instance: the same rows as the single-process path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.one_shot import embed_pending
from ecosight_daemon.ingest.reconcile import reconcile
from ecosight_daemon.store.database import Database
from testkit.audio_files import WavWriter
from testkit.paths import IN_CI

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_available() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("ray is not installed; `make install` installs the ray extra")
        pytest.skip("ray is not installed (pip install '.[ray]')")


def make_corpus(root: Path, dev_corpus: Path, write_wav: WavWriter) -> Path:
    audio = root / "audio"
    shutil.copytree(dev_corpus, audio, ignore=shutil.ignore_patterns("MANIFEST.csv"))
    (audio / "gun_shot" / "empty.wav").write_bytes(b"")
    (audio / "clips" / "text.wav").write_text("not audio\n")
    write_wav(audio / "dog_bark" / "long.wav", "tone", seconds=45.0, rate=8_000)
    (root / "config.toml").write_text(
        '[paths]\naudio_dir = "audio"\nmodels_dir = "models"\n[audio]\nmax_duration_s = 41.0\n'
    )
    return audio


def rows(store: Database) -> dict[str, Any]:
    return {r.path: (r.state.value, r.reason, r.sha256) for r in store.clips.files()}


def test_ray_engine_matches_the_single_process_path(
    ray_available: None, tmp_path: Path, dev_corpus: Path, write_wav: WavWriter, yamnet: Any, yamnet_handle: str
) -> None:
    local_audio = make_corpus(tmp_path / "local", dev_corpus, write_wav)
    make_corpus(tmp_path / "ray", dev_corpus, write_wav)

    local = Database.open(tmp_path / "local" / "models" / "embedding_cache.sqlite3")
    local.clips.adopt_model(yamnet.model_id, yamnet.fingerprint)
    limits = IngestLimits((".wav", ".flac", ".ogg"), 41.0, 512_000_000)
    reconcile(local, local_audio, limits)
    embed_pending(local, yamnet, local_audio, limits)

    result = subprocess.run(
        [sys.executable, "-m", "ecosight_daemon", "--config", str(tmp_path / "ray" / "config.toml"),
         "embed", "--engine", "ray", "--json"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "ECOSIGHT_YAMNET_HANDLE": yamnet_handle},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    remote = Database.open(tmp_path / "ray" / "models" / "embedding_cache.sqlite3")

    expected, got = rows(local), rows(remote)
    assert got == expected  # same states, same failure reasons, same hashes
    failed = {path: reason for path, (state, reason, _) in expected.items() if state == "failed"}
    assert set(failed) >= {"gun_shot/empty.wav", "clips/text.wav", "dog_bark/long.wav"}
    assert summary["failed"] == len(failed) and summary["embedded"] == len(expected) - len(failed)
    assert remote.clips.model_id == local.clips.model_id
    for state, _, sha256 in expected.values():
        if state == "embedded":
            # The CLI's Ray workers run the ONNX runtime, the local path here TensorFlow: the same
            # embeddings within one float16 step of the cache (2**-10 relative).
            np.testing.assert_allclose(remote.clips.embeddings_for(sha256), local.clips.embeddings_for(sha256),
                                       rtol=2**-10, atol=1e-3)
    local.close()
    remote.close()
