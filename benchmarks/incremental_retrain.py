"""Incremental retrain: 100 new files on a 2,000-clip corpus, daemon vs the old recipe.

Corpus: 2,000 distinct clips made from the dev corpus by small gain changes (so their
bytes differ), plus 100 more held back. Ours: a running daemon with an embedded cache
and a current model; the 100 new files are moved into their class folders at 10 files/s
(as uploads arrive); the clock starts when the 100th lands and stops when the retrain
it triggers has logged its promoted model in retraining_log.json. A second round moves
100 more files in at once, so all of their embedding is on the clock too. The old
recipe: re-embed all 2,100 files with librosa (first 4 s, mean pooling), then train its
MLP. Target: >= 20x faster.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from benchmarks.accuracy import old_recipe_fit_predict
from benchmarks.common import (
    Figure,
    dev_corpus,
    format_table,
    save_report,
    settled,
    start_daemon,
    wait_for,
    yamnet_handle,
)
from ecosight_daemon.embedding.tensorflow_runtime import YamnetEmbedder
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.one_shot import embed_pending
from ecosight_daemon.ingest.reconcile import reconcile
from ecosight_daemon.store.database import Database

CORPUS_CLIPS = 2000
NEW_CLIPS = 100
TRICKLE_INTERVAL_S = 0.1
LIMITS = IngestLimits((".wav",), 600, 10**9)


def make_variants(target: Path, count: int, gains: list[float], tag: str) -> list[tuple[Path, str]]:
    """Write `count` gain-changed copies of dev clips under target/<class>/; returns (path, class)."""
    sources = sorted(p for p in dev_corpus().glob("*/*") if p.suffix.lower() == ".wav")
    written: list[tuple[Path, str]] = []
    for gain in gains:
        for source in sources:
            if len(written) == count:
                return written
            data, rate = soundfile.read(source, dtype="float32", always_2d=True)
            label = source.parent.name
            # "_gain0.750" is a recognized augmentation suffix, so every variant stays in
            # its source recording's group (and split), as real augmented copies should.
            path = target / label / f"{source.stem}_{tag}gain{gain:.3f}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, np.clip(data * gain, -1, 1), rate, subtype="PCM_16")
            written.append((path, label))
    return written


def old_recipe_seconds(files: list[tuple[Path, str]]) -> float:
    import librosa

    embedder = YamnetEmbedder.load(yamnet_handle())
    started = time.perf_counter()
    vectors = []
    for path, _ in files:
        waveform, _ = librosa.load(path, sr=16_000, mono=True, duration=4.0)
        vectors.append(embedder.embed(waveform.astype(np.float32)).mean(axis=0))
    features = np.stack(vectors)
    classes = sorted({label for _, label in files})
    labels = np.array([classes.index(label) for _, label in files])
    order = np.random.default_rng(0).permutation(len(files))
    cut = int(0.85 * len(files))
    old_recipe_fit_predict(features[order[:cut]], labels[order[:cut]], features[order[cut:]], len(classes),
                           features, seed=0)
    return time.perf_counter() - started


def daemon_seconds(root: Path, rounds: list[tuple[str, list[tuple[Path, str]], float]]) -> list[dict]:
    """Per round: move the files in at the given pace; time from the last landing to the new log entry."""
    config = root / "config.toml"
    config.write_text('[paths]\naudio_dir = "audio"\nmodels_dir = "models"\n[http]\nport = 0\n'
                      f'[triggers]\nmin_new_samples = {NEW_CLIPS}\n[watch]\nsettle_s = 0.5\n')
    env = {**os.environ, "ECOSIGHT_YAMNET_HANDLE": yamnet_handle()}
    subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(config), "--log-level", "WARNING",
                    "retrain", "--force"], check=True, capture_output=True, env=env)
    daemon = start_daemon(root)
    results = []
    try:
        for name, files, interval_s in rounds:
            daemon.wait_idle(180)
            wait_for(lambda: settled(daemon.pid), 120, "the warm training process to finish loading")
            attempts = len(daemon.retrain_log())
            for path, label in files:
                os.rename(path, root / "audio" / label / path.name)
                time.sleep(interval_s)
            landed = time.perf_counter()
            wait_for(lambda attempts=attempts: len(daemon.retrain_log()) > attempts, 600, "the retrain")
            results.append({"round": name, "seconds": time.perf_counter() - landed,
                            "entry": daemon.retrain_log()[-1]})
    finally:
        daemon.stop()
    return results


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="ecosight-incr-") as tmp:
        root = Path(tmp)
        corpus = make_variants(root / "audio", CORPUS_CLIPS, [0.5 + 0.05 * i for i in range(10)], "")
        trickled = make_variants(root / "incoming", NEW_CLIPS, [0.97], "")
        burst = make_variants(root / "incoming2", NEW_CLIPS, [0.96], "")
        embedder = YamnetEmbedder.load(yamnet_handle())
        store = Database.open(root / "models" / "embedding_cache.sqlite3")
        store.clips.adopt_model(embedder.model_id, embedder.fingerprint)
        reconcile(store, root / "audio", LIMITS)
        embed_pending(store, embedder, root / "audio", LIMITS)
        store.close()
        rounds = daemon_seconds(root, [("trickle", trickled, TRICKLE_INTERVAL_S), ("burst", burst, 0.0)])
        old = old_recipe_seconds(corpus + [(root / "audio" / label / p.name, label) for p, label in trickled])
    trickle, at_once = rounds
    speedup = old / trickle["seconds"]
    figures = [
        Figure("incremental: 100th file landed -> model promoted (files arriving at 10/s)", trickle["seconds"], "s"),
        Figure("  of which the retrain itself (2,100 clips, warm training process)",
               trickle["entry"]["duration_s"], "s"),
        Figure("old recipe: re-embed 2,100 files + train", old, "s"),
        Figure("incremental retrain speed-up", speedup, "x", ">= 20", speedup >= 20),
        Figure("same, 100 files landing at once (all 100 embedded on the clock, 2,200 clips)",
               at_once["seconds"], "s"),
        Figure("speed-up when 100 files land at once", old / at_once["seconds"], "x"),
    ]
    save_report("incremental_retrain", figures, {"old_s": old, "rounds": rounds})
    return figures


if __name__ == "__main__":
    print(format_table(run()))
