"""The event detector as shipped and run: per-patch features (YAMNet's 521 AudioSet logits
and four onset features from the log-mel frames) and the fitted detector that turns them
into per-class margins and labels (a threshold on the priority class's margin, and on each
other event class's where the retrain calibrated one for the same false-alarm budget).
training/event_detector.py fits it.

The priority class's margin comes from one of four scorers, whichever the retrain's
out-of-fold figures found the better: the fitted model's; YAMNet's own "Gunshot, gunfire"
log-odds out of the box (a trained detector must beat the network it is built on before it
replaces it); that plus the shot CNN's log-odds on the patch's spectrogram; or that plus the
context trees' log-odds on YAMNet's view of the patch and the CONTEXT_PATCHES either side
(artifacts/context_trees.py), which a stream can score only once those later patches arrived."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import median_filter, uniform_filter1d

from ecosight_daemon.artifacts.context_trees import NEIGHBOURS, ContextTrees, context_features
from ecosight_daemon.artifacts.linear_head import LogisticFit
from ecosight_daemon.artifacts.shot_spectrogram import ShotSpectrogramModel
from ecosight_daemon.embedding.frontend import (
    PATCH_FRAMES,
    PATCH_HOP_FRAMES,
    log_mel_in_blocks,
    pad_to_whole_patches,
)
from ecosight_daemon.pooling import AudiosetHead

ONSET_FEATURES = 4
ONSET_CONTEXT_S = 15.0  # the background level is the median over about twice this
YAMNET_GUNSHOT = 421  # AudioSet's "Gunshot, gunfire": its column among the 521 logits
TRAINED_SCORER = "trained"
YAMNET_SCORER = "yamnet_gunshot"
YAMNET_PLUS_CNN_SCORER = "yamnet_gunshot_plus_cnn"
YAMNET_PLUS_CNN_PLUS_TREES_SCORER = "yamnet_gunshot_plus_cnn_plus_context_trees"
SCORERS = (TRAINED_SCORER, YAMNET_SCORER, YAMNET_PLUS_CNN_SCORER, YAMNET_PLUS_CNN_PLUS_TREES_SCORER)
CNN_PREFIX = "cnn_"  # the CNN's arrays in the detector's file
TREES_PREFIX = "trees_"
CONTEXT_PATCHES = max(NEIGHBOURS)  # how many later patches the context trees read


def onset_features(waveform: np.ndarray) -> np.ndarray:
    """(patches, 4) float32 for a 16 kHz waveform, one row per patch as the front end cuts them."""
    return onset_features_from_frames(log_mel_in_blocks(pad_to_whole_patches(waveform)))


def onset_features_from_frames(frames: np.ndarray) -> np.ndarray:
    """(patches, 4) float32 from the log-mel frames of a waveform padded to whole patches."""
    decibels = frames * np.float32(20 / np.log(10))
    energy = 10 * np.log10(np.mean(np.exp(2 * frames.astype(np.float64)), axis=1) + 1e-10)
    coarse = median_filter(energy[::10], size=int(2 * ONSET_CONTEXT_S * 10) + 1, mode="nearest")
    contrast = energy - np.repeat(coarse, 10)[:len(energy)]
    earlier = uniform_filter1d(energy, 5, origin=2, mode="nearest")
    rise = energy - np.concatenate([energy[:3], earlier[:-3]])
    broadband = np.concatenate([np.zeros(3), np.mean(decibels[3:] - decibels[:-3] > 6, axis=1)])
    def per_patch(values: np.ndarray) -> np.ndarray:  # (patches, PATCH_FRAMES): each patch's frames
        return sliding_window_view(values, PATCH_FRAMES)[::PATCH_HOP_FRAMES]

    spans = per_patch(contrast)
    return np.stack([spans.max(axis=1), per_patch(rise).max(axis=1), per_patch(broadband).max(axis=1),
                     np.percentile(spans, 90, axis=1)], axis=1).astype(np.float32)


def patch_features(patches: np.ndarray, onsets: np.ndarray, head: AudiosetHead) -> np.ndarray:
    return np.concatenate([head.logits(np.asarray(patches, np.float32)), onsets], axis=1).astype(np.float32)


def patch_context(features: np.ndarray) -> np.ndarray:
    """The context trees' features for a run of consecutive patches' patch_features (the run's
    first and last patches stand in beyond its ends)."""
    return context_features(features[:, :-ONSET_FEATURES], features[:, -ONSET_FEATURES:])


@dataclass
class EventDetector:
    fit: LogisticFit
    classes: list[str]
    background: str
    priority_class: str
    threshold: float  # on the priority class's margin
    figures: dict[str, Any]
    priority_scorer: str = TRAINED_SCORER  # one of SCORERS: where the priority class's margin comes from
    cnn: ShotSpectrogramModel | None = None  # with YAMNET_PLUS_CNN_SCORER and YAMNET_PLUS_CNN_PLUS_TREES_SCORER
    trees: ContextTrees | None = None  # with YAMNET_PLUS_CNN_PLUS_TREES_SCORER
    class_thresholds: np.ndarray | None = None  # per class, on the other event classes' margins; None: all 0

    @property
    def reads_spectrograms(self) -> bool:
        """Whether margins() needs each patch's CNN input (shot_spectrogram.spectrogram_inputs)."""
        return self.priority_scorer in (YAMNET_PLUS_CNN_SCORER, YAMNET_PLUS_CNN_PLUS_TREES_SCORER)

    @property
    def reads_context(self) -> bool:
        """Whether a patch's margins depend on the CONTEXT_PATCHES patches either side."""
        return self.priority_scorer == YAMNET_PLUS_CNN_PLUS_TREES_SCORER

    def margins(self, features: np.ndarray, spectrograms: np.ndarray | None = None,
                context: np.ndarray | None = None) -> np.ndarray:
        """(patches, classes): log p(class) - log p(any other), which does not saturate like p.
        `spectrograms`: (patches, 48, 32), needed when reads_spectrograms. `context`: the
        patches' patch_context where `features` is not a whole recording (a stream's chunk)."""
        logits = ((features - self.fit.mean) / self.fit.std) @ self.fit.kernel + self.fit.bias
        out = np.empty_like(logits)
        for c in range(logits.shape[1]):
            others = np.delete(logits, c, axis=1)
            top = others.max(axis=1, keepdims=True)
            out[:, c] = logits[:, c] - (top[:, 0] + np.log(np.exp(others - top).sum(axis=1)))
        if self.priority_scorer != TRAINED_SCORER and self.priority_class in self.classes:
            out[:, self.classes.index(self.priority_class)] = features[:, YAMNET_GUNSHOT] + self._cnn_log_odds(
                spectrograms, len(features)) + self._trees_log_odds(features, context)
        return np.asarray(out, dtype=np.float32)

    def _trees_log_odds(self, features: np.ndarray, context: np.ndarray | None) -> np.ndarray | float:
        if not self.reads_context:
            return 0.0
        if self.trees is None:
            raise ValueError("this detector's gun-shot scorer reads context trees it does not hold")
        return self.trees.log_odds(patch_context(features) if context is None else context)

    def _cnn_log_odds(self, spectrograms: np.ndarray | None, count: int) -> np.ndarray | float:
        if not self.reads_spectrograms:
            return 0.0
        if self.cnn is None or spectrograms is None or len(spectrograms) != count:
            raise ValueError("this detector's gun-shot scorer reads each patch's spectrogram; none was given")
        return self.cnn.log_odds(spectrograms)

    def warm_up(self) -> None:
        """Build the ONNX sessions its scorer runs on, before the first patches need them."""
        if self.reads_spectrograms and self.cnn is not None:
            self.cnn.warm_up()
        if self.reads_context and self.trees is not None:
            self.trees.warm_up()

    @property
    def calibrated_class(self) -> int | None:
        """The index of the class whose threshold was calibrated for the false-alarm budget (the
        priority class); None without one."""
        return self.classes.index(self.priority_class) if self.priority_class in self.classes else None

    def base_thresholds(self) -> np.ndarray:
        """Per class, the margin it must clear to be reported: the calibrated threshold for the
        priority class, the other event classes' own (0, beating every other class, in a
        version trained before they had one); never for the background."""
        base = self.label_thresholds().astype(np.float64)
        if self.priority_class in self.classes:
            base[self.classes.index(self.priority_class)] = self.threshold
        if self.background in self.classes:
            base[self.classes.index(self.background)] = np.inf
        return base

    def label_thresholds(self) -> np.ndarray:
        """(classes,) float32: what each class's margin must exceed to win the plain label rule
        (the other event classes' calibrated thresholds; 0 for the priority class and the background)."""
        if self.class_thresholds is None:
            return np.zeros(len(self.classes), np.float32)
        return np.asarray(self.class_thresholds, np.float32)

    def labels(self, margins: np.ndarray) -> np.ndarray:
        """The winning class per patch: the largest margin above its class's threshold, else the
        background; the priority class wins wherever it clears its own threshold."""
        over = margins - self.label_thresholds()
        labels = np.where(over.max(axis=1) > 0, over.argmax(axis=1), self.classes.index(self.background))
        if self.priority_class in self.classes:
            priority = self.classes.index(self.priority_class)
            labels = np.where(margins[:, priority] >= self.threshold, priority,
                              np.where(labels == priority, self.classes.index(self.background), labels))
        return labels.astype(np.int64)

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            arrays: dict[str, Any] = {
                "mean": self.fit.mean, "std": self.fit.std, "kernel": self.fit.kernel, "bias": self.fit.bias,
                "classes": np.array(self.classes), "background": self.background, "priority": self.priority_class,
                "threshold": self.threshold, "priority_scorer": self.priority_scorer}
            if self.cnn is not None:
                arrays |= {CNN_PREFIX + name: value for name, value in self.cnn.arrays().items()}
            if self.trees is not None:
                arrays |= {TREES_PREFIX + name: value for name, value in self.trees.arrays().items()}
            if self.class_thresholds is not None:
                arrays["class_thresholds"] = np.asarray(self.class_thresholds, np.float32)
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: Path) -> EventDetector:
        with np.load(path) as a:
            scorer = str(a["priority_scorer"]) if "priority_scorer" in a.files else TRAINED_SCORER
            if scorer not in SCORERS:
                raise ValueError(f"{path}: unknown priority scorer {scorer!r}")
            cnn_arrays = {k[len(CNN_PREFIX):]: a[k] for k in a.files if k.startswith(CNN_PREFIX)}
            cnn = ShotSpectrogramModel.from_arrays(cnn_arrays) if cnn_arrays else None
            trees_arrays = {k[len(TREES_PREFIX):]: a[k] for k in a.files if k.startswith(TREES_PREFIX)}
            trees = ContextTrees.from_arrays(trees_arrays) if trees_arrays else None
            if scorer in (YAMNET_PLUS_CNN_SCORER, YAMNET_PLUS_CNN_PLUS_TREES_SCORER) and cnn is None:
                raise ValueError(f"{path}: its gun-shot scorer needs a CNN the file does not hold")
            if scorer == YAMNET_PLUS_CNN_PLUS_TREES_SCORER and trees is None:
                raise ValueError(f"{path}: its gun-shot scorer needs context trees the file does not hold")
            class_thresholds = a["class_thresholds"] if "class_thresholds" in a.files else None
            return cls(LogisticFit(a["mean"], a["std"], a["kernel"], a["bias"]), [str(c) for c in a["classes"]],
                       str(a["background"]), str(a["priority"]), float(a["threshold"]), {}, scorer, cnn, trees,
                       class_thresholds)
