"""Where does a retrain's gun-shot threshold land, and how much should the shot CNN count beside
YAMNet's score? Issue #32's exploration of the default point, run by hand (not in `make bench`):

    python -m benchmarks.detection_calibration record SEED...   # ~6 min a fold: a retrain with the CNN
    python -m benchmarks.detection_calibration report [SEED...]  # a few minutes, from what `record` cached

`record` takes the folds and 1 h test hours of `benchmarks/detection.py` (same sources, seeds
and draws), runs `train_event_detector` on each fold's training sources as a retrain does, and
caches in results/detection_calibration/ every scorer's out-of-fold parts (what the retrain
calibrates and chooses on) and the test hour's scores for the same scorers. `report` judges, on
those test hours:

- the CNN's weight: YAMNet's logit plus w times the CNN's log-odds (WEIGHTS), shipped by the
  retrain's rule with the CNN compared at weight 1 or at w, or always; best recall at <= 1 false
  alarm per hour after the fact, and recall and false alarms at the calibrated threshold;
- calibrations of the scorer the retrain shipped: the fitted tail of non-shot patches (until
  653b455), the same tail over alarm peaks only (a patch counted only where it is the highest
  within ALARM_GAP_PATCHES, one per alarm, since an alarm lifts 2-3 patches: shipped), its
  line through levels crossed fixed rates an hour instead of shares of the alarms, and counted
  on the parts (what the issue rules out: "above the loudest");
- the fitted tail's bias and noise: its threshold over NOISE_DRAWS synthetic backgrounds of
  the parts' size (0.6 h) and larger, each loud moment lifting 3 patches as real ones do,
  against the level they truly cross once an hour;
- a site's unlabeled hours with real shots in them (SITE_SHOTS in SITE_HOURS of the same
  synthetic background): how far the shots lift the tail, counted per patch or per alarm.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

import benchmarks.detection as bench
from benchmarks.common import yamnet_handle
from ecosight_daemon.artifacts.event_detector import (
    TRAINED_SCORER,
    YAMNET_GUNSHOT,
    YAMNET_PLUS_CNN_SCORER,
    YAMNET_SCORER,
    patch_features,
)
from ecosight_daemon.artifacts.score_tail import (
    BIN_WIDTH,
    BINS,
    alarm_peaks,
    tail_threshold,
    upper_quantile,
    weighted_histogram,
)
from ecosight_daemon.artifacts.shot_spectrogram import spectrogram_inputs
from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS, PATCH_SECONDS
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
from ecosight_daemon.training import event_detector as training
from ecosight_daemon.training import operating_point as calibration
from ecosight_daemon.training.detector_training import cnn_fitter, is_confuser
from ecosight_daemon.training.event_detector import LabeledAudio
from ecosight_daemon.training.event_mixing import PlacedEvent
from ecosight_daemon.training.operating_point import COLLAR_S, PartScores

CACHE = Path(__file__).resolve().parent / "results" / "detection_calibration"
SCORERS = (TRAINED_SCORER, YAMNET_SCORER, YAMNET_PLUS_CNN_SCORER)  # the order train_event_detector calibrates them
WEIGHTS = (1.0, 1.5, 2.0)
NOISE_DRAWS = 30
NOISE_HOURS = (0.6, 2.0, 10.0)  # 0.6: what a retrain's parts hold on dev + field
SHOULDER = 0.3
BUDGET = 1.0


def record(seeds: list[int]) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    embedder = OnnxEmbedder.load(yamnet_handle(), CACHE.parent / "models")
    benchmark = bench.Bench(bench.load_clips(embedder), embedder, embedder.audioset_head())
    groups = sorted({c.group for c in benchmark.clips})
    calibrated: list[list[PartScores]] = []
    original = training.operating_point

    def recording(parts: list[PartScores], *args, **kwargs):  # type: ignore[no-untyped-def]
        calibrated.append(parts)
        return original(parts, *args, **kwargs)

    training.operating_point = recording  # type: ignore[assignment]
    for seed in seeds:
        fold_of = {g: i % bench.FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
        for fold in range(bench.FOLDS):
            path = CACHE / f"s{seed}_f{fold}"
            if path.with_suffix(".json").exists():
                continue
            rng = np.random.default_rng(seed * 100 + fold)  # the test hour benchmarks/detection.py builds
            test_clips = [c for c in benchmark.clips if fold_of[c.group] == fold]
            scape, patches, onsets = benchmark.soundscape(test_clips, bench.TEST_SECONDS, rng, shots_each=2)
            clips = [LabeledAudio(c.training_label, c.group, c.waveform,
                                  c.training_label == "clips" and is_confuser(c.waveform))
                     for c in benchmark.clips if fold_of[c.group] != fold]
            calibrated.clear()
            detector = training.train_event_detector(
                clips, embedder.embed, benchmark.head, bench.CLASSES, "clips", "gun_shot", BUDGET,
                seed=seed * 100 + fold, fit_cnn=cnn_fitter(bench.SHOT_CNN_EPOCHS), keep_cnn=True)
            features, spectrograms = patch_features(patches, onsets, benchmark.head), spectrogram_inputs(scape.waveform)
            arrays = {f"test_{YAMNET_SCORER}": features[:, YAMNET_GUNSHOT]}
            for scorer in (TRAINED_SCORER, YAMNET_PLUS_CNN_SCORER):
                detector.priority_scorer = scorer
                arrays[f"test_{scorer}"] = detector.margins(features, spectrograms)[:, bench.GUN]
            meta = {"hours": scape.hours, "events": [e.as_dict() for e in scape.events],
                    "shipped": detector.figures["priority_scorer"], "out_of_fold": {}}
            for scorer, parts in zip(SCORERS, calibrated, strict=True):
                meta["out_of_fold"][scorer] = [{"hours": p.hours, "confuser_weight": p.confuser_weight,
                                                "events": [e.as_dict() for e in p.events]} for p in parts]
                arrays |= {f"oof_{scorer}_{k}": p.scores for k, p in enumerate(parts)}
            np.savez_compressed(path.with_suffix(".npz"), **arrays)
            path.with_suffix(".json").write_text(json.dumps(meta))
            print(f"s{seed}_f{fold}: shipped {meta['shipped']}", flush=True)


class Fold:
    def __init__(self, path: Path) -> None:
        meta = json.loads(path.read_text())
        arrays = np.load(path.with_suffix(".npz"))
        self.name, self.hours, self.shipped = path.stem, float(meta["hours"]), str(meta["shipped"])
        self.events = [PlacedEvent(**e) for e in meta["events"]]
        self.test = {scorer: arrays[f"test_{scorer}"].astype(np.float64) for scorer in SCORERS}
        self.parts = {scorer: [PartScores([PlacedEvent(**e) for e in part["events"]], part["hours"],
                                          arrays[f"oof_{scorer}_{k}"].astype(np.float64), part["confuser_weight"])
                               for k, part in enumerate(parts)]
                      for scorer, parts in meta["out_of_fold"].items()}

    def cnn_parts(self, weight: float) -> list[PartScores]:
        """The out-of-fold parts scored by YAMNet's logit + weight x the CNN's log-odds."""
        return [PartScores(y.events, y.hours, y.scores + weight * (c.scores - y.scores), y.confuser_weight)
                for y, c in zip(self.parts[YAMNET_SCORER], self.parts[YAMNET_PLUS_CNN_SCORER], strict=True)]

    def cnn_test(self, weight: float) -> np.ndarray:
        yamnet = self.test[YAMNET_SCORER]
        return yamnet + weight * (self.test[YAMNET_PLUS_CNN_SCORER] - yamnet)

    def judged(self, scores: np.ndarray, threshold: float) -> tuple[float, float, int]:
        """(best recall <= 1 FA/h after the fact, recall at the threshold, false alarms there)."""
        scored = bench.Scored(self.events, self.hours, scores, PATCH_SECONDS, threshold)
        found, false_alarms = bench.match(scored, threshold)
        shots = sum(e.label == "gun_shot" for e in self.events)
        return bench.best_recall_within(scored, BUDGET), len(found) / shots, false_alarms


def fitted_tail(parts: list[PartScores], peaks: bool, rates: tuple[float, float] | None = None) -> float:
    """training/event_detector.py's tail (non-shot patches, confusers at their weight), over
    alarm peaks only if `peaks`; its line through their top 2% to 0.2% (shipped) or, if `rates`
    (from, to), through the levels crossed that often an hour."""
    histogram = np.zeros(BINS)
    for part in parts:
        starts = np.arange(len(part.scores)) * PATCH_HOP_SECONDS
        weights = np.ones(len(part.scores))
        for event in part.events:
            near = (starts < event.end_s + COLLAR_S) & (starts + PATCH_SECONDS > event.start_s - COLLAR_S)
            if event.label == "gun_shot":
                weights[near] = 0.0
            elif event.label == "clips":
                weights[near] = np.minimum(weights[near], part.confuser_weight)
        histogram += weighted_histogram(part.scores, weights * alarm_peaks(part.scores) if peaks else weights)
    hours = sum(p.hours for p in parts)
    return tail_threshold(histogram, hours, BUDGET) if rates is None else tail_in_rates(histogram, hours, *rates)


def tail_in_rates(counts: np.ndarray, hours: float, first: float, last: float) -> float:
    """The fitted tail with its points at the levels crossed `first` down to `last` times an hour
    (150 to 15: 2% to 0.2% of patches), whatever share of the counted that is."""
    total = counts.sum()
    rates = np.geomspace(first, last, 5)
    levels = np.array([upper_quantile(counts, min(1.0, rate * hours / total)) for rate in rates])
    slope = max(BIN_WIDTH / 4, float(np.polyfit(-np.log(rates), levels, 1)[0]))
    return float(levels[0] + slope * (np.log(first) - np.log(BUDGET)))


def counted_on_parts(parts: list[PartScores]) -> float:
    """The lowest threshold at which the parts' own (weighted) false alarms stay within the budget."""
    hours = sum(p.hours for p in parts)
    for threshold in np.unique(np.concatenate([np.quantile(p.scores, np.linspace(0.9, 1.0, 401)) for p in parts])):
        false_alarms = sum(calibration.weighted_false_alarms(p, float(threshold), "gun_shot", "clips") for p in parts)
        if false_alarms / hours <= BUDGET:
            return float(threshold)
    return float(max(p.scores.max() for p in parts)) + 1e-3


