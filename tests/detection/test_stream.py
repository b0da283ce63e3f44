"""A long recording streamed in chunks gives exactly the whole file's patches; a file cut
short by a dead battery is analysed as far as it goes, with the reason; a file that hangs
libsndfile, a FIFO, or a header that claims days of audio costs a bounded wait and a reason."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ecosight_daemon.audio import decode_audio
from ecosight_daemon.detection.reader_child import Reader
from ecosight_daemon.detection.recording_reader import ReadTimedOut, RecordingReader, finish
from ecosight_daemon.detection.stream import (
    CHUNK_PATCHES,
    Chunk,
    HeaderLimits,
    RecordingHeader,
    StreamEnd,
    stream_chunks,
)
from ecosight_daemon.detection.stream import read_header as probe_header
from ecosight_daemon.embedding.frontend import PATCH_HOP_SAMPLES, log_mel_patches
from ecosight_daemon.errors import AudioDecodeError
from testkit.paths import hanging_wav


@pytest.fixture(scope="module")
def reader() -> Iterator[RecordingReader]:
    reading = RecordingReader(budget_s=30.0)
    yield reading
    reading.close()


def read_header(reader: RecordingReader, path: Path) -> RecordingHeader:
    return finish(probe_header(reader, path))[0]


def chunks_of(reader: RecordingReader, path: Path, end: StreamEnd) -> list[Chunk]:
    return [c for c in stream_chunks(reader, path, read_header(reader, path), end) if c is not None]


def _streamed_patches(reader: RecordingReader, path: Path) -> tuple[np.ndarray, StreamEnd]:
    end = StreamEnd()
    pieces = [log_mel_patches(c.waveform) for c in chunks_of(reader, path, end)]
    return np.concatenate(pieces), end


@pytest.mark.parametrize("rate,channels", [(16_000, 1), (44_100, 2)])
def test_chunks_give_the_whole_recordings_patches(tmp_path: Path, rate: int, channels: int,
                                                 reader: RecordingReader) -> None:
    seconds = 2.2 * CHUNK_PATCHES * 0.48  # two chunks and a part
    rng = np.random.default_rng(rate)
    data = (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    path = tmp_path / "long.wav"
    soundfile.write(path, data, rate, subtype="FLOAT")
    whole = log_mel_patches(decode_audio(path.read_bytes(), 3600).waveform)
    streamed, end = _streamed_patches(reader, path)
    assert streamed.shape == whole.shape
    # the same resampler in the same blocks except where blocks meet: float32 rounding there
    np.testing.assert_allclose(streamed, whole, atol=1e-3)
    assert end.truncated is None
    assert end.seconds_read == pytest.approx(seconds, abs=1 / rate)


def test_a_recording_cut_short_is_read_to_where_its_data_ends(tmp_path: Path, reader: RecordingReader) -> None:
    path = tmp_path / "dead_battery.wav"
    soundfile.write(path, np.zeros((16_000 * 120, 1), np.float32) + 0.01, 16_000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:44 + 2 * 16_000 * 50])  # the header still says 120 s; 50 s of data remain
    header = read_header(reader, path)
    streamed, end = _streamed_patches(reader, path)
    assert end.truncated is not None and "120.0 s" in end.truncated, end.truncated
    assert end.seconds_read == pytest.approx(50.0, abs=0.01)
    assert len(streamed) == 1 + int(np.ceil((50 * 16_000 - 15_600) / 7_680))
    assert header.declared_s == pytest.approx(120.0) and header.duration_s == pytest.approx(50.0)


def test_a_mono_16_bit_recording_crosses_as_16_bit_and_streams_exactly_its_samples(
        tmp_path: Path, reader: RecordingReader) -> None:
    path = tmp_path / "AM01_20260501_000000.WAV"
    rng = np.random.default_rng(16)
    samples = rng.integers(-32768, 32768, size=16_000 * 150, dtype=np.int16)  # every extreme included
    samples[:2] = [-32768, 32767]
    soundfile.write(path, samples, 16_000, subtype="PCM_16")
    header, body = Reader().read(str(path), 0, 1000)
    assert header == {"frames": 1000, "dtype": "int16"} and len(body) == 2 * 1000  # half of float32's bytes
    chunks = chunks_of(reader, path, StreamEnd())
    assert len(chunks) == 3
    hop = CHUNK_PATCHES * PATCH_HOP_SAMPLES
    streamed = np.concatenate([c.waveform[:hop] for c in chunks[:-1]] + [chunks[-1].waveform])
    expected = soundfile.read(path, dtype="float32")[0]  # what libsndfile gives as float
    assert streamed.dtype == np.float32
    np.testing.assert_array_equal(streamed, expected)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk"])
def test_an_empty_or_broken_file_is_refused_with_a_reason(tmp_path: Path, content: bytes,
                                                          reader: RecordingReader) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match="not a readable"):
        read_header(reader, path)


def test_eight_channels_at_384_khz_are_down_mixed_and_resampled(tmp_path: Path, reader: RecordingReader) -> None:
    path = tmp_path / "array.wav"
    rate = 384_000
    t = np.arange(rate * 3) / rate
    tone = (0.2 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    soundfile.write(path, np.repeat(tone[:, None], 8, axis=1), rate, subtype="PCM_24")
    end = StreamEnd()
    chunks = chunks_of(reader, path, end)
    assert sum(len(c.waveform) for c in chunks) == pytest.approx(3 * 16_000, abs=16)
    spectrum = np.abs(np.fft.rfft(chunks[0].waveform[:16_000]))
    assert np.argmax(spectrum) == pytest.approx(1000, abs=2)  # 1 Hz bins: the tone survived


def test_a_file_that_hangs_libsndfile_fails_within_the_budget_and_its_reader_is_killed(tmp_path: Path) -> None:
    specimen = hanging_wav()
    assert specimen.is_file(), f"{specimen} missing (../shared/data/specimens)"
    reader = RecordingReader(budget_s=3.0)
    try:
        finish(reader.probe(tmp_path.parent))  # a folder: a reason at once, and the reader is up
    except AudioDecodeError:
        pass
    stuck = reader.pid
    assert stuck is not None
    started = time.monotonic()
    with pytest.raises(ReadTimedOut, match="took longer than 3 s"):
        read_header(reader, specimen)
    assert time.monotonic() - started < 6
    wait_until_gone(stuck)
    ok = tmp_path / "ok.wav"
    soundfile.write(ok, np.zeros(16_000, np.float32) + 0.01, 16_000)
    assert read_header(reader, ok).frames == 16_000  # a new reader answers the next file
    reader.close()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, reader: RecordingReader) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioDecodeError, match="not a regular file"):
        read_header(reader, fifo)


@pytest.mark.parametrize("rate,seconds,limits,reason", [
    (10, 20.0, HeaderLimits(), "below \\[detection\\] min_sample_rate"),
    (16_000, 7.2, HeaderLimits(max_hours=0.001), "max_hours is 0.001"),
])
def test_a_header_that_claims_too_much_is_refused_with_a_reason(tmp_path: Path, reader: RecordingReader, rate: int,
                                                                 seconds: float, limits: HeaderLimits,
                                                                 reason: str) -> None:
    path = tmp_path / "claims.wav"
    soundfile.write(path, np.zeros(int(rate * seconds), np.float32) + 0.01, rate, subtype="PCM_16")
    with pytest.raises(AudioDecodeError, match=reason):
        finish(probe_header(reader, path, limits))


def wait_until_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"reader process {pid} still alive")


def test_a_stream_dropped_part_way_leaves_its_read_ahead_block_to_nobody(tmp_path: Path) -> None:
    """The stream asks for its next block before it hands on the one it has: dropped there,
    that block's answer must not be taken for the reader's next request."""
    rate = 16_000
    data = (0.1 * np.random.default_rng(3).standard_normal(300 * rate)).astype(np.float32)  # 3 reader blocks
    path = tmp_path / "three_blocks.wav"
    soundfile.write(path, data, rate, subtype="FLOAT")
    reader = RecordingReader(budget_s=30.0)
    try:
        stream = stream_chunks(reader, path, read_header(reader, path), StreamEnd())
        first = next(c for c in stream if c is not None)
        np.testing.assert_array_equal(first.waveform, data[:len(first.waveform)])
        child = reader.pid
        del stream  # its request for the second block is under way
        np.testing.assert_array_equal(finish(reader.read(path, 5 * rate, rate)), data[5 * rate:6 * rate])
        assert reader.pid == child  # the unread answer was waited for and dropped, not the child killed
        for chunk in chunks_of(reader, path, StreamEnd()):  # and the next stream reads every block right
            start = chunk.first_patch * PATCH_HOP_SAMPLES
            np.testing.assert_array_equal(chunk.waveform, data[start:start + len(chunk.waveform)])
    finally:
        reader.close()
