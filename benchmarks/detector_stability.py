"""Does the same corpus, plus or minus a few clips, give a detector of the same quality?
Issue #32's stability check, run by hand (not part of `make bench`; about 30 minutes on 2
cores, most of it the shot CNN's fits): `.venv/bin/python -m benchmarks.detector_stability`.

The folds and test hours of `benchmarks/detection.py` (seed 42, its first FOLDS folds). Per
fold, VARIANTS retrains of the shipped detector (training/event_detector.py): each on the
fold's training sources less DROPPED clips drawn at random (any class but a confuser), with
its own soundscape seed, as two retrains a few clips apart would differ; the shot CNN is a
candidate as in a retrain (SHOT_CNN_EPOCHS). Reported per fold:
the spread over variants of the threshold, the scorer chosen, and on the same test hour the
recall and false alarms per hour at the default point and the best recall at <= 1 FA/h.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from benchmarks.common import yamnet_handle
from benchmarks.detection import (
    BUDGET_PER_HOUR,
    CLASSES,
    GUN,
    SHOT_CNN_EPOCHS,
    TEST_SECONDS,
    Bench,
    Scored,
    figures_of,
    load_clips,
)
from benchmarks.detection import FOLDS as ALL_FOLDS
from ecosight_daemon.artifacts.event_detector import patch_features
from ecosight_daemon.artifacts.shot_spectrogram import spectrogram_inputs
from ecosight_daemon.embedding.frontend import PATCH_SECONDS
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
from ecosight_daemon.training.detector_training import cnn_fitter, is_confuser
from ecosight_daemon.training.event_detector import LabeledAudio, train_event_detector

SEED = 42
FOLDS = 3
VARIANTS = 3  # 5 before the shot CNN: each retrain now spends ~2 minutes in its fits
DROPPED = 3


def main() -> None:
    started = time.monotonic()
    embedder = OnnxEmbedder.load(yamnet_handle(), Path(__file__).resolve().parent / "results" / "models")
    head = embedder.audioset_head()
    bench = Bench(load_clips(embedder), embedder, head)
    groups = sorted({c.group for c in bench.clips})
    order = list(np.random.default_rng(SEED).permutation(groups))
    fold_of = {g: i % ALL_FOLDS for i, g in enumerate(order)}
    lines = ["| fold | variant | scorer | threshold | recall at default | FA/h there | best recall <= 1 FA/h |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    spreads: dict[str, list[float]] = {"recall": [], "false_alarms_per_hour": [], "best_recall_at_1_per_hour": []}
    for fold in range(FOLDS):
        rng = np.random.default_rng(SEED * 100 + fold)
        test_clips = [c for c in bench.clips if fold_of[c.group] == fold]
        train_clips = [c for c in bench.clips if fold_of[c.group] != fold]
        scape, patches, onsets = bench.soundscape(test_clips, TEST_SECONDS, rng, shots_each=2)
        features, spectrograms = patch_features(patches, onsets, head), spectrogram_inputs(scape.waveform)
        per_fold: dict[str, list[float]] = {key: [] for key in spreads}
        for variant in range(VARIANTS):
            pick = np.random.default_rng(1000 + 10 * fold + variant)
            droppable = [i for i, c in enumerate(train_clips) if c.label != "confuser"]
            dropped = set(pick.choice(droppable, DROPPED, replace=False).tolist())
            clips = [LabeledAudio(c.training_label, c.group, c.waveform,
                                  c.training_label == "clips" and is_confuser(c.waveform))
                     for i, c in enumerate(train_clips) if i not in dropped]
            detector = train_event_detector(clips, embedder.embed, head, CLASSES, "clips", "gun_shot",
                                            BUDGET_PER_HOUR, seed=SEED * 1000 + 10 * fold + variant,
                                            fit_cnn=cnn_fitter(SHOT_CNN_EPOCHS))
            row = figures_of(Scored(scape.events, scape.hours, detector.margins(features, spectrograms)[:, GUN],
                                    PATCH_SECONDS, detector.threshold))
            for key in spreads:
                per_fold[key].append(row[key])
                spreads[key].append(row[key])
            lines.append(f"| {fold} | {variant} (-{sorted(train_clips[i].label for i in dropped)}) | "
                         f"{detector.priority_scorer} | {detector.threshold:.2f} | {row['recall']:.2f} | "
                         f"{row['false_alarms_per_hour']:.0f} | {row['best_recall_at_1_per_hour']:.2f} |")
            print(lines[-1], flush=True)
        print(f"fold {fold}: " + ", ".join(f"{key} {min(v):.2f}-{max(v):.2f}" for key, v in per_fold.items()),
              flush=True)
    print("\n" + "\n".join(lines))
    print(f"\n{FOLDS} folds x {VARIANTS} variants, {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