CALIBRATIONS: dict[str, Callable[[list[PartScores]], float]] = {
    "tail of patches, 2% to 0.2% (until 653b455)": lambda parts: fitted_tail(parts, peaks=False),
    "tail of alarm peaks, 2% to 0.2% (shipped)": lambda parts: fitted_tail(parts, peaks=True),
    "tail of alarm peaks, 150 to 15 an hour": lambda parts: fitted_tail(parts, True, (150.0, 15.0)),
    "tail of alarm peaks, 50 to 5 an hour": lambda parts: fitted_tail(parts, True, (50.0, 5.0)),
    "tail of alarm peaks, 30 to 3 an hour": lambda parts: fitted_tail(parts, True, (30.0, 3.0)),
    "tail of alarm peaks, 15 to 3 an hour": lambda parts: fitted_tail(parts, True, (15.0, 3.0)),
    "counted on the parts (above the loudest)": counted_on_parts,
}
NOISE_ROWS = 6  # the calibrations above judged on synthetic background too
SITE_HOURS = 3.0
SITE_SHOTS = (0, 2, 4, 8)


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {np.median(values):.2f} / {max(values):.2f}"


def report_weights(folds: list[Fold]) -> None:
    print("| the CNN's weight; the retrain's choice | CNN shipped | best recall <= 1 FA/h | recall at the "
          "calibrated point | false alarms there (all hours) |\n| --- | --- | --- | --- | --- |")
    for weight in WEIGHTS:
        for compared in sorted({1.0, weight}) + [None]:
            best, recall, false_alarms, shipped_cnn = [], [], 0, 0
            for fold in folds:
                scorer = YAMNET_PLUS_CNN_SCORER
                if compared is not None:
                    parts = {**fold.parts, YAMNET_PLUS_CNN_SCORER: fold.cnn_parts(compared)}
                    points = {s: {"out_of_fold_ranking_recall":
                                  calibration.ranking_recall(p, BUDGET, "gun_shot", "clips")} for s, p in parts.items()}
                    scorer = training.choose_priority_scorer(points, "gun_shot")[0]
                shipped_cnn += scorer == YAMNET_PLUS_CNN_SCORER
                parts_of = fold.cnn_parts(weight) if scorer == YAMNET_PLUS_CNN_SCORER else fold.parts[scorer]
                scores = fold.cnn_test(weight) if scorer == YAMNET_PLUS_CNN_SCORER else fold.test[scorer]
                threshold = calibration.calibrated_threshold(parts_of, BUDGET, "gun_shot", "clips")[0]
                b, r, f = fold.judged(scores, threshold)
                best.append(b)
                recall.append(r)
                false_alarms += f
            rule = "CNN always" if compared is None else f"compared at weight {compared:g}"
            print(f"| {weight:g}; {rule} | {shipped_cnn} of {len(folds)} | {spread(best)} | {spread(recall)} | "
                  f"{false_alarms} in {sum(f.hours for f in folds):.0f} h |")
    yamnet = [fold.judged(fold.test[YAMNET_SCORER], np.inf)[0] for fold in folds]
    print(f"| YAMNet out of the box | | {spread(yamnet)} | | |")


