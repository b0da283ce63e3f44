"""The file-event inbox is bounded: past FILE_EVENT_LIMIT events are dropped and one
rescan replaces them (the 5,000-file load test stays under the limit on this machine,
so the overflow path is driven directly here, on a real Daemon object)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecosight_daemon.config_file import settings_from_mapping
from ecosight_daemon.daemon.inbox import FILE_EVENT_LIMIT, FileChanged, Rescan
from ecosight_daemon.daemon.loop import Daemon
from ecosight_daemon.daemon.watcher import FileEvent

pytestmark = pytest.mark.reliability


def test_past_the_limit_events_are_dropped_for_one_rescan(tmp_path: Path) -> None:
    settings = settings_from_mapping({"paths": {"audio_dir": "audio", "models_dir": "models"}}, tmp_path, {})
    daemon = Daemon(settings, load_embedder=lambda handle: None)  # type: ignore[arg-type,return-value]
    for i in range(FILE_EVENT_LIMIT + 500):
        daemon.inbox.put_file_event(FileEvent(str(tmp_path / "audio" / "a" / f"{i}.wav")))
    commands = daemon.inbox.drain(timeout=0)
    files = [c for c in commands if isinstance(c, FileChanged)]
    rescans = [c for c in commands if isinstance(c, Rescan)]
    assert len(files) == FILE_EVENT_LIMIT and len(rescans) == 1
    assert daemon.status()["queued_file_events"] == 0
    assert daemon.status()["queued_file_events_peak"] == FILE_EVENT_LIMIT

    daemon.inbox.put_file_event(FileEvent(str(tmp_path / "audio" / "a" / "next.wav")))  # accepted again
    assert [type(c) for c in daemon.inbox.drain(timeout=0)] == [FileChanged]
