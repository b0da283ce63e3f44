"""`ecosight-daemon detect` end to end, as a real process on real audio: a model trained
on dev clips, run over a field-like recording built only from recordings it never heard
(AudioMoth name, 48 kHz stereo), finds the gun shots at their clock times, and every
output reads back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import soundfile

from ecosight_daemon.detection.outputs import (
    read_audacity_labels,
    read_detections_csv,
    read_raven_table,
)
from ecosight_daemon.training.event_mixing import PlacedEvent, Soundscape
from testkit.field_recordings import soundscape_from, split_by_recording, training_workspace, write_recording
from testkit.paths import hanging_wav

START = datetime(2026, 5, 1, 6, 0, 0, tzinfo=timezone.utc)
COLLAR_S = 0.5


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(root / "config.toml"), *args],
                          capture_output=True, text=True, timeout=900, env=dict(os.environ))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, yamnet_handle: str, dev_corpus: Path) -> tuple[Path, Path]:
    """A workspace whose current model never heard the held-out recordings, and those recordings' soundscape."""
    root = tmp_path_factory.mktemp("detect")
    split = split_by_recording(dev_corpus)
    training_workspace(root, yamnet_handle, dev_corpus, split.train)
    result = run_cli(root, "retrain")
    assert result.returncode == 0, result.stderr[-3000:]
    scape = soundscape_from(dev_corpus, split.held_out, 150, seed=7, snr_db=(15.0, 25.0), lowpass_share=0.0)
    recording = write_recording(root / "field" / "AM01_20260501_060000.WAV", scape, rate=48_000, channels=2)
    (root / "truth.json").write_text(json.dumps([e.as_dict() for e in scape.events]))
    return root, recording


def _truth(root: Path) -> Soundscape:
    events = [PlacedEvent(**e) for e in json.loads((root / "truth.json").read_text())]
    return Soundscape(waveform=None, events=events)  # type: ignore[arg-type]


def _found_and_false_alarms(rows: list[dict[str, str]], root: Path) -> tuple[int, int, int]:
    shots = [e for e in _truth(root).events if e.label == "gun_shot"]
    guns = [r for r in rows if r["class"] == "gun_shot"]

    def overlaps(row: dict[str, str], shot: PlacedEvent) -> bool:
        return float(row["start_s"]) < shot.end_s + COLLAR_S and float(row["end_s"]) > shot.start_s - COLLAR_S

    found = sum(any(overlaps(r, s) for r in guns) for s in shots)
    false_alarms = sum(not any(overlaps(r, s) for s in shots) for r in guns)
    return found, false_alarms, len(shots)


def _detect(root: Path, recording: Path, out: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    result = run_cli(root, "detect", str(recording.parent), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "run.json").read_text())
    return summary, read_detections_csv(out / "detections.csv")


