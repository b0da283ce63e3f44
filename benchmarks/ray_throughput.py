"""The Ray engine beside the single-process path, on the dev corpus, on this machine.

Reports files/s for both, Ray's fixed start-up cost, the per-inference-worker rate and
what the driver spends writing results into SQLite, which caps a cluster: N workers
give about min(N x per-worker rate, driver write rate).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from benchmarks.common import Figure, copy_corpus, dev_corpus, format_table, save_report, yamnet_handle
from ecosight_daemon.embedding.interface import YAMNET_DIM
from ecosight_daemon.embedding.tensorflow_runtime import YamnetEmbedder
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.one_shot import embed_pending
from ecosight_daemon.ingest.reconcile import reconcile
from ecosight_daemon.store.clip_index import FileState
from ecosight_daemon.store.database import Database

LIMITS = IngestLimits((".wav", ".flac", ".ogg"), 600, 10**9)


def fresh_store(root: Path, embedder: YamnetEmbedder) -> tuple[Database, Path]:
    audio = copy_corpus(dev_corpus(), root / "audio")
    store = Database.open(root / "cache.sqlite3")
    store.clips.adopt_model(embedder.model_id, embedder.fingerprint)
    reconcile(store, audio, LIMITS)
    return store, audio


def run() -> list[Figure]:
    try:
        import ray  # noqa: F401

        from ecosight_daemon.ingest.ray_engine import embed_pending_with_ray
    except ImportError:
        print("ray is not installed; skipping ray_throughput (pip install '.[ray]')")
        return []
    embedder = YamnetEmbedder.load(yamnet_handle())
    with tempfile.TemporaryDirectory(prefix="ecosight-ray-") as tmp:
        store, audio = fresh_store(Path(tmp) / "local", embedder)
        files = store.clips.count_files(FileState.PENDING)
        started = time.perf_counter()
        local = embed_pending(store, embedder, audio, LIMITS)
        local_s = time.perf_counter() - started
        store.close()

        store, audio = fresh_store(Path(tmp) / "ray", embedder)
        timings: dict[str, float] = {}
        remote = embed_pending_with_ray(store, audio, LIMITS, yamnet_handle(), YAMNET_DIM, timings=timings)
        store.close()
    assert remote.embedded == local.embedded, (remote.embedded, local.embedded)
    per_worker = files / timings["pipeline_s"]
    write_rate = files / max(timings["driver_write_s"], 1e-9)
    figures = [
        Figure("single-process files/s", files / local_s, "files/s"),
        Figure("ray files/s (incl. start-up)", files / remote.seconds, "files/s"),
        Figure("ray start-up (ray.init)", timings["startup_s"], "s"),
        Figure("ray per-worker files/s (1 actor, incl. its model load)", per_worker, "files/s"),
        Figure("driver cache-write capacity", write_rate, "files/s"),
        Figure("ray pipeline / single-process", per_worker / (files / local_s), "ratio"),
    ]
    save_report("ray_throughput", figures, {"files": files, "local_s": local_s, "ray": timings,
                                             "ray_total_s": remote.seconds})
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    print(format_table(run()))