def report_calibrations(folds: list[Fold]) -> None:
    print("\n| calibration of the shipped scorer | recall at the calibrated point | false alarms per fold |\n"
          "| --- | --- | --- |")
    for name, calibrate in CALIBRATIONS.items():
        recall, false_alarms = [], []
        for fold in folds:
            _, r, f = fold.judged(fold.test[fold.shipped], calibrate(fold.parts[fold.shipped]))
            recall.append(r)
            false_alarms.append(f)
        print(f"| {name} | {spread(recall)} | {' '.join(map(str, false_alarms))} ({sum(false_alarms)}) |")
    best = [fold.judged(fold.test[fold.shipped], np.inf)[0] for fold in folds]
    print(f"| the best threshold after the fact (<= 1 FA/h) | {spread(best)} | |")


def report_noise() -> None:
    """Each fit's threshold over synthetic backgrounds (exponential tails; every loud moment
    lifting its patch and, SHOULDER log-odds less, the two beside it, as overlapping patches
    do) against the level they truly cross once an hour: its bias and its spread, by hours."""
    truth = -8.0 + np.log(3600 / PATCH_HOP_SECONDS)
    print("\n| fitted on | hours | threshold minus the true level (mean) | standard deviation |\n"
          "| --- | --- | --- | --- |")
    for name, calibrate in list(CALIBRATIONS.items())[:NOISE_ROWS]:
        for hours in NOISE_HOURS:
            errors = []
            for draw in range(NOISE_DRAWS):
                loud = np.random.default_rng(draw).gumbel(-8.0, 1.0, round(hours * 3600 / PATCH_HOP_SECONDS) + 2)
                scores = np.maximum.reduce([loud[:-2] - SHOULDER, loud[1:-1], loud[2:] - SHOULDER])
                errors.append(calibrate([PartScores([], hours, scores)]) - truth)
            print(f"| {name} | {hours:g} | {np.mean(errors):+.2f} | {np.std(errors):.2f} |")


