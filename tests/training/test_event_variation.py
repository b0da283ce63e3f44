"""Copies of events heard from afar: what they change, and that a soundscape built with them
places its events where it would without them (so the CNN's arms differ only in the sounds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecosight_daemon.audio import TARGET_SAMPLE_RATE as RATE
from ecosight_daemon.audio import decode_audio
from ecosight_daemon.training.event_mixing import build_soundscape
from ecosight_daemon.training.event_variation import DECAY_S, SPEED, from_afar, lowpassed, played_at, with_tail


def a_gun_shot(dev_corpus: Path) -> np.ndarray:
    path = sorted((dev_corpus / "gun_shot").glob("*.wav"))[0]
    return decode_audio(path.read_bytes(), 60).waveform


def centroid_hz(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    return float(np.sum(np.fft.rfftfreq(len(x), 1 / RATE) * power) / np.sum(power))


def test_a_shot_from_afar_loses_its_highs_and_rings_on_at_the_same_peak_level(dev_corpus: Path) -> None:
    shot = a_gun_shot(dev_corpus)
    rng = np.random.default_rng(0)
    copies = [from_afar(shot, rng) for _ in range(6)]
    for copy in copies:
        assert copy.dtype == np.float32 and np.all(np.isfinite(copy))
        assert abs(np.max(np.abs(copy)) - np.max(np.abs(shot))) < 1e-5
        # played 0.9-1.1 times as fast, a tail of up to 2 s added
        assert len(shot) / SPEED[1] + DECAY_S[0] * RATE - 2 <= len(copy) <= len(shot) / SPEED[0] + DECAY_S[1] * RATE + 2
        assert centroid_hz(copy) < min(1500.0, centroid_hz(shot))  # low-passed at 300-1500 Hz
    assert len({round(centroid_hz(c)) for c in copies}) == len(copies)  # each far in its own way


def test_playing_faster_raises_the_pitch_and_shortens_the_sound(dev_corpus: Path) -> None:
    shot = a_gun_shot(dev_corpus)
    faster, slower = played_at(shot, 1.2), played_at(shot, 0.85)
    assert len(faster) < len(shot) < len(slower)
    assert centroid_hz(faster) > centroid_hz(shot) * 1.1
    assert centroid_hz(slower) < centroid_hz(shot) * 0.95


def test_a_tail_rings_on_after_the_sound_and_dies_away() -> None:
    click = np.zeros(RATE // 10, np.float32)
    click[10] = 1.0
    ringing = with_tail(click, 0.5, -6.0, np.random.default_rng(1))
    assert len(ringing) == len(click) + int(0.5 * RATE) - 1
    after = ringing[len(click):]
    early, late = np.sqrt(np.mean(after[:RATE // 10] ** 2)), np.sqrt(np.mean(after[-RATE // 10:] ** 2))
    assert early > 0 and late < early / 10  # 60 dB over 0.5 s: the last 0.1 s far below the first


def test_a_low_pass_keeps_what_is_below_its_cutoff() -> None:
    noise = np.random.default_rng(2).standard_normal(RATE).astype(np.float32)
    power = np.abs(np.fft.rfft(lowpassed(noise, 1000.0))) ** 2
    hz = np.fft.rfftfreq(RATE, 1 / RATE)
    assert power[hz > 2000].sum() < 0.01 * power[hz < 1000].sum()


def test_silence_stays_silence() -> None:
    quiet = from_afar(np.zeros(RATE, np.float32), np.random.default_rng(3))
    assert np.all(quiet == 0)


def test_varied_events_land_where_the_recorded_ones_would(dev_corpus: Path) -> None:
    shot = a_gun_shot(dev_corpus)
    background = [np.random.default_rng(4).standard_normal(30 * RATE).astype(np.float32) * 0.01]
    events = [("gun_shot", "a", shot), ("gun_shot", "b", shot), ("gun_shot", "c", shot)]
    plain = build_soundscape(background, events, 60.0, np.random.default_rng(5))
    seen = []

    def vary(clip: np.ndarray) -> np.ndarray:
        seen.append(len(clip))
        return from_afar(clip, afar)

    afar = np.random.default_rng(6)
    copied = build_soundscape(background, events, 60.0, np.random.default_rng(5), vary=vary)
    assert seen == [len(shot)] * 3  # every event through it, one at a time
    assert [e.start_s for e in copied.events] == [e.start_s for e in plain.events]
    assert [e.source for e in copied.events] == [e.source for e in plain.events]
    first = copied.events[0]
    span = slice(int(first.start_s * RATE), int(first.end_s * RATE))
    assert not np.allclose(copied.waveform[span], plain.waveform[span])
