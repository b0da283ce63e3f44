"""Which per-patch ranker finds gun shots among field background and impulsive confusers?
An exploration for issue #32, run by hand (not part of `make bench`; about 25 minutes for two
seeds on 2 cores): `.venv/bin/python -m benchmarks.detection_rankers 42 1`.

Sources: the dev corpus (gun shots, dog barks, engines, `clips` background) and
`../shared/data/field` (29 min of background, 100 confusers: thunder, fireworks, rock falls,
wood cracks...). Every source recording (MANIFEST `group`) is dealt into 5 folds per seed. For
each fold, a 1 h test soundscape is built from that fold's sources only (its shots twice, its
dogs, engines and confusers once, 0-15 dB above the background) and every trained ranker
learns from three soundscapes of the other folds' sources, confusers labelled background.
Reported per ranker: the best gun-shot recall at <= 1 and <= 5 false alarms per hour, the
threshold chosen after the fact on the test hour (which flatters every row alike), min /
median / max over folds x seeds. YAMNet rows use no training at all.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SHARED, dev_corpus, yamnet_handle
from ecosight_daemon.artifacts.event_detector import onset_features
from ecosight_daemon.audio import decode_audio
from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS, PATCH_SECONDS
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
from ecosight_daemon.training.event_mixing import PlacedEvent, build_soundscape

FOLDS = 5
TEST_SECONDS = 3600.0
CACHE = Path(__file__).resolve().parent / "results" / "detection_rankers"
GUN_FAMILY = list(range(420, 426))  # AudioSet: explosion, gunshot, machine gun, fusillade, artillery, cap gun
# Gun family and impulsive look-alikes (fireworks, burst, boom, wood, crack, thunder, bang, knock, clapping...),
# weather, dogs and engines: the logits the compact rankers look at, with their neighbours in time.
PICKED = (list(range(420, 436)) + [280, 281, 277, 279, 283, 292, 293, 58, 352, 353, 413, 460, 461, 463, 466, 69, 70,
                                   117, 337, 338, 342, 343, 346, 0, 494, 500])


@dataclass
class Source:
    label: str  # clips (background), dog_bark, engine_idling, gun_shot, confuser
    group: str
    waveform: np.ndarray


def sources() -> list[Source]:
    out = []
    dev = dev_corpus()
    for row in csv.DictReader((dev / "MANIFEST.csv").open()):
        waveform = decode_audio((dev / row["file"]).read_bytes(), 600).waveform
        out.append(Source(row["class"], "dev:" + row["group"], waveform))
    field = SHARED / "data" / "field"
    for row in csv.DictReader((field / "MANIFEST.csv").open()):
        label = "clips" if row["kind"] == "background" else "confuser"
        waveform = decode_audio((field / row["file"]).read_bytes(), 600).waveform
        out.append(Source(label, "field:" + row["group"], waveform))
    return out


@dataclass
class Scape:
    events: list[PlacedEvent]
    hours: float
    logits: np.ndarray  # (patches, 521) YAMNet's AudioSet logits
    onsets: np.ndarray  # (patches, 4)


def soundscape(embedder: OnnxEmbedder, chosen: list[Source], seconds: float, rng: np.random.Generator,
               shots_each: int = 1) -> Scape:
    backgrounds = [s.waveform for s in chosen if s.label == "clips"]
    events = [(s.label, s.group, s.waveform) for s in chosen if s.label != "clips"
              for _ in range(shots_each if s.label == "gun_shot" else 1)]
    scape = build_soundscape(backgrounds, events, seconds, rng)
    logits = embedder.audioset_head().logits(embedder.embed(scape.waveform))
    return Scape(scape.events, scape.hours, logits.astype(np.float32), onset_features(scape.waveform))


def save(path: Path, scapes: list[Scape]) -> None:
    arrays = {f"{kind}{i}": getattr(s, kind) for i, s in enumerate(scapes) for kind in ("logits", "onsets")}
    np.savez(path.with_suffix(".npz"), **arrays)
    path.with_suffix(".json").write_text(json.dumps([{"hours": s.hours, "events": [e.as_dict() for e in s.events]}
                                                     for s in scapes]))


def load(path: Path) -> list[Scape]:
    meta = json.loads(path.with_suffix(".json").read_text())
    with np.load(path.with_suffix(".npz")) as arrays:
        return [Scape([PlacedEvent(**e) for e in m["events"]], m["hours"], arrays[f"logits{i}"], arrays[f"onsets{i}"])
                for i, m in enumerate(meta)]


def build_folds(seeds: list[int]) -> None:
    """Each fold's test hour and training soundscapes, embedded once and cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    embedder = OnnxEmbedder.load(yamnet_handle(), CACHE.parent / "models")
    all_sources = sources()
    groups = sorted({s.group for s in all_sources})
    for seed in seeds:
        fold_of = {g: i % FOLDS for i, g in enumerate(np.random.default_rng(seed).permutation(groups))}
        for fold in range(FOLDS):
            path = CACHE / f"s{seed}_f{fold}"
            if path.with_suffix(".json").exists():
                continue
            rng = np.random.default_rng(seed * 100 + fold)
            test = soundscape(embedder, [s for s in all_sources if fold_of[s.group] == fold], TEST_SECONDS, rng, 2)
            train = [s for s in all_sources if fold_of[s.group] != fold]
            train_groups = sorted({s.group for s in train})
            rng.shuffle(train_groups)
            parts = []
            for k in range(3):
                chosen = [s for s in train if s.group in set(train_groups[k::3])]
                events = sum(s.label != "clips" for s in chosen)
                parts.append(soundscape(embedder, chosen, max(60.0, 8.0 * events + 7), rng))
            save(path, [test, *parts])


