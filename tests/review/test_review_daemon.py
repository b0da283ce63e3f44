"""The review loop end to end, a real daemon on real audio: a detection run fills the queue
(never from a recording reserved for evaluation); decisions through the CLI, HTTP and the
Review page in Chromium become clips in the right class folders with the recording as their
group; the daemon embeds each once; reviewers who disagree cancel a clip, undo restores
it; a retrain takes the clips; a kill -9 during an export leaves no half clip and loses no
decision."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import soundfile

from ecosight_daemon.artifacts.split_rule import compile_group_patterns, group_key
from ecosight_daemon.config import DEFAULT_GROUP_PATTERNS
from ecosight_daemon.config_file import load_settings
from ecosight_daemon.review.queue import ReviewQueue
from testkit.daemon_process import DaemonProcess, wait_for, write_config
from testkit.field_recordings import soundscape_from, split_by_recording, write_recording
from testkit.paths import BROWSER_TIMEOUT_MS, REPO_ROOT
from tests.detection.test_detect_cli import run_cli

pytestmark = pytest.mark.slow
PER_ROUND = 12
RETRAIN_AFTER = 4  # review clips since the last retrain began; the test reaches it only at its end
TOKENS = {name: f"{name}-token-{'x' * 16}" for name in ("ana", "ben", "chloe", "dan")}


def auth(reviewer: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[reviewer]}"}


def reserved(settings: Any, name: str) -> bool:
    return ReviewQueue(settings, None, lambda: []).reserved_for_evaluation(name)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory, yamnet_handle: str, dev_corpus: Path) -> Iterator[dict[str, Any]]:
    """A workspace trained (v0001) on the training recordings; two soundscapes of held-out
    recordings on a "card": one whose items may be reviewed, one reserved for evaluation."""
    root = tmp_path_factory.mktemp("review")
    split = split_by_recording(dev_corpus)
    for row in split.train:
        target = root / "audio" / row["class"] / Path(row["file"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dev_corpus / row["file"], target)
    reviewers = root / "reviewers"
    reviewers.write_text("# name token\n" + "".join(f"{name} {token}\n" for name, token in TOKENS.items()))
    reviewers.chmod(0o600)
    write_config(root, yamnet_handle, detection='recordings_dir = "recordings"\nscan_interval_s = 0.3',
                 review=f'per_round = {PER_ROUND}\nretrain_after = {RETRAIN_AFTER}\nreviewers_file = "{reviewers}"')
    result = run_cli(root, "retrain")
    assert result.returncode == 0, result.stderr[-3000:]
    settings = load_settings(root / "config.toml")
    names = [f"AM05_20260503_{hour:02d}0000.WAV" for hour in range(24)]
    reviewable = next(n for n in names if not reserved(settings, n))
    evaluation = next(n for n in names if reserved(settings, n))
    for name, seed, seconds in ((reviewable, 11, 600), (evaluation, 12, 120)):  # one background item a minute
        scape = soundscape_from(dev_corpus, split.held_out, seconds, seed=seed, snr_db=(10.0, 25.0),
                                lowpass_share=0.0)
        write_recording(root / "card" / name, scape, rate=32_000)
    yield {"root": root, "reviewable": reviewable, "evaluation": evaluation}


def cache_rows(root: Path, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(root / "models" / "embedding_cache.sqlite3") as db:
        return db.execute(sql, parameters).fetchall()


def review_list(root: Path) -> dict[str, Any]:
    result = run_cli(root, "review", "list", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def embedded_once(daemon: DaemonProcess, clip: str) -> None:
    daemon.wait_embedded(clip, 60)
    assert daemon.log_text().count(f"embedded {clip} (") == 1, clip


def test_reviewed_items_become_clips_the_daemon_learns_from(field: dict[str, Any], browser_page: Any) -> None:
    root, name = field["root"], field["reviewable"]
    stem = name.removesuffix(".WAV")
    audio = root / "audio"
    daemon = DaemonProcess(root).start()
    try:
        daemon.wait_idle(180)
        url = daemon.http_url
        for recording in (name, field["evaluation"]):
            os.rename(root / "card" / recording, root / "recordings" / recording)
        wait_for(lambda: cache_rows(root, "SELECT COUNT(*) FROM recordings WHERE model_version = 'v0001'")[0][0] == 2,
                 120, "both recordings detected")

        # The queue: the run's most telling stretches, one per class and minute, none from the reserved recording.
        queue = review_list(root)
        items = queue["pending"]
        assert len(items) == PER_ROUND and queue["progress"]["round_items"] == PER_ROUND
        assert {i["recording"] for i in items} == {name}
        assert {"near_threshold", "below_threshold"} <= {i["reason"] for i in items}
        assert len({(i["label"], int(i["centre_s"] // 60)) for i in items}) == PER_ROUND
        assert all(i["clock_utc"].startswith(f"2026-05-03T{stem[-6:-4]}:0") for i in items)
        assert f"{field['evaluation']} is reserved for evaluation" in daemon.log_text()
        # One alarm kept aside for the scoreboard: a 10-minute recording may raise as few as three.
        alarm = next(i for i in reversed(items) if i["reason"] == "top")
        first, second, third, fourth = [i for i in items if i["id"] != alarm["id"]][:4]

        # The CLI: a decision is a clip in the class folder, named for its recording (one split group).
        result = run_cli(root, "review", "decide", str(first["id"]), "--label", "gun_shot", "--reviewer", "ana",
                         "--json")
        assert result.returncode == 0, result.stderr[-3000:]
        clip = json.loads(result.stdout)["item"]["clip"]
        assert clip == f"gun_shot/{stem}__review_{round(first['centre_s'] * 1000)}ms-i{first['id']}.wav"
        assert group_key(clip, compile_group_patterns(DEFAULT_GROUP_PATTERNS)) == stem
        info = soundfile.info(audio / clip)
        assert (info.samplerate, info.channels, info.duration) == (16_000, 1, 4.0)
        embedded_once(daemon, clip)
        refused = run_cli(root, "review", "decide", str(first["id"]), "--label", "elephant")
        assert refused.returncode != 0 and "label must be one of the classes" in refused.stderr

        # HTTP: a rejection goes to the background class; a decision needs the reviewer's token, even on
        # loopback (on be16e0d anyone there could relabel gun shots as background), and JSON.
        assert requests.post(url + f"review/{second['id']}", data="label=clips", headers=auth("ben"),
                             timeout=10).status_code == 415
        anonymous = requests.post(url + f"review/{second['id']}", json={"label": "clips", "reviewer": "ben"},
                                  timeout=10)
        assert anonymous.status_code == 401 and "reviewer token" in anonymous.json()["error"]
        posing = requests.post(url + f"review/{second['id']}", json={"label": "clips", "reviewer": "ana"},
                               headers=auth("ben"), timeout=10)  # one credential cannot speak for two people
        assert posing.status_code == 403 and "ben's" in posing.json()["error"]
        assert cache_rows(root, "SELECT COUNT(*) FROM review_decisions WHERE item_id = ?", second["id"]) == [(0,)]
        answer = requests.post(url + f"review/{second['id']}", json={"label": "clips", "reviewer": "ben"},
                               headers=auth("ben"), timeout=30)
        assert answer.status_code == 200, answer.text
        rejected = answer.json()["item"]["clip"]
        assert rejected.startswith(f"clips/{stem}__review_") and answer.json()["next"]["id"] != second["id"]
        embedded_once(daemon, rejected)

        # Two reviewers disagree: the item no longer counts and its clip goes; undo settles it again.
        answer = requests.post(url + f"review/{first['id']}", json={"label": "dog_bark", "reviewer": "ben"},
                               headers=auth("ben"), timeout=30).json()
        assert answer["item"]["outcome"] == "disagreed" and answer["item"]["clip"] is None
        assert not (audio / clip).exists()
        wait_for(lambda: clip not in daemon.embedded_paths(), 30, "the cache to forget the withdrawn clip")
        requests.post(url + f"review/{first['id']}", json={"verdict": "undo", "reviewer": "ben"}, headers=auth("ben"),
                      timeout=30)
        assert (audio / clip).exists()
        undone = run_cli(root, "review", "undo", str(second["id"]), "--reviewer", "ben")
        assert undone.returncode == 0 and not (audio / rejected).exists()

        wait_for(lambda: daemon.status()["review"]["progress"]["round_decided"] == 1, 30, "the status to catch up")
        check_review_page(browser_page, url, audio)

        # One client repeating a decision: one standing row, the flood refused past its burst (429), the
        # status carrying counts, not histories; an id past SQLite's range answered at once (on be16e0d
        # a new row each time, published every 2 s with all its history, and a 120 s hang).
        answers = [requests.post(url + f"review/{fourth['id']}", json={"verdict": "skip", "reviewer": "dan"},
                                 headers=auth("dan"), timeout=10) for _ in range(25)]
        assert {a.status_code for a in answers} == {200, 429}
        assert sum(a.status_code == 200 for a in answers) <= 12
        assert int(next(a for a in answers if a.status_code == 429).headers["Retry-After"]) >= 1
        assert cache_rows(root, "SELECT COUNT(*) FROM review_decisions WHERE item_id = ? AND reviewer = 'dan'",
                          fourth["id"]) == [(1,)]
        shown = wait_for(lambda: next((i for i in daemon.status()["review"]["pending"] if i["id"] == fourth["id"]
                                       and i["votes"]), None), 30, "dan's skip in the status")
        assert shown["votes"] == {"skip": 1} and "decisions" not in shown
        for item_id in (2**63, 2**62, -1):
            asked = time.monotonic()
            answer = requests.post(url + f"review/{item_id}", json={"verdict": "skip", "reviewer": "ana"},
                                   headers=auth("ana"), timeout=30)
            assert answer.status_code in (404, 422) and time.monotonic() - asked < 5, (item_id, answer.text)

        # An alarm rejected: the scoreboard on reviewed items counts it as still raised by v0001.
        requests.post(url + f"review/{alarm['id']}", json={"label": "clips", "reviewer": "ana"}, headers=auth("ana"),
                      timeout=30).raise_for_status()
        wait_for(lambda: daemon.status()["review"]["scoreboard"]["rejected_alarms"] == 1, 30, "the scoreboard")
        board = daemon.status()["review"]["scoreboard"]
        assert board == {"model_versions": ["v0001"], "confirmed_events": 1, "found": board["found"],
                         "rejected_alarms": 1, "still_raised": 1}

        # A retrain takes the reviewed clips (the watcher embedded them like any drop).
        daemon.wait_idle(60)
        requests.post(url + "retrain", json={"trigger_reason": "reviewed"}, timeout=10).raise_for_status()
        wait_for(lambda: len(daemon.retrain_log()) >= 2, 300, "the retrain after review")
        entry = daemon.retrain_log()[-1]
        manifest = (root / "models" / "versions" / entry["version"] / "manifest.csv").read_text()
        assert clip in manifest
        # The gate reports detection beside the clip figures: both detectors on the test split's soundscape.
        assert "detection on a " in entry["reason"] and "gun-shot recall" in entry["reason"], entry["reason"]
        metadata = json.loads((root / "models" / "versions" / entry["version"] / "metadata.json").read_text())
        test_split = metadata["event_detector"]["test_split"]
        assert {"candidate", "incumbent"} <= set(test_split) and test_split["shots"] > 0, test_split
        # ... and judges it: the paired comparison of the two detectors is in the gate's statistics.
        judged = metadata["gate"]["statistics"]["detection"]
        assert judged["shots"] == test_split["shots"] and judged["false_alarms"] == [
            test_split["incumbent"]["false_alarms"], test_split["candidate"]["false_alarms"]], judged
        if entry["status"] == "promoted":  # the gate may keep v0001; a promotion re-scores from the cache
            wait_for(lambda: cache_rows(root, "SELECT model_version FROM recordings WHERE path = ?", name)[0][0]
                     == entry["version"], 60, "the recording re-scored")
            review = wait_for(lambda: (r := daemon.status()["review"])["scoreboard"]["model_versions"] == [
                entry["version"]] and r, 30, "the scoreboard of the new version")
            assert review["scoreboard_before"]["model_versions"] == ["v0001"]
        assert daemon.stop() == 0

        # kill -9 between writing a clip and renaming it in: no half clip, the decision kept, the export finished.
        pause_file = root / "paused"
        daemon = DaemonProcess(root, env={"ECOSIGHT_PAUSE_AT": "review_export",
                                          "ECOSIGHT_PAUSE_FILE": str(pause_file)}).start()
        daemon.wait_idle(180)
        threading.Thread(target=lambda: _post_quietly(daemon.http_url + f"review/{third['id']}",
                                                      {"label": "gun_shot", "reviewer": "ana"}), daemon=True).start()
        wait_for(pause_file.exists, 60, "the export paused before its rename")
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.kill()
        third_ms = round(third["centre_s"] * 1000)
        names = sorted(p.name for p in (audio / "gun_shot").iterdir() if "__review_" in p.name)
        assert [n for n in names if not n.startswith(".")] == [Path(clip).name]  # the third clip is not in
        temporary = f".{stem}__review_{third_ms}ms-i{third['id']}."
        assert [n for n in names if n.startswith(temporary)] != []  # only its temporary
        assert cache_rows(root, "SELECT verdict, label FROM review_decisions WHERE item_id = ? AND undone_at IS NULL",
                          third["id"]) == [("label", "gun_shot")]
        daemon = DaemonProcess(root).start()
        third_clip = f"gun_shot/{stem}__review_{third_ms}ms-i{third['id']}.wav"
        embedded_once(daemon, third_clip)
        assert not [p for p in (audio / "gun_shot").iterdir() if p.name.startswith(".")]
        assert "unfinished clips from an interrupted export removed" in daemon.log_text()
        assert fourth["id"] in [i["id"] for i in review_list(root)["pending"]]

        # [review] retrain_after: the fourth review clip since the last retrain began asks for one, once.
        attempts = len(daemon.retrain_log())
        for item in [i for i in review_list(root)["pending"] if i["id"] != third["id"]][:RETRAIN_AFTER - 1]:
            result = run_cli(root, "review", "decide", str(item["id"]), "--label", item["label"])
            assert result.returncode == 0, result.stderr[-3000:]
        wait_for(lambda: len(daemon.retrain_log()) > attempts, 300, "the retrain review asked for")
        assert daemon.retrain_log()[-1]["trigger_reason"] == f"review: {RETRAIN_AFTER} clips since the last retrain"
        daemon.wait_idle(60)
        assert len(daemon.retrain_log()) == attempts + 1
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def _post_quietly(url: str, body: dict[str, Any]) -> None:
    try:
        requests.post(url, json=body, headers=auth(body["reviewer"]), timeout=30)
    except requests.RequestException:
        pass  # the daemon is killed mid-request


def check_review_page(page: Any, url: str, audio: Path) -> None:
    """Keys decide the shown item: c confirms (a clip), z undoes (the clip goes), u is uncertain (no clip)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=BROWSER_TIMEOUT_MS)
    page.goto(url + "review")
    page.fill("#token", TOKENS["chloe"])
    page.dispatch_event("#token", "change")
    page.fill("#reviewer", "chloe")
    page.dispatch_event("#reviewer", "change")
    item = page.locator("#review-item")
    expect(item).to_be_visible()
    expect(page.locator("#review-progress")).to_contain_text(f"1 of {PER_ROUND} this round")
    page.wait_for_function("""() => { const img = document.getElementById("review-spectrogram");
                                      return img.complete && img.naturalHeight === 128; }""")
    duration = page.locator("#review-audio").evaluate(
        """audio => new Promise((done, failed) => {
               if (audio.readyState >= 1) done(audio.duration);
               audio.addEventListener("loadedmetadata", () => done(audio.duration));
               audio.addEventListener("error", () => failed("the snippet did not load")); })""")
    assert duration == pytest.approx(6.0, abs=0.05)
    shown_label = page.locator("#review-guess").inner_text().removeprefix("model: ")
    page.locator("body").click()
    page.keyboard.press("c")
    expect(page.locator("#review-answer")).to_contain_text("agreed")
    expect(page.locator("#review-progress")).to_contain_text(f"2 of {PER_ROUND} this round")
    made = page.locator("#review-answer").inner_text().split("\u2192 ")[-1]
    assert made.startswith(f"{shown_label}/") and (audio / made).exists()
    page.keyboard.press("z")
    expect(page.locator("#review-answer")).to_contain_text("is back")
    assert not (audio / made).exists()
    page.keyboard.press("u")
    expect(page.locator("#review-answer")).to_contain_text("uncertain")
    out = REPO_ROOT / "test-output" / "dashboard"
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / "review.png"), full_page=False)
