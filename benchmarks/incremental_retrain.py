"""Incremental retrain: 100 new files on a 2,000-clip corpus, daemon vs the old recipe.

Corpus: 2,000 distinct clips made from the dev corpus by small gain changes (so their
bytes differ), plus 100 more held back. Ours: a running daemon with an embedded cache
and a current model; the clock starts when the 100th new file lands in its class
folder (moved in) and stops when the retrain it triggers has finished (a new version
in retraining_log.json). The old recipe: re-embed all 2,100 files with librosa (first
4 s, mean pooling), then train its MLP. Target: >= 20x faster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from benchmarks.accuracy import old_recipe_fit_predict
from benchmarks.common import Figure, dev_corpus, format_table, save_report, yamnet_handle
from ecosight_daemon.embedder import YamnetEmbedder
from ecosight_daemon.ingest import IngestLimits, embed_pending, reconcile
from ecosight_daemon.store import EmbeddingStore

CORPUS_CLIPS = 2000
NEW_CLIPS = 100
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


def daemon_seconds(root: Path, new_files: list[tuple[Path, str]]) -> tuple[float, dict]:
    env = {**os.environ, "ECOSIGHT_YAMNET_HANDLE": yamnet_handle()}
    config = root / "config.toml"
    config.write_text('[paths]\naudio_dir = "audio"\nmodels_dir = "models"\n'
                      f'[triggers]\nmin_new_samples = {NEW_CLIPS}\n[watch]\nsettle_s = 0.5\n')
    subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(config), "--log-level", "WARNING",
                    "retrain", "--force"], check=True, capture_output=True, env=env)
    log_path = root / "models" / "retraining_log.json"
    attempts = len(json.loads(log_path.read_text()))
    daemon = subprocess.Popen([sys.executable, "-m", "ecosight_daemon", "--config", str(config),
                               "--log-level", "WARNING", "run"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status = root / "models" / "daemon_status.json"
        _wait(lambda: status.exists() and json.loads(status.read_text()).get("state") == "idle", 180)
        for path, label in new_files:
            os.rename(path, root / "audio" / label / path.name)
        landed = time.perf_counter()
        _wait(lambda: len(json.loads(log_path.read_text())) > attempts, 600)
        elapsed = time.perf_counter() - landed
        entry = json.loads(log_path.read_text())[-1]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    return elapsed, entry


def _wait(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("incremental retrain benchmark timed out")
        time.sleep(0.05)


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="ecosight-incr-") as tmp:
        root = Path(tmp)
        corpus = make_variants(root / "audio", CORPUS_CLIPS, [0.5 + 0.05 * i for i in range(10)], "")
        new = make_variants(root / "incoming", NEW_CLIPS, [0.97], "")
        embedder = YamnetEmbedder.load(yamnet_handle())
        store = EmbeddingStore.open(root / "models" / "embedding_cache.sqlite3")
        store.adopt_model(embedder.model_id, embedder.fingerprint)
        reconcile(store, root / "audio", LIMITS)
        embed_pending(store, embedder, root / "audio", LIMITS)
        store.close()
        ours, entry = daemon_seconds(root, new)
        old = old_recipe_seconds(corpus + [(root / "audio" / label / p.name, label) for p, label in new])
    speedup = old / ours
    figures = [
        Figure("incremental: 100th file landed -> retrain done", ours, "s"),
        Figure("old recipe: re-embed 2,100 files + train", old, "s"),
        Figure("incremental retrain speed-up", speedup, "x", ">= 20", speedup >= 20),
    ]
    save_report("incremental_retrain", figures, {"ours_s": ours, "old_s": old, "retrain": entry})
    return figures


if __name__ == "__main__":
    print(format_table(run()))
