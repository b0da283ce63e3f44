"""A long recording streamed in chunks gives exactly the whole file's patches; a file cut
short by a dead battery is analysed as far as it goes, with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from ecosight_daemon.audio import decode_audio
from ecosight_daemon.detection.stream import CHUNK_PATCHES, StreamEnd, read_header, stream_chunks
from ecosight_daemon.embedding.frontend import log_mel_patches
from ecosight_daemon.errors import AudioDecodeError


def _streamed_patches(path: Path) -> tuple[np.ndarray, StreamEnd]:
    end = StreamEnd()
    pieces = [log_mel_patches(c.waveform) for c in stream_chunks(path, read_header(path), end)]
    return np.concatenate(pieces), end


@pytest.mark.parametrize("rate,channels", [(16_000, 1), (44_100, 2)])
def test_chunks_give_the_whole_recordings_patches(tmp_path: Path, rate: int, channels: int) -> None:
    seconds = 2.2 * CHUNK_PATCHES * 0.48  # two chunks and a part
    rng = np.random.default_rng(rate)
    data = (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    path = tmp_path / "long.wav"
    soundfile.write(path, data, rate, subtype="FLOAT")
    whole = log_mel_patches(decode_audio(path.read_bytes(), 3600).waveform)
    streamed, end = _streamed_patches(path)
    assert streamed.shape == whole.shape
    # the same resampler in the same blocks except where blocks meet: float32 rounding there
    np.testing.assert_allclose(streamed, whole, atol=1e-3)
    assert end.truncated is None
    assert end.seconds_read == pytest.approx(seconds, abs=1 / rate)


def test_a_recording_cut_short_is_read_to_where_its_data_ends(tmp_path: Path) -> None:
    path = tmp_path / "dead_battery.wav"
    soundfile.write(path, np.zeros((16_000 * 120, 1), np.float32) + 0.01, 16_000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:44 + 2 * 16_000 * 50])  # the header still says 120 s; 50 s of data remain
    header = read_header(path)
    streamed, end = _streamed_patches(path)
    assert end.truncated is not None and "120.0 s" in end.truncated, end.truncated
    assert end.seconds_read == pytest.approx(50.0, abs=0.01)
    assert len(streamed) == 1 + int(np.ceil((50 * 16_000 - 15_600) / 7_680))
    assert header.declared_s == pytest.approx(120.0) and header.duration_s == pytest.approx(50.0)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk"])
def test_an_empty_or_broken_file_is_refused_with_a_reason(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match="not a readable"):
        read_header(path)


def test_eight_channels_at_384_khz_are_down_mixed_and_resampled(tmp_path: Path) -> None:
    path = tmp_path / "array.wav"
    rate = 384_000
    t = np.arange(rate * 3) / rate
    tone = (0.2 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    soundfile.write(path, np.repeat(tone[:, None], 8, axis=1), rate, subtype="PCM_24")
    end = StreamEnd()
    chunks = list(stream_chunks(path, read_header(path), end))
    assert sum(len(c.waveform) for c in chunks) == pytest.approx(3 * 16_000, abs=16)
    spectrum = np.abs(np.fft.rfft(chunks[0].waveform[:16_000]))
    assert np.argmax(spectrum) == pytest.approx(1000, abs=2)  # 1 Hz bins: the tone survived
