"""Field-like soundscapes with known event times, built from labeled clips.

A soundscape is background audio (clips of one or two recordings of outdoor sound, laid
end to end at random offsets and gains) with event clips (gun shots, dog barks, engines)
mixed in at random times and signal-to-noise ratios, some low-passed like a distant shot.
Each event clip is cut to its loudest stretch so the truth times mean what a listener
would mark. A retrain trains the event detector on soundscapes of its training split; the
detection tests and `benchmarks/detection.py` build theirs from recordings a model never
heard (which clips and backgrounds may appear is always the caller's choice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.signal import butter, sosfilt

from ecosight_daemon.audio import TARGET_SAMPLE_RATE as RATE

EVENT_SECONDS = {"gun_shot": 2.5, "dog_bark": 2.0, "engine_idling": 4.0}
LEAD_SECONDS = 0.5  # kept before an event's loudest 50 ms
SNR_DB = (0.0, 15.0)
LOWPASS_SHARE = 0.3  # of gun shots, low-passed at 1-3 kHz like a shot far away
CROSSFADE = int(0.05 * RATE)


@dataclass(frozen=True)
class PlacedEvent:
    label: str
    start_s: float
    end_s: float
    peak_s: float
    snr_db: float
    lowpassed: bool
    source: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Soundscape:
    waveform: np.ndarray  # 16 kHz mono float32
    events: list[PlacedEvent]

    @property
    def hours(self) -> float:
        return len(self.waveform) / RATE / 3600


def loudest_stretch(waveform: np.ndarray, seconds: float) -> tuple[np.ndarray, float]:
    """The `seconds` around a clip's loudest 50 ms (LEAD_SECONDS before it) and where in
    that stretch the peak falls."""
    frame = int(0.05 * RATE)
    energy = np.convolve(waveform.astype(np.float64) ** 2, np.ones(frame), mode="same")
    peak = int(np.argmax(energy))
    start = max(0, min(peak - int(LEAD_SECONDS * RATE), len(waveform) - int(seconds * RATE)))
    piece = waveform[start:start + int(seconds * RATE)]
    return piece.astype(np.float32), (peak - start) / RATE


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def active_rms(x: np.ndarray) -> float:
    """RMS of the loudest quarter of 50 ms frames: an impulse's level, not its silences."""
    frame = int(0.05 * RATE)
    n = max(1, len(x) // frame)
    frames = np.square(x[:n * frame].astype(np.float64)).reshape(n, -1).mean(axis=1) if len(x) >= frame \
        else np.array([np.mean(np.square(x, dtype=np.float64))])
    top = np.sort(frames)[-max(1, n // 4):]
    return float(np.sqrt(top.mean() + 1e-12))


def lowpass(x: np.ndarray, cutoff_hz: float) -> np.ndarray:
    sos = butter(4, cutoff_hz, btype="low", fs=RATE, output="sos")
    return np.asarray(sosfilt(sos, x), dtype=np.float32)


def background_bed(backgrounds: list[np.ndarray], seconds: float, rng: np.random.Generator) -> np.ndarray:
    """`seconds` of background: random stretches of random recordings end to end with short
    cross-fades, each at a random gain, a quarter of them with a second recording beneath."""
    total = int(seconds * RATE)
    out = np.zeros(total + CROSSFADE, dtype=np.float32)
    fade_in = np.linspace(0, 1, CROSSFADE, dtype=np.float32)
    at = 0
    while at < total:
        piece = _stretch(backgrounds, rng, int(rng.uniform(3, 12) * RATE))
        if rng.random() < 0.25:
            under = _stretch(backgrounds, rng, len(piece))
            piece = piece + under[:len(piece)] * np.float32(10 ** (rng.uniform(-20, -6) / 20))
        peak = float(np.max(np.abs(piece))) + 1e-9
        piece = piece * np.float32(min(10 ** (rng.uniform(-10, 6) / 20), 0.5 / peak))  # never clipped
        piece[:CROSSFADE] *= fade_in[:len(piece[:CROSSFADE])]
        piece[-CROSSFADE:] *= fade_in[::-1][:len(piece[-CROSSFADE:])]
        end = min(len(out), at + len(piece))
        out[at:end] += piece[:end - at]
        at = end - CROSSFADE
    return out[:total]


def _stretch(backgrounds: list[np.ndarray], rng: np.random.Generator, samples: int) -> np.ndarray:
    source = backgrounds[int(rng.integers(len(backgrounds)))]
    if len(source) >= samples:
        start = int(rng.integers(0, len(source) - samples + 1))
        return np.array(source[start:start + samples], dtype=np.float32)
    return np.asarray(np.resize(source, samples), dtype=np.float32)


def build_soundscape(backgrounds: list[np.ndarray], events: list[tuple[str, str, np.ndarray]], seconds: float,
                     rng: np.random.Generator, min_gap_s: float = 6.0,
                     snr_db: tuple[float, float] = SNR_DB, lowpass_share: float = LOWPASS_SHARE,
                     vary: Callable[[np.ndarray], np.ndarray] | None = None) -> Soundscape:
    """A soundscape of `seconds` with `events` ((label, source, waveform)) at random times,
    at least `min_gap_s` apart, in random order; each event's waveform passed through `vary`
    first where given (one copy at a time: copies are not all held at once)."""
    bed = background_bed(backgrounds, seconds, rng)
    order = rng.permutation(len(events))
    slots = _event_starts(len(events), seconds, min_gap_s, rng)
    placed: list[PlacedEvent] = []
    for slot, index in zip(slots, order, strict=True):
        label, source, clip = events[index]
        if vary is not None:
            clip = vary(clip)
        piece, peak_in_piece = loudest_stretch(clip, EVENT_SECONDS.get(label, 2.5))
        lowpassed = label == "gun_shot" and rng.random() < lowpass_share
        if lowpassed:
            piece = lowpass(piece, rng.uniform(1000, 3000))
        start = int(slot * RATE)
        end = min(len(bed), start + len(piece))
        piece = piece[:end - start]
        snr = float(rng.uniform(*snr_db))
        gain = rms(bed[start:end]) * 10 ** (snr / 20) / active_rms(piece)
        bed[start:end] += piece * np.float32(gain)
        placed.append(PlacedEvent(label, start / RATE, end / RATE, start / RATE + peak_in_piece, snr, lowpassed,
                                  source))
    np.clip(bed, -1.0, 1.0, out=bed)
    return Soundscape(bed, sorted(placed, key=lambda e: e.start_s))


def _event_starts(count: int, seconds: float, min_gap_s: float, rng: np.random.Generator) -> np.ndarray:
    """`count` start times in [1, seconds - 6], at least min_gap_s apart (evenly spread slots, jittered)."""
    if count == 0:
        return np.zeros(0)
    usable = seconds - 7.0
    slot = usable / count
    if slot < min_gap_s:
        raise ValueError(f"{count} events do not fit {seconds:g} s at {min_gap_s:g} s apart")
    return 1.0 + np.arange(count) * slot + rng.uniform(0, slot - min_gap_s + 1e-9, size=count)
