"""The daemon's loop driven step by step in this process, with the real YAMNet, real files
and a real cache, and a clock the test moves (the loop reads time only through it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecosight_daemon.config_file import settings_from_mapping
from ecosight_daemon.daemon import indexer as indexer_module
from ecosight_daemon.daemon.loop import Daemon
from ecosight_daemon.daemon.trigger_policy import TRIGGER_CHECK_S
from ecosight_daemon.store.clip_index import FileState
from testkit.audio_files import WavWriter

CLIPS = 40


def test_new_samples_are_counted_at_most_every_few_seconds_during_a_burst_and_when_it_ends(
    tmp_path: Path, yamnet, write_wav: WavWriter, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    # The count is a query over the whole index; at 14,000 files it cost ~50 ms per batch.
    monkeypatch.setattr(indexer_module, "EMBED_BATCH", 8)  # several batches from 40 short clips
    for i in range(CLIPS):
        write_wav(tmp_path / "audio" / ("gun_shot", "dog_bark")[i % 2] / f"c{i}.wav", "noise", 0.5, seed=i)
    settings = settings_from_mapping(
        {"paths": {"audio_dir": "audio", "models_dir": "models"},
         "triggers": {"min_new_samples": 1000}, "training": {"keep_warm": False}, "http": {"enabled": False}},
        tmp_path, {})
    now = [0.0]
    daemon = Daemon(settings, load_embedder=lambda handle: yamnet, clock=lambda: now[0])
    daemon.start()
    try:
        seen = []  # (pending, new_samples) after each step
        for _ in range(3):
            daemon.step(timeout=0)
            seen.append((daemon.store.clips.count_files(FileState.PENDING), daemon.status()["new_samples"]))
        first_count = seen[0][1]
        assert 0 < first_count < CLIPS and all(pending > 0 for pending, _ in seen)
        assert [count for _, count in seen] == [first_count] * 3  # not refreshed batch by batch

        now[0] += TRIGGER_CHECK_S
        daemon.step(timeout=0)
        assert first_count < daemon.status()["new_samples"] < CLIPS  # the interval passed mid-burst

        for _ in range(20):
            if not daemon.store.clips.count_files(FileState.PENDING):
                break
            daemon.step(timeout=0)
        assert daemon.status()["new_samples"] == CLIPS  # the burst ended: counted at once
    finally:
        daemon.request_stop()
        daemon.step(timeout=1)
    assert daemon.stopped
