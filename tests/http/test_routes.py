"""The HTTP routes and their security, in-process with FastAPI's TestClient, against a
real Daemon (real YAMNet, real files, real SQLite) whose loop turns on its own thread."""

from __future__ import annotations

import ast
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecosight_daemon.config_file import settings_from_mapping
from ecosight_daemon.daemon.loop import Daemon
from ecosight_daemon.daemon.predictions import UPLOAD_DECODE_S
from ecosight_daemon.http.routes import ApiSettings, build_app
from ecosight_daemon.versions.registry import ModelRegistry
from testkit.audio_files import WavWriter
from testkit.daemon_process import wait_for
from testkit.paths import REPO_ROOT, hanging_wav

fastapi_testclient = pytest.importorskip("fastapi.testclient")
PORT = 8765  # only named in Host headers: TestClient opens no socket
BASE = f"http://127.0.0.1:{PORT}"
TOKEN = "s3cret-token-0123456789abcdef"


class LoopThread:
    """A real Daemon whose start() and loop run on one thread (SQLite stays on its thread)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-daemon-loop", daemon=True)
        self.thread.start()
        wait_for(lambda: self.error or self.daemon.snapshot().get("state") == "idle", 120, "the daemon idle")
        assert self.error is None, self.error

    def _run(self) -> None:
        try:
            self.daemon.start()
            while not self.daemon.stopped:
                self.daemon.step(timeout=0.1)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def stop(self) -> None:
        self.daemon.request_stop("test over")
        self.thread.join(timeout=60)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, yamnet: Any) -> Iterator[LoopThread]:
    """A daemon with a first model, trained over HTTP from synthetic clips."""
    import soundfile

    from testkit.audio_files import synthetic_signal

    root = tmp_path_factory.mktemp("http")
    for label, kind in (("gun_shot", "clicks"), ("dog_bark", "tone"), ("engine_idling", "noise")):
        for i in range(6):
            path = root / "audio" / label / f"{label}{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, synthetic_signal(kind, 1.0, 16_000, seed=i), 16_000)
    settings = settings_from_mapping({
        "paths": {"audio_dir": "audio", "models_dir": "models"},
        "training": {"min_class_files": 3, "keep_warm": False},
        "triggers": {"min_new_samples": 1000},
        "promotion": {"min_macro_f1": 0.0, "min_priority_recall": 0.0},
        "http": {"enabled": False},  # the app is built by the tests, around this daemon
    }, root, {})
    loop = LoopThread(Daemon(settings, lambda handle: yamnet))
    try:
        client = client_for(loop.daemon)
        answer = client.post("/retrain", json={"trigger_reason": "first model"})
        assert answer.status_code == 202, answer.text
        wait_retrained(loop.daemon, (0, 0.0))
        yield loop
    finally:
        loop.stop()


def client_for(daemon: Daemon, token: str | None = None, cap: int = 5_000_000,
               base_url: str = BASE) -> Any:
    settings = ApiSettings("127.0.0.1", PORT, token, daemon.settings.paths.models_dir, cap)
    app = build_app(daemon, settings, daemon.events, daemon.metrics)
    return fastapi_testclient.TestClient(app, base_url=base_url)


def add_embedded_clip(daemon: Daemon, relpath: str, seed: int = 77) -> None:
    import soundfile

    from testkit.audio_files import synthetic_signal

    soundfile.write(daemon.settings.paths.audio_dir / relpath, synthetic_signal("clicks", 1.0, 16_000, seed), 16_000)

    def state() -> str | None:
        with sqlite3.connect(daemon.settings.cache_path) as db:
            row = db.execute("SELECT state FROM files WHERE path = ?", (relpath,)).fetchone()
        return None if row is None else str(row[0])

    wait_for(lambda: state() == "embedded", 60, f"{relpath} embedded")


def current_version(daemon: Daemon) -> str | None:
    return ModelRegistry(daemon.settings.paths.models_dir).current_version()


def retrain_log(daemon: Daemon) -> list[dict[str, Any]]:
    path = daemon.settings.paths.models_dir / "retraining_log.json"
    return json.loads(path.read_text()) if path.exists() else []


def last_attempt(daemon: Daemon) -> tuple[int, float]:
    """Attempts logged and when the newest started (repeated `unchanged` attempts share an entry)."""
    log = retrain_log(daemon)
    return len(log), log[-1].get("started_at", 0.0) if log else 0.0  # a rollback's entry has none


def wait_retrained(daemon: Daemon, before: tuple[int, float]) -> None:
    """Until the next attempt is logged and its run has let go (report and export written)."""
    wait_for(lambda: last_attempt(daemon) != before and daemon.snapshot().get("state") == "idle"
             and not daemon.snapshot().get("retrain_running") and not daemon.snapshot().get("retrain_queued"),
             300, "the retrain to finish")


def test_retrain_is_accepted_and_its_reason_recorded_verbatim_with_the_http_prefix(trained: LoopThread) -> None:
    client = client_for(trained.daemon)
    before = last_attempt(trained.daemon)
    reason = "Manual retraining request: ranger Ana, camp 3 (ñandú clips added)"
    answer = client.post("/retrain", json={"trigger_reason": reason})
    assert answer.status_code == 202
    assert answer.json()["trigger_reason"] == "HTTP: " + reason and answer.json()["when"]
    wait_retrained(trained.daemon, before)
    assert retrain_log(trained.daemon)[-1]["trigger_reason"] == "HTTP: " + reason


@pytest.mark.parametrize("body", [{"trigger_reason": ""}, {"trigger_reason": 5}, {"trigger_reason": "a\nb"},
                                  {"trigger_reason": "x" * 501}, ["not", "an", "object"]])
def test_a_bad_reason_is_refused_and_nothing_is_queued(trained: LoopThread, body: Any) -> None:
    answer = client_for(trained.daemon).post("/retrain", json=body)
    assert answer.status_code == 422 and "trigger_reason" in answer.json()["error"]


def test_status_health_history_and_a_version(trained: LoopThread) -> None:
    client = client_for(trained.daemon)
    status = client.get("/status").json()
    assert status["state"] == "idle" and status["running"] is True and status["problem"] is None
    assert status["classes"]["gun_shot"]["embedded"] == 6
    assert client.get("/health").json() == {"healthy": True}
    history = client.get("/history").json()
    assert history[0]["trigger_reason"] == "HTTP: first model" and history[0]["status"] == "promoted"
    model = client.get("/models/v0001").json()
    assert model["status"] == "promoted" and model["test_metrics"]["test_samples"] >= 1
    assert model["links"]["report.html"] == "/models/v0001/report.html"
    report = client.get("/models/v0001/report.html")
    assert report.status_code == 200 and "<html" in report.text.lower()
    assert client.get("/models/v0001/confusion_matrix.png").headers["content-type"] == "image/png"
    for path in ("/models/v9999", "/models/..%2f..%2fconfig", "/models/v0001/metadata.json",
                 "/models/v0001/..%2f..%2f..%2fconfig.toml"):
        assert client.get(path).status_code == 404, path


def test_metrics_follow_prometheus_conventions(trained: LoopThread) -> None:
    answer = client_for(trained.daemon).get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = answer.text
    for line in ('ecosight_files{class="gun_shot",state="embedded"} 6.0', 'ecosight_daemon_state{state="idle"} 1.0',
                 "ecosight_embeddings_computed_total 18.0",
                 'ecosight_retrain_runs_total{outcome="promoted",trigger="http"}',
                 'ecosight_gate_decisions_total{decision="promote"}',
                 f"ecosight_model_version {int(str(current_version(trained.daemon))[1:])}.0",
                 'ecosight_model_recall_ratio{class="gun_shot"}', "ecosight_embed_duration_seconds_count 18.0",
                 "ecosight_retrain_duration_seconds_count", "ecosight_inbox_file_events 0.0",
                 "ecosight_last_scan_timestamp_seconds", "ecosight_last_embed_timestamp_seconds"):
        assert line in text, line
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert all(name.startswith("ecosight_") for name in names)
    assert not any(name.endswith("_created") for name in names)


def test_predict_labels_an_upload_with_the_bounded_decoder(trained: LoopThread, write_wav: WavWriter,
                                                           tmp_path: Path) -> None:
    client = client_for(trained.daemon)
    clip = write_wav(tmp_path / "shot.wav", "clicks", seed=3).read_bytes()
    answer = client.post("/predict", content=clip, headers={"Content-Type": "application/octet-stream"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["label"] in ("gun_shot", "dog_bark", "engine_idling")
    assert result["model_version"] == current_version(trained.daemon)
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
    bad = client.post("/predict", content=b"RIFF" + b"\0" * 100, headers={"Content-Type": "audio/wav"})
    assert bad.status_code == 422 and bad.json()["error"]
    plain = client.post("/predict", content=clip, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415


def test_uploads_are_capped_while_they_stream_in(trained: LoopThread) -> None:
    client = client_for(trained.daemon, cap=1000)
    declared = client.post("/predict", content=b"\0" * 1001, headers={"Content-Type": "application/octet-stream"})
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while reading
        for _ in range(100):
            yield b"\0" * 100

    streamed = client.post("/predict", content=chunks(), headers={"Content-Type": "application/octet-stream"})
    assert streamed.status_code == 413


def test_json_bodies_are_capped_and_deep_nesting_is_refused_not_a_crash(trained: LoopThread) -> None:
    """A 200 MB body used to be read whole (RSS +1.3 GiB) before its 422; JSON nested
    100,000 deep answered 500."""
    client = client_for(trained.daemon)
    for route in ("/retrain", "/rollback"):
        def huge() -> Iterator[bytes]:  # streamed without Content-Length: counted as it arrives
            yield b'{"trigger_reason": "'
            for _ in range(2_000):
                yield b"x" * 100_000
        assert client.post(route, content=huge(), headers={"Content-Type": "application/json"}).status_code == 413
        declared = client.post(route, content=b" " * 20_000, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413
        nested = b"[" * 100_000 + b"]" * 100_000
        answer = client.post(route, content=nested, headers={"Content-Type": "application/json"})
        assert answer.status_code == 413  # over the cap before it is parsed
        nested = b"[" * 5_000 + b"]" * 5_000  # under the cap, deeper than the parser goes
        answer = client.post(route, content=nested, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text
    assert trained.daemon.snapshot().get("state") != "stopped"


def test_a_flood_of_uploads_is_bounded_and_the_loop_keeps_turning(trained: LoopThread, write_wav: WavWriter,
                                                                    tmp_path: Path) -> None:
    """Uploads were labeled on the main loop: 60 parallel long clips kept /health non-200
    for ~2 minutes, and an answer for a request that had timed out ended the loop."""
    clip = write_wav(tmp_path / "long.wav", "noise", seconds=60.0).read_bytes()
    client = client_for(trained.daemon, cap=10_000_000)
    answers: list[Any] = []
    stale: list[float] = []

    def upload() -> None:
        answers.append(client.post("/predict", content=clip, headers={"Content-Type": "application/octet-stream"}))

    uploads = [threading.Thread(target=upload) for _ in range(24)]
    for thread in uploads:
        thread.start()
    while any(thread.is_alive() for thread in uploads):
        stale.append(time.time() - trained.daemon.snapshot().get("updated_at", 0))
        assert client.get("/health").status_code == 200
        time.sleep(0.2)
    for thread in uploads:
        thread.join()
    codes = sorted(answer.status_code for answer in answers)
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    assert all(a.headers.get("retry-after") for a in answers if a.status_code == 503)
    assert max(stale) < 10, max(stale)  # the loop kept publishing its status
    assert trained.thread.is_alive() and trained.error is None


def test_rollback_answers_what_happened(trained: LoopThread) -> None:
    client = client_for(trained.daemon)
    assert client.post("/rollback", json={"version": "v0042"}).status_code == 404
    assert client.post("/rollback", content=b"version=v0001",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
    versions = [e["version"] for e in retrain_log(trained.daemon) if e["status"] == "promoted"]
    if len(versions) < 2:  # one more clip and a retrain make a second version
        add_embedded_clip(trained.daemon, "gun_shot/for_rollback.wav")
        before = last_attempt(trained.daemon)
        client.post("/retrain", json={"trigger_reason": "a second version"})
        wait_retrained(trained.daemon, before)
        assert retrain_log(trained.daemon)[-1]["status"] == "promoted"
    current = current_version(trained.daemon)
    answer = client.post("/rollback", json={"version": "v0001"})
    assert answer.status_code == 200 and answer.json() == {"current": "v0001", "previous": current}
    entry = retrain_log(trained.daemon)[-1]
    assert entry["status"] == "rolled back" and entry["version"] == "v0001"


def test_foreign_host_headers_are_refused(trained: LoopThread) -> None:
    for host in ("evil.example", "evil.example:8765", "127.0.0.1:9999", ""):
        client = client_for(trained.daemon)
        answer = client.get("/status", headers={"Host": host})
        assert answer.status_code == 421, host
    for host in (f"127.0.0.1:{PORT}", f"localhost:{PORT}", "localhost"):
        assert client_for(trained.daemon).get("/health", headers={"Host": host}).status_code == 200, host


def test_cross_site_posts_fail_and_no_cors_headers_are_sent(trained: LoopThread) -> None:
    client = client_for(trained.daemon)
    before = last_attempt(trained.daemon)
    site = {"Origin": "https://evil.example"}
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        answer = client.post("/retrain", content='{"trigger_reason": "csrf"}',
                             headers={**site, "Content-Type": content_type})
        assert answer.status_code == 415, content_type
    preflight = client.options("/retrain", headers={**site, "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "content-type"})
    assert "access-control-allow-origin" not in {k.lower() for k in preflight.headers}
    assert "access-control-allow-origin" not in {k.lower() for k in client.get("/status", headers=site).headers}
    assert last_attempt(trained.daemon) == before


def test_an_upload_that_hangs_libsndfile_is_stopped_at_the_decode_budget(trained: LoopThread, write_wav: WavWriter,
                                                                         tmp_path: Path) -> None:
    """On be16e0d the 3 KB WAV on which libsndfile never returns, uploaded to /predict, had no
    answer within 30 s: uploads were decoded without the isolated decoder's limit."""
    client = client_for(trained.daemon)
    asked = time.monotonic()
    answer = client.post("/predict", content=hanging_wav().read_bytes(), headers={"Content-Type": "audio/wav"})
    took = time.monotonic() - asked
    assert answer.status_code == 422 and "took longer than" in answer.json()["error"], answer.text
    assert took < UPLOAD_DECODE_S + 10, took
    clip = write_wav(tmp_path / "shot.wav", "clicks", seed=4).read_bytes()
    fine = client.post("/predict", content=clip, headers={"Content-Type": "audio/wav"})
    assert fine.status_code == 200, fine.text  # a fresh decoder takes the next upload


