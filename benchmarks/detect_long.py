"""A 6-hour recording: `detect`'s speed against the model alone and its memory; the
daemon's memory while it detects in one; the daemon's re-scoring of it after a version change.

Two versions are trained on the dev corpus (the second forced); the second's event detector
is then replaced by one trained the same way on the same clips (shot CNN and context trees
kept) with the costliest gun-shot scorer forced, YAMNet + CNN + context trees: what a
retrain ships varies with its data, and the ratio is to hold whichever it picks. A 6 h,
16 kHz mono recording is written block by block from the dev corpus's background clips
(random stretches, gains and overlaps). Then:

1. `ecosight-daemon detect` on it as a separate process, its process tree's RSS sampled
   every 0.2 s, RUNS times. Before each, the baseline: YAMNet alone (ONNX Runtime, the
   daemon's thread count) on 10 minutes of the same audio already in memory, in patches
   per second. The ratio is the median of the RUNS runs' ratios (one run moves ~0.05).
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
from benchmarks.detection import SHOT_CNN_EPOCHS
from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.artifacts.event_detector import YAMNET_PLUS_CNN_PLUS_TREES_SCORER, EventDetector
from ecosight_daemon.audio import decode_audio
from ecosight_daemon.config import DetectionSettings
from ecosight_daemon.embedding.frontend import patch_count
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
from ecosight_daemon.training.detector_training import cnn_fitter, is_confuser
from ecosight_daemon.training.event_detector import LabeledAudio, train_event_detector
from ecosight_daemon.training.event_mixing import background_bed
from testkit.daemon_process import DaemonProcess, wait_for
from testkit.field_recordings import manifest, training_workspace

logger = logging.getLogger(__name__)
HOURS = 6.0
BLOCK_S = 600.0
BASELINE_S = 600.0
RUNS = 3
SEED = 5


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


def costliest_detector(detector_file: Path, clips: list[tuple[str, str, np.ndarray]], embedder: OnnxEmbedder) -> str:
    """Replace a version's event detector with one trained like it on `clips` (label, group,
    waveform), shipping the costliest gun-shot scorer at that scorer's own out-of-fold
    threshold; its name."""
    shipped = EventDetector.load(detector_file)
    labeled = [LabeledAudio(label, group, waveform, label == shipped.background and is_confuser(waveform))
               for label, group, waveform in clips]
    detector = train_event_detector(labeled, embedder.embed, embedder.audioset_head(), shipped.classes,
                                    shipped.background, shipped.priority_class,
                                    DetectionSettings().false_alarms_per_hour, seed=SEED,
                                    fit_cnn=cnn_fitter(SHOT_CNN_EPOCHS), keep_cnn=True)
    if detector.cnn is None or detector.trees is None:
        raise RuntimeError("the dev corpus's detector has no shot CNN or context trees to measure")
    detector.priority_scorer = YAMNET_PLUS_CNN_PLUS_TREES_SCORER
    point = detector.figures["out_of_fold_by_scorer"][YAMNET_PLUS_CNN_PLUS_TREES_SCORER]
    detector.threshold = float(point["threshold"])
    detector.save(detector_file)
    return detector.priority_scorer


def model_only_rate(embedder: OnnxEmbedder, sample: np.ndarray) -> float:
    """YAMNet alone on `sample` (already in memory), in patches per second."""
    started = time.monotonic()
    embedder.embed(sample)
    return patch_count(len(sample)) / (time.monotonic() - started)


def run() -> list[Figure]:
    corpus = dev_corpus()
    rows = manifest(corpus)
    with tempfile.TemporaryDirectory(prefix="ecosight-detect-long-") as tmp:
        root = Path(tmp)
        training_workspace(root, yamnet_handle(), corpus, rows)
        for force in ([], ["--force"]):  # v0001, then v0002 (the same data: forced)
            subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(root / "config.toml"),
                            "--log-level", "WARNING", "retrain", *force], check=True, capture_output=True)
        waveforms = {r["file"]: decode_audio((corpus / r["file"]).read_bytes(), 600).waveform for r in rows}
        embedder = OnnxEmbedder.load(yamnet_handle(), root / "models")
        detector_file = root / "models" / "versions" / "v0002" / files.EVENT_DETECTOR
        retrain_chose = EventDetector.load(detector_file).priority_scorer
        measured_scorer = costliest_detector(detector_file, [(r["class"], r["group"], waveforms[r["file"]])
                                                             for r in rows], embedder)
        backgrounds = [waveforms[r["file"]] for r in rows if r["class"] == "clips"]
        recording = root / "AM01_20260501_000000.WAV"
        write_long_recording(recording, backgrounds, HOURS, seed=SEED)

        sample = background_bed(backgrounds, BASELINE_S, np.random.default_rng(6))
        embedder.embed(sample[:16_000 * 30])  # warm-up
        runs = []
        for k in range(RUNS):
            model_rate = model_only_rate(embedder, sample)
            seconds, peak_mib, summary = run_detect(root, recording, root / f"out{k}")
            runs.append({"model_only_patches_per_s": model_rate, "detect_seconds": seconds, "peak_rss_mib": peak_mib,
                         "ratio": patch_count(int(HOURS * 3600 * 16_000)) / seconds / model_rate})
        daemon = daemon_figures(root, recording)
    median = sorted(runs, key=lambda r: r["ratio"])[RUNS // 2]
    ratio, seconds = median["ratio"], median["detect_seconds"]
    peak_mib = max(r["peak_rss_mib"] for r in runs)
    details = {"hours": HOURS, "runs": runs, "detect_seconds": seconds, "ratio": ratio, "peak_rss_mib": peak_mib,
               "events": summary["recordings"][0]["events"], "hours_analysed": summary["hours_analysed"],
               "retrain_chose": retrain_chose, "priority_scorer": summary["parameters"].get("priority_scorer"),
               **daemon}
    if details["priority_scorer"] != measured_scorer:
        raise RuntimeError(f"detect ran {details['priority_scorer']}, not the forced {measured_scorer}")
    save_report("detect_long", [], details)
    return [
        Figure(f"detect 6 h: speed over the model alone (median of {RUNS}; {measured_scorer})", ratio, "x",
               ">= 0.8", ratio >= 0.8),
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
