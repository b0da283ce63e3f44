"""Does a third opinion from YAMNet's other classes help the shipped YAMNet + CNN? Issue #32,
run by hand (not part of `make bench`; about 1-2 minutes a fold on 2 cores, after
`detection_cnn context` has cached its folds' test hours, training parts and CNN log-odds):
`.venv/bin/python -m benchmarks.detection_stacked 42 1 7 2 3`.

On each fold's three cached training parts (the soundscapes a retrain calibrates on, built from
the fold's training sources), two per-patch models of "shot or not" learn from YAMNet's logits
and the four onset features: the retrain's fitted scorer (a class-balanced logistic regression,
C = 0.001, on all 521 logits and the onsets), and gradient-boosted trees
(`detection_rankers.boosted`) on a compact set of them: the gun family, its impulsive
look-alikes, weather, dogs and engines (`PICKED`), the onsets and the gun family's highest
logit, with the same for the three patches either side (`compact_features`), only the three
after, only the three before (what a stream can score without waiting), or the patch alone. Each model's
log-odds on the test hour, times a weight, is added to the shipped YAMNet + CNN sum (the CNN
cached per fold by `detection_cnn context`, so every row shares it). Best recall at <= 1 and
<= 5 false alarms per hour after the fact; per fold, better or worse than the shipped sum.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

from benchmarks.detection_rankers import (
    CACHE,
    FOLDS,
    GUN_FAMILY,
    PICKED,
    best_recalls,
    boosted,
    compact_features,
    gun_labels,
    load,
    logistic,
    shifted,
)

GUNSHOT = 421  # AudioSet's "Gunshot, gunfire"


def plain_features(logits: np.ndarray, onsets: np.ndarray) -> np.ndarray:
    return np.concatenate([logits[:, PICKED], onsets, logits[:, GUN_FAMILY].max(axis=1, keepdims=True)],
                          axis=1).astype(np.float32)


def with_neighbours(offsets: tuple[int, ...]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """plain_features and the picked logits and onsets of the patches `offsets` away (shifted():
    k > 0 is the patch k before, k < 0 the patch -k after)."""
    def features(logits: np.ndarray, onsets: np.ndarray) -> np.ndarray:
        picked = logits[:, PICKED]
        parts = [plain_features(logits, onsets)]
        parts += [p for k in offsets for p in (shifted(picked, k), shifted(onsets, k))]
        return np.concatenate(parts, axis=1).astype(np.float32)
    return features


def all_logits(logits: np.ndarray, onsets: np.ndarray) -> np.ndarray:
    return np.concatenate([logits, onsets], axis=1)


MODELS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], Callable[..., object]]] = {
    "logistic, all logits": (all_logits, lambda x, y: logistic(x, y, 0.001)),
    "trees, +-3 patches": (compact_features, boosted),
    "trees, 3 patches after": (with_neighbours((-3, -2, -1)), boosted),
    "trees, 3 patches before": (with_neighbours((1, 2, 3)), boosted),
    "trees, the patch alone": (plain_features, boosted),
}
WEIGHTS = (0.25, 0.5, 1.0)


def main(seeds: list[int]) -> None:
    rows: list[dict[str, tuple[float, float]]] = []
    for seed in seeds:
        for fold in range(FOLDS):
            test, *train = load(CACHE / f"s{seed}_f{fold}")
            labels = np.concatenate([gun_labels(s.events, len(s.logits)) for s in train])
            kept = labels >= 0
            shipped = test.logits[:, GUNSHOT] + np.load(CACHE / f"cnn_log_odds_s{seed}_f{fold}.npy")
            scores = {"yamnet": test.logits[:, GUNSHOT], "yamnet + cnn (ships)": shipped}
            for name, (features, fit) in MODELS.items():
                x = np.concatenate([features(s.logits, s.onsets) for s in train])
                model = fit(x[kept], labels[kept])
                log_odds = model(features(test.logits, test.onsets))  # type: ignore[operator]
                for weight in WEIGHTS:
                    scores[f"ships + {weight:g} x {name}"] = shipped + weight * log_odds
            row = {name: best_recalls(test.events, test.hours, values) for name, values in scores.items()}
            rows.append(row)
            print(f"s{seed}_f{fold}", {k: f"{a:.2f}/{b:.2f}" for k, (a, b) in row.items()}, flush=True)
    print("| ranker | best recall <= 1 FA/h (min / median / max) | mean | folds better / worse than shipped | "
          "<= 5 FA/h median |")
    print("| --- | --- | --- | --- | --- |")
    ships = [r["yamnet + cnn (ships)"][0] for r in rows]
    for name in rows[0]:
        at_1 = [r[name][0] for r in rows]
        spread = " / ".join(f"{f(at_1):.2f}" for f in (np.min, np.median, np.max))
        better = sum(a > b for a, b in zip(at_1, ships, strict=True))
        worse = sum(a < b for a, b in zip(at_1, ships, strict=True))
        at_5 = np.median([r[name][1] for r in rows])
        print(f"| {name} | {spread} | {np.mean(at_1):.3f} | {better} / {worse} | {at_5:.2f} |")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
