"""The `ecosight-daemon` command as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testkit.audio_files import WavWriter

COUNT_KEYS = {"files", "embedded", "pending", "failed", "conflicts"}


def run_cli(workspace: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecosight_daemon", "--config", str(workspace / "config.toml"), *args],
        capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})},
    )


def run_json(workspace: Path, *args: str) -> dict[str, Any]:
    result = run_cli(workspace, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_scan_then_embed_then_scan(workspace: Path, write_wav: WavWriter) -> None:
    audio = workspace / "audio"
    write_wav(audio / "gun_shot" / "a.wav", "clicks", seed=1)
    write_wav(audio / "gun_shot" / "b.WAV", "clicks", rate=8_000, subtype="PCM_U8", seed=2)
    write_wav(audio / "dog_bark" / "c.wav", "noise", rate=22_050, channels=2, seed=3)
    (audio / "dog_bark" / "bad.wav").write_bytes(b"not audio")
    shutil.copy(audio / "gun_shot" / "a.wav", audio / "clips" / "a-copy.wav")

    before = run_json(workspace, "scan")
    assert set(before["classes"]) == {"gun_shot", "dog_bark", "clips"}
    for counts in [*before["classes"].values(), before["totals"]]:
        assert COUNT_KEYS <= set(counts) and all(isinstance(counts[k], int) for k in COUNT_KEYS)
    assert before["totals"] == {"files": 5, "embedded": 0, "pending": 5, "failed": 0, "conflicts": 2}

    summary = run_json(workspace, "embed")
    assert {k: summary[k] for k in ("embedded", "failed", "skipped")} == {"embedded": 3, "failed": 1, "skipped": 1}
    assert isinstance(summary["seconds"], float)
    assert summary["failures"][0]["path"] == "dog_bark/bad.wav"

    after = run_json(workspace, "scan")
    assert after["totals"] == {"files": 5, "embedded": 4, "pending": 0, "failed": 1, "conflicts": 2}
    assert after["classes"]["dog_bark"]["failed"] == 1
    assert after["failed"][0]["reason"].startswith("not a readable WAV/FLAC/OGG file")

    again = run_json(workspace, "embed")
    assert (again["embedded"], again["failed"], again["skipped"]) == (0, 0, 4)

    table = run_cli(workspace, "scan")
    assert table.returncode == 0 and "gun_shot" in table.stdout and "failed: dog_bark/bad.wav" in table.stdout


def test_unreachable_handle_says_what_to_do(workspace: Path, write_wav: WavWriter) -> None:
    write_wav(workspace / "audio" / "clips" / "a.wav")
    result = run_cli(workspace, "embed", env={"ECOSIGHT_YAMNET_HANDLE": str(workspace / "no-model")})
    assert result.returncode == 69
    assert "cannot load YAMNet" in result.stderr and "ECOSIGHT_YAMNET_HANDLE" in result.stderr


def test_a_pinned_model_that_differs_is_refused(workspace: Path, write_wav: WavWriter) -> None:
    write_wav(workspace / "audio" / "clips" / "a.wav")
    config = workspace / "config.toml"
    config.write_text(config.read_text().replace("[embedding]", "[embedding]\nyamnet_sha256 = \"" + "0" * 64 + "\""))
    result = run_cli(workspace, "embed")
    assert result.returncode == 69 and "not the pinned [embedding] yamnet_sha256" in result.stderr


def test_missing_audio_dir_is_a_clear_error(workspace: Path) -> None:
    shutil.rmtree(workspace / "audio")
    result = run_cli(workspace, "scan")
    assert result.returncode == 1 and "audio folder" in result.stderr and "does not exist" in result.stderr


@pytest.mark.slow
def test_embed_the_whole_dev_corpus(tmp_path: Path, dev_corpus: Path, yamnet_handle: str) -> None:
    """Every file of the real corpus embeds, upper-case .WAV included; a re-run embeds nothing."""
    with (dev_corpus / "MANIFEST.csv").open() as handle:
        manifest = list(csv.DictReader(handle))
    shutil.copytree(dev_corpus, tmp_path / "audio", ignore=shutil.ignore_patterns("MANIFEST.csv"))
    (tmp_path / "config.toml").write_text(
        f'[paths]\naudio_dir = "audio"\n[embedding]\nyamnet_handle = "{yamnet_handle}"\n'
    )
    assert any(row["file"].endswith(".WAV") for row in manifest)

    first = run_json(tmp_path, "embed")
    assert (first["embedded"], first["failed"], first["skipped"]) == (len(manifest), 0, 0)

    scan = run_json(tmp_path, "scan")
    per_class: dict[str, int] = {}
    for row in manifest:
        per_class[row["class"]] = per_class.get(row["class"], 0) + 1
    assert {label: c["embedded"] for label, c in scan["classes"].items()} == per_class
    assert scan["totals"]["pending"] == 0 and scan["totals"]["failed"] == 0

    second = run_json(tmp_path, "embed")
    assert (second["embedded"], second["skipped"]) == (0, len(manifest))
