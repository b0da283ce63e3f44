"""Shared fixtures: temp workspaces, a seeded WAV writer, the real YAMNet, the dev corpus."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from testkit.audio_files import WavWriter, synthetic_signal
from testkit.daemon_process import ONNX_BODY_ENV
from testkit.paths import BROWSER_TIMEOUT_MS, CHROMIUM, IN_CI, SHARED


def _required_resource(env_var: str, default: Path, what: str) -> Path:
    """A real resource the test needs: fail in CI when missing, skip elsewhere."""
    path = Path(os.environ.get(env_var) or default)
    if path.exists():
        return path.resolve()
    message = f"{what} not found at {path}; set {env_var}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def yamnet_handle() -> str:
    return str(_required_resource("ECOSIGHT_YAMNET_HANDLE", SHARED / "models" / "yamnet", "YAMNet"))


@pytest.fixture(scope="session")
def dev_corpus() -> Path:
    return _required_resource("ECOSIGHT_DEV_DATA", SHARED / "data" / "dev", "dev corpus")


@pytest.fixture(scope="session")
def field_corpus() -> Path:
    """Outdoor background and impulsive confusers, no gun shots (../shared/data/field)."""
    return _required_resource("ECOSIGHT_FIELD_DATA", SHARED / "data" / "field", "field corpus")


@pytest.fixture(scope="session")
def yamnet(yamnet_handle: str):  # type: ignore[no-untyped-def]
    from ecosight_daemon.embedding.tensorflow_runtime import YamnetEmbedder

    return YamnetEmbedder.load(yamnet_handle)


@pytest.fixture
def write_wav() -> WavWriter:
    """write_wav(path, kind='tone', seconds=1.0, rate=16000, channels=1, subtype='PCM_16', seed=0)."""

    def write(
        path: Path,
        kind: str = "tone",
        seconds: float = 1.0,
        rate: int = 16_000,
        channels: int = 1,
        subtype: str = "PCM_16",
        seed: int = 0,
        fmt: str | None = None,
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        mono = synthetic_signal(kind, seconds, rate, seed)
        data = np.stack([mono * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)
        soundfile.write(path, data, rate, subtype=subtype, format=fmt or "WAV")
        return path

    return write


@pytest.fixture
def workspace(tmp_path: Path, yamnet_handle: str) -> Path:
    """A folder with config.toml, audio/ (four class folders) and models/."""
    for label in ("gun_shot", "dog_bark", "engine_idling", "clips"):
        (tmp_path / "audio" / label).mkdir(parents=True)
    (tmp_path / "config.toml").write_text(
        '[paths]\naudio_dir = "audio"\nmodels_dir = "models"\n'
        f'[embedding]\nyamnet_handle = "{yamnet_handle}"\n'
    )
    return tmp_path


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread of ours running (after watchdog's conftest)."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t for t in threading.enumerate()
        if t not in before and t.is_alive() and t.name.startswith("ecosight")
    ]
    for thread in leaked:
        thread.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"


@pytest.fixture(scope="session", autouse=True)
def onnx_body(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    """YAMNet's body converted once per test session (about 10 s), for `seed_onnx_body`.

    Daemons and CLI runs in tests find it in their models_dir as if they had converted
    it themselves (the same verification record and checksums are checked); the tests
    of the conversion itself convert from scratch.
    """
    handle = Path(os.environ.get("ECOSIGHT_YAMNET_HANDLE") or SHARED / "models" / "yamnet")
    if not (handle / "saved_model.pb").is_file():
        yield None
        return
    from ecosight_daemon.embedding.identity import identify_local
    from ecosight_daemon.embedding.onnx_conversion import ensure_body

    identity = identify_local(str(handle.resolve()))
    assert identity is not None
    folder = ensure_body(identity.handle, tmp_path_factory.mktemp("onnx-body"), identity.model_id)
    os.environ[ONNX_BODY_ENV] = str(folder)
    yield folder
    os.environ.pop(ONNX_BODY_ENV, None)


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A page in Debian's Chromium, driven by Playwright (never `playwright install`)."""
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM}: `apt-get install chromium` (never `playwright install`)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        try:
            yield page
        finally:
            browser.close()
