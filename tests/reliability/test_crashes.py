"""kill -9 at random moments (embedding, training, promotion) and at pause points only tests
can set; after every restart the cache, models/ and the retraining log must be whole.

Each round adds new clips while the daemon is down, so every start embeds them and then
retrains. Even rounds kill at a random moment after the daemon is seen embedding (their
clips are 30 s long, so embedding lasts about a second even on the fast runtime); odd
rounds kill at a random moment of the following seconds: training or promotion. The
checks run as soon as the restarted daemon says READY (start-up has finished any
interrupted promotion by then; the next retrain is seconds away), except before an
embedding round, whose window they would use up: those run after its kill instead. A summary of where each kill
landed is written to crash_rounds.json in the test's folder and printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from testkit.audio_files import WavWriter
from testkit.daemon_process import DaemonProcess, wait_for, write_config

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

ROUNDS = 10
CLASSES = {"gun_shot": "clicks", "clips": "tone", "dog_bark": "noise"}


def add_clips(audio: Path, write_wav: WavWriter, start: int, per_class: int, seconds: float = 1.2) -> None:
    for label, kind in CLASSES.items():
        for i in range(start, start + per_class):
            write_wav(audio / label / f"{label}{i}.wav", kind, seconds=seconds, seed=i)


def retrain_log(models: Path) -> list[dict[str, Any]]:
    path = models / "retraining_log.json"
    if not path.exists():
        return []
    entries = json.loads(path.read_text())  # must always be valid JSON
    assert isinstance(entries, list)
    return entries


class ModelChecker:
    """models/ holds one complete, loadable version whose metadata matches its files."""

    def __init__(self) -> None:
        self._loaded: set[str] = set()

    def check(self, models: Path, restarted_at: float | None = None) -> str | None:
        """`restarted_at`: when the daemon was (re)started; a staging folder older than that
        is a crash's leftover that start-up should have removed. A newer one belongs to the
        retrain the restarted daemon may already be running, so it is expected.

        The restarted daemon may also promote while this reads; a promotion takes
        milliseconds, so a check that saw the published files change is simply repeated."""
        for _ in range(5):
            before = published_state(models)
            try:
                version = self._check_once(models, restarted_at)
            except (AssertionError, FileNotFoundError):
                if published_state(models) == before:
                    raise
                continue
            if published_state(models) == before:
                return version
        raise AssertionError("the published model kept changing while it was checked")

    def _check_once(self, models: Path, restarted_at: float | None) -> str | None:
        metadata_path = models / "model_metadata.json"
        if not metadata_path.exists():
            assert not (models / "yamnet_classifier_v2.keras").exists()
            return None
        journal = models / ".promotion.json"
        # A promotion of the running daemon finishes in milliseconds.
        wait_for(lambda: not journal.exists(), 10, "start-up to finish the interrupted promotion")
        metadata = json.loads(metadata_path.read_text())
        version = models / "versions" / metadata["version"]
        model_bytes = (version / "model.keras").read_bytes()
        assert hashlib.sha256(model_bytes).hexdigest() == metadata["model_sha256"]
        assert (models / "yamnet_classifier_v2.keras").read_bytes() == model_bytes
        assert json.loads((models / "class_names.json").read_text()) == metadata["classes"]
        assert (models / "performance_metrics.json").read_bytes() == (version / "performance_metrics.json").read_bytes()
        leftovers = [p for p in (models / "versions").glob(".staging-*") if _older_than(p, restarted_at)]
        assert not leftovers, "an unfinished version folder survived start-up"
        if metadata["model_sha256"] not in self._loaded:
            from ecosight_daemon.artifacts.keras_model import load_classifier

            model = load_classifier(version / "model.keras")
            assert model.output_shape[-1] == len(metadata["classes"])
            self._loaded.add(metadata["model_sha256"])
        return str(metadata["version"])


def published_state(models: Path) -> tuple[bytes | None, bool]:
    metadata_path = models / "model_metadata.json"
    metadata = metadata_path.read_bytes() if metadata_path.exists() else None
    return metadata, (models / ".promotion.json").exists()


def _older_than(path: Path, moment: float | None) -> bool:
    try:
        return moment is None or path.stat().st_mtime < moment
    except FileNotFoundError:  # the running retrain published or dropped it meanwhile
        return False


def cache_integrity(models: Path) -> None:
    with sqlite3.connect(f"file:{models / 'embedding_cache.sqlite3'}?mode=ro", uri=True, timeout=10) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def nothing_lost_or_doubled(models: Path, audio: Path) -> None:
    on_disk = {p.relative_to(audio).as_posix() for p in audio.glob("*/*.wav")}
    with sqlite3.connect(f"file:{models / 'embedding_cache.sqlite3'}?mode=ro", uri=True, timeout=10) as db:
        rows = db.execute("SELECT path, state, sha256 FROM files").fetchall()
        embedding_rows = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        hashes = {h for _, _, h in rows}
    assert sorted(p for p, _, _ in rows) == sorted(on_disk), "the index and the folder disagree"
    assert all(state == "embedded" for _, state, _ in rows)
    assert embedding_rows == len(hashes), "an embedding is missing or stored twice"


@pytest.fixture
def crash_root(tmp_path: Path, yamnet_handle: str, write_wav: WavWriter) -> Path:
    write_config(tmp_path, yamnet_handle, triggers="min_new_samples = 6",
                 training="epochs = 20\npatience = 5", watch="settle_s = 0.3")
    add_clips(tmp_path / "audio", write_wav, 0, 4)
    return tmp_path


def restart_and_check(daemon: DaemonProcess, checker: ModelChecker, log_before: list[dict[str, Any]]) -> float:
    restarted_at = time.time()
    daemon.start()
    check_after_restart(daemon, checker, log_before, restarted_at)
    return restarted_at


def check_after_restart(daemon: DaemonProcess, checker: ModelChecker, log_before: list[dict[str, Any]],
                        restarted_at: float) -> None:
    cache_integrity(daemon.models)
    checker.check(daemon.models, restarted_at)
    log_after = retrain_log(daemon.models)
    assert log_after[:len(log_before)] == log_before, "a retraining log entry written before the crash was lost"


def kill_while_embedding(daemon: DaemonProcess, rng: random.Random) -> float:
    """Embedding takes well under a second on the ONNX runtime, so a blind delay after
    READY rarely lands in it: wait until it is seen, then kill somewhere inside it."""
    wait_for(lambda: daemon.status().get("state") == "embedding", 60,
             "the daemon to start embedding the new clips", interval=0.01)
    return rng.uniform(0.0, 0.3)


def test_kill_9_at_random_moments(crash_root: Path, write_wav: WavWriter) -> None:
    rng = random.Random(20261127)
    daemon = DaemonProcess(crash_root)
    checker = ModelChecker()
    rounds = []
    unchecked: tuple[list[dict[str, Any]], float] | None = None  # (log before the kill, restart time)
    add_clips(daemon.audio, write_wav, 50, 3, seconds=30.0)
    try:
        daemon.start()
        for number in range(ROUNDS):
            delay = kill_while_embedding(daemon, rng) if number % 2 == 0 else rng.uniform(1.5, 14.0)
            time.sleep(delay)
            state = daemon.status().get("state")
            log_before = retrain_log(daemon.models)
            daemon.kill()
            rounds.append({"round": number, "delay_s": round(delay, 2), "state_at_kill": state,
                           "retrains_logged": len(log_before)})
            if unchecked is not None:
                check_after_restart(daemon, checker, *unchecked)
                unchecked = None
            next_embeds = (number + 1) % 2 == 0
            add_clips(daemon.audio, write_wav, 100 + 10 * number, 3, seconds=30.0 if next_embeds else 1.2)
            if next_embeds:
                restarted_at = time.time()
                daemon.start()
                unchecked = (log_before, restarted_at)
            else:
                restart_and_check(daemon, checker, log_before)
        daemon.wait_idle(240)
        nothing_lost_or_doubled(daemon.models, daemon.audio)
        checker.check(daemon.models)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    (crash_root / "crash_rounds.json").write_text(json.dumps(rounds, indent=2))
    print("kill -9 rounds:", json.dumps(rounds))
    print("states at kill:", dict(Counter(r["state_at_kill"] for r in rounds)))
    # The random moments must have covered embedding and training, or the test proved little.
    assert {"embedding", "training"} <= {r["state_at_kill"] for r in rounds}


@pytest.mark.parametrize("point", ["embedding", "training", "promotion"])
def test_kill_9_at_a_pause_point(crash_root: Path, write_wav: WavWriter, point: str) -> None:
    pause_file = crash_root / "paused.pid"
    daemon = DaemonProcess(crash_root, env={"ECOSIGHT_PAUSE_AT": point, "ECOSIGHT_PAUSE_FILE": str(pause_file)})
    checker = ModelChecker()
    try:
        if point != "embedding":  # a first model, so a promotion has something to replace
            plain = DaemonProcess(crash_root)
            plain.start()
            wait_for(lambda: retrain_log(plain.models), 120, "the first retrain")
            plain.wait_idle(120)
            assert plain.stop() == 0
            add_clips(crash_root / "audio", write_wav, 50, 2)
        version_before = checker.check(crash_root / "models")
        log_before = retrain_log(crash_root / "models")
        daemon.start()
        wait_for(pause_file.exists, 180, f"the pause point {point}")
        assert f"TEST HOOK ARMED: ECOSIGHT_PAUSE_AT={point}" in daemon.log_text()
        if point == "promotion":
            assert (daemon.models / ".promotion.json").exists()
        daemon.kill()
        daemon.extra_env = {}
        restarted_at = restart_and_check(daemon, checker, log_before)
        version_after = checker.check(daemon.models, restarted_at)
        if point == "promotion":
            # Start-up finished the promotion the crash interrupted.
            assert version_after != version_before and version_after is not None
        if point == "training":
            # The killed retrain's staging folder was there and is gone.
            assert "removing unfinished version folder .staging-" in (crash_root / "daemon.log").read_text()
        daemon.wait_idle(240)
        nothing_lost_or_doubled(daemon.models, daemon.audio)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert os.environ.get("ECOSIGHT_PAUSE_AT") is None
