"""Does a small CNN on log-mel patches rank gun shots better than YAMNet out of the box?
Issue #32's last untried ranker, run by hand (not part of `make bench`; about 35 minutes
for one seed on 2 cores, most of it the full-size CNN): `.venv/bin/python -m benchmarks.detection_cnn 7`.

The same folds and 1 h test soundscapes as `benchmarks/detection_rankers.py` (its cache
holds their YAMNet logits; the test waveform is rebuilt from the same seed). The CNN never
hears a test fold's sources: it learns from soundscapes of the other folds' sources with
each shot mixed in several times and the confusers twice, all labelled "not a shot". Its
input is the log-mel patch YAMNet reads, less each band's median over the last ~30 s, so a
site's level and colour do not matter, only what stands out of it. Rows: YAMNet's "Gunshot,
gunfire" logit, the CNN alone, and the CNN's log-odds added to YAMNet's (a second opinion
on the network's own prior), for the full patch (96 x 64) and for it averaged in 2 x 2 and
4 x 4 blocks (what a cache could hold per patch). Best recall at <= 1 and <= 5 false alarms
per hour, the threshold chosen after the fact (flatters every row alike); min / median / max
over folds. One CNN initialisation per fold: its own spread is part of the folds' spread.

`detection_cnn SEED calibrated [RANKER]` is what a retrain would ship: the CNN trained on the
fold's three calibration parts two at a time, YAMNet + CNN scored out of fold on the third and
the threshold calibrated there for 1 false alarm an hour as training/event_detector.py does,
then the CNN trained on all three parts and run on the test hour at that threshold; beside
YAMNet's own score calibrated the same way (what ships today). About 30 minutes for 2 x 2.

`detection_cnn scapes SEED...` asks how much augmented audio the shipped 48 x 32 CNN needs: the
same CNN trained on 1 and on 2 augmented soundscapes of each fold's training sources (a retrain
before 2026-12-05 gave it about 1), YAMNet + CNN on the same test hours. About 30 minutes a seed.

`detection_cnn inits SEED...` asks whether averaging initialisations steadies it: the shipped CNN
(its own inputs and fit) trained three times on one augmented soundscape, each alone and the
mean of their log-odds, added to YAMNet's.

`detection_cnn vary SEED...` asks whether copies of events heard from afar (training/event_variation.py:
low-passed, a decaying tail) teach the shipped CNN more than copies as recorded, the placements the
same, on all shots and on the field-recorded ones apart. About 2 minutes a fold.

`detection_cnn context SEED...` asks whether cheap changes to the shipped combination rank better:
the patches around a patch (a shot decays, thunder rolls on), YAMNet's confuser family, its gun
family as the prior instead of its "Gunshot, gunfire" logit alone, the CNN's weight; one CNN
per fold (its log-odds cached), every variant on the same test hours. About 2 minutes a fold.

`detection_cnn resolution SEED... [NAME...]` asks which input resolution (RESOLUTIONS) ranks
best, each CNN on the one augmented soundscape a retrain gives it: the shipped 48 x 32, every
frame with bands in pairs (96 x 32), the full patch, and the full patch through a stride-2
first layer. About 10 minutes a fold for the first two alone.

`detection_cnn neighbours SEED...` asks whether the shipped CNN ranks better reading half a patch
either side (1.92 s, 96 x 32: the first half of the patch before, the patch, the last half of
the one after), max-pooled everywhere as shipped or position-aware (the maximum over bands, then
dense over time), each fitted from the same two initialisations as the shipped CNN on the one
augmented soundscape a retrain gives it. About 3 minutes a fold.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from math import gcd

import numpy as np
from scipy.ndimage import median_filter
from scipy.signal import resample_poly

from benchmarks.detection_rankers import (
    CACHE,
    FOLDS,
    GUN_FAMILY,
    TEST_SECONDS,
    Source,
    best_recalls,
    build_folds,
    gun_labels,
    load,
    sources,
)
from ecosight_daemon.embedding.frontend import (
    PATCH_HOP_SECONDS,
    PATCH_SECONDS,
    SAMPLE_RATE,
    log_mel_in_blocks,
    pad_to_whole_patches,
    patches_from_frames,
)
from ecosight_daemon.training.event_detector import CONFUSERS_PER_HOUR
from ecosight_daemon.training.event_mixing import Soundscape, build_soundscape
from ecosight_daemon.training.operating_point import (
    PartScores,
    calibrated_threshold,
    confuser_weight,
    false_alarms_and_found,
)

SHOT_COPIES = 4
CONFUSER_COPIES = 2
TRAINING_SCAPES = 2
EPOCHS = 8
RANKERS = ("cnn_pooled_24x16", "cnn_pooled_48x32", "cnn_log_mel")
BAND_CONTEXT_FRAMES = 3000  # ~30 s of 10 ms frames: each band's background level


def normalized_patches(waveform: np.ndarray) -> np.ndarray:
    """(N, 96, 64) float16: log-mel patches less each band's running median."""
    frames = log_mel_in_blocks(pad_to_whole_patches(waveform))
    coarse = median_filter(frames[::10], size=(BAND_CONTEXT_FRAMES // 10 + 1, 1), mode="nearest")
    frames = frames - np.repeat(coarse, 10, axis=0)[:len(frames)]
    return patches_from_frames(frames).astype(np.float16)


def training_scape(chosen: list[Source], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    backgrounds = [s.waveform for s in chosen if s.label == "clips"]
    copies = {"gun_shot": SHOT_COPIES, "confuser": CONFUSER_COPIES}
    events = [(s.label, s.group, s.waveform) for s in chosen if s.label != "clips"
              for _ in range(copies.get(s.label, 1))]
    scape = build_soundscape(backgrounds, events, 8.0 * len(events) + 7, rng)
    patches = normalized_patches(scape.waveform)
    return patches, gun_labels(scape.events, len(patches))


def test_soundscape(fold_sources: list[Source], rng: np.random.Generator) -> Soundscape:
    """The fold's test hour exactly as detection_rankers built it (same sources, same draws)."""
    backgrounds = [s.waveform for s in fold_sources if s.label == "clips"]
    events = [(s.label, s.group, s.waveform) for s in fold_sources if s.label != "clips"
              for _ in range(2 if s.label == "gun_shot" else 1)]
    return build_soundscape(backgrounds, events, TEST_SECONDS, rng)


def pooled(patches: np.ndarray, size: int = 4) -> np.ndarray:
    """(N, 96 / size, 64 / size): each patch's mean over size x size blocks of frames and bands."""
    blocks = patches.reshape(len(patches), 96 // size, size, 64 // size, size).astype(np.float32)
    return blocks.mean(axis=(2, 4)).astype(np.float16)


def cnn(seed: int, shape: tuple[int, int] = (96, 64), strided: bool = False):  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((*shape, 1))
    x = inputs
    if strided:  # the full patch, brought to 48 x 32 by a learned stride-2 convolution, not by averaging
        x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
        x = layers.BatchNormalization()(x)
    for width in (16, 32, 48)[:3 if shape[0] > 48 and not strided else 2]:
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dropout(0.3)(x)
    model = keras.Model(inputs, layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def rank_fold(seed: int, fold: int, all_sources: list[Source], fold_of: dict[str, int],
              rankers: tuple[str, ...]) -> dict[str, tuple]:
    cached = load(CACHE / f"s{seed}_f{fold}")[0]
    rng = np.random.default_rng(seed * 100 + fold)
    rebuilt = test_soundscape([s for s in all_sources if fold_of[s.group] == fold], rng)
    if rebuilt.events != cached.events:
        raise RuntimeError(f"fold {fold}: the rebuilt test hour is not the cached one (sources changed?)")
    test = normalized_patches(rebuilt.waveform)
    train = [s for s in all_sources if fold_of[s.group] != fold]
    made = [training_scape(train, np.random.default_rng(seed * 1000 + fold * 10 + k)) for k in range(TRAINING_SCAPES)]
    x = np.concatenate([m[0] for m in made])
    y = np.concatenate([m[1] for m in made])
    x, y = x[y >= 0], y[y >= 0].astype(np.float32)
    positives = float(y.sum())
    weights = {0: 1.0, 1: (len(y) - positives) / positives / 4}
    yamnet = cached.logits[:, 421]
    rows = {"yamnet_gunshot": best_recalls(cached.events, cached.hours, yamnet)}
    for name, shape, view in (("cnn_pooled_24x16", (24, 16), pooled),
                              ("cnn_pooled_48x32", (48, 32), lambda p: pooled(p, 2)),
                              ("cnn_log_mel", (96, 64), lambda p: p)):
        if name not in rankers:
            continue
        started = time.monotonic()
        model = cnn(seed, shape)
        model.fit(view(x)[..., None].astype(np.float32), y, batch_size=64, epochs=EPOCHS, verbose=0,
                  class_weight=weights)
        scores = model.predict(view(test)[..., None].astype(np.float32), batch_size=256, verbose=0)[:, 0]
        rows[name] = best_recalls(cached.events, cached.hours, scores)
        rows[f"yamnet_plus_{name}"] = best_recalls(cached.events, cached.hours, yamnet + scores)
        print(f"  fold {fold} {name}: {len(y)} training patches, {positives:.0f} shot patches, "
              f"{time.monotonic() - started:.0f} s", flush=True)
    return rows


def calibrated_fold(seed: int, fold: int, all_sources: list[Source], fold_of: dict[str, int],
                    view: Callable[[np.ndarray], np.ndarray], shape: tuple[int, int]) -> dict[str, float]:
    """What a retrain would ship: the CNN trained on the fold's three training parts two at a
    time, YAMNet + CNN scored out of fold on the third, the threshold calibrated there for 1
    false alarm an hour (training/event_detector.py's calibration), then the CNN trained on all
    three and run on the test hour at that threshold; beside YAMNet's score calibrated the same way."""
    cached = load(CACHE / f"s{seed}_f{fold}")
    rng = np.random.default_rng(seed * 100 + fold)
    test = test_soundscape([s for s in all_sources if fold_of[s.group] == fold], rng)
    train = [s for s in all_sources if fold_of[s.group] != fold]
    train_groups = sorted({s.group for s in train})
    rng.shuffle(train_groups)
    waves, augmented = [], []
    for k in range(3):
        chosen = [s for s in train if s.group in set(train_groups[k::3])]
        events = [(s.label, s.group, s.waveform) for s in chosen if s.label != "clips"]
        part = build_soundscape([s.waveform for s in chosen if s.label == "clips"], events,
                                max(60.0, 8.0 * len(events) + 7), rng)
        if part.events != cached[k + 1].events:
            raise RuntimeError(f"fold {fold} part {k}: not the cached part")
        waves.append(part.waveform)
        augmented.append(training_scape(chosen, np.random.default_rng(seed * 1000 + fold * 10 + k)))

    def fit(indices: list[int]):  # type: ignore[no-untyped-def]
        x = np.concatenate([augmented[i][0] for i in indices])
        y = np.concatenate([augmented[i][1] for i in indices])
        x, y = x[y >= 0], y[y >= 0].astype(np.float32)
        model = cnn(seed, shape)
        model.fit(view(x)[..., None].astype(np.float32), y, batch_size=64, epochs=EPOCHS, verbose=0,
                  class_weight={0: 1.0, 1: (len(y) - y.sum()) / y.sum() / 4})
        return lambda patches: model.predict(view(patches)[..., None].astype(np.float32), batch_size=256,
                                             verbose=0)[:, 0]

    def parts_of(extra: list[np.ndarray | float]) -> list[PartScores]:
        return [PartScores(c.events, c.hours, c.logits[:, 421] + e,
                           confuser_weight(c.events, c.hours, "confuser", CONFUSERS_PER_HOUR))
                for c, e in zip(cached[1:], extra, strict=True)]

    out_of_fold = [fit([j for j in range(3) if j != k])(normalized_patches(waves[k])) for k in range(3)]
    both, _ = calibrated_threshold(parts_of(out_of_fold), 1.0, "gun_shot", "confuser")
    alone, _ = calibrated_threshold(parts_of([0.0, 0.0, 0.0]), 1.0, "gun_shot", "confuser")
    yamnet = cached[0].logits[:, 421]
    combined = yamnet + fit([0, 1, 2])(normalized_patches(test.waveform))
    row: dict[str, float] = {}
    for name, scores, threshold in (("yamnet", yamnet, alone), ("yamnet_plus_cnn", combined, both)):
        scored = PartScores(cached[0].events, cached[0].hours, scores)
        false_alarms, found = false_alarms_and_found(scored, threshold, "gun_shot")
        shots = sum(e.label == "gun_shot" for e in cached[0].events)
        row |= {f"{name}_recall_at_default": len(found) / shots,
                f"{name}_false_alarms_per_hour": false_alarms / cached[0].hours,
                f"{name}_best_recall_at_1": best_recalls(cached[0].events, cached[0].hours, scores)[0],
                f"{name}_best_recall_at_5": best_recalls(cached[0].events, cached[0].hours, scores)[1]}
    return row


def main_calibrated(seed: int, ranker: str) -> None:
    started = time.monotonic()
    shape, view = {"cnn_pooled_24x16": ((24, 16), pooled), "cnn_pooled_48x32": ((48, 32), lambda p: pooled(p, 2)),
                   "cnn_log_mel": ((96, 64), lambda p: p)}[ranker]
    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    fold_of = {g: i % FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
    rows = []
    for fold in range(FOLDS):
        rows.append(calibrated_fold(seed, fold, all_sources, fold_of, view, shape))
        print(f"s{seed}_f{fold}", {k: round(v, 2) for k, v in rows[-1].items()}, flush=True)
    print(f"\n{ranker}, calibrated as a retrain would: {len(rows)} folds x 1 h, {time.monotonic() - started:.0f} s")
    print("| figure | min / median / max |\n| --- | --- |")
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"| {key} | " + " / ".join(f"{f(values):.2f}" for f in (np.min, np.median, np.max)) + " |")


def main_scapes(seeds: list[int], counts: tuple[int, ...] = (1, 2)) -> None:
    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    rows = []
    for seed in seeds:
        fold_of = {g: i % FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
        for fold in range(FOLDS):
            cached = load(CACHE / f"s{seed}_f{fold}")[0]
            rebuilt = test_soundscape([s for s in all_sources if fold_of[s.group] == fold],
                                      np.random.default_rng(seed * 100 + fold))
            if rebuilt.events != cached.events:
                raise RuntimeError(f"fold {fold}: the rebuilt test hour is not the cached one (sources changed?)")
            test = pooled(normalized_patches(rebuilt.waveform), 2)[..., None].astype(np.float32)
            train = [s for s in all_sources if fold_of[s.group] != fold]
            made = [training_scape(train, np.random.default_rng(seed * 1000 + fold * 10 + k))
                    for k in range(max(counts))]
            yamnet = cached.logits[:, 421]
            row = {"yamnet_gunshot": best_recalls(cached.events, cached.hours, yamnet)}
            for count in counts:
                x = np.concatenate([m[0] for m in made[:count]])
                y = np.concatenate([m[1] for m in made[:count]])
                x, y = x[y >= 0], y[y >= 0].astype(np.float32)
                model = cnn(seed, (48, 32))
                model.fit(pooled(x, 2)[..., None].astype(np.float32), y, batch_size=64, epochs=EPOCHS, verbose=0,
                          class_weight={0: 1.0, 1: (len(y) - y.sum()) / y.sum() / 4})
                scores = model.predict(test, batch_size=256, verbose=0)[:, 0]
                row[f"yamnet_plus_cnn_{count}_scapes"] = best_recalls(cached.events, cached.hours, yamnet + scores)
            rows.append(row)
            print(f"s{seed}_f{fold}", {k: f"{a:.2f}/{b:.2f}" for k, (a, b) in row.items()}, flush=True)
    print("| ranker | best recall <= 1 FA/h (min / median / max) | <= 5 FA/h |\n| --- | --- | --- |")
    for name in rows[0]:
        spread = [" / ".join(f"{f(v):.2f}" for f in (np.min, np.median, np.max))
                  for v in ([r[name][i] for r in rows] for i in (0, 1))]
        print(f"| {name} | {spread[0]} | {spread[1]} |")


def main_inits(seeds: list[int], count: int = 3) -> None:
    """The shipped CNN (spectrogram_inputs codes, training/shot_spectrogram_fit.py) trained COUNT
    times on the same augmented soundscape from different initialisations: each alone, and
    their log-odds averaged, added to YAMNet's on the same test hours."""
    from ecosight_daemon.artifacts.shot_spectrogram import spectrogram_inputs
    from ecosight_daemon.training.shot_spectrogram_fit import fit_shot_spectrogram

    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    rows = []
    for seed in seeds:
        fold_of = {g: i % FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
        for fold in range(FOLDS):
            cached = load(CACHE / f"s{seed}_f{fold}")[0]
            rebuilt = test_soundscape([s for s in all_sources if fold_of[s.group] == fold],
                                      np.random.default_rng(seed * 100 + fold))
            if rebuilt.events != cached.events:
                raise RuntimeError(f"fold {fold}: the rebuilt test hour is not the cached one (sources changed?)")
            test = spectrogram_inputs(rebuilt.waveform)
            train = [s for s in all_sources if fold_of[s.group] != fold]
            rng = np.random.default_rng(seed * 1000 + fold * 10)
            copies = {"gun_shot": SHOT_COPIES, "confuser": CONFUSER_COPIES}
            events = [(s.label, s.group, s.waveform) for s in train if s.label != "clips"
                      for _ in range(copies.get(s.label, 1))]
            scape = build_soundscape([s.waveform for s in train if s.label == "clips"], events,
                                     8.0 * len(events) + 7, rng)
            codes = spectrogram_inputs(scape.waveform)
            labels = gun_labels(scape.events, len(codes))
            fits = [fit_shot_spectrogram(codes[labels >= 0], labels[labels >= 0], seed * 100 + fold * 10 + k)
                    for k in range(count)]
            log_odds = [fit.log_odds(test) for fit in fits]
            yamnet = cached.logits[:, 421]
            row = {"yamnet_gunshot": best_recalls(cached.events, cached.hours, yamnet)}
            for k in range(count):
                row[f"yamnet_plus_cnn_init_{k}"] = best_recalls(cached.events, cached.hours, yamnet + log_odds[k])
            for k in range(2, count + 1):
                row[f"yamnet_plus_mean_of_{k}_cnns"] = best_recalls(cached.events, cached.hours,
                                                                    yamnet + np.mean(log_odds[:k], axis=0))
            rows.append(row)
            print(f"s{seed}_f{fold}", {k: f"{a:.2f}/{b:.2f}" for k, (a, b) in row.items()}, flush=True)
    print("| ranker | best recall <= 1 FA/h (min / median / max) | <= 5 FA/h |\n| --- | --- | --- |")
    for name in rows[0]:
        spread = [" / ".join(f"{f(v):.2f}" for f in (np.min, np.median, np.max))
                  for v in ([r[name][i] for r in rows] for i in (0, 1))]
        print(f"| {name} | {spread[0]} | {spread[1]} |")


FIELD_SHOTS = ("dev:gabon:", "dev:katsis:")  # the corpus's gun shots recorded by field recorders, far off


def found_within(events: list, hours: float, scores: np.ndarray, budgets: tuple[float, ...]) -> list[set[int]]:
    """Per budget (false alarms per hour), the shots (indices among the gun shots) found at the
    lowest threshold within it: best_recalls' matching, which shots rather than how many."""
    shots = np.array([[e.start_s, e.end_s] for e in events if e.label == "gun_shot"])
    best: list[set[int]] = [set() for _ in budgets]
    for threshold in np.unique(np.quantile(scores, np.linspace(0.9, 1.0, 401)))[::-1]:
        above = np.concatenate([[False], scores >= threshold, [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(above))
        found: set[int] = set()
        false_alarms = 0
        for first, last in zip(edges[0::2], edges[1::2] - 1, strict=True):
            start, end = first * PATCH_HOP_SECONDS, last * PATCH_HOP_SECONDS + PATCH_SECONDS
            hits = np.flatnonzero((start < shots[:, 1] + 0.5) & (end > shots[:, 0] - 0.5))
            found.update(hits.tolist())
            false_alarms += not len(hits)
        for i, budget in enumerate(budgets):
            if false_alarms / hours <= budget and len(found) > len(best[i]):
                best[i] = found
        if false_alarms / hours > max(budgets):
            break
    return best


def main_vary(seeds: list[int], shares: tuple[float, ...] = (0.0, 0.5, 1.0),
              budgets: tuple[float, ...] = (1.0, 5.0, 20.0)) -> None:
    """The shipped CNN (spectrogram_inputs, fit_shot_spectrogram) trained on the one augmented
    soundscape a retrain gives it, with each share of the event copies heard from afar
    (training/event_variation.py; 0: as recorded, as before 2026-12-06), the placements the
    same; YAMNet + CNN on the same test hours. Recall within each budget of all shots and of
    the field-recorded ones apart (FIELD_SHOTS: what a field recorder hears)."""
    from ecosight_daemon.artifacts.shot_spectrogram import spectrogram_inputs
    from ecosight_daemon.training.event_variation import from_afar
    from ecosight_daemon.training.shot_spectrogram_fit import fit_shot_spectrogram

    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    totals: dict[str, np.ndarray] = {}  # ranker -> per budget: (all found, all, field found, field)
    per_fold: dict[str, list[float]] = {}
    for seed in seeds:
        fold_of = {g: i % FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
        for fold in range(FOLDS):
            cached = load(CACHE / f"s{seed}_f{fold}")[0]
            rebuilt = test_soundscape([s for s in all_sources if fold_of[s.group] == fold],
                                      np.random.default_rng(seed * 100 + fold))
            if rebuilt.events != cached.events:
                raise RuntimeError(f"fold {fold}: the rebuilt test hour is not the cached one (sources changed?)")
            test = spectrogram_inputs(rebuilt.waveform)
            train = [s for s in all_sources if fold_of[s.group] != fold]
            copies = {"gun_shot": SHOT_COPIES, "confuser": CONFUSER_COPIES}
            events = [(s.label, s.group, s.waveform) for s in train if s.label != "clips"
                      for _ in range(copies.get(s.label, 1))]
            yamnet = cached.logits[:, 421]
            scores = {"yamnet_gunshot": yamnet}
            for share in shares:
                afar = np.random.default_rng([seed, fold, 1])
                scape = build_soundscape([s.waveform for s in train if s.label == "clips"], events,
                                         8.0 * len(events) + 7, np.random.default_rng(seed * 1000 + fold * 10),
                                         vary=lambda clip, r=afar, p=share: from_afar(clip, r) if r.random() < p
                                         else clip)
                codes = spectrogram_inputs(scape.waveform)
                labels = gun_labels(scape.events, len(codes))
                fit = fit_shot_spectrogram(codes[labels >= 0], labels[labels >= 0], seed * 100 + fold)
                scores[f"yamnet_plus_cnn_far_{share:g}"] = yamnet + fit.log_odds(test)
            shots = [e for e in cached.events if e.label == "gun_shot"]
            field = {i for i, e in enumerate(shots) if e.source.startswith(FIELD_SHOTS)}
            line = []
            for name, values in scores.items():
                found = found_within(cached.events, cached.hours, values, budgets)
                counts = np.array([[len(f), len(shots), len(f & field), len(field)] for f in found])
                totals[name] = totals.get(name, 0) + counts
                per_fold.setdefault(name, []).append(len(found[0]) / len(shots))
                line.append(f"{name} {'/'.join(f'{len(f) / len(shots):.2f}' for f in found)} "
                            f"field {'/'.join(str(len(f & field)) for f in found)} of {len(field)}")
            print(f"s{seed}_f{fold}: " + "; ".join(line), flush=True)
    print("| YAMNet + | best recall <= 1 FA/h per fold (min / median / max) | "
          + " | ".join(f"all shots / field-recorded shots found, <= {b:g} FA/h" for b in budgets) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in budgets) + " |")
    for name, counts in totals.items():
        spread = " / ".join(f"{f(per_fold[name]):.2f}" for f in (np.min, np.median, np.max))
        print(f"| {name} | {spread} | " + " | ".join(f"{a / n:.2f} / {ff} of {fn}" for a, n, ff, fn in counts) + " |")


CONFUSER_FAMILY = (280, 281, 426, 427)  # YAMNet's "Thunderstorm", "Thunder", "Fireworks", "Firecracker"


def context_variants(yamnet_logits: np.ndarray, cnn_log_odds: np.ndarray) -> dict[str, np.ndarray]:
    """YAMNet + CNN as shipped, and cheap ways to combine or lower it: the patches around a patch
    (a shot decays within a second or two, thunder and rock falls roll on), YAMNet's confuser
    family, its gun family, and the CNN's weight."""
    gunshot = yamnet_logits[:, 421]
    shipped = gunshot + cnn_log_odds
    padded = np.pad(shipped, 6, mode="edge")
    after = np.max([padded[6 + k:6 + k + len(shipped)] for k in range(3, 7)], axis=0)
    before = np.max([padded[6 - k:6 - k + len(shipped)] for k in range(3, 7)], axis=0)
    confuser = yamnet_logits[:, list(CONFUSER_FAMILY)].max(axis=1)
    family = yamnet_logits[:, GUN_FAMILY].max(axis=1)
    return {"yamnet_plus_cnn": shipped,
            "less_half_what_follows": shipped - 0.5 * np.maximum(after, 0.0),
            "less_half_what_surrounds": shipped - 0.5 * np.maximum(np.maximum(after, before), 0.0),
            "less_half_confuser_family": shipped - 0.5 * np.maximum(confuser - gunshot, 0.0),
            "gun_family_max_plus_cnn": family + cnn_log_odds,
            "guns_without_explosion_max_plus_cnn": yamnet_logits[:, GUN_FAMILY[1:]].max(axis=1) + cnn_log_odds,
            "gun_family_logsumexp_plus_cnn": np.logaddexp.reduce(yamnet_logits[:, GUN_FAMILY], axis=1) + cnn_log_odds,
            "mean_of_gunshot_and_family_max_plus_cnn": (gunshot + family) / 2 + cnn_log_odds,
            "yamnet_plus_half_cnn": gunshot + 0.5 * cnn_log_odds,
            "yamnet_plus_cnn_clipped_at_0": gunshot + np.minimum(cnn_log_odds, 0.0),
            "cnn_alone": cnn_log_odds}


def main_context(seeds: list[int]) -> None:
    """The shipped CNN trained on the one soundscape a retrain gives it; YAMNet + CNN as shipped
    beside context_variants of it on the same test hours (best threshold after the fact)."""
    from ecosight_daemon.artifacts.shot_spectrogram import spectrogram_inputs
    from ecosight_daemon.training.shot_spectrogram_fit import fit_shot_spectrogram

    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    rows = []
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
            log_odds_file = CACHE / f"cnn_log_odds_s{seed}_f{fold}.npy"  # the CNN costs; the variants do not
            if not log_odds_file.exists():
                codes = spectrogram_inputs(scape.waveform)
                labels = gun_labels(scape.events, len(codes))
                fit = fit_shot_spectrogram(codes[labels >= 0], labels[labels >= 0], seed * 100 + fold)
                np.save(log_odds_file, fit.log_odds(spectrogram_inputs(rebuilt.waveform)))
            variants = context_variants(cached.logits, np.load(log_odds_file))
            row = {"yamnet_gunshot": best_recalls(cached.events, cached.hours, cached.logits[:, 421])}
            row.update({name: best_recalls(cached.events, cached.hours, v) for name, v in variants.items()})
            rows.append(row)
            print(f"s{seed}_f{fold}", {k: f"{a:.2f}/{b:.2f}" for k, (a, b) in row.items()}, flush=True)
    print("| ranker | best recall <= 1 FA/h (min / median / max) | <= 5 FA/h | per fold, <= 1 FA/h |")
    print("| --- | --- | --- | --- |")
    for name in rows[0]:
        spread = [" / ".join(f"{f(v):.2f}" for f in (np.min, np.median, np.max))
                  for v in ([r[name][i] for r in rows] for i in (0, 1))]
        print(f"| {name} | {spread[0]} | {spread[1]} | {' '.join(f'{r[name][0]:.2f}' for r in rows)} |")


def through_recorder(waveform: np.ndarray, recorder_rate: int) -> np.ndarray:
    """`waveform` (16 kHz) as a recorder sampling at `recorder_rate` would have kept it: nothing
    above its Nyquist frequency (an AudioMoth set to 8 kHz keeps nothing above 4 kHz)."""
    step = gcd(SAMPLE_RATE, recorder_rate)
    down = resample_poly(np.asarray(waveform, np.float32), recorder_rate // step, SAMPLE_RATE // step)
    return np.asarray(resample_poly(down, SAMPLE_RATE // step, recorder_rate // step)[:len(waveform)], np.float32)


def narrowband_stretches(waveform: np.ndarray, recorder_rate: int, stretch_s: float) -> np.ndarray:
    """`waveform` with every other `stretch_s` through a recorder at `recorder_rate` (the rest as it is)."""
    narrow = through_recorder(waveform, recorder_rate)
    out = np.array(waveform, np.float32)
    stretch = int(stretch_s * SAMPLE_RATE)
    for start in range(stretch, len(out), 2 * stretch):
        out[start:start + stretch] = narrow[start:start + stretch]
    return out


def main_bandwidth(seeds: list[int]) -> None:
    """Each fold's test hour as recorded (16 kHz) and through an 8 kHz recorder (nothing above
    4 kHz: how many AudioMoths are set, and how the corpus's own field shots were recorded),
    YAMNet re-run on it; the shipped CNN learning from its augmented soundscape as recorded,
    and from the same soundscape with every other 5 minutes through an 8 kHz recorder."""
    from benchmarks.common import yamnet_handle
    from ecosight_daemon.artifacts.shot_spectrogram import spectrogram_inputs
    from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
    from ecosight_daemon.training.shot_spectrogram_fit import fit_shot_spectrogram

    embedder = OnnxEmbedder.load(yamnet_handle(), CACHE.parent / "models")
    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    rows = []
    for seed in seeds:
        fold_of = {g: i % FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
        for fold in range(FOLDS):
            cached = load(CACHE / f"s{seed}_f{fold}")[0]
            rebuilt = test_soundscape([s for s in all_sources if fold_of[s.group] == fold],
                                      np.random.default_rng(seed * 100 + fold))
            if rebuilt.events != cached.events:
                raise RuntimeError(f"fold {fold}: the rebuilt test hour is not the cached one (sources changed?)")
            narrow = through_recorder(rebuilt.waveform, 8000)
            narrow_gunshot = embedder.audioset_head().logits(embedder.embed(narrow))[:, 421]
            tests = {"16k": (cached.logits[:, 421], spectrogram_inputs(rebuilt.waveform)),
                     "8k": (narrow_gunshot, spectrogram_inputs(narrow))}
            train = [s for s in all_sources if fold_of[s.group] != fold]
            copies = {"gun_shot": SHOT_COPIES, "confuser": CONFUSER_COPIES}
            events = [(s.label, s.group, s.waveform) for s in train if s.label != "clips"
                      for _ in range(copies.get(s.label, 1))]
            scape = build_soundscape([s.waveform for s in train if s.label == "clips"], events,
                                     8.0 * len(events) + 7, np.random.default_rng(seed * 1000 + fold * 10))
            row = {}
            for name, waveform in (("as_recorded", scape.waveform),
                                   ("half_8k", narrowband_stretches(scape.waveform, 8000, 300.0))):
                codes = spectrogram_inputs(waveform)
                labels = gun_labels(scape.events, len(codes))
                fit = fit_shot_spectrogram(codes[labels >= 0], labels[labels >= 0], seed * 100 + fold)
                for test_name, (yamnet, test_codes) in tests.items():
                    row[f"{test_name}_yamnet"] = best_recalls(cached.events, cached.hours, yamnet)
                    row[f"{test_name}_yamnet_plus_cnn_{name}"] = best_recalls(cached.events, cached.hours,
                                                                              yamnet + fit.log_odds(test_codes))
            rows.append(row)
            print(f"s{seed}_f{fold}", {k: f"{a:.2f}/{b:.2f}" for k, (a, b) in row.items()}, flush=True)
    print("| test hour, ranker | best recall <= 1 FA/h (min / median / max) | <= 5 FA/h |\n| --- | --- | --- |")
    for name in rows[0]:
        spread = [" / ".join(f"{f(v):.2f}" for f in (np.min, np.median, np.max))
                  for v in ([r[name][i] for r in rows] for i in (0, 1))]
        print(f"| {name} | {spread[0]} | {spread[1]} |")


RESOLUTIONS = {  # name: (CNN input shape, view of the (N, 96, 64) patches, strided first layer)
    "pooled_48x32": ((48, 32), lambda p: pooled(p, 2), False),
    "time_96_bands_32": ((96, 32), lambda p: p.reshape(len(p), 96, 32, 2).astype(np.float32).mean(axis=3), False),
    "full_96x64": ((96, 64), lambda p: p, False),
    "strided_96x64": ((96, 64), lambda p: p, True),
}


def main_resolution(seeds: list[int], names: tuple[str, ...] = tuple(RESOLUTIONS)) -> None:
    """The CNN on one augmented soundscape (as a retrain trains it) at each input resolution in
    RESOLUTIONS, added to YAMNet's logit on the same test hours; the seconds each fit and each
    hour's scoring took."""
    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    resolutions = {name: RESOLUTIONS[name] for name in names}
    rows, costs = [], {name: [] for name in resolutions}
    for seed in seeds:
        fold_of = {g: i % FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
        for fold in range(FOLDS):
            cached = load(CACHE / f"s{seed}_f{fold}")[0]
            rebuilt = test_soundscape([s for s in all_sources if fold_of[s.group] == fold],
                                      np.random.default_rng(seed * 100 + fold))
            if rebuilt.events != cached.events:
                raise RuntimeError(f"fold {fold}: the rebuilt test hour is not the cached one (sources changed?)")
            test = normalized_patches(rebuilt.waveform)
            train = [s for s in all_sources if fold_of[s.group] != fold]
            x, y = training_scape(train, np.random.default_rng(seed * 1000 + fold * 10))
            x, y = x[y >= 0], y[y >= 0].astype(np.float32)
            yamnet = cached.logits[:, 421]
            row = {"yamnet_gunshot": best_recalls(cached.events, cached.hours, yamnet)}
            for name, (shape, view, strided) in resolutions.items():
                started = time.monotonic()
                model = cnn(seed * 10 + fold, shape, strided)
                model.fit(view(x)[..., None].astype(np.float32), y, batch_size=64, epochs=EPOCHS, verbose=0,
                          class_weight={0: 1.0, 1: (len(y) - y.sum()) / y.sum() / 4})
                fitted = time.monotonic()
                scores = model.predict(view(test)[..., None].astype(np.float32), batch_size=256, verbose=0)[:, 0]
                costs[name].append((fitted - started, time.monotonic() - fitted, model.count_params()))
                row[f"yamnet_plus_{name}"] = best_recalls(cached.events, cached.hours, yamnet + scores)
            rows.append(row)
            print(f"s{seed}_f{fold}", {k: f"{a:.2f}/{b:.2f}" for k, (a, b) in row.items()}, flush=True)
    print("| ranker | best recall <= 1 FA/h (min / median / max) | minus 48x32, per fold | <= 5 FA/h |")
    print("| --- | --- | --- | --- |")
    for name in rows[0]:
        spread = [" / ".join(f"{f(v):.2f}" for f in (np.min, np.median, np.max))
                  for v in ([r[name][i] for r in rows] for i in (0, 1))]
        gain = [r[name][0] - r["yamnet_plus_pooled_48x32"][0] for r in rows]
        gains = " / ".join(f"{f(gain):+.2f}" for f in (np.min, np.median, np.max))
        print(f"| {name} | {spread[0]} | {gains} (better in {sum(g > 0 for g in gain)}, "
              f"worse in {sum(g < 0 for g in gain)}) | {spread[1]} |")
    for name, values in costs.items():
        fit_s, score_s, params = np.median(np.array(values), axis=0)
        print(f"{name}: fit {fit_s:.0f} s, scoring the test hour {score_s:.1f} s (Keras, median), {params:.0f} weights")


NEIGHBOUR_HALF = 24  # frames of the 48 x 32 codes: half a patch


def with_neighbours(codes: np.ndarray) -> np.ndarray:
    """(N, 96, 32): each patch's codes with the first half of the patch before and the last
    half of the one after (the ends repeat their own patch)."""
    before = np.concatenate([codes[:1], codes[:-1]])
    after = np.concatenate([codes[1:], codes[-1:]])
    return np.concatenate([before[:, :NEIGHBOUR_HALF], codes, after[:, NEIGHBOUR_HALF:]], axis=1)


def wide_cnn(seed: int, positional: bool):  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((96, 32, 1))
    x = inputs
    for width in (16, 32):
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.BatchNormalization(epsilon=1e-3)(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    if positional:  # where in the 1.92 s it stands out: the maximum over bands, then dense over time
        x = layers.Lambda(lambda t: keras.ops.max(t, axis=2))(x)
        x = layers.Conv1D(32, 1, activation="relu")(x)
        x = layers.Flatten()(x)
    else:
        x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dropout(0.3)(x)
    model = keras.Model(inputs, layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def main_neighbours(seeds: list[int], inits: int = 2) -> None:
    from ecosight_daemon.artifacts.shot_spectrogram import decoded, spectrogram_inputs
    from ecosight_daemon.training.shot_spectrogram_fit import POSITIVE_WEIGHT_SHARE, fit_shot_spectrogram

    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    rows = []
    for seed in seeds:
        fold_of = {g: i % FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
        for fold in range(FOLDS):
            cached = load(CACHE / f"s{seed}_f{fold}")[0]
            rebuilt = test_soundscape([s for s in all_sources if fold_of[s.group] == fold],
                                      np.random.default_rng(seed * 100 + fold))
            if rebuilt.events != cached.events:
                raise RuntimeError(f"fold {fold}: the rebuilt test hour is not the cached one (sources changed?)")
            test = spectrogram_inputs(rebuilt.waveform)
            train = [s for s in all_sources if fold_of[s.group] != fold]
            copies = {"gun_shot": SHOT_COPIES, "confuser": CONFUSER_COPIES}
            events = [(s.label, s.group, s.waveform) for s in train if s.label != "clips"
                      for _ in range(copies.get(s.label, 1))]
            scape = build_soundscape([s.waveform for s in train if s.label == "clips"], events,
                                     8.0 * len(events) + 7, np.random.default_rng(seed * 1000 + fold * 10))
            codes = spectrogram_inputs(scape.waveform)
            labels = gun_labels(scape.events, len(codes))
            keep = labels >= 0
            y = labels[keep].astype(np.float32)
            weight = max(1.0, (len(y) - y.sum()) / max(1.0, y.sum()) * POSITIVE_WEIGHT_SHARE)
            wide = decoded(with_neighbours(codes)[keep])[..., None]
            wide_test = decoded(with_neighbours(test))[..., None]
            yamnet = cached.logits[:, 421]
            row = {"yamnet_gunshot": best_recalls(cached.events, cached.hours, yamnet)}
            for k in range(inits):
                init = seed * 100 + fold * 10 + k
                shipped = fit_shot_spectrogram(codes[keep], y, init).log_odds(test)
                row[f"shipped_{k}"] = best_recalls(cached.events, cached.hours, yamnet + shipped)
                for name, positional in (("wide_max_pooled", False), ("wide_positional", True)):
                    model = wide_cnn(init, positional)
                    model.fit(wide, y, batch_size=64, epochs=EPOCHS, verbose=0, class_weight={0: 1.0, 1: weight})
                    scores = model.predict(wide_test, batch_size=256, verbose=0)[:, 0]
                    row[f"{name}_{k}"] = best_recalls(cached.events, cached.hours, yamnet + scores)
            rows.append(row)
            print(f"s{seed}_f{fold}", {k: f"{a:.2f}/{b:.2f}" for k, (a, b) in row.items()}, flush=True)
    for budget, column in ((1, 0), (5, 1)):
        shipped = np.array([np.mean([r[f"shipped_{k}"][column] for k in range(inits)]) for r in rows])
        print(f"<= {budget} FA/h, mean of {inits} initialisations per fold: shipped {shipped.mean():.3f}")
        for name in ("wide_max_pooled", "wide_positional"):
            arm = np.array([np.mean([r[f"{name}_{k}"][column] for k in range(inits)]) for r in rows])
            print(f"  {name}: {arm.mean():.3f}, better in {(arm > shipped).sum()}, worse in {(arm < shipped).sum()}")


def main(seed: int, rankers: tuple[str, ...]) -> None:
    started = time.monotonic()
    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    fold_of = {g: i % FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
    if not all((CACHE / f"s{seed}_f{f}.json").exists() for f in range(FOLDS)):
        raise SystemExit(f"run `python -m benchmarks.detection_rankers {seed}` first (it caches the folds)")
    results = {}
    for fold in range(FOLDS):
        results[fold] = rank_fold(seed, fold, all_sources, fold_of, rankers)
        print(f"s{seed}_f{fold}", {k: f"{a:.2f}/{b:.2f}" for k, (a, b) in results[fold].items()}, flush=True)
    print(f"\n{len(results)} folds x 1 h, {time.monotonic() - started:.0f} s")
    print("| ranker | best recall <= 1 FA/h (min / median / max) | <= 5 FA/h |\n| --- | --- | --- |")
    for name in results[0]:
        spread = [" / ".join(f"{f(v):.2f}" for f in (np.min, np.median, np.max))
                  for v in ([r[name][i] for r in results.values()] for i in (0, 1))]
        print(f"| {name} | {spread[0]} | {spread[1]} |")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(sys.argv) > 1 and sys.argv[1] == "scapes":
        build_folds([int(a) for a in sys.argv[2:]])
        main_scapes([int(a) for a in sys.argv[2:]])
    elif len(sys.argv) > 1 and sys.argv[1] == "resolution":
        wanted = tuple(a for a in sys.argv[2:] if not a.isdigit()) or tuple(RESOLUTIONS)
        build_folds([int(a) for a in sys.argv[2:] if a.isdigit()])
        main_resolution([int(a) for a in sys.argv[2:] if a.isdigit()], wanted)
    elif len(sys.argv) > 1 and sys.argv[1] == "vary":
        build_folds([int(a) for a in sys.argv[2:]])
        main_vary([int(a) for a in sys.argv[2:]])
    elif len(sys.argv) > 1 and sys.argv[1] == "bandwidth":
        build_folds([int(a) for a in sys.argv[2:]])
        main_bandwidth([int(a) for a in sys.argv[2:]])
    elif len(sys.argv) > 1 and sys.argv[1] == "context":
        build_folds([int(a) for a in sys.argv[2:]])
        main_context([int(a) for a in sys.argv[2:]])
    elif len(sys.argv) > 1 and sys.argv[1] == "neighbours":
        build_folds([int(a) for a in sys.argv[2:]])
        main_neighbours([int(a) for a in sys.argv[2:]])
    elif len(sys.argv) > 1 and sys.argv[1] == "inits":
        build_folds([int(a) for a in sys.argv[2:]])
        main_inits([int(a) for a in sys.argv[2:]])
    elif len(sys.argv) > 2 and sys.argv[2] == "calibrated":
        main_calibrated(int(sys.argv[1]), sys.argv[3] if len(sys.argv) > 3 else "cnn_pooled_24x16")
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 7, tuple(sys.argv[2:]) or RANKERS)
