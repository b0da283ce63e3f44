"""Training time and peak RSS for 2,000 and 10,000 cached clips; cache bytes per hour of audio.

The dev corpus is embedded for real (251 clips). Larger caches are made from those
rows: clip i is a copy of real clip i mod 251 with its embeddings nudged by 1% noise,
stored under `<stem>_copy<i>`, which the group patterns map back to the source
recording (so copies never straddle a split, as real augmented copies would not).
Training cost depends on the number and size of the rows, not on their sounds, so
these stand in for clips we cannot embed in a benchmark's time budget (10,000 real
clips take ~6 minutes to embed here).

Each size is trained by the daemon's `retrain` in a fresh process with a cold training
process (TensorFlow imported on the clock, as a one-shot `retrain` command would):
wall time including the report and export, the retrain's duration up to promotion
(from retraining_log.json), and peak RSS of the calling process (VmHWM; getrusage would report
the high-water mark inherited from the benchmark's own process across fork and exec)
and of the training process (getrusage of the children).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import Figure, dev_corpus, format_table, save_report, yamnet_handle
from ecosight_daemon.embedding.tensorflow_runtime import YamnetEmbedder
from ecosight_daemon.ingest.audioset_layer import remember_audioset_head
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.one_shot import embed_pending
from ecosight_daemon.ingest.reconcile import reconcile
from ecosight_daemon.store.clip_index import FileState
from ecosight_daemon.store.database import Database

SIZES = (2_000, 10_000)
LIMITS = IngestLimits((".wav",), 600, 10**9)

# The retrain the daemon runs, in a fresh process (the CLI's `retrain` would first sync
# the cache with audio_dir, where these made-up clips have no files).
MEASURE = """
import json, resource, sys, time
started = time.monotonic()
from pathlib import Path
from ecosight_daemon.config import load_settings
from ecosight_daemon.versions.retrain import retrain
from ecosight_daemon.store.database import Database
settings = load_settings(Path(sys.argv[1]))
outcome = retrain(settings, Database.open(settings.cache_path), "benchmark", force=True)
print(json.dumps({"ok": outcome.promoted, "wall_s": time.monotonic() - started,
                  "parent_kib": int(next(line.split()[1] for line in open("/proc/self/status")
                                         if line.startswith("VmHWM"))),
                  "child_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def embed_dev(models: Path) -> Database:
    embedder = YamnetEmbedder.load(yamnet_handle())
    store = Database.open(models / "embedding_cache.sqlite3")
    store.clips.adopt_model(embedder.model_id, embedder.fingerprint)
    remember_audioset_head(store, embedder)  # as the daemon does at start
    reconcile(store, dev_corpus(), LIMITS)
    embed_pending(store, embedder, dev_corpus(), LIMITS)
    return store


def cache_bytes_per_hour(store_path: Path, store: Database) -> tuple[float, float]:
    store.close()  # checkpoints the WAL into the main file
    seconds = 0.0
    import sqlite3

    with sqlite3.connect(store_path) as db:
        seconds = float(db.execute("SELECT SUM(duration_s) FROM embeddings").fetchone()[0])
    return store_path.stat().st_size / (seconds / 3600), seconds / 3600


def scaled_cache(source: Path, target: Path, clips: int) -> None:
    real = Database.open(source)
    rows = [(r, real.clips.embeddings_for(r.sha256)) for r in real.clips.files(FileState.EMBEDDED)]
    model_id = real.clips.model_id
    fingerprint = real.clips.model_fingerprint(model_id)  # type: ignore[arg-type]
    head = real.clips.audioset_head()
    real.close()
    rng = np.random.default_rng(0)
    store = Database.open(target)
    store.clips.adopt_model(model_id, fingerprint)  # type: ignore[arg-type]
    if head is not None:
        store.clips.save_audioset_head(model_id, head)  # type: ignore[arg-type]
    with store.batch():
        for i in range(clips):
            record, patches = rows[i % len(rows)]
            assert patches is not None
            nudged = patches.astype(np.float32) * (1 + 0.01 * rng.standard_normal(patches.shape, np.float32))
            stem = Path(record.path).stem
            path = f"{record.label}/{stem}_copy{i}.wav"
            sha256 = hashlib.sha256(path.encode()).hexdigest()
            store.clips.record_embedding(path, record.label, 1, 1, sha256, nudged, 0.48 * len(patches))
    store.close()


def timed_retrain(workspace: Path) -> dict[str, float]:
    config = workspace / "config.toml"
    config.write_text(f'[paths]\naudio_dir = "audio"\nmodels_dir = "models"\n'
                      f'[embedding]\nyamnet_handle = "{yamnet_handle()}"\n')
    (workspace / "audio").mkdir(exist_ok=True)
    output = subprocess.run([sys.executable, "-c", MEASURE, str(config)], capture_output=True, text=True,
                            check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    result = json.loads(output.strip().splitlines()[-1])
    if not result["ok"]:
        raise RuntimeError(f"the benchmark retrain was not promoted: {output}")
    entry = json.loads((workspace / "models" / "retraining_log.json").read_text())[-1]
    return {"wall_s": result["wall_s"], "retrain_s": entry["duration_s"],
            "parent_rss_mib": result["parent_kib"] / 1024, "training_rss_mib": result["child_kib"] / 1024,
            "macro_f1": entry["metrics"]["macro_f1"]}


def run() -> list[Figure]:
    figures: list[Figure] = []
    details: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="ecosight-scale-") as tmp:
        root = Path(tmp)
        dev_cache = root / "dev" / "models" / "embedding_cache.sqlite3"
        per_hour, hours = cache_bytes_per_hour(dev_cache, embed_dev(dev_cache.parent))
        details["dev_audio_hours"] = hours
        for clips in SIZES:
            workspace = root / f"n{clips}"
            scaled_cache(dev_cache, workspace / "models" / "embedding_cache.sqlite3", clips)
            result = timed_retrain(workspace)
            details[str(clips)] = result
            figures += [
                Figure(f"retrain {clips:,} cached clips, cold: to promotion", result["retrain_s"], "s"),
                Figure(f"retrain {clips:,} cached clips, cold: incl. report + export", result["wall_s"], "s"),
                Figure(f"retrain {clips:,} cached clips: peak RSS, training process", result["training_rss_mib"],
                       "MiB"),
                Figure(f"retrain {clips:,} cached clips: peak RSS, caller (daemon side)", result["parent_rss_mib"],
                       "MiB"),
            ]
    figures.append(Figure("cache size per hour of audio (float16 patches)", per_hour / 2**20, "MiB/h"))
    save_report("training_scale", figures, details)
    return figures


if __name__ == "__main__":
    print(format_table(run()))
