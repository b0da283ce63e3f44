"""The daemon's recordings_dir end to end, a real daemon on real audio: a recording copied in
(paused half-way) is analysed once, when complete; its events equal `detect`'s, at their
clock times; a gun shot is a log line, a webhook POST (retried), Prometheus counts and a
row on the Detections page in Chromium (spectrogram and player cut on demand); a promotion
re-scores it from cached embeddings (none computed again); a kill -9 mid-recording resumes
where the cache stops."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import soundfile

from ecosight_daemon.detection.outputs import read_detections_csv
from ecosight_daemon.detection.snippets import SNIPPET_S
from testkit.daemon_process import DaemonProcess, wait_for, write_config
from testkit.field_recordings import soundscape_from, split_by_recording, write_recording
from testkit.paths import BROWSER_TIMEOUT_MS, REPO_ROOT
from tests.detection.test_detect_cli import run_cli

pytestmark = pytest.mark.slow
START = datetime(2026, 5, 1, 6, 0, 0, tzinfo=timezone.utc)
FIRST = "AM01_20260501_060000.WAV"
SECOND = "AM02_20260502_043000.WAV"
INCOMPLETE_SETTLE_S = 20.0


WEBHOOK_KEY = "a webhook signing key, 32 chars.."


class WebhookReceiver:
    """A local HTTP server that answers the first POST 500 (so the daemon must retry), then 200;
    it verifies each POST's signature as a receiver would (an unsigned or forged one: 401)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self.forged = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                signed = (self.headers.get("X-EcoSight-Timestamp", "") + ".").encode() + raw
                expected = "sha256=" + hmac.new(WEBHOOK_KEY.encode(), signed, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(self.headers.get("X-EcoSight-Signature", ""), expected):
                    receiver.forged += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.loads(raw)
                if receiver.refused == 0:
                    receiver.refused += 1
                    self.send_response(500)
                else:
                    receiver.received.append(body)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory, yamnet_handle: str, dev_corpus: Path) -> Iterator[dict[str, Any]]:
    """A workspace trained (v0001) on most training recordings, the rest kept to add later;
    two recordings built from held-out recordings, on a "card" outside the daemon's folders."""
    root = tmp_path_factory.mktemp("recordings")
    split = split_by_recording(dev_corpus)
    groups = sorted({row["group"] for row in split.train if row["class"] != "gun_shot"})[::8]
    later = [row for row in split.train if row["group"] in groups][:12]
    for row in split.train:
        folder = root / ("later" if row in later else "audio") / row["class"]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dev_corpus / row["file"], folder / Path(row["file"]).name)
    hook = WebhookReceiver()
    key = root / "webhook.key"
    key.write_text(WEBHOOK_KEY)
    key.chmod(0o600)
    # A team that wants its dog barks and engines shown and can take the noise: at the default
    # budget (1 an hour) this small corpus's detector reports none in 150 s, and the Detections
    # page is tested choosing gun shots among other classes.
    write_config(root, yamnet_handle, detection=(
        f'recordings_dir = "recordings"\nscan_interval_s = 0.3\nincomplete_settle_s = {INCOMPLETE_SETTLE_S}\n'
        'false_alarms_per_hour = 30.0'),
        alerts=f'webhook_url = "{hook.url}"\nwebhook_timeout_s = 2.0\nwebhook_secret_file = "{key}"',
        # The subject here is re-scoring after a promotion, not the gate: at this significance no
        # test split this small can refuse v0002 (the gate is tested in tests/training and tests/review).
        promotion="significance = 0.000001")
    result = run_cli(root, "retrain")
    assert result.returncode == 0, result.stderr[-3000:]
    card = root / "card"
    first = soundscape_from(dev_corpus, split.held_out, 150, seed=7, snr_db=(15.0, 25.0), lowpass_share=0.0)
    write_recording(card / FIRST, first, rate=48_000, channels=2)
    second = soundscape_from(dev_corpus, split.held_out, 200, seed=8, snr_db=(15.0, 25.0), lowpass_share=0.0)
    write_recording(card / SECOND, second)
    yield {"root": root, "hook": hook, "later": later}
    hook.server.shutdown()


