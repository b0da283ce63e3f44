"""`detect` on a 6-hour recording: its speed against the model alone, and its memory.

A model is trained on the dev corpus; a 6 h, 16 kHz mono recording is written block by
block from the dev corpus's background clips (random stretches, gains and overlaps); then
`ecosight-daemon detect` runs on it as a separate process, its process tree's RSS sampled
every 0.2 s. The baseline, in the same run: YAMNet alone (ONNX Runtime, the daemon's thread
count) on 10 minutes of the same audio already in memory, in patches per second.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from benchmarks.common import Figure, dev_corpus, process_tree_usage, save_report, yamnet_handle
from ecosight_daemon.audio import decode_audio
from ecosight_daemon.embedding.frontend import patch_count
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
from ecosight_daemon.training.event_mixing import background_bed
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
        subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(root / "config.toml"),
                        "--log-level", "WARNING", "retrain"], check=True, capture_output=True)
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
    detect_rate = patch_count(int(HOURS * 3600 * 16_000)) / seconds
    ratio = detect_rate / model_rate
    details = {"hours": HOURS, "detect_seconds": seconds, "detect_patches_per_s": detect_rate,
               "model_only_patches_per_s": model_rate, "peak_rss_mib": peak_mib,
               "events": summary["recordings"][0]["events"], "hours_analysed": summary["hours_analysed"]}
    save_report("detect_long", [], details)
    return [
        Figure("detect 6 h: speed over the model alone", ratio, "x", ">= 0.8", ratio >= 0.8),
        Figure("detect 6 h: times real time", HOURS * 3600 / seconds, "x"),
        Figure("detect 6 h: peak RSS of the process tree", peak_mib, "MiB", "<= 1024", peak_mib <= 1024),
    ]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    for figure in run():
        print(figure.row())
