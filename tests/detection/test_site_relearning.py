"""A site's learning reaches the recordings scored before it: a real daemon, real YAMNet and a
real version, a recorder whose own audio holds a recurring shot-like bang. Its first recording
is scored before the site has learned anything; once the site has, that recording is scored
again from the cache (no audio read twice), again when the site's audio has doubled, and not
with every new recording; with site learning turned off, the version's own thresholds return,
and the events that adds are alerted, each once."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from ecosight_daemon.audio import decode_audio
from testkit.daemon_process import DaemonProcess, wait_for, write_config
from testkit.field_recordings import split_by_recording
from tests.detection.test_detect_cli import run_cli
from tests.detection.test_recordings_daemon import cache_rows, recording_state
from tests.detection.test_site_learning import field_bed, with_bang_every

pytestmark = pytest.mark.slow
RECORDING_S = 8 * 60  # each recording; the site learns after 6 minutes (min_hours 0.1)
NAMES = [f"RANGE/RANGE_20260501_{hour:02d}0000.WAV" for hour in (6, 7, 8)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, yamnet_handle: str, dev_corpus: Path,
         field_corpus: Path) -> dict[str, Any]:
    """v0001 trained on most dev recordings; three recordings of one recorder on a "card": field
    background with a held-out gun shot every 29 s (a range next door: what alarms there, over
    and over, is the site's, whatever it is)."""
    root = tmp_path_factory.mktemp("site")
    split = split_by_recording(dev_corpus)
    for row in split.train:
        target = root / "audio" / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dev_corpus / row["file"], target)
    write_config(root, yamnet_handle, detection=(
        'recordings_dir = "recordings"\nscan_interval_s = 0.3\nsite_learning_min_hours = 0.1\n'
        "context_trees = false"))
    result = run_cli(root, "retrain")
    assert result.returncode == 0, result.stderr[-3000:]
    shot = next(row for row in split.held_out if row["class"] == "gun_shot")
    bang = decode_audio((dev_corpus / shot["file"]).read_bytes(), 600).waveform[:16_000]
    bed = field_bed(field_corpus, RECORDING_S * len(NAMES))
    for index, name in enumerate(NAMES):
        piece = bed[index * RECORDING_S * 16_000:(index + 1) * RECORDING_S * 16_000]
        (root / "card" / name).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(root / "card" / name, np.clip(with_bang_every(piece, bang, 29.0), -1, 1), 16_000,
                        subtype="PCM_16")
    return {"root": root, "handle": yamnet_handle}


def gun_shots(root: Path, name: str) -> int:
    return int(cache_rows(root, "SELECT COUNT(*) FROM detections WHERE path = ? AND label = 'gun_shot'", name)[0][0])


def rescores(daemon: DaemonProcess, name: str) -> list[str]:
    """What each re-score of `name` under the same version said about its site."""
    return re.findall(rf"recording {re.escape(name)}: \d+ events \(model v0001, re-scored from cached embeddings: "
                      r"([^)]*)\)", daemon.log_text())


def alerted(daemon: DaemonProcess, name: str) -> list[float]:
    """The start of every gun shot in `name` the daemon alerted on, in order."""
    return [float(start) for start in re.findall(rf"DETECTION gun_shot at \S+ in {re.escape(name)} \(([\d.]+)-",
                                                 daemon.log_text())]


def gun_shot_starts(root: Path, name: str) -> list[float]:
    return [row[0] for row in cache_rows(root, "SELECT start_s FROM detections WHERE path = ? AND label = 'gun_shot' "
                                               "ORDER BY start_s", name)]


def copy_in(root: Path, name: str) -> None:
    target = root / "recordings" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / "card" / name, target)


def test_a_sites_earlier_recordings_are_scored_again_as_it_learns(site: dict[str, Any]) -> None:
    root = site["root"]
    first, second, third = NAMES
    daemon = DaemonProcess(root).start()
    try:
        daemon.wait_idle(180)
        copy_in(root, first)
        wait_for(lambda: recording_state(daemon, first) == ("done", "v0001"), 120, "the first recording scored")
        before = gun_shots(root, first)
        assert before >= 8, before  # the bang every 29 s alarms: nothing learned at the site yet

        copy_in(root, second)  # scored with what the first 8 minutes taught; then the first scored again
        wait_for(lambda: len(rescores(daemon, first)) == 1, 120, "the first recording scored again")
        assert rescores(daemon, first) == ["its site's thresholds learned from 0.1 h"]
        after = gun_shots(root, first)
        assert after <= before // 2, (before, after)
        assert gun_shots(root, second) <= before // 2
        sites = wait_for(lambda: (s := daemon.status()["recordings"]["site_learning"]["sites"])
                         and s[0]["threshold_offsets"] and s, 30, "the status showing the site's learning")
        assert [(s["recorder"], s["applies"]) for s in sites] == [("RANGE", True)]
        assert sites[0]["threshold_offsets"]["gun_shot"] > 0, sites  # raised: the bang recurs at this site
        assert rescores(daemon, second) == []  # the site's other audio (8 min) has not grown since

        copy_in(root, third)  # 16 minutes learned: twice what the first two were scored with
        wait_for(lambda: len(rescores(daemon, first)) == 2 and len(rescores(daemon, second)) == 1, 120,
                 "the first two scored again")
        daemon.wait_idle(60)
        wait_for(lambda: daemon.status()["recordings"]["current"] is None, 30, "nothing being scored")
        assert rescores(daemon, third) == []  # learned from 16 minutes, and its site holds no more
        assert len(rescores(daemon, first)) == 2
        assert daemon.stop() == 0

        write_config(root, site["handle"], detection=(
            'recordings_dir = "recordings"\nscan_interval_s = 0.3\nsite_learning = false\ncontext_trees = false'))
        daemon = DaemonProcess(root).start()
        wait_for(lambda: all(rescores(daemon, name)[-1:] == ["the version's own thresholds"] for name in NAMES),
                 120, "every recording scored with the version's own thresholds")  # the log goes on from before
        assert gun_shots(root, first) == before
        daemon.wait_idle(60)
        assert [len(rescores(daemon, name)) for name in NAMES] == [3, 2, 1]  # once each, then left alone
        # The bangs the site had learned to refuse are events again, and alerted as they would have been
        # had the recordings come in with site learning off: each once (the first's when it was first scored).
        threading.Event().wait(2.0)  # the log lines of the last re-score
        assert len(alerted(daemon, first)) == before
        for name in NAMES:
            assert sorted(alerted(daemon, name)) == gun_shot_starts(root, name), name
        assert daemon.stop() == 0
    finally:
        daemon.kill()

