"""The running daemon with a large index: 14,000 files already embedded (the corpus size
the old system re-embedded on every retrain), then a burst of new clips.

Everything the daemon does besides the model (status file, new-sample count, cache
look-ups) reads the index, so its cost grows with the corpus while the model's does not.
The 14,000 files are tiny distinct WAVs whose cache rows are written beforehand (their
embeddings are placeholders: nothing is trained here), so the daemon finds them all
unchanged at start-up. Measured: start-up to idle, idle CPU and RSS, and the rate for
BURST_FILES dev clips moved in at once over the model alone on the same decoded clips
(the same comparison as daemon_latency, which runs on the 251-file dev corpus).

The HTTP side at this size: /metrics and /status answered over loopback (p50/p95 of
SCRAPES requests each), and a second burst while a poller asks for /metrics and the
dashboard's status fragment every POLL_S (far more often than Prometheus and a browser
would), beside the burst without it.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import urllib.request
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
SCRAPES = 200
POLL_S = 0.25


def request_times(url: str, count: int) -> list[float]:
    """Seconds per complete GET (connect, answer, body read), one after another."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as answer:
            answer.read()
        times.append(time.perf_counter() - started)
    return times


class Poller:
    """Asks for /metrics and the status fragment every POLL_S until stopped."""

    def __init__(self, base: str) -> None:
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(base,), daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self, base: str) -> None:
        while not self._stop.wait(POLL_S):
            for path in ("metrics", "fragments/status"):
                with urllib.request.urlopen(base + path, timeout=10) as answer:
                    answer.read()
                self.requests += 1


def indexed_corpus(root: Path) -> None:
    """INDEXED_FILES tiny WAVs in audio/, each already embedded in models/' cache."""
    from ecosight_daemon.embedding.identity import identify_local
    from ecosight_daemon.store.database import Database
    from ecosight_daemon.util.digest import sha256_of_bytes

    identity = identify_local(yamnet_handle())
    assert identity is not None, "the YAMNet SavedModel is not on disk"
    (root / "models").mkdir()
    store = Database.open(root / "models" / "embedding_cache.sqlite3")
    store.clips.adopt_model(identity.model_id, identity.fingerprint)
    rng = np.random.default_rng(14_000)
    placeholder = rng.standard_normal((1, 1024)).astype(np.float32)
    for i in range(INDEXED_FILES):
        label = CLASSES[i % len(CLASSES)]
        path = root / "audio" / label / f"indexed_{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, rng.uniform(-0.5, 0.5, 1_600).astype(np.float32), 16_000, subtype="PCM_16")
        data, info = path.read_bytes(), path.stat()
        store.clips.record_embedding(f"{label}/{path.name}", label, info.st_size, info.st_mtime_ns,
                               sha256_of_bytes(data), placeholder, 0.1)
    store.close()
    from ecosight_daemon.embedding.onnx_conversion import ensure_body

    ensure_body(yamnet_handle(), root / "models", identity.model_id)  # once, not in the start-up figure


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="ecosight-scale-") as tmp:
        root = Path(tmp)
        indexed_corpus(root)
        config = root / "config.toml"
        config.write_text('[paths]\naudio_dir = "audio"\nmodels_dir = "models"\n[http]\nport = 0\n'
                          '[triggers]\nmin_new_samples = 100000\n')
        staged, staged_polled = stage_burst(root), stage_burst(root, gain=0.83)
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
            metrics_times = request_times(daemon.http_url + "metrics", SCRAPES)
            status_times = request_times(daemon.http_url + "status", SCRAPES)
            burst_s, burst_paths = burst(staged, daemon)
            daemon.wait_idle(120)
            with Poller(daemon.http_url) as poller:
                polled_s, polled_paths = burst(staged_polled, daemon)
        finally:
            daemon.stop()
        model_s = model_only_seconds(burst_paths, root / "models")
        polled_model_s = model_only_seconds(polled_paths, root / "models")
    idle_cpu = (after["cpu_s"] - before["cpu_s"]) / IDLE_S
    label = f"{INDEXED_FILES:,} files indexed"
    figures = [
        Figure(f"daemon start-up to idle, {label} (all cached)", startup_s, "s"),
        Figure(f"daemon idle CPU, {label}", 100 * idle_cpu, "% of a core"),
        Figure(f"daemon idle RSS, {label}", after["own_rss_mib"], "MiB"),
        Figure(f"running daemon, {label}: {BURST_FILES} clips moved in at once", BURST_FILES / burst_s, "files/s"),
        Figure(f"running daemon burst / model-only, {label}", model_s / burst_s, "ratio", ">= 0.9",
               model_s / burst_s >= 0.9),
        Figure(f"GET /metrics p50, {label}", 1000 * percentile(metrics_times, 50), "ms"),
        Figure(f"GET /metrics p95, {label}", 1000 * percentile(metrics_times, 95), "ms", "<= 20",
               1000 * percentile(metrics_times, 95) <= 20),
        Figure(f"GET /status p95, {label}", 1000 * percentile(status_times, 95), "ms"),
        Figure(f"burst / model-only while /metrics and the status page are polled every {POLL_S:g} s",
               polled_model_s / polled_s, "ratio", ">= 0.9", polled_model_s / polled_s >= 0.9),
        Figure("burst rate polled / not polled (same daemon, same clips at another gain)",
               (BURST_FILES / polled_s) / (BURST_FILES / burst_s), "ratio"),
    ]
    save_report("daemon_scale", figures, {"startup_s": startup_s, "idle_before": before, "idle_after": after,
                                          "burst_s": burst_s, "model_only_s": model_s, "polled_burst_s": polled_s,
                                          "polled_model_only_s": polled_model_s, "poll_requests": poller.requests,
                                          "metrics_ms": [round(1000 * t, 2) for t in metrics_times]})
    return figures


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


if __name__ == "__main__":
    print(format_table(run()))
