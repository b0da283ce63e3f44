from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from ecosight_daemon.config import DEFAULT_YAMNET_HANDLE
from ecosight_daemon.config_file import find_config_path, load_settings, settings_from_mapping
from ecosight_daemon.errors import EXIT_CONFIG, ConfigError
from testkit.paths import REPO_ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_shipped_config_matches_the_defaults() -> None:
    settings = load_settings(REPO_ROOT / "config.toml", environ={})
    # config.toml is the one written copy of the defaults: every value in it is the default.
    defaults = settings_from_mapping({}, REPO_ROOT, {})
    assert dataclasses.replace(settings, source=None) == dataclasses.replace(defaults, source=None)
    assert settings.paths.audio_dir == REPO_ROOT / "augmented_audio"
    assert settings.paths.models_dir == REPO_ROOT / "models"
    assert settings.cache_path == REPO_ROOT / "models" / "embedding_cache.sqlite3"
    assert settings.embedding.yamnet_handle == DEFAULT_YAMNET_HANDLE
    assert (settings.training.epochs, settings.training.batch_size, settings.training.seed) == (100, 64, 42)
    assert settings.triggers.min_new_samples == 100
    assert settings.triggers.schedule == ""


def test_empty_file_gives_defaults_and_relative_paths_resolve_against_its_folder(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), environ={})
    assert settings.paths.audio_dir == tmp_path.resolve() / "augmented_audio"
    assert settings.audio.extensions == (".wav", ".flac", ".ogg")


def test_local_handle_resolves_against_config_folder_and_env_overrides_it(tmp_path: Path) -> None:
    path = write(tmp_path, '[embedding]\nyamnet_handle = "models/yamnet"\n')
    assert load_settings(path, environ={}).embedding.yamnet_handle == str(tmp_path.resolve() / "models/yamnet")
    env = {"ECOSIGHT_YAMNET_HANDLE": "/opt/yamnet"}
    assert load_settings(path, environ=env).embedding.yamnet_handle == "/opt/yamnet"
    url = write(tmp_path, '[embedding]\nyamnet_handle = "https://example.org/yamnet/1"\n')
    assert load_settings(url, environ={}).embedding.yamnet_handle == "https://example.org/yamnet/1"
    with pytest.raises(ConfigError, match="ECOSIGHT_YAMNET_HANDLE = 'file:///etc/passwd'"):
        load_settings(path, environ={"ECOSIGHT_YAMNET_HANDLE": "file:///etc/passwd"})  # the key's own checks


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[training]\nepoch = 5\n", ["training.epoch", "epochs"]),
        ("[trainin]\nepochs = 5\n", ["[trainin]", "training"]),
        ('[training]\nepochs = "many"\n', ["training.epochs", "'many'", "whole number"]),
        ("[training]\nepochs = 0\n", ["training.epochs", "0", ">= 1"]),
        ("[triggers]\nmin_new_samples = 2.5\n", ["triggers.min_new_samples", "2.5", "whole number"]),
        ('[triggers]\nschedule = "every day"\n', ["triggers.schedule", "'every day'", "cron"]),
        ('[audio]\nextensions = ["wav"]\n', ["audio.extensions", "start with a dot"]),
        ('[embedding]\nyamnet_sha256 = "abc"\n', ["embedding.yamnet_sha256", "64 lowercase hex"]),
        ('[embedding]\nstorage_dtype = "int8"\n', ["embedding.storage_dtype", "'int8'", "float16"]),
        ("[paths]\naudio_dir = 3\n", ["paths.audio_dir", "3", "path"]),
        ("[paths\n", ["not valid TOML"]),
    ],
)
def test_bad_config_names_key_value_and_expectation(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_valid_cron_schedule_is_accepted(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[triggers]\nschedule = "0 3 * * 1"\n'), environ={})
    assert settings.triggers.schedule == "0 3 * * 1"


def test_config_path_precedence(tmp_path: Path) -> None:
    assert find_config_path("a.toml", {"ECOSIGHT_CONFIG": "b.toml"}) == Path("a.toml")
    assert find_config_path(None, {"ECOSIGHT_CONFIG": "b.toml"}) == Path("b.toml")
    assert find_config_path(None, {}) == Path("config.toml")


def test_cli_exits_78_on_bad_config_before_doing_anything(tmp_path: Path) -> None:
    path = write(tmp_path, "[training]\nepochs = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "ecosight_daemon", "--config", str(path), "scan"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == EXIT_CONFIG
    assert "training.epochs = -1" in result.stderr
    assert not (tmp_path / "models").exists()


def test_cli_exits_78_when_config_file_is_missing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ecosight_daemon", "--config", str(tmp_path / "nope.toml"), "scan"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == EXIT_CONFIG
    assert "does not exist" in result.stderr


def test_shipped_config_documents_every_key() -> None:
    import dataclasses
    import re

    from ecosight_daemon.config import Settings

    text = (REPO_ROOT / "config.toml").read_text()
    for section in dataclasses.fields(Settings):
        if section.name == "source":
            continue
        assert f"[{section.name}]" in text
        for item in dataclasses.fields(section.default_factory):  # type: ignore[arg-type]
            assert re.search(rf"^(# )?{item.name} = ", text, re.MULTILINE), f"{section.name}.{item.name}"
