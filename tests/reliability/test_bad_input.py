"""Bad input dropped into a running daemon: each file ends as `failed` with a clear reason,
embeds (odd but valid audio), or is ignored (temporary and hidden names); the daemon
keeps running and no other file's state changes.

One daemon run serves the whole module (starting one costs ~10 s); each input is then
checked by its own test case, so a report lists every input tried.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile

from testkit.audio_files import synthetic_signal
from testkit.daemon_process import DaemonProcess, wait_for, write_config
from tests.reliability.conftest import unprivileged_prefix

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

MAX_DURATION_S = 20
DOOMED_FILES = 120


def wav_bytes(seconds: float = 1.0, rate: int = 16_000, channels: int = 1, subtype: str = "PCM_16",
              seed: int = 0, samples: np.ndarray | None = None) -> bytes:
    import io

    if samples is None:
        mono = synthetic_signal("noise", seconds, rate, seed)
        samples = np.stack([mono * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def float_wav_with(value: float) -> bytes:
    samples = synthetic_signal("tone", 1.0, 16_000, 1).astype(np.float32)
    samples[100:200] = value
    return wav_bytes(samples=samples[:, None], subtype="FLOAT")


# relative path -> (expected state, or None when ignored; words the reason must contain)
EXPECTED: dict[str, tuple[str | None, str]] = {
    "gun_shot/empty.wav": ("failed", "empty file"),
    "gun_shot/random_bytes.wav": ("failed", "not a readable"),
    "gun_shot/truncated.wav": ("embedded", ""),
    "gun_shot/header_only.wav": ("failed", "no audio frames"),
    "gun_shot/zero_frames.wav": ("failed", "no audio frames"),
    "gun_shot/one_frame.wav": ("failed", "shorter than min_duration_s"),
    "gun_shot/nan.wav": ("failed", "NaN or infinite"),
    "gun_shot/inf.wav": ("failed", "NaN or infinite"),
    "clips/silence.wav": ("failed", "digital silence"),
    "clips/unsigned_8bit.wav": ("embedded", ""),
    "clips/pcm_24bit.wav": ("embedded", ""),
    "clips/float_32bit.wav": ("embedded", ""),
    "clips/float_64bit.wav": ("embedded", ""),
    "clips/rate_8k.wav": ("embedded", ""),
    "clips/rate_96k.wav": ("embedded", ""),
    "clips/rate_192k.wav": ("embedded", ""),
    "clips/six_channels.wav": ("embedded", ""),
    "clips/too_long.wav": ("failed", "longer than max_duration_s"),
    "clips/growing.wav": ("embedded", ""),
    "gun_shot/fifo.wav": ("failed", "not a regular file"),
    "gun_shot/link_outside.wav": ("failed", "symbolic link"),
    "gun_shot/link_loop.wav": ("failed", "symbolic link"),
    "gun_shot/unreadable.wav": ("failed", "Permission denied"),
    "clips/with space.wav": ("embedded", ""),
    "clips/ñandú ünï.wav": ("embedded", ""),
    "clips/new\nline.wav": ("embedded", ""),
    "clips/-rf.wav": ("embedded", ""),
    "clips/--help.wav": ("embedded", ""),
    "clips/bad\\xff.wav": ("failed", "not valid UTF-8"),
    "loose.wav": ("failed", "not in a class folder"),
    "clips/.hidden.wav": (None, ""),
    "clips/upload.wav.part": (None, ""),
    "clips/backup.wav~": (None, ""),
    "-rf/a.wav": ("failed", "cannot be a label"),
    "new\nline/a.wav": ("failed", "cannot be a label"),
    "a;rm x/a.wav": ("failed", "cannot be a label"),
    f"{'x' * 65}/a.wav": ("failed", "cannot be a label"),
    ".hidden_class/a.wav": (None, ""),
    "Engine (idle)/a.wav": ("embedded", ""),
}
CONTROL = [f"{label}/control{i}.wav" for label in ("gun_shot", "clips") for i in range(3)]


@dataclass
class Run:
    root: Path
    states: dict[str, tuple[str, str | None, str | None]] = field(default_factory=dict)  # state, reason, sha
    control_before: dict[str, tuple[str, str | None, str | None]] = field(default_factory=dict)
    growing_sha256: str = ""
    doomed_seen: tuple[int, int] = (0, 0)  # embedded, pending when the folder was deleted
    audio_tree_after_drops: dict[str, tuple[int, int]] = field(default_factory=dict)
    audio_tree_at_end: dict[str, tuple[int, int]] = field(default_factory=dict)
    daemon_alive: bool = False
    log: str = ""
    status: dict = field(default_factory=dict)


def file_states(models: Path) -> dict[str, tuple[str, str | None, str | None]]:
    with sqlite3.connect(f"file:{models / 'embedding_cache.sqlite3'}?mode=ro", uri=True, timeout=10) as db:
        return {path: (state, reason, sha) for path, state, reason, sha in
                db.execute("SELECT path, state, reason, sha256 FROM files")}


def audio_tree(audio: Path) -> dict[str, tuple[int, int]]:
    tree = {}
    for folder, folders, names in os.walk(os.fsencode(audio)):
        for name in folders + names:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            tree[os.fsdecode(os.path.relpath(path, os.fsencode(audio)))] = (info.st_size, info.st_mtime_ns)
    return tree


def write_slowly(path: Path, seconds: float = 3.0) -> None:
    """A recorder writing a file over `seconds`, the handle open throughout."""
    chunk = synthetic_signal("noise", 0.25, 16_000, 7)
    with soundfile.SoundFile(path, "w", 16_000, 1, "PCM_16") as sound:
        for _ in range(int(seconds / 0.25)):
            sound.write(chunk)
            sound.flush()
            time.sleep(0.25)


def drop_bad_inputs(audio: Path, outside: Path) -> threading.Thread:
    def put(relpath: str, data: bytes) -> Path:
        path = audio / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    growing = threading.Thread(target=write_slowly, args=(audio / "clips" / "growing.wav",), name="test-growing")
    growing.start()
    put("gun_shot/empty.wav", b"")
    put("gun_shot/random_bytes.wav", np.random.default_rng(3).bytes(8192))
    put("gun_shot/truncated.wav", wav_bytes(seconds=2.0, seed=4)[:20_000])
    put("gun_shot/header_only.wav", wav_bytes(seconds=1.0, seed=5)[:44])
    put("gun_shot/zero_frames.wav", wav_bytes(samples=np.zeros((0, 1), np.int16)))
    put("gun_shot/one_frame.wav", wav_bytes(samples=np.full((1, 1), 1000, np.int16)))
    put("gun_shot/nan.wav", float_wav_with(float("nan")))
    put("gun_shot/inf.wav", float_wav_with(float("inf")))
    put("clips/silence.wav", wav_bytes(samples=np.zeros((16_000, 1), np.int16)))
    put("clips/unsigned_8bit.wav", wav_bytes(subtype="PCM_U8", seed=8))
    put("clips/pcm_24bit.wav", wav_bytes(subtype="PCM_24", seed=9))
    put("clips/float_32bit.wav", wav_bytes(subtype="FLOAT", seed=10))
    put("clips/float_64bit.wav", wav_bytes(subtype="DOUBLE", seed=11))
    put("clips/rate_8k.wav", wav_bytes(rate=8_000, seed=12))
    put("clips/rate_96k.wav", wav_bytes(rate=96_000, seed=13))
    put("clips/rate_192k.wav", wav_bytes(rate=192_000, seed=14))
    put("clips/six_channels.wav", wav_bytes(channels=6, seed=15))
    put("clips/too_long.wav", wav_bytes(seconds=MAX_DURATION_S + 1, rate=8_000, seed=16))
    os.mkfifo(audio / "gun_shot" / "fifo.wav")
    (outside / "secret.wav").write_bytes(wav_bytes(seed=17))
    os.symlink(outside / "secret.wav", audio / "gun_shot" / "link_outside.wav")
    os.symlink(audio / "gun_shot" / "link_loop.wav", audio / "gun_shot" / "link_loop.wav")
    (audio / "gun_shot" / "x.wav").mkdir()
    unreadable = put("gun_shot/unreadable.wav", wav_bytes(seed=18))
    unreadable.chmod(0)
    for seed, relpath in enumerate(["clips/with space.wav", "clips/ñandú ünï.wav", "clips/new\nline.wav",
                                    "clips/-rf.wav", "clips/--help.wav"], start=20):
        put(relpath, wav_bytes(seed=seed))
    with open(os.fsencode(audio / "clips") + b"/bad\xff.wav", "wb") as handle:
        handle.write(wav_bytes(seed=30))
    put("loose.wav", wav_bytes(seed=31))
    put("clips/.hidden.wav", wav_bytes(seed=32))
    put("clips/upload.wav.part", wav_bytes(seed=33))
    put("clips/backup.wav~", wav_bytes(seed=34))
    for seed, label in enumerate(["-rf", "new\nline", "a;rm x", "x" * 65, ".hidden_class", "Engine (idle)"], 40):
        put(f"{label}/a.wav", wav_bytes(seed=seed))
    return growing


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, yamnet_handle: str) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("bad-input")
    audio, outside = root / "audio", root / "outside"
    outside.mkdir()
    for path in CONTROL:
        (audio / path).parent.mkdir(parents=True, exist_ok=True)
        (audio / path).write_bytes(wav_bytes(seed=100 + CONTROL.index(path)))
    for i in range(DOOMED_FILES):
        (audio / "doomed").mkdir(exist_ok=True)
        (audio / "doomed" / f"d{i}.wav").write_bytes(wav_bytes(seconds=4.0, seed=200 + i))
    write_config(root, yamnet_handle, audio=f"max_duration_s = {MAX_DURATION_S}", watch="settle_s = 1.0")
    daemon = DaemonProcess(root, prefix=unprivileged_prefix())
    result = Run(root)
    try:
        daemon.start()
        # The class folder deleted while its files are being embedded.
        wait_for(lambda: sum(p.startswith("doomed/") and s[0] == "embedded"
                             for p, s in file_states(daemon.models).items()) >= 5, 120, "doomed/ being embedded")
        states = file_states(daemon.models)
        result.doomed_seen = (sum(p.startswith("doomed/") and s[0] == "embedded" for p, s in states.items()),
                              sum(p.startswith("doomed/") and s[0] == "pending" for p, s in states.items()))
        shutil.rmtree(audio / "doomed")
        daemon.wait_idle(180)
        result.control_before = {p: file_states(daemon.models)[p] for p in CONTROL}

        growing = drop_bad_inputs(audio, outside)
        growing.join()
        with open(audio / "clips" / "growing.wav", "rb") as handle:
            import hashlib

            result.growing_sha256 = hashlib.sha256(handle.read()).hexdigest()
        result.audio_tree_after_drops = audio_tree(audio)
        wait_for(lambda: file_states(daemon.models).get("clips/growing.wav", ("pending",))[0] != "pending", 180,
                 "the file written slowly to be handled once complete")
        result.status = daemon.wait_idle(180)
        result.states = file_states(daemon.models)
        result.audio_tree_at_end = audio_tree(audio)
        result.daemon_alive = daemon.proc is not None and daemon.proc.poll() is None
        result.log = daemon.log_text()
        assert daemon.stop() == 0
        yield result
    finally:
        daemon.kill()
        (audio / "gun_shot" / "unreadable.wav").chmod(0o644)


@pytest.mark.parametrize("relpath", sorted(EXPECTED))
def test_each_bad_input_ends_as_expected(run: Run, relpath: str) -> None:
    expected_state, words = EXPECTED[relpath]
    if expected_state is None:
        assert relpath not in run.states, f"{relpath!r} should be ignored, got {run.states.get(relpath)}"
        return
    assert relpath in run.states, f"{relpath!r} never reached the index; log:\n{run.log[-2000:]}"
    state, reason, _ = run.states[relpath]
    assert state == expected_state, f"{relpath!r}: {state} ({reason})"
    assert words in (reason or ""), f"{relpath!r}: reason {reason!r} lacks {words!r}"
    if state == "failed":
        assert f"failed {relpath.encode('unicode_escape').decode() if chr(10) in relpath else relpath}" in run.log


def test_the_growing_file_is_embedded_from_its_final_bytes(run: Run) -> None:
    assert run.states["clips/growing.wav"][2] == run.growing_sha256


def test_a_directory_named_like_audio_is_not_indexed(run: Run) -> None:
    assert "gun_shot/x.wav" not in run.states


def test_a_class_folder_deleted_mid_embedding_leaves_no_trace(run: Run) -> None:
    embedded, pending = run.doomed_seen
    assert embedded >= 5 and pending > 0, "the folder was not deleted while its files were being embedded"
    assert not any(path.startswith("doomed/") for path in run.states)


def test_no_other_file_changed_state_and_the_daemon_kept_running(run: Run) -> None:
    assert run.daemon_alive
    assert {p: run.states[p] for p in CONTROL} == run.control_before
    assert all(state == "embedded" for state, _, _ in run.control_before.values())
    assert "Traceback" not in run.log


def test_log_lines_escape_newlines_in_file_names(run: Run) -> None:
    assert "failed new\\nline/a.wav" in run.log
    assert not any(line.startswith("line") for line in run.log.splitlines())


def test_the_daemon_never_wrote_into_the_audio_folder(run: Run) -> None:
    assert run.audio_tree_at_end == run.audio_tree_after_drops


def test_status_counts_the_failures(run: Run) -> None:
    expected_failed = sum(1 for state, _ in EXPECTED.values() if state == "failed")
    assert run.status["failed"] == expected_failed
    assert run.status["pending"] == 0