def test_detect_finds_gun_shots_at_their_clock_times(trained: tuple[Path, Path]) -> None:
    root, recording = trained
    metadata = json.loads((root / "models" / "model_metadata.json").read_text())
    calibrated = metadata["event_detector"]
    # A few minutes out of fold cannot show 3 alarms at 1 an hour: the threshold is where the fitted tail
    # of the non-shot scores crosses 1 an hour. Seeing 3 or more alarms there in 0.3 h would be a 0.4% event.
    assert calibrated["calibration"].startswith("fitted tail") and calibrated["out_of_fold_hours"] < 3, calibrated
    assert calibrated["out_of_fold_false_alarms_per_hour"] * calibrated["out_of_fold_hours"] < 2.5, calibrated
    out = root / "out"
    summary, rows = _detect(root, recording, out)
    assert summary["parameters"]["scorer"] == "event detector (per patch)"
    detector = metadata["event_detector"]
    by_scorer = {name: figures["out_of_fold_ranking_recall"]
                 for name, figures in detector["out_of_fold_by_scorer"].items()}
    # another scorer ranks gun shots only where it ranked them better than YAMNet's own score out of fold
    assert len(by_scorer) == 4 and by_scorer[detector["priority_scorer"]] == max(by_scorer.values()), detector
    assert detector["priority_scorer"] == "yamnet_gunshot" or \
        by_scorer[detector["priority_scorer"]] > by_scorer["yamnet_gunshot"], detector
    assert summary["parameters"]["priority_scorer"] == detector["priority_scorer"]
    assert summary["recordings"][0]["clock_source"] == "file_name"
    assert summary["hours_analysed"] == pytest.approx(150 / 3600, abs=1e-4)

    found, false_alarms, shots = _found_and_false_alarms(rows, root)
    # Calibrated for <= 1 false alarm an hour on background it never trained on, the detector
    # is cautious: on these 15 shots (15-25 dB) it found 4 and raised no false alarm when this
    # test was written (benchmarks/detection.py has the honest figures).
    assert found >= 3 and false_alarms <= 1, (found, false_alarms, shots)
    for row in rows:
        assert datetime.fromisoformat(row["start_utc"].replace("Z", "+00:00")) == START + timedelta(
            seconds=float(row["start_s"]))
        assert float(row["start_s"]) <= float(row["peak_s"]) <= float(row["end_s"])
        assert row["model_version"] == summary["model_version"]

    raven = read_raven_table(out / "AM01_20260501_060000.ecosight.selections.txt")
    labels = read_audacity_labels(out / "AM01_20260501_060000.ecosight.labels.txt")
    assert [r["Begin Time (s)"] for r in raven] == [r["start_s"] for r in rows]
    assert [round(start, 3) for start, _, _ in labels] == [float(r["start_s"]) for r in rows]
    assert {r["Begin Path"] for r in raven} == {str(recording.resolve())}


def test_bad_recordings_get_reasons_and_the_rest_are_still_analysed(trained: tuple[Path, Path], tmp_path: Path) -> None:
    root, recording = trained
    folder = tmp_path / "card"
    folder.mkdir()
    (folder / "AM02_20260501_070000.WAV").write_bytes(b"")
    (folder / "AM03_20260501_080000T.WAV").write_bytes(recording.read_bytes()[:200_000])
    truncated = folder / "AM04_20260501_090000.WAV"
    truncated.write_bytes(recording.read_bytes()[:44 + 48_000 * 2 * 2 * 30])  # header: 150 s; data: 30 s
    out = tmp_path / "out"
    result = run_cli(root, "detect", str(folder), "--out", str(out), "--json")
    assert result.returncode == 1, result.stderr[-2000:]  # some recordings could not be analysed
    by_name = {Path(r["file"]).name: r for r in json.loads(result.stdout)["recordings"]}
    assert "not a readable" in by_name["AM02_20260501_070000.WAV"]["error"]
    assert "triggered" in by_name["AM03_20260501_080000T.WAV"]["error"]
    cut = by_name["AM04_20260501_090000.WAV"]
    assert "error" not in cut and "150.0 s" in cut["truncated"]
    assert cut["seconds_analysed"] == pytest.approx(soundfile.info(str(truncated)).duration, abs=0.01)
    assert "AM02_20260501_070000.WAV: skipped: " in result.stderr