def test_review_decisions_need_a_credential_even_on_loopback(trained: LoopThread) -> None:
    answer = client_for(trained.daemon).post("/review/1", json={"label": "gun_shot", "reviewer": "ana"})
    assert answer.status_code == 401 and "reviewers_file" in answer.json()["error"], answer.text
    operator = client_for(trained.daemon, token=TOKEN).post(
        f"/review/{2**63}", json={"verdict": "skip", "reviewer": "ana"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert operator.status_code == 404  # the daemon's token decides; an id past SQLite's range is no item


def test_with_a_token_configured_state_changing_routes_need_it(trained: LoopThread,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ecosight_daemon.http.guards")
    client = client_for(trained.daemon, token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        answer = client.post("/retrain", json={"trigger_reason": "t"}, headers=headers)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", headers
        assert client.post("/rollback", json={}, headers=headers).status_code == 401
        upload = {**headers, "Content-Type": "audio/wav"}
        assert client.post("/predict", content=b"x", headers=upload).status_code == 401
    assert client.get("/status").status_code == 200  # reading needs no token
    before = last_attempt(trained.daemon)
    ok = client.post("/retrain", json={"trigger_reason": "with the token"},
                     headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 202
    wait_retrained(trained.daemon, before)
    # every write is attributed: the client's address, and whether it proved the token
    assert "refused POST /retrain from testclient: no valid bearer token" in caplog.text
    assert "POST /retrain from testclient (authenticated)" in caplog.text


def test_the_token_is_compared_in_constant_time() -> None:
    source = (REPO_ROOT / "ecosight_daemon" / "http" / "guards.py").read_text()
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]
    assert any(ast.unparse(call.func) == "hmac.compare_digest" for call in calls)
    assert "== settings.token" not in source and "settings.token ==" not in source


def test_pages_render_offline_with_everything_escaped(trained: LoopThread) -> None:
    client = client_for(trained.daemon)
    before = last_attempt(trained.daemon)
    client.post("/retrain", json={"trigger_reason": "<script>alert(1)</script>"})
    wait_retrained(trained.daemon, before)
    for path in ("/", "/training", "/history"):
        page = client.get(path, headers={"Accept": "text/html"})
        assert page.status_code == 200 and "<script>alert(1)</script>" not in page.text, path
        assert "http://" not in page.text.replace(BASE, "") and "https://" not in page.text, path
        assert "default-src 'none'" in page.headers["content-security-policy"]
    history = client.get("/history", headers={"Accept": "text/html"}).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in history
