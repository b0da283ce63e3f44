"""Does YAMNet hear shots better with the site's background taken out first? Issue #32's
idea of a denoising front end for the network the detector is built on, run by hand (not
part of `make bench`; about 25 s a fold on 2 cores, after `detection_cnn context` has cached
its folds' test hours and CNN log-odds): `.venv/bin/python -m benchmarks.detection_denoised 42 1`.

Each test hour's log-mel frames, as power, less `alpha` times each band's running median over
~30 s (spectral subtraction; what is left clipped at zero), back to log-mel and through YAMNet
again. Rows: YAMNet's "Gunshot, gunfire" logit as it is, on the denoised patches, their mean,
and each with the shipped CNN's log-odds added (the CNN cached by `detection_cnn context`);
best recall at <= 1 and <= 5 false alarms per hour after the fact, per fold.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.ndimage import median_filter

from benchmarks.common import yamnet_handle
from benchmarks.detection_cnn import BAND_CONTEXT_FRAMES, test_soundscape
from benchmarks.detection_rankers import CACHE, FOLDS, best_recalls, load, sources
from ecosight_daemon.embedding.frontend import LOG_OFFSET, log_mel_in_blocks, pad_to_whole_patches, patches_from_frames
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder

ALPHAS = (1.0, 2.0)  # how much of the band's running median is taken out (2: over-subtraction)
GUNSHOT = 421  # AudioSet's "Gunshot, gunfire"


def denoised_frames(frames: np.ndarray, alpha: float) -> np.ndarray:
    coarse = median_filter(frames[::10], size=(BAND_CONTEXT_FRAMES // 10 + 1, 1), mode="nearest")
    level = np.repeat(coarse, 10, axis=0)[:len(frames)]
    power = np.exp(frames) - LOG_OFFSET
    left = np.maximum(power - alpha * (np.exp(level) - LOG_OFFSET), 0.0)
    return np.log(left + LOG_OFFSET).astype(np.float32)


def main(seeds: list[int]) -> None:
    embedder = OnnxEmbedder.load(yamnet_handle(), CACHE.parent / "models")
    head = embedder.audioset_head()
    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    per_fold: dict[str, list[tuple[float, float]]] = {}
    for seed in seeds:
        fold_of = {g: i % FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
        for fold in range(FOLDS):
            cached = load(CACHE / f"s{seed}_f{fold}")[0]
            rebuilt = test_soundscape([s for s in all_sources if fold_of[s.group] == fold],
                                      np.random.default_rng(seed * 100 + fold))
            if rebuilt.events != cached.events:
                raise RuntimeError(f"fold {fold}: the rebuilt test hour is not the cached one (sources changed?)")
            cnn = np.load(CACHE / f"cnn_log_odds_s{seed}_f{fold}.npy")
            frames = log_mel_in_blocks(pad_to_whole_patches(rebuilt.waveform))
            gunshot = cached.logits[:, GUNSHOT]
            scores = {"yamnet": gunshot, "yamnet + cnn (ships)": gunshot + cnn}
            for alpha in ALPHAS:
                patches = patches_from_frames(denoised_frames(frames, alpha))
                denoised = head.logits(embedder.embed_features(patches))[:, GUNSHOT]
                scores[f"denoised {alpha:g}"] = denoised
                scores[f"mean of yamnet and denoised {alpha:g}"] = (gunshot + denoised) / 2
                scores[f"denoised {alpha:g} + cnn"] = denoised + cnn
                scores[f"mean of yamnet and denoised {alpha:g} + cnn"] = (gunshot + denoised) / 2 + cnn
            for name, values in scores.items():
                per_fold.setdefault(name, []).append(best_recalls(cached.events, cached.hours, values))
            print(f"s{seed}_f{fold}", {k: f"{v[-1][0]:.2f}/{v[-1][1]:.2f}" for k, v in per_fold.items()}, flush=True)
    shipped = [r[0] for r in per_fold["yamnet + cnn (ships)"]]
    print("| ranker | best recall <= 1 FA/h (min / median / max) | mean | folds better / worse than shipped | "
          "<= 5 FA/h median |")
    print("| --- | --- | --- | --- | --- |")
    for name, rows in per_fold.items():
        at_1 = [r[0] for r in rows]
        spread = " / ".join(f"{f(at_1):.2f}" for f in (np.min, np.median, np.max))
        better = sum(a > b for a, b in zip(at_1, shipped, strict=True))
        worse = sum(a < b for a, b in zip(at_1, shipped, strict=True))
        at_5 = np.median([r[1] for r in rows])
        print(f"| {name} | {spread} | {np.mean(at_1):.3f} | {better} / {worse} | {at_5:.2f} |")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
