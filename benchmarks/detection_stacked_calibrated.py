"""The context trees beside YAMNet + CNN as a retrain would build them (by hand; about 2 minutes a
fold after `detection_cnn context` cached the folds): the CNN and the trees trained on the fold's
parts two at a time and scored out of fold on the third, the threshold calibrated there for 1
false alarm an hour, both then trained on all three parts and run on the test hour.
`.venv/bin/python -m benchmarks.detection_stacked_calibrated SEED [FOLD...]`."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from benchmarks.detection_cnn import (
    CACHE,
    CONFUSERS_PER_HOUR,
    EPOCHS,
    FOLDS,
    PartScores,
    best_recalls,
    build_soundscape,
    calibrated_threshold,
    cnn,
    confuser_weight,
    false_alarms_and_found,
    load,
    normalized_patches,
    pooled,
    sources,
    test_soundscape,
    training_scape,
)
from benchmarks.detection_rankers import gun_labels
from ecosight_daemon.artifacts.context_trees import context_features
from ecosight_daemon.training.context_trees_fit import fit_context_trees


def one_fold(seed: int, fold: int, all_sources: list[Any], fold_of: dict[str, int]) -> dict[str, str]:
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

    def fit_cnn(parts: list[int]) -> Any:
        x = np.concatenate([augmented[i][0] for i in parts])
        y = np.concatenate([augmented[i][1] for i in parts])
        x, y = x[y >= 0], y[y >= 0].astype(np.float32)
        model = cnn(seed, (48, 32))
        model.fit(pooled(x, 2)[..., None].astype(np.float32), y, batch_size=64, epochs=EPOCHS, verbose=0,
                  class_weight={0: 1.0, 1: (len(y) - y.sum()) / y.sum() / 4})
        return lambda p: model.predict(pooled(p, 2)[..., None].astype(np.float32), batch_size=256, verbose=0)[:, 0]

    features = [context_features(c.logits, c.onsets) for c in cached[1:]]
    labels = [gun_labels(c.events, len(c.logits)) for c in cached[1:]]

    def fit_trees(parts: list[int]) -> Any:
        x = np.concatenate([features[i] for i in parts])
        y = np.concatenate([labels[i] for i in parts])
        return fit_context_trees(x[y >= 0], (y[y >= 0] == 1).astype(int), 0)

    def parts_of(extra: list[np.ndarray]) -> list[PartScores]:
        return [PartScores(c.events, c.hours, c.logits[:, 421] + e,
                           confuser_weight(c.events, c.hours, "confuser", CONFUSERS_PER_HOUR))
                for c, e in zip(cached[1:], extra, strict=True)]

    others = [[j for j in range(3) if j != k] for k in range(3)]
    cnn_oof = [fit_cnn(others[k])(normalized_patches(waves[k])) for k in range(3)]
    trees_oof = [fit_trees(others[k]).log_odds(features[k]) for k in range(3)]
    with_cnn, _ = calibrated_threshold(parts_of(cnn_oof), 1.0, "gun_shot", "confuser")
    with_trees, _ = calibrated_threshold(parts_of([a + b for a, b in zip(cnn_oof, trees_oof, strict=True)]), 1.0,
                                         "gun_shot", "confuser")
    yamnet = cached[0].logits[:, 421]
    cnn_test = fit_cnn([0, 1, 2])(normalized_patches(test.waveform))
    trees_test = fit_trees([0, 1, 2]).log_odds(context_features(cached[0].logits, cached[0].onsets))
    shots = sum(e.label == "gun_shot" for e in cached[0].events)
    row = {}
    for name, scores, threshold in (("yamnet+cnn", yamnet + cnn_test, with_cnn),
                                    ("yamnet+cnn+trees", yamnet + cnn_test + trees_test, with_trees)):
        false_alarms, found = false_alarms_and_found(PartScores(cached[0].events, cached[0].hours, scores),
                                                     threshold, "gun_shot")
        at_1, at_5 = best_recalls(cached[0].events, cached[0].hours, scores)
        row[name] = f"best1 {at_1:.2f} best5 {at_5:.2f} default {len(found) / shots:.2f} FA {false_alarms}"
    return row


def main(seed: int, folds: list[int]) -> None:
    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    fold_of = {g: i % FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
    for fold in folds:
        started = time.monotonic()
        row = one_fold(seed, fold, all_sources, fold_of)
        print(f"s{seed}_f{fold} {time.monotonic() - started:.0f}s", row, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), [int(a) for a in sys.argv[2:]] or list(range(FOLDS)))
