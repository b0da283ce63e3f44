"""A 6-hour recording: `detect`'s speed against the model alone and its memory; the
daemon's memory while it detects in one; the daemon's re-scoring of it after a version change.

Two versions are trained on the dev corpus (the second forced); a 6 h, 16 kHz mono
recording is written block by block from the dev corpus's background clips (random
stretches, gains and overlaps). Then:

1. `ecosight-daemon detect` on it as a separate process, its process tree's RSS sampled
   every 0.2 s. The baseline, in the same run: YAMNet alone (ONNX Runtime, the daemon's
   thread count) on 10 minutes of the same audio already in memory, in patches per second.
2. A daemon (a real process) with the recording moved into its recordings_dir: its tree's
   RSS sampled every 0.2 s until the recording is analysed and scored.
3. `POST /rollback` to the first version: the time until every event in the cache is
   that version's (re-scored from cached embeddings: the cached chunks are counted before
   and after, and must not change).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
import soundfile

from benchmarks.common import Figure, dev_corpus, process_tree_usage, save_report, yamnet_handle
from ecosight_daemon.audio import decode_audio
from ecosight_daemon.embedding.frontend import patch_count
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
from ecosight_daemon.training.event_mixing import background_bed
from testkit.daemon_process import DaemonProcess, wait_for
from testkit.field_recordings import manifest, training_workspace

logger = logging.getLogger(__name__)
HOURS = 6.0
BLOCK_S = 600.0
BASELINE_S = 600.0


def write_long_recording(path: Path, backgrounds: list[np.ndarray], hours: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with soundfile.SoundFile(path, "w", 16_000, 1, "PCM_16", format="WAV") as sound:
        for _ in range(int(hours * 3600 / BLOCK_S)):
            sound.write(background_bed(backgrounds, BLOCK_S, rng))


def run_detect(root: Path, recording: Path, out: Path) -> tuple[float, float, dict[str, object]]:
    """(seconds, peak RSS MiB of the process tree, run.json) of one `detect` run."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "ecosight_daemon", "--config", str(root / "config.toml"), "--log-level", "WARNING",
         "detect", str(recording), "--out", str(out), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "ECOSIGHT_YAMNET_HANDLE": yamnet_handle()})
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, process_tree_usage(process.pid)["rss_mib"])
        time.sleep(0.2)
    seconds = time.monotonic() - started
    assert process.stdout is not None
    summary = json.loads(process.stdout.read())
    if process.returncode != 0:
        raise RuntimeError(f"detect exited {process.returncode}: {summary}")
    return seconds, peak, summary


def run() -> list[Figure]:
    corpus = dev_corpus()
    rows = manifest(corpus)
    with tempfile.TemporaryDirectory(prefix="ecosight-detect-long-") as tmp:
        root = Path(tmp)
        training_workspace(root, yamnet_handle(), corpus, rows)
        for force in ([], ["--force"]):  # v0001, then v0002 (the same data: forced)
            subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(root / "config.toml"),
                            "--log-level", "WARNING", "retrain", *force], check=True, capture_output=True)
        backgrounds = [decode_audio((corpus / r["file"]).read_bytes(), 600).waveform for r in rows
                       if r["class"] == "clips"]
        recording = root / "AM01_20260501_000000.WAV"
        write_long_recording(recording, backgrounds, HOURS, seed=5)

        embedder = OnnxEmbedder.load(yamnet_handle(), root / "models")
        sample = background_bed(backgrounds, BASELINE_S, np.random.default_rng(6))
        embedder.embed(sample[:16_000 * 30])  # warm-up
        started = time.monotonic()
        embedder.embed(sample)
        model_rate = patch_count(len(sample)) / (time.monotonic() - started)

        seconds, peak_mib, summary = run_detect(root, recording, root / "out")
        daemon = daemon_figures(root, recording)
    detect_rate = patch_count(int(HOURS * 3600 * 16_000)) / seconds
    ratio = detect_rate / model_rate
    details = {"hours": HOURS, "detect_seconds": seconds, "detect_patches_per_s": detect_rate,
               "model_only_patches_per_s": model_rate, "peak_rss_mib": peak_mib,
               "events": summary["recordings"][0]["events"], "hours_analysed": summary["hours_analysed"],
               "priority_scorer": summary["parameters"].get("priority_scorer"), **daemon}  # what the ratio includes
    save_report("detect_long", [], details)
    return [
        Figure("detect 6 h: speed over the model alone", ratio, "x", ">= 0.8", ratio >= 0.8),
        Figure("detect 6 h: times real time", HOURS * 3600 / seconds, "x"),
        Figure("detect 6 h: peak RSS of the process tree", peak_mib, "MiB", "<= 1024", peak_mib <= 1024),
        Figure("daemon detecting 6 h: peak RSS of the process tree", daemon["daemon_peak_rss_mib"], "MiB"),
        Figure("daemon detecting 6 h: times real time", HOURS * 3600 / daemon["daemon_detect_seconds"], "x"),
        Figure("daemon re-scoring 6 h after a version change", daemon["rescore_seconds"], "s", "<= 5",
               daemon["rescore_seconds"] <= 5),
    ]


def cache_rows(root: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(root / "models" / "embedding_cache.sqlite3", timeout=30) as db:
        return db.execute(sql).fetchall()


def daemon_figures(root: Path, recording: Path) -> dict[str, float]:
    """Peak RSS and time of a daemon detecting in `recording`, then its re-scoring time."""
    with (root / "config.toml").open("a") as config:
        config.write('[detection]\nrecordings_dir = "recordings"\nscan_interval_s = 0.2\n'
                     '[watch]\nsettle_s = 0.2\n[http]\nport = 0\n')
    daemon = DaemonProcess(root, log_level="WARNING").start()
    try:
        daemon.wait_idle(300)
        (root / "recordings").mkdir(exist_ok=True)
        started = time.monotonic()
        os.rename(recording, root / "recordings" / recording.name)
        peak = 0.0
        done = "SELECT COUNT(*) FROM recordings WHERE state = 'done' AND model_version = '{}'"
        while not cache_rows(root, done.format("v0002"))[0][0]:
            peak = max(peak, process_tree_usage(daemon.pid)["rss_mib"])
            if daemon.proc is not None and daemon.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited: {daemon.log_text()[-2000:]}")
            time.sleep(0.2)
        detect_seconds = time.monotonic() - started
        chunks = cache_rows(root, "SELECT COUNT(*), SUM(patches) FROM recording_chunks")
        started = time.monotonic()
        requests.post(daemon.http_url + "rollback", json={"version": "v0001"}, timeout=30).raise_for_status()
        wait_for(lambda: cache_rows(root, done.format("v0001"))[0][0] == 1, 300, "the re-score", interval=0.05)
        rescore_seconds = time.monotonic() - started
        if cache_rows(root, "SELECT COUNT(*), SUM(patches) FROM recording_chunks") != chunks:
            raise RuntimeError("re-scoring changed the cached chunks")
    finally:
        daemon.kill()
    return {"daemon_detect_seconds": detect_seconds, "daemon_peak_rss_mib": peak, "rescore_seconds": rescore_seconds,
            "cached_patches": float(chunks[0][1])}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    for figure in run():
        print(figure.row())
