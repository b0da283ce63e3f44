"""The review queue on a real cache and real files: what is chosen, how decisions add up, and
the clips that follow them (name, length, group, written atomically, removed on undo)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ecosight_daemon.artifacts.split_rule import compile_group_patterns, group_key
from ecosight_daemon.config import DEFAULT_GROUP_PATTERNS, ReviewSettings, Settings
from ecosight_daemon.config_file import load_settings
from ecosight_daemon.detection.events import Event
from ecosight_daemon.detection.window_trace import WindowTrace
from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS
from ecosight_daemon.errors import EcosightError
from ecosight_daemon.review.clips import clip_relpath, recording_stem
from ecosight_daemon.review.queue import ReviewQueue, ScoredRun, class_folders
from ecosight_daemon.review.selection import select
from ecosight_daemon.store.database import Database

CLASSES = ["clips", "dog_bark", "gun_shot"]
RATE = 48_000


def trace_of(best: np.ndarray, labels: np.ndarray) -> WindowTrace:
    """A trace whose windows score `best` for gun_shot and the rest for the background."""
    scores = np.zeros((len(best), 3), np.float32)
    scores[:, 2] = best
    scores[:, 0] = 1 - best
    trace = WindowTrace(CLASSES, "clips", 0.96)
    trace.add(0, labels, scores)
    return trace


def test_selection_takes_each_reason_its_share_and_one_item_per_class_and_minute() -> None:
    windows = 2000  # 16 minutes
    rng = np.random.default_rng(0)
    best = rng.uniform(0.0, 0.3, windows).astype(np.float32)
    labels = np.zeros(windows, np.int64)
    shots = [100, 101, 500, 900, 1500]
    best[shots] = [0.99, 0.98, 0.95, 0.9, 0.8]
    labels[shots] = 2
    best[[300, 301, 302]] = 0.45  # just below the cut, one minute: one item
    hop = PATCH_HOP_SECONDS
    events = [Event("gun_shot", round(k * hop, 3), round(k * hop + 0.96, 3), round(k * hop + 0.48, 3), float(best[k]))
              for k in (100, 500, 900, 1500)]
    chosen = select(events, trace_of(best, labels), 10, seed=1)

    assert len(chosen) == 10
    reasons = [c.reason for c in chosen]
    assert reasons.count("top") == 4  # all the events (its share is 5: one more goes elsewhere)
    assert reasons.count("near_threshold") >= 3 and reasons.count("below_threshold") >= 2
    assert [c.label for c in chosen if c.reason == "top"] == ["gun_shot"] * 4
    near = [c for c in chosen if c.reason == "near_threshold"]
    assert near[0].score == pytest.approx(0.45) and sum(c.minute == near[0].minute for c in near) == 1
    assert len({(c.label, c.minute) for c in chosen}) == len(chosen)
    assert all(c.score < 0.5 for c in chosen if c.reason != "top")


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Settings, Database, Path]:
    for label in CLASSES:
        (tmp_path / "audio" / label).mkdir(parents=True)
    (tmp_path / "config.toml").write_text('[paths]\naudio_dir = "audio"\nmodels_dir = "models"\n'
                                          "[review]\nper_round = 6\n")
    settings = load_settings(tmp_path / "config.toml")
    recording = tmp_path / "card" / "site-a" / "AM07_20260501_060000.WAV"
    recording.parent.mkdir(parents=True)
    seconds = np.arange(RATE * 300) / RATE
    stereo = np.stack([np.sin(2 * np.pi * 440 * seconds), np.sin(2 * np.pi * 880 * seconds)], axis=1) * 0.3
    soundfile.write(recording, stereo, RATE, subtype="PCM_16")
    store = Database.open(settings.cache_path)
    yield settings, store, recording
    store.close()


def scored_run(recording: Path, name: str) -> ScoredRun:
    windows = 600
    best = np.linspace(0.0, 0.4, windows).astype(np.float32)
    labels = np.zeros(windows, np.int64)
    labels[[10, 200]] = 2
    best[[10, 200]] = [0.97, 0.91]
    events = [Event("gun_shot", 4.8, 5.76, 5.28, 0.97), Event("gun_shot", 96.0, 96.96, 96.48, 0.91)]
    return ScoredRun(recording, name, "ab" * 32, "2026-05-01T06:00:00.000Z", events, trace_of(best, labels), "v0001")


def queue_for(settings: Settings, store: Database) -> ReviewQueue:
    return ReviewQueue(settings, store.review, lambda: class_folders(settings.paths.audio_dir))


def test_decisions_become_clips_that_follow_agreement_and_undo(
        workspace: tuple[Settings, Database, Path]) -> None:
    settings, store, recording = workspace
    queue = queue_for(settings, store)
    name = "site-a/AM07_20260501_060000.WAV"
    assert not queue.reserved_for_evaluation(name)
    ids = queue.fill(scored_run(recording, name))
    assert len(ids) == 6  # per_round
    assert queue.fill(scored_run(recording, name)) == []  # full, and every minute taken already
    top = store.review.item(ids[0])
    assert top is not None and (top.label, top.reason, top.centre_s) == ("gun_shot", "top", 5.28)
    assert top.clock_utc == "2026-05-01T06:00:05.280Z"

    answer = queue.decide(top.id, "ana", "label", "gun_shot")
    clip = settings.paths.audio_dir / answer["item"]["clip"]
    assert answer["item"]["clip"] == f"gun_shot/site-a--AM07_20260501_060000__review_5280ms-i{top.id}.wav"
    info = soundfile.info(clip)
    assert (info.samplerate, info.channels, info.frames) == (16_000, 1, 4 * 16_000)
    patterns = compile_group_patterns(DEFAULT_GROUP_PATTERNS)
    assert group_key(answer["item"]["clip"], patterns) == "site-a--AM07_20260501_060000"
    assert [p.name for p in clip.parent.iterdir()] == [clip.name]  # no temporary left behind

    assert queue.decide(top.id, "ben", "label", "clips")["item"]["outcome"] == "disagreed"
    assert not clip.exists()  # an item counts only when its reviewers agree
    assert queue.undo(top.id, "ben")["item"]["outcome"] == "agreed" and clip.exists()
    queue.decide(top.id, "ana", "label", "dog_bark")  # ana changes her mind: the clip moves
    assert not clip.exists()
    assert (settings.paths.audio_dir / "dog_bark" / clip.name).exists()
    queue.undo(top.id, "ana")
    assert store.review.item(top.id).outcome == "pending"  # type: ignore[union-attr]
    assert not any(settings.paths.audio_dir.rglob("*.wav"))

    assert queue.decide(ids[1], "ana", "uncertain")["item"]["clip"] is None
    assert queue.decide(ids[2], "ana", "skip")["item"]["outcome"] == "pending"
    assert queue.next_for("ana")["id"] == top.id  # type: ignore[index]
    assert queue.next_for("ben")["id"] == top.id  # type: ignore[index]
    with pytest.raises(EcosightError, match="label must be one of the classes: clips, dog_bark, gun_shot"):
        queue.decide(ids[3], "ana", "label", "elephant")
    with pytest.raises(EcosightError, match="no review item 999"):
        queue.decide(999, "ana", "label", "clips")
    assert queue.progress()["round_items"] == 6 and queue.progress()["uncertain"] == 1


def test_an_export_killed_half_way_is_finished_at_start(workspace: tuple[Settings, Database, Path]) -> None:
    settings, store, recording = workspace
    queue = queue_for(settings, store)
    item_id = queue.fill(scored_run(recording, "site-a/AM07_20260501_060000.WAV"))[0]
    store.review.record(item_id, "ana", "label", "gun_shot")  # committed; then the process died:
    store.review.settle(item_id, "agreed", "gun_shot")
    folder = settings.paths.audio_dir / "gun_shot"
    half = folder / f".site-a--AM07_20260501_060000__review_5280ms.{os.getpid()}.0badc0de.tmp.wav"
    half.write_bytes(b"RIFF\x00\x00")

    queue_for(settings, store).recover()
    assert not half.exists()
    item = store.review.item(item_id)
    assert item is not None and item.clip == clip_relpath(item, "gun_shot")
    assert soundfile.info(settings.paths.audio_dir / item.clip).frames == 4 * 16_000


def test_a_recording_reserved_for_evaluation_queues_nothing(workspace: tuple[Settings, Database, Path]) -> None:
    settings, store, recording = workspace
    queue = queue_for(settings, store)
    reserved = next(f"AM09_20260501_{n:06d}.WAV" for n in range(1000)
                    if queue.reserved_for_evaluation(f"AM09_20260501_{n:06d}.WAV"))
    assert queue.fill(scored_run(recording, reserved)) == []
    assert ReviewSettings().per_round == 50


def test_items_never_share_a_clip_and_a_reviewer_has_one_decision_per_item(
        workspace: tuple[Settings, Database, Path]) -> None:
    """On be16e0d two sites' cards with the same AudioMoth name made two agreed items share one
    clip name (the second overwrote the first; an undo of one deleted the other's), a clip name
    over 255 bytes was retried forever, and each repeated decision was a new row."""
    settings, store, recording = workspace
    queue = queue_for(settings, store)
    same_name = "site-a/AM07_20260501_060000.WAV"  # the same name on both cards (detect names a file so)
    first = queue.fill(scored_run(recording, same_name))[0]
    store.review.add([replace(store.review.item(first), sha256="cd" * 32)], 100)  # type: ignore[type-var]
    second = max(i.id for i in store.review.items())
    a = queue.decide(first, "ana", "label", "gun_shot")["item"]["clip"]
    b = queue.decide(second, "ana", "label", "gun_shot")["item"]["clip"]
    assert a != b and (settings.paths.audio_dir / a).exists() and (settings.paths.audio_dir / b).exists()
    queue.undo(first, "ana")
    assert not (settings.paths.audio_dir / a).exists() and (settings.paths.audio_dir / b).exists()

    for _ in range(20):
        queue.decide(second, "ben", "skip")
    queue.decide(second, "ben", "label", "gun_shot")
    shown = queue.shown(store.review.item(second), with_decisions=True)  # type: ignore[arg-type]
    assert len(store.review.decisions(second)) == 2 and shown["votes"] == {"gun_shot": 2}
    assert [d["reviewer"] for d in shown["standing"]] == ["ana", "ben"]

    deep = "site-a" + "/a-very-long-folder-name" * 20 + "/" + same_name
    store.review.add([replace(store.review.item(first), sha256="ef" * 32, recording=deep)], 100)  # type: ignore[type-var]
    long_item = max(i.id for i in store.review.items())
    clip = queue.decide(long_item, "ana", "label", "gun_shot")["item"]["clip"]
    assert len(Path(clip).name.encode()) < 200 and (settings.paths.audio_dir / clip).exists()
    stem = recording_stem(deep)
    assert len(stem) <= 150 and stem != recording_stem(deep.replace("site-a", "site-b"))
    assert group_key(clip, compile_group_patterns(DEFAULT_GROUP_PATTERNS)) == stem