def cache_rows(root: Path, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(root / "models" / "embedding_cache.sqlite3") as db:
        return db.execute(sql, parameters).fetchall()


def stored_events(root: Path, name: str) -> list[tuple[Any, ...]]:
    return cache_rows(root, "SELECT label, start_s, end_s, peak_s, round(score, 3), model_version FROM detections "
                            "WHERE path = ? ORDER BY start_s, label", name)


def detect_events(root: Path, name: str) -> list[tuple[Any, ...]]:
    out = root / f"out-{name}"
    result = run_cli(root, "detect", str(root / "recordings" / name), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_detections_csv(out / "detections.csv")
    return sorted(((r["class"], float(r["start_s"]), float(r["end_s"]), float(r["peak_s"]),
                    round(float(r["score"]), 3), r["model_version"]) for r in rows), key=lambda e: (e[1], e[0]))


def assert_same_events(daemon: list[tuple[Any, ...]], detect: list[tuple[Any, ...]]) -> None:
    """The daemon's events are detect's: same classes, times and version; scores within 0.002
    (the cache keeps embeddings as float16)."""
    assert [e[:4] + e[5:] for e in daemon] == [e[:4] + e[5:] for e in detect]
    assert all(abs(a[4] - b[4]) <= 0.002 for a, b in zip(daemon, detect, strict=True)), (daemon, detect)


def recording_state(daemon: DaemonProcess, name: str) -> tuple[str | None, str | None]:
    rows = cache_rows(daemon.root, "SELECT state, model_version FROM recordings WHERE path = ?", name)
    return rows[0] if rows else (None, None)


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_recordings_are_detected_alerted_shown_rescored_and_resumed(field: dict[str, Any], browser_page: Any) -> None:
    root, hook = field["root"], field["hook"]
    daemon = DaemonProcess(root).start()
    try:
        daemon.wait_idle(180)
        url = daemon.http_url
        recordings = root / "recordings"
        assert recordings.is_dir()  # made at start

        # Copied in with a pause half-way: the WAV holds less than its header says, so it waits.
        data = (root / "card" / FIRST).read_bytes()
        with (recordings / FIRST).open("wb") as copy:
            copy.write(data[:len(data) // 2])
            copy.flush()
            wait_for(lambda: (daemon.status().get("recordings") or {}).get("settling") == 1, 30, "the copy settling")
            threading.Event().wait(3.0)  # longer than settle_s and several scans
            assert recording_state(daemon, FIRST) == (None, None), "a half-copied WAV was taken"
            copy.write(data[len(data) // 2:])
        wait_for(lambda: recording_state(daemon, FIRST) == ("done", "v0001"), 120, "the recording detected")
        assert daemon.log_text().count(f"recording {FIRST}: new") == 1

        events = stored_events(root, FIRST)
        assert_same_events(events, detect_events(root, FIRST))
        shots = [e for e in events if e[0] == "gun_shot"]
        assert shots, events  # the detector finds some of the 15-25 dB shots (test_detect_cli.py counts them)

        # The status file is published every few seconds: it may not show the cache's "done" yet.
        status = wait_for(lambda: (s := daemon.status().get("recordings") or {}).get("by_state", {}).get("done") == 1
                          and s, 30, "the status showing the recording done")
        assert status["hours_analysed"] == pytest.approx(150 / 3600, abs=1e-3)
        learned = status["site_learning"]  # AM01's 150 s are learned from; under an hour, they change nothing yet
        assert learned["enabled"] and learned["sites"] == [
            {"recorder": "AM01", "hours_learned": pytest.approx(150 / 3600, abs=1e-3), "applies": False,
             "threshold_offsets": {}}]
        for item in status["recent"]:
            clock = datetime.fromisoformat(item["clock_time"].replace("Z", "+00:00"))
            assert clock == START + timedelta(seconds=item["peak_s"])

        # Alerts: a log line and a webhook POST per gun shot (the first POST refused, then retried).
        assert daemon.log_text().count("DETECTION gun_shot at 2026-05-01T06:") == len(shots)
        wait_for(lambda: len(hook.received) == len(shots), 60, "every gun shot at the webhook")
        assert hook.refused == 1 and hook.forged == 0
        assert sorted(h["peak_s"] for h in hook.received) == sorted(s[3] for s in shots)
        assert {h["model_version"] for h in hook.received} == {"v0001"}
        metrics = requests.get(url + "metrics", timeout=10).text
        assert metric(metrics, 'ecosight_detections_total{class="gun_shot"}') == len(shots)
        assert metric(metrics, 'ecosight_recordings{state="done"}') == 1
        assert metric(metrics, "ecosight_recording_hours_analysed") == pytest.approx(150 / 3600, abs=1e-3)

        newest = status["recent"][0]  # the page shows the same events, newest first
        check_detections_page(browser_page, url, status, snippet_s=min(
            SNIPPET_S, 150 - max(0.0, newest["peak_s"] - SNIPPET_S / 2)))  # cut short only by the file's end

        # A promotion re-scores from the cache: no chunk embedded again, no alert sent again.
        chunks_before = cache_rows(root, "SELECT COUNT(*), SUM(patches) FROM recording_chunks")
        for row in field["later"]:
            target = daemon.audio / row["class"] / Path(row["file"]).name
            shutil.copyfile(root / "later" / row["class"] / target.name, target)
        for row in field["later"]:  # each file itself: a status published before the watcher saw them says 0 pending
            daemon.wait_embedded(f"{row['class']}/{Path(row['file']).name}", timeout=120)
        requests.post(url + "retrain", json={"trigger_reason": "clips added"}, timeout=10).raise_for_status()
        wait_for(lambda: daemon.status().get("model_version") == "v0002", 300, "v0002 promoted")
        wait_for(lambda: recording_state(daemon, FIRST) == ("done", "v0002"), 60, "the recording re-scored")
        assert cache_rows(root, "SELECT COUNT(*), SUM(patches) FROM recording_chunks") == chunks_before
        assert daemon.log_text().count(f"recording {FIRST}: 150.0 s analysed") == 1
        assert "re-scored from cached embeddings" in daemon.log_text()
        assert_same_events(stored_events(root, FIRST), detect_events(root, FIRST))
        assert len(hook.received) == len(shots)

        # Moved into archive/ inside the folder, and copied under another name: the chunks are reused by
        # content (none embedded again) and no event is alerted twice (on be16e0d the cache was emptied,
        # the file embedded again and every gun shot sent again).
        (recordings / "archive").mkdir()
        os.rename(recordings / FIRST, recordings / "archive" / FIRST)
        shutil.copyfile(recordings / "archive" / FIRST, recordings / f"copy_{FIRST}")
        for moved in (f"archive/{FIRST}", f"copy_{FIRST}"):
            wait_for(lambda name=moved: recording_state(daemon, name) == ("done", "v0002"), 120, f"{moved} scored")
        wait_for(lambda: recording_state(daemon, FIRST) == (None, None), 30, "the old path forgotten")
        assert cache_rows(root, "SELECT COUNT(*), SUM(patches) FROM recording_chunks") == chunks_before
        alerted = {round(s[1] * 1000) for s in shots}
        new_starts = {round(e[1] * 1000) for e in stored_events(root, f"copy_{FIRST}") if e[0] == "gun_shot"}
        threading.Event().wait(3.0)  # any alert would be on its way by now
        assert len(hook.received) == len(shots) + len(new_starts - alerted)  # only v0002's own new events
        assert len({h["start_s"] for h in hook.received}) == len(hook.received)  # one content: no start twice

        # A FLAC copy that stalls: its header cannot tell, so it waits incomplete_settle_s unchanged and is
        # analysed once, complete (on be16e0d: analysed truncated, alerted, then analysed and alerted again).
        flac = f"{Path(SECOND).stem}.flac"
        samples, rate = soundfile.read(root / "card" / SECOND, dtype="float32")
        soundfile.write(root / "card" / flac, samples, rate, format="FLAC")
        data = (root / "card" / flac).read_bytes()
        with (recordings / flac).open("wb") as copy:
            copy.write(data[:len(data) // 3])
            copy.flush()
            threading.Event().wait(INCOMPLETE_SETTLE_S / 2)  # a stall longer than settle_s and many scans
            assert recording_state(daemon, flac) == (None, None), "a stalled FLAC copy was taken"
            copy.write(data[len(data) // 3:])
        wait_for(lambda: recording_state(daemon, flac) == ("done", "v0002"), 180, "the FLAC analysed")
        assert daemon.log_text().count(f"recording {flac}: new") == 1
        assert daemon.log_text().count(f"recording {flac}: changed") == 0
        assert daemon.stop() == 0

        # kill -9 part-way through a recording: the restart resumes where the cache stops.
        pause_file = root / "paused"
        daemon = DaemonProcess(root, env={"ECOSIGHT_PAUSE_AT": "recording_chunk",
                                          "ECOSIGHT_PAUSE_FILE": str(pause_file), "ECOSIGHT_PAUSE_ONCE": "1"}).start()
        daemon.wait_idle(180)
        os.rename(root / "card" / SECOND, recordings / SECOND)  # moved in: complete at once
        wait_for(pause_file.exists, 120, "the daemon paused after its second chunk")
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.kill()
        cached = cache_rows(root, "SELECT SUM(patches) FROM recording_chunks c JOIN recordings r "
                                  "ON r.sha256 = c.sha256 WHERE r.path = ?", SECOND)[0][0]
        assert recording_state(daemon, SECOND)[0] == "detecting" and cached == 256, cached
        daemon = DaemonProcess(root).start()
        wait_for(lambda: recording_state(daemon, SECOND) == ("done", "v0002"), 120, "the recording finished")
        assert f"{SECOND}: resuming at 122.9 s (256 patches already cached)" in daemon.log_text()
        assert_same_events(stored_events(root, SECOND), detect_events(root, SECOND))
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def check_detections_page(page: Any, url: str, status: dict[str, Any], snippet_s: float) -> None:
    """Opens on gun shots with the recorder's timeline; filters by class, recording and clock time."""
    from playwright.sync_api import expect

    expect.set_options(timeout=BROWSER_TIMEOUT_MS)
    shots = status["recent_by_class"]["gun_shot"]
    assert len(status["recent"]) > len(shots)  # dog barks and engines found too: the page must choose
    page.goto(url + "detections")
    items = page.locator("li.detection")
    expect(items).to_have_count(len(shots))
    assert set(items.evaluate_all("items => items.map(i => i.dataset.class)")) == {"gun_shot"}
    expect(items.first.locator("time")).to_contain_text("2026-05-01T06:")
    timeline = page.locator("svg#timeline")
    expect(timeline.locator("text").first).to_have_text("AM01")
    expect(timeline.locator("rect.analysed")).to_have_count(1)
    expect(timeline.locator("rect.analysed title")).to_have_text(FIRST)
    expect(timeline.locator("line.event.priority")).to_have_count(len(shots))

    page.select_option("select[name=class]", "all")
    page.click("#detection-filters button")
    expect(items).to_have_count(len(status["recent"]))
    expect(timeline.locator("line.event.other")).to_have_count(len(status["recent"]) - len(shots))
    first_shot = datetime.fromisoformat(shots[-1]["clock_time"].replace("Z", "+00:00"))  # newest first
    page.select_option("select[name=class]", "gun_shot")
    page.fill("input[name=since]", (first_shot + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M"))
    page.click("#detection-filters button")
    later = [d for d in shots if datetime.fromisoformat(d["clock_time"].replace("Z", "+00:00"))
             >= (first_shot + timedelta(minutes=1)).replace(second=0, microsecond=0)]
    expect(items).to_have_count(len(later))
    page.goto(url + "detections?class=gun_shot&recording=" + FIRST)
    expect(items).to_have_count(len(shots))
    page.goto(url + "detections?class=gun_shot&recording=elsewhere.WAV&since=yesterday")
    expect(items).to_have_count(0)
    expect(page.locator("#detection-filters .problem")).to_contain_text("since 'yesterday' is not a date")
    page.goto(url + "detections")
    expect(items).to_have_count(len(shots))
    page.wait_for_function("""() => [...document.querySelectorAll("li.detection img")].slice(0, 3)
                                    .every(img => img.complete && img.naturalHeight === 128)""")
    duration = items.first.locator("audio").evaluate(
        """audio => new Promise((done, failed) => {
               audio.addEventListener("loadedmetadata", () => done(audio.duration));
               audio.addEventListener("error", () => failed("the snippet did not load"));
               audio.preload = "metadata"; audio.load(); })""")
    assert duration == pytest.approx(snippet_s, abs=0.05)
    out = REPO_ROOT / "test-output" / "dashboard"
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / "detections.png"), full_page=False)