def gun_labels(events: list[Any], count: int) -> np.ndarray:
    """1 where a patch holds a shot's peak, -1 where it holds part of one (left out), else 0."""
    starts = np.arange(count) * PATCH_HOP_SECONDS
    labels = np.zeros(count, np.int64)
    for e in (e for e in events if e.label == "gun_shot"):
        labels[(starts < e.end_s) & (starts + PATCH_SECONDS > e.start_s)] = -1
    for e in (e for e in events if e.label == "gun_shot"):
        labels[(starts <= e.peak_s - 0.05) & (starts + PATCH_SECONDS >= e.peak_s + 0.1)] = 1
    return labels


def shifted(x: np.ndarray, k: int) -> np.ndarray:
    if k > 0:
        return np.concatenate([np.repeat(x[:1], k, 0), x[:-k]])
    return np.concatenate([x[-k:], np.repeat(x[-1:], -k, 0)])


def context_features(logits: np.ndarray, onsets: np.ndarray) -> np.ndarray:
    picked = logits[:, PICKED]
    parts = [logits, onsets] + [p for k in (-2, -1, 1, 2) for p in (shifted(picked, k) - picked, shifted(onsets, k))]
    return np.concatenate(parts, axis=1).astype(np.float32)


def compact_features(logits: np.ndarray, onsets: np.ndarray) -> np.ndarray:
    picked = logits[:, PICKED]
    parts = [picked, onsets, logits[:, GUN_FAMILY].max(axis=1, keepdims=True)]
    parts += [p for k in (-3, -2, -1, 1, 2, 3) for p in (shifted(picked, k), shifted(onsets, k))]
    return np.concatenate(parts, axis=1).astype(np.float32)


def logistic(x: np.ndarray, y: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    mean, std = x.mean(0), x.std(0) + 1e-3
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=400).fit((x - mean) / std, y)
    return lambda z: model.decision_function((z - mean) / std)


def boosted(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    weights = np.where(y == 1, (y == 0).sum() / max(1, (y == 1).sum()), 1.0)
    model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.08, l2_regularization=1.0, random_state=0)
    model.fit(x, y, sample_weight=weights)
    return model.decision_function


def best_recalls(events: list[Any], hours: float, scores: np.ndarray) -> tuple[float, float]:
    """The best recall at <= 1 and <= 5 false alarms per hour; runs of patches above a
    threshold are events, matched to shots with a 0.5 s collar."""
    shots = np.array([[e.start_s, e.end_s] for e in events if e.label == "gun_shot"])
    best = [0.0, 0.0]
    for threshold in np.unique(np.quantile(scores, np.linspace(0.95, 1.0, 201)))[::-1]:
        above = np.concatenate([[False], scores >= threshold, [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(above))
        found, false_alarms = set(), 0
        for first, last in zip(edges[0::2], edges[1::2] - 1, strict=True):
            start, end = first * PATCH_HOP_SECONDS, last * PATCH_HOP_SECONDS + PATCH_SECONDS
            hits = np.flatnonzero((start < shots[:, 1] + 0.5) & (end > shots[:, 0] - 0.5))
            found.update(hits.tolist())
            false_alarms += not len(hits)
        for i, budget in enumerate((1.0, 5.0)):
            if false_alarms / hours <= budget:
                best[i] = max(best[i], len(found) / len(shots))
        if false_alarms / hours > 5.0:
            break
    return best[0], best[1]


def rank_fold(scapes: list[Scape]) -> dict[str, tuple[float, float]]:
    test, train = scapes[0], scapes[1:]
    scape, logits, onsets = test, test.logits, test.onsets
    labels = [gun_labels(s.events, len(s.logits)) for s in train]
    y = np.concatenate(labels)
    keep = y >= 0
    rows = {"yamnet_gunshot": best_recalls(scape.events, scape.hours, logits[:, 421]),
            "yamnet_gun_family_max": best_recalls(scape.events, scape.hours, logits[:, GUN_FAMILY].max(axis=1))}
    plain = np.concatenate([np.concatenate([s.logits, s.onsets], axis=1) for s in train])
    rows["logistic_logits_onsets_c0.001"] = best_recalls(scape.events, scape.hours, logistic(
        plain[keep], y[keep], 0.001)(np.concatenate([logits, onsets], axis=1)))
    context = np.concatenate([context_features(s.logits, s.onsets) for s in train])
    for c in (0.01, 0.1):
        rows[f"logistic_context_c{c}"] = best_recalls(scape.events, scape.hours, logistic(
            context[keep], y[keep], c)(context_features(logits, onsets)))
    compact = np.concatenate([compact_features(s.logits, s.onsets) for s in train])
    rows["boosted_compact_context"] = best_recalls(scape.events, scape.hours,
                                                   boosted(compact[keep], y[keep])(compact_features(logits, onsets)))
    return rows


def main(seeds: list[int]) -> None:
    started = time.monotonic()
    build_folds(seeds)
    results = {}
    for path in sorted(CACHE.glob("s*_f*.json")):
        results[path.stem] = rank_fold(load(path))
        print(path.stem, {k: f"{a:.2f}/{b:.2f}" for k, (a, b) in results[path.stem].items()}, flush=True)
    print(f"\n{len(results)} folds x 1 h, {time.monotonic() - started:.0f} s")
    print("| ranker | best recall <= 1 FA/h (min / median / max) | <= 5 FA/h |\n| --- | --- | --- |")
    for name in next(iter(results.values())):
        spread = [" / ".join(f"{f(v):.2f}" for f in (np.min, np.median, np.max))
                  for v in ([r[name][i] for r in results.values()] for i in (0, 1))]
        print(f"| {name} | {spread[0]} | {spread[1]} |")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main([int(a) for a in sys.argv[1:]] or [42, 1])
