"""The HTTP server inside a real daemon process: what stops it from starting (exit 78 with
what to do), health while the main loop is stuck, the event stream, and no listener
at all when disabled."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testkit.audio_files import WavWriter
from testkit.daemon_process import DaemonProcess, idle_daemon, wait_for, write_config

pytestmark = pytest.mark.slow


def start_and_expect_refusal(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(root / "config.toml"), "run"],
                          capture_output=True, text=True, timeout=120)


def get(url: str, timeout: float = 10) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_reachable_host_without_a_token_file_is_refused(tmp_path: Path, yamnet_handle: str) -> None:
    write_config(tmp_path, yamnet_handle, http='host = "0.0.0.0"')
    result = start_and_expect_refusal(tmp_path)
    assert result.returncode == 78
    assert "http.token_file is required" in result.stderr and "openssl rand" in result.stderr


@pytest.mark.parametrize(("mode", "content", "message"), [
    (0o644, "a" * 32, "readable by others (mode 644); run `chmod 600"),
    (0o600, "short", "use at least 16"),
    (None, "", "cannot be read"),
])
def test_a_token_file_others_can_read_or_a_weak_one_stops_the_start(
    tmp_path: Path, yamnet_handle: str, mode: int | None, content: str, message: str
) -> None:
    token = tmp_path / "http.token"
    if mode is not None:
        token.write_text(content)
        token.chmod(mode)
    write_config(tmp_path, yamnet_handle, http=f'token_file = "{token}"\nport = 0')
    result = start_and_expect_refusal(tmp_path)
    assert result.returncode == 78 and message in result.stderr, result.stderr[-2000:]
    assert "loaded YAMNet" not in result.stderr  # refused before the slow part


def test_a_taken_port_stops_the_start_with_what_to_do(tmp_path: Path, yamnet_handle: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        write_config(tmp_path, yamnet_handle, http=f"port = {taken.getsockname()[1]}")
        result = start_and_expect_refusal(tmp_path)
    assert result.returncode == 78 and "cannot listen on 127.0.0.1" in result.stderr, result.stderr[-2000:]


def test_disabled_means_no_listener(tmp_path: Path, yamnet_handle: str) -> None:
    with idle_daemon(tmp_path, yamnet_handle, http="enabled = false") as daemon:
        assert daemon.status()["http"] is None
        assert listening_sockets(daemon.pid) == set()


def listening_sockets(pid: int) -> set[str]:
    """Inodes of TCP sockets in LISTEN state that this process holds (read from /proc)."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A":
                listening.add(fields[9])
    held = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
    return held & listening


def test_health_says_503_while_the_main_loop_is_stuck(tmp_path: Path, yamnet_handle: str,
                                                     write_wav: WavWriter) -> None:
    # The pause point stops the main thread inside an embedding; the HTTP thread lives on.
    pause_file = tmp_path / "paused.pid"
    (tmp_path / "audio" / "clips").mkdir(parents=True)
    write_config(tmp_path, yamnet_handle)
    daemon = DaemonProcess(tmp_path, env={"ECOSIGHT_PAUSE_AT": "embedding", "ECOSIGHT_PAUSE_FILE": str(pause_file)})
    try:
        daemon.start()
        url = daemon.http_url
        wait_for(lambda: get(url + "health")[0] == 200, 120, "healthy after start")
        write_wav(tmp_path / "audio" / "clips" / "stuck.wav", "tone")
        wait_for(pause_file.exists, 60, "the loop to stop at its pause point")
        code, body = wait_for(lambda: (answer := get(url + "health"))[0] == 503 and answer, 30, "503")
        assert "has not reported" in str(body["reason"]) and "stuck" in str(body["reason"])
    finally:
        daemon.kill()


def test_events_stream_state_changes_and_log_lines(tmp_path: Path, yamnet_handle: str, write_wav: WavWriter) -> None:
    with idle_daemon(tmp_path, yamnet_handle) as daemon:
        assert listening_sockets(daemon.pid)  # the check the disabled case relies on sees a listener
        request = urllib.request.Request(daemon.http_url + "events")
        with urllib.request.urlopen(request, timeout=30) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            write_wav(daemon.audio / "clips" / "new.wav", "tone", seed=4)
            seen: list[dict[str, object]] = []
            for raw in stream:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                if any(e.get("kind") == "log" and "embedded clips/new.wav" in str(e.get("message")) for e in seen):
                    break
        kinds = {e["kind"] for e in seen}
        assert {"log", "state"} <= kinds, kinds
        numbers = [int(str(e["number"])) for e in seen]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        assert os.path.exists(daemon.models / "daemon_status.json")
