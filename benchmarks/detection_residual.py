"""Should the shot CNN learn what YAMNet gets wrong, not shots from scratch? Issue #32, run by
hand (not part of `make bench`; about 2 minutes a fold on 2 cores, after `detection_cnn context`
has cached its folds' test hours and CNN log-odds): `.venv/bin/python -m benchmarks.detection_residual 42 1`.

What ships adds YAMNet's "Gunshot, gunfire" logit and the log-odds of a CNN trained on its
own. Here the same CNN (the same inputs, layers, soundscape, seed and fit) is trained with
YAMNet's logit for each training patch added to its output before the loss, so what it learns
is a correction to YAMNet: down on the fireworks YAMNet calls gunfire, up on the quiet shots it
misses. Scored as YAMNet's logit plus that correction on the same test hours; best recall at
<= 1 and <= 5 false alarms per hour after the fact, per fold, beside the shipped sum.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from benchmarks.common import yamnet_handle
from benchmarks.detection_cnn import CONFUSER_COPIES, SHOT_COPIES, test_soundscape
from benchmarks.detection_rankers import CACHE, FOLDS, best_recalls, gun_labels, load, sources
from ecosight_daemon.artifacts.shot_spectrogram import decoded, spectrogram_inputs
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
from ecosight_daemon.training.event_mixing import build_soundscape
from ecosight_daemon.training.shot_spectrogram_fit import BLOCKS, EPOCHS, LAST_WIDTH, POSITIVE_WEIGHT_SHARE

GUNSHOT = 421  # AudioSet's "Gunshot, gunfire"


def residual_cnn(seed: int, frames: int, bands: int) -> Any:
    """training/shot_spectrogram_fit.py's CNN, its output plus a given prior logit."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs, prior = keras.Input((frames, bands, 1)), keras.Input((1,))
    x = inputs
    for width in BLOCKS:
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.BatchNormalization(epsilon=1e-3)(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(LAST_WIDTH, 3, padding="same", activation="relu")(x)
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dropout(0.3)(x)
    model = keras.Model([inputs, prior], layers.Add()([layers.Dense(1)(x), prior]))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def main(seeds: list[int]) -> None:
    embedder = OnnxEmbedder.load(yamnet_handle(), CACHE.parent / "models")
    head = embedder.audioset_head()
    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    rows: list[dict[str, tuple[float, float]]] = []
    for seed in seeds:
        fold_of = {g: i % FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
        for fold in range(FOLDS):
            cached = load(CACHE / f"s{seed}_f{fold}")[0]
            rebuilt = test_soundscape([s for s in all_sources if fold_of[s.group] == fold],
                                      np.random.default_rng(seed * 100 + fold))
            if rebuilt.events != cached.events:
                raise RuntimeError(f"fold {fold}: the rebuilt test hour is not the cached one (sources changed?)")
            train = [s for s in all_sources if fold_of[s.group] != fold]
            copies = {"gun_shot": SHOT_COPIES, "confuser": CONFUSER_COPIES}
            events = [(s.label, s.group, s.waveform) for s in train if s.label != "clips"
                      for _ in range(copies.get(s.label, 1))]
            scape = build_soundscape([s.waveform for s in train if s.label == "clips"], events,
                                     8.0 * len(events) + 7, np.random.default_rng(seed * 1000 + fold * 10))
            codes = spectrogram_inputs(scape.waveform)
            labels = gun_labels(scape.events, len(codes))
            prior = head.logits(embedder.embed(scape.waveform))[:, GUNSHOT][:len(codes)]
            kept = labels >= 0
            y = labels[kept].astype(np.float32)
            weight = max(1.0, (len(y) - y.sum()) / max(1.0, y.sum()) * POSITIVE_WEIGHT_SHARE)
            model = residual_cnn(seed * 100 + fold, codes.shape[1], codes.shape[2])
            model.fit([decoded(codes[kept])[..., None], prior[kept, None]], y, batch_size=64, epochs=EPOCHS,
                      verbose=0, class_weight={0: 1.0, 1: weight})
            gunshot = cached.logits[:, GUNSHOT]
            test_codes = spectrogram_inputs(rebuilt.waveform)
            corrected = model.predict([decoded(test_codes)[..., None], gunshot[:len(test_codes), None]],
                                      batch_size=256, verbose=0)[:, 0]
            shipped = gunshot + np.load(CACHE / f"cnn_log_odds_s{seed}_f{fold}.npy")
            row = {name: best_recalls(cached.events, cached.hours, values) for name, values in
                   (("yamnet", gunshot), ("yamnet + cnn (ships)", shipped), ("yamnet + correction", corrected))}
            rows.append(row)
            print(f"s{seed}_f{fold}", {k: f"{a:.2f}/{b:.2f}" for k, (a, b) in row.items()}, flush=True)
    print("| ranker | best recall <= 1 FA/h (min / median / max) | mean | folds better / worse than shipped | "
          "<= 5 FA/h (min / median / max) |")
    print("| --- | --- | --- | --- | --- |")
    for name in rows[0]:
        at_1, at_5 = ([r[name][i] for r in rows] for i in (0, 1))
        ships = [r["yamnet + cnn (ships)"][0] for r in rows]
        better = sum(a > b for a, b in zip(at_1, ships, strict=True))
        worse = sum(a < b for a, b in zip(at_1, ships, strict=True))
        spreads = [" / ".join(f"{f(v):.2f}" for f in (np.min, np.median, np.max)) for v in (at_1, at_5)]
        print(f"| {name} | {spreads[0]} | {np.mean(at_1):.3f} | {better} / {worse} | {spreads[1]} |")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
