from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ecosight_daemon.audio import TARGET_SAMPLE_RATE, decode_audio, is_audio_name, is_ignored_name
from ecosight_daemon.errors import AudioDecodeError
from testkit.audio_files import WavWriter

WAV = (".wav",)


@pytest.mark.parametrize(
    ("name", "ingested"),
    [
        ("shot.wav", True),
        ("SHOT.WAV", True),
        ("5AF8B8D4_recorder.WAV", True),
        ("shot.Wav", True),
        ("shot.flac", False),
        (".shot.wav", False),
        ("shot.wav.part", False),
        ("shot.wav.tmp", False),
        ("shot.wav~", False),
        (".shot.wav.swp", False),
        ("notes.txt", False),
    ],
)
def test_which_names_are_ingested(name: str, ingested: bool) -> None:
    assert is_audio_name(name, WAV) is ingested


def test_temporary_names_are_ignored_whatever_the_extension_list() -> None:
    assert is_ignored_name("x.part") and is_ignored_name(".hidden") and is_ignored_name("x~")
    assert is_audio_name("x.FLAC", (".wav", ".flac"))


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
def test_every_bit_depth_and_rate_decodes_to_16k_mono(
    tmp_path: Path, write_wav: WavWriter, subtype: str, rate: int
) -> None:
    path = write_wav(tmp_path / "a.wav", "tone", seconds=1.5, rate=rate, subtype=subtype, seed=4)
    decoded = decode_audio(path.read_bytes(), max_duration_s=60)
    assert decoded.waveform.dtype == np.float32
    assert decoded.waveform.ndim == 1
    assert decoded.source_sample_rate == rate
    assert abs(len(decoded.waveform) - 1.5 * TARGET_SAMPLE_RATE) <= 2
    # The 500 Hz tone survives resampling: it is the strongest frequency afterwards.
    spectrum = np.abs(np.fft.rfft(decoded.waveform))
    peak_hz = np.argmax(spectrum) * TARGET_SAMPLE_RATE / len(decoded.waveform)
    assert abs(peak_hz - 500) < 5


def test_stereo_is_mixed_down_by_averaging_channels(tmp_path: Path) -> None:
    left = np.full(16_000, 0.5, dtype=np.float32)
    right = np.full(16_000, -0.1, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 16_000, subtype="FLOAT")
    decoded = decode_audio(path.read_bytes(), max_duration_s=60)
    assert decoded.source_channels == 2
    np.testing.assert_allclose(decoded.waveform, 0.2, atol=1e-6)


def test_whole_clip_is_decoded_not_only_the_first_four_seconds(tmp_path: Path, write_wav: WavWriter) -> None:
    path = write_wav(tmp_path / "long.wav", "noise", seconds=12.0, rate=44_100)
    assert len(decode_audio(path.read_bytes(), max_duration_s=60).waveform) == 12 * TARGET_SAMPLE_RATE


def test_flac_and_ogg_decode(tmp_path: Path, write_wav: WavWriter) -> None:
    flac = write_wav(tmp_path / "a.flac", rate=22_050, fmt="FLAC")
    ogg = write_wav(tmp_path / "a.ogg", rate=22_050, subtype="VORBIS", fmt="OGG")
    for path in (flac, ogg):
        assert abs(len(decode_audio(path.read_bytes(), 60).waveform) - 16_000) < 100


def header_only_wav() -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros((0, 1), dtype=np.float32), 16_000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)), "not a readable WAV/FLAC/OGG"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "not a readable WAV/FLAC/OGG"),
        (b"just some text, not audio at all", "not a readable WAV/FLAC/OGG"),
    ],
)
def test_unusable_bytes_raise_a_readable_reason(data: bytes, reason: str) -> None:
    with pytest.raises(AudioDecodeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode_audio(data, max_duration_s=60)


def test_header_only_wav_has_no_audio_frames() -> None:
    with pytest.raises(AudioDecodeError, match="no audio frames"):
        decode_audio(header_only_wav(), max_duration_s=60)


def test_too_long_file_is_refused_with_the_limit_in_the_reason(tmp_path: Path, write_wav: WavWriter) -> None:
    path = write_wav(tmp_path / "long.wav", "tone", seconds=3.0, rate=8_000)
    with pytest.raises(AudioDecodeError, match=r"longer than max_duration_s \(2 s\): 3.0 s"):
        decode_audio(path.read_bytes(), max_duration_s=2)


def test_nan_samples_are_refused(tmp_path: Path) -> None:
    samples = np.zeros(1600, dtype=np.float32)
    samples[10] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(path, samples, 16_000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN or infinite"):
        decode_audio(path.read_bytes(), max_duration_s=60)


def test_truncated_wav_decodes_what_is_there(tmp_path: Path, write_wav: WavWriter) -> None:
    data = write_wav(tmp_path / "a.wav", seconds=2.0).read_bytes()
    cut = data[: len(data) // 2]
    assert struct.unpack("<I", cut[40:44])[0] > len(cut)  # the header promises more than is there
    decoded = decode_audio(cut, max_duration_s=60)
    assert 0 < len(decoded.waveform) < 2 * TARGET_SAMPLE_RATE


def test_short_clip_and_digital_silence_decode(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    soundfile.write(path, np.zeros(100, dtype=np.int16), 16_000, subtype="PCM_16")
    assert len(decode_audio(path.read_bytes(), 60).waveform) == 100