def test_absurd_clocks_hanging_files_and_same_named_cards_never_stop_or_collide(
        trained: tuple[Path, Path], tmp_path: Path) -> None:
    """On be16e0d a name in year 9999 (it overflows once an event's offset is added) killed
    `detect` with a traceback and no outputs for the hours analysed; two sites' cards with one
    AudioMoth name wrote one Raven and one Audacity table, the second over the first."""
    root, recording = trained
    folder = tmp_path / "cards"
    for site in ("site-a", "site-b"):
        (folder / site).mkdir(parents=True)
        shutil.copyfile(recording, folder / site / "AM06_20260501_060000.WAV")
    shutil.copyfile(recording, folder / "AM07_99991231_235959.WAV")
    shutil.copyfile(hanging_wav(), folder / "hangs_libsndfile.wav")
    out = tmp_path / "out"
    result = run_cli(root, "detect", str(folder), "--out", str(out), "--json")
    assert result.returncode == 1, result.stderr[-2000:]  # one recording could not be analysed
    assert "Traceback" not in result.stderr
    by_path = {r["file"]: r for r in json.loads(result.stdout)["recordings"]}
    assert "took longer than" in by_path[str(folder / "hangs_libsndfile.wav")]["error"]
    absurd = by_path[str(folder / "AM07_99991231_235959.WAV")]
    assert "error" not in absurd and absurd["clock_source"] == "invalid", absurd
    rows = read_detections_csv(out / "detections.csv")
    assert str(folder / "AM07_99991231_235959.WAV") in {r["file"] for r in rows}
    assert json.loads((out / "run.json").read_text())["recordings"]  # written, with every recording
    for suffix in (".selections.txt", ".labels.txt"):
        tables = sorted(p.name for p in out.iterdir() if p.name.startswith("AM06_") and p.name.endswith(suffix))
        assert len(tables) == 2, tables  # one per card


