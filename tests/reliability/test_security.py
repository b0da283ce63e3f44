"""Least privilege and the trust model: what the daemon writes, loads and runs."""

from __future__ import annotations

import ast
import configparser
import os
import signal
from pathlib import Path

import pytest

from ecosight_daemon.config_file import settings_from_mapping
from ecosight_daemon.errors import ConfigError
from testkit.audio_files import WavWriter
from testkit.daemon_process import DaemonProcess, wait_for, write_config
from testkit.paths import REPO_ROOT

pytestmark = pytest.mark.reliability

PACKAGE = REPO_ROOT / "ecosight_daemon"
UNIT = PACKAGE.parent / "systemd" / "ecosight-daemon.service"


def package_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for source in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Call):
                calls.append((source.relative_to(PACKAGE).as_posix(), node))
    return calls


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def test_no_pickle_loads_no_shell_no_eval_in_the_package() -> None:
    forbidden = {"pickle.load", "pickle.loads", "marshal.loads", "eval", "exec", "os.system", "os.popen",
                 "subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_output",
                 "np.load", "numpy.load"}
    found = [(name, dotted(call.func), call.lineno) for name, call in package_calls() if dotted(call.func) in forbidden]
    # The training process reads back the job arrays its parent wrote (job_data.py), the ONNX runtime
    # the AudioSet layer its own conversion wrote, and a version's classifier and event detector
    # are read back from the arrays a retrain wrote, and the detector's device export reads the test
    # vector the export wrote a moment before: plain arrays, never pickles (checked below).
    # The child processes started by command line (the ONNX conversion, the decoders and readers)
    # get an argument list, never a shell (checked below).
    allowed = [(name, func) for name, func, _ in found
               if (name, func) in (("training/job_data.py", "np.load"), ("embedding/onnx_runtime.py", "np.load"),
                                   ("artifacts/linear_head.py", "np.load"), ("artifacts/event_detector.py", "np.load"),
                                   ("training/detector_export.py", "np.load"),
                                   ("embedding/onnx_conversion.py", "subprocess.Popen"),
                                   ("util/child_channel.py", "subprocess.Popen"))]
    assert [(n, f, line) for n, f, line in found if (n, f) not in allowed] == []
    for name, call in package_calls():
        if dotted(call.func) == "np.load":
            assert not any(k.arg == "allow_pickle" for k in call.keywords), f"{name}:{call.lineno} allows pickles"
        if dotted(call.func) in ("subprocess.run", "subprocess.Popen"):
            assert isinstance(call.args[0], ast.List), f"{name}:{call.lineno} runs a command that is not a list"
            assert not any(k.arg == "shell" for k in call.keywords), f"{name}:{call.lineno} uses a shell"


def test_every_keras_model_load_uses_safe_mode() -> None:
    loads = [(name, call) for name, call in package_calls() if dotted(call.func).endswith("load_model")]
    assert loads, "no load_model call found; the check would prove nothing"
    for name, call in loads:
        safe = [k for k in call.keywords if k.arg == "safe_mode"]
        assert safe and isinstance(safe[0].value, ast.Constant) and safe[0].value.value is True, (
            f"{name}:{call.lineno} loads a Keras model without safe_mode=True"
        )


def test_a_model_carrying_python_code_is_refused(tmp_path: Path) -> None:
    import keras

    from ecosight_daemon.artifacts.keras_model import load_classifier

    inputs = keras.Input(shape=(4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "hostile.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="(?i)lambda|safe_mode|unsafe"):
        load_classifier(path)


@pytest.mark.parametrize("paths, key", [
    ({"audio_dir": "data", "models_dir": "data/models"}, "paths.models_dir"),
    ({"audio_dir": "data", "models_dir": "data"}, "paths.models_dir"),
    ({"audio_dir": "data", "models_dir": "m", "cache_path": "data/cache.sqlite3"}, "paths.cache_path"),
])
def test_config_refuses_writing_into_the_audio_folder(tmp_path: Path, paths: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key}.*inside paths.audio_dir"):
        settings_from_mapping({"paths": paths}, base_dir=tmp_path, environ={})


def test_config_refuses_a_cache_path_that_is_a_folder_and_odd_handles(tmp_path: Path) -> None:
    (tmp_path / "cachedir").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        settings_from_mapping({"paths": {"cache_path": "cachedir"}}, base_dir=tmp_path, environ={})
    with pytest.raises(ConfigError, match="must be https"):
        settings_from_mapping({"embedding": {"yamnet_handle": "file:///etc/x"}}, base_dir=tmp_path, environ={})


def test_the_unit_runs_unprivileged() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    service = parser["Service"]
    assert service["User"] not in ("", "root", "0") and service["Group"] not in ("", "root", "0")
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["CapabilityBoundingSet"] == "" and service["AmbientCapabilities"] == ""
    # models and the cache; the class folders (review writes its clips there), nothing else
    assert service["ReadWritePaths"].split() == ["/var/lib/ecosight", "/srv/ecosight/augmented_audio"]
    assert service["ReadOnlyPaths"].split() == ["-/srv/ecosight/recordings"]


@pytest.mark.slow
def test_a_daemon_run_writes_only_under_models_dir_and_the_cache(
    tmp_path: Path, yamnet_handle: str, write_wav: WavWriter
) -> None:
    write_config(tmp_path, yamnet_handle, paths='cache_path = "cache/embeddings.sqlite3"',
                 training="epochs = 10")
    for i in range(4):
        write_wav(tmp_path / "audio" / "gun_shot" / f"shot{i}.wav", "clicks", seed=i)
        write_wav(tmp_path / "audio" / "clips" / f"tone{i}.wav", "tone", seed=i)
    harness_files = {"daemon.log"}  # written by the test harness, not the daemon

    def tree() -> dict[str, tuple[int, int]]:
        found = {}
        for folder, _, names in os.walk(tmp_path):
            for name in names:
                path = Path(folder, name)
                relpath = path.relative_to(tmp_path).as_posix()
                if relpath not in harness_files and not name.startswith("notify-"):
                    found[relpath] = (path.stat().st_size, path.stat().st_mtime_ns)
        return found

    before = tree()
    daemon = DaemonProcess(tmp_path)
    try:
        daemon.start()
        daemon.wait_idle()
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.retrain_log(), 120, "the retrain")
        daemon.wait_idle()
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    after = tree()
    changed = {path for path in after if before.get(path) != after[path]} | (before.keys() - after.keys())
    assert changed, "the daemon wrote nothing; the check would prove nothing"
    assert {p for p in changed if not p.startswith(("models/", "cache/"))} == set()
    assert "cache/embeddings.sqlite3" in changed and "models/yamnet_classifier_v2.keras" in changed