def report_site_shots() -> None:
    """A site's fitted tail (budget 1 an hour) over SITE_HOURS of synthetic background holding
    SITE_SHOTS shots (2.7, 3.0, 2.7 over three patches), minus the level the background alone
    truly crosses once an hour."""
    truth = -8.0 + np.log(3600 / PATCH_HOP_SECONDS)
    print(f"\n| counted in {SITE_HOURS:g} h of a site | " + " | ".join(f"{n} shots" for n in SITE_SHOTS)
          + " |\n| --- |" + " --- |" * len(SITE_SHOTS))
    for name, peaks in (("every patch (until this stop)", False), ("alarm peaks (shipped)", True)):
        cells = []
        for shots in SITE_SHOTS:
            errors = []
            for draw in range(NOISE_DRAWS):
                loud = np.random.default_rng(draw).gumbel(-8.0, 1.0, round(SITE_HOURS * 3600 / PATCH_HOP_SECONDS) + 2)
                scores = np.maximum.reduce([loud[:-2] - SHOULDER, loud[1:-1], loud[2:] - SHOULDER])
                for at in (np.arange(shots) + 1) * (len(scores) // (shots + 1)):
                    scores[at - 1:at + 2] = (2.7, 3.0, 2.7)
                weights = alarm_peaks(scores).astype(np.float64) if peaks else np.ones(len(scores))
                errors.append(tail_threshold(weighted_histogram(scores, weights), SITE_HOURS, BUDGET) - truth)
            cells.append(f"{np.mean(errors):+.2f} / {np.std(errors):.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"(mean / standard deviation over {NOISE_DRAWS} draws; the shots score {3.0 - truth:+.2f} above the truth)")


def report(seeds: list[str]) -> None:
    folds = [Fold(path) for path in sorted(CACHE.glob("s*_f*.json"))
             if not seeds or path.stem.split("_")[0][1:] in seeds]
    if not folds:
        raise SystemExit("nothing recorded: run `python -m benchmarks.detection_calibration record SEED...` first")
    print(f"{len(folds)} folds x 1 h: {', '.join(f.name for f in folds)}")
    report_weights(folds)
    report_calibrations(folds)
    report_noise()
    report_site_shots()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(sys.argv) > 1 and sys.argv[1] == "record":
        record([int(a) for a in sys.argv[2:]])
    elif len(sys.argv) > 1 and sys.argv[1] == "report":
        report(sys.argv[2:])
    else:
        raise SystemExit(__doc__)
