"""The running daemon with a large index: 14,000 files already embedded (the corpus size
the old system re-embedded on every retrain), then a burst of new clips.

Everything the daemon does besides the model (status file, new-sample count, cache
look-ups) reads the index, so its cost grows with the corpus while the model's does not.
The 14,000 files are tiny distinct WAVs whose cache rows are written beforehand (their
embeddings are placeholders: nothing is trained here), so the daemon finds them all
unchanged at start-up. Measured: start-up to idle, idle CPU and RSS, and the rate for
BURST_FILES dev clips moved in at once over the model alone on the same decoded clips
(the same comparison as daemon_latency, which runs on the 251-file dev corpus).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from benchmarks.common import (
    Figure,
    format_table,
    process_tree_usage,
    save_report,
    settled,
    start_daemon,
    wait_for,
    yamnet_handle,
)
from benchmarks.daemon_latency import BURST_FILES, burst, model_only_seconds, stage_burst

INDEXED_FILES = 14_000
CLASSES = ("gun_shot", "dog_bark", "engine_idling", "clips")
IDLE_S = 10.0  # at 0.1% of a core, 10 s already shows it; make bench stays under 15 minutes


def indexed_corpus(root: Path) -> None:
    """INDEXED_FILES tiny WAVs in audio/, each already embedded in models/' cache."""
    from ecosight_daemon.embedder import fingerprint_of, local_model_folder, model_id_for
    from ecosight_daemon.store import EmbeddingStore

    folder = local_model_folder(yamnet_handle())
    assert folder is not None, "the YAMNet SavedModel is not on disk"
    fingerprint = fingerprint_of(yamnet_handle(), folder)
    (root / "models").mkdir()
    store = EmbeddingStore.open(root / "models" / "embedding_cache.sqlite3")
    store.adopt_model(model_id_for(fingerprint), fingerprint)
    rng = np.random.default_rng(14_000)
    placeholder = rng.standard_normal((1, 1024)).astype(np.float32)
    for i in range(INDEXED_FILES):
        label = CLASSES[i % len(CLASSES)]
        path = root / "audio" / label / f"indexed_{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, rng.uniform(-0.5, 0.5, 1_600).astype(np.float32), 16_000, subtype="PCM_16")
        data, info = path.read_bytes(), path.stat()
        store.record_embedding(f"{label}/{path.name}", label, info.st_size, info.st_mtime_ns,
                               hashlib.sha256(data).hexdigest(), placeholder, 0.1)
    store.close()


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="ecosight-scale-") as tmp:
        root = Path(tmp)
        indexed_corpus(root)
        config = root / "config.toml"
        config.write_text('[paths]\naudio_dir = "audio"\nmodels_dir = "models"\n'
                          '[triggers]\nmin_new_samples = 100000\n')
        staged = stage_burst(root)
        os.sync()  # or the kernel writes the 14,000 new files back during the measurements
        started = time.monotonic()
        daemon = start_daemon(root)
        try:
            daemon.wait_idle(300)
            startup_s = time.monotonic() - started
            wait_for(lambda: settled(daemon.pid), 120, "the warm training process to finish loading")
            before = process_tree_usage(daemon.pid)
            time.sleep(IDLE_S)
            after = process_tree_usage(daemon.pid)
            burst_s, burst_paths = burst(staged, daemon)
        finally:
            daemon.stop()
        model_s = model_only_seconds(burst_paths)
    idle_cpu = (after["cpu_s"] - before["cpu_s"]) / IDLE_S
    label = f"{INDEXED_FILES:,} files indexed"
    figures = [
        Figure(f"daemon start-up to idle, {label} (all cached)", startup_s, "s"),
        Figure(f"daemon idle CPU, {label}", 100 * idle_cpu, "% of a core"),
        Figure(f"daemon idle RSS, {label}", after["own_rss_mib"], "MiB"),
        Figure(f"running daemon, {label}: {BURST_FILES} clips moved in at once", BURST_FILES / burst_s, "files/s"),
        Figure(f"running daemon burst / model-only, {label}", model_s / burst_s, "ratio", ">= 0.9",
               model_s / burst_s >= 0.9),
    ]
    save_report("daemon_scale", figures, {"startup_s": startup_s, "idle_before": before, "idle_after": after,
                                          "burst_s": burst_s, "model_only_s": model_s})
    return figures


if __name__ == "__main__":
    print(format_table(run()))