def test_the_current_model_runs_in_numpy_exactly_as_its_keras_file(trained: tuple[Path, Path]) -> None:
    """detect and predict label with classifier.npz: no TensorFlow in the process, same probabilities."""
    import numpy as np

    from ecosight_daemon.artifacts.keras_model import load_classifier, predict_probabilities
    from ecosight_daemon.versions.registry import ModelRegistry

    root, _ = trained
    probe = ("import sys; from pathlib import Path; from ecosight_daemon.versions.registry import ModelRegistry; "
             f"m = ModelRegistry(Path({str(root / 'models')!r})).current_model(); "
             "print(type(m.classifier).__name__, 'tensorflow' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert loaded.stdout.split() == ["LogisticFit", "False"], loaded.stderr[-2000:]

    registry = ModelRegistry(root / "models")
    model = registry.current_model()
    assert model is not None
    features = np.random.default_rng(0).normal(size=(64, model.classifier.mean.shape[0])).astype(np.float32)
    keras_model = load_classifier(registry.current_model_path())
    np.testing.assert_allclose(model.probabilities(features), predict_probabilities(keras_model, features), atol=1e-5)


def test_sites_gives_a_device_port_each_recorders_offsets_raised_for_a_recurring_sound_lowered_where_quiet(
        trained: tuple[Path, Path]) -> None:
    """What the daemon learned per recorder, exported for a device: a recorder whose own audio
    holds a recurring gun-shot-like sound gets the offset that keeps it within the budget; a
    quiet one with hours enough to count alarms gets a lower gun-shot threshold."""
    import numpy as np

    from ecosight_daemon.artifacts.event_detector import EventDetector
    from ecosight_daemon.artifacts.score_tail import alarm_peak_histogram
    from ecosight_daemon.config_file import load_settings
    from ecosight_daemon.store.database import Database

    root, _ = trained
    settings = load_settings(root / "config.toml")
    version = json.loads((root / "models" / "model_metadata.json").read_text())["version"]
    detector = EventDetector.load(root / "models" / "versions" / version / "event_detector.npz")
    gun = detector.classes.index("gun_shot")
    rng = np.random.default_rng(5)
    store = Database.open(settings.cache_path, settings.embedding.storage_dtype)
    bangs: list[np.ndarray] = []
    for path, hours in (("AM07/AM07_20260501_060000.WAV", 1.0), ("AM07/AM07_20260501_070000.WAV", 1.0),
                        ("AM08/AM08_20260501_060000.WAV", 0.5), ("AM09/AM09_20260501_000000.WAV", 4.0)):
        margins = rng.gumbel(-9.0, 0.8, size=(round(hours * 7500), len(detector.classes)))
        if path.startswith("AM07"):  # a generator's knock 200 times an hour, well above the gun-shot threshold
            margins[np.arange(200) * 30, gun] = bang = rng.normal(detector.threshold + 3.0, 0.5, 200)
            bangs.append(bang)
        if path.startswith("AM09"):
            margins -= 4.0  # far quieter than the sites the threshold was calibrated on
        store.recordings.note(path, 1, 1)
        store.recordings.started(path, path, None, "none", None)
        store.recordings.done_from_cache(path, hours * 3600, None)
        store.sites.record(path, path, path[:4], version, hours * 3600, alarm_peak_histogram(margins))
    store.close()

    result = run_cli(root, "sites", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads(result.stdout)
    assert table["model_version"] == version and table["classes"] == detector.classes
    sites = {s["recorder"]: s for s in table["sites"]}
    assert sites["AM08"]["applies"] is False and set(sites["AM08"]["margin_offsets"].values()) == {0.0}
    assert sites["AM07"]["applies"] is True and sites["AM07"]["hours_learned"] == 2.0
    offset = sites["AM07"]["margin_offsets"]["gun_shot"]
    knocks = np.concatenate(bangs)
    assert np.sum(knocks >= detector.threshold) == len(knocks)  # every knock alarmed before
    assert np.sum(knocks - offset >= detector.threshold) / 2.0 <= table["budget_false_alarms_per_hour"] * 1.5
    # AM09: 4 quiet hours (its gun-shot margins far below the threshold) count alarms at the budget:
    # its gun-shot threshold is lowered to where its own audio crossed it at most once an hour.
    quiet = sites["AM09"]["margin_offsets"]["gun_shot"]
    assert sites["AM09"]["applies"] is True and quiet < 0, sites["AM09"]
    human = run_cli(root, "sites")
    assert human.returncode == 0 and "AM07: 2.00 h learned, applies" in human.stdout, human.stdout + human.stderr
    assert f"'gun_shot': {quiet}" in human.stdout.split("AM09")[1], human.stdout


def test_a_version_without_an_event_detector_runs_the_clip_model_over_windows(trained: tuple[Path, Path]) -> None:
    """The fallback (and the benchmark's floor): last in this module, it removes the detector."""
    root, recording = trained
    metadata = json.loads((root / "models" / "model_metadata.json").read_text())
    (root / "models" / "versions" / metadata["version"] / "event_detector.npz").unlink()
    summary, rows = _detect(root, recording, root / "out-windows")
    assert summary["parameters"]["scorer"].startswith("clip model over sliding windows")
    found, false_alarms, shots = _found_and_false_alarms(rows, root)
    # It found 10 of 15 (and raised more false alarms than the detector) when this test was written.
    assert found >= 0.5 * shots, (found, false_alarms, shots)


def test_detect_review_queues_items_from_the_run(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from ecosight_daemon.config_file import load_settings
    from ecosight_daemon.review.queue import ReviewQueue

    root, recording = trained
    queue = ReviewQueue(load_settings(root / "config.toml"), None, lambda: [])  # type: ignore[arg-type]
    name = next(f"AM06_20260501_{hour:02d}0000.WAV" for hour in range(24)
                if not queue.reserved_for_evaluation(f"AM06_20260501_{hour:02d}0000.WAV"))
    shutil.copyfile(recording, tmp_path / name)
    result = run_cli(root, "detect", str(tmp_path / name), "--out", str(tmp_path / "out"), "--review", "4", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    queued = json.loads(result.stdout)["review_items_queued"]
    assert 0 < len(queued) <= 4
    listed = run_cli(root, "review", "list", "--json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    items = {i["id"]: i for i in json.loads(listed.stdout)["pending"]}
    assert sorted(items) == sorted(queued)
    for item in items.values():
        assert item["recording"] == name and item["path"] == str((tmp_path / name).resolve())
        assert item["clock_utc"].startswith(f"2026-05-01T{name[14:16]}:0")
