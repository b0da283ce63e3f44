"""Embedding throughput on both runtimes, side by side in one run.

Each pass runs in a fresh process (`benchmarks/embed_worker.py`), as production does:
TensorFlow's and ONNX Runtime's thread pools never share one. Passes are interleaved in
ROUNDS rounds so drift in machine load hits every side alike; the median is reported.

- TensorFlow SavedModel, model only: the dev corpus's decoded waveforms through the
  SavedModel (the reference).
- ONNX runtime, model only: the same waveforms through the NumPy front end and the
  converted CNN (target >= 2.0x the reference).
- End to end on the ONNX runtime: files on disk -> read, hash, decode, resample ->
  YAMNet -> committed cache rows, what `embed` and the daemon run (target >= 1.8x the
  reference, and >= 0.9 of its own model only).
- The worst per-patch cosine between the two runtimes' embeddings (target >= 0.99999),
  and a re-run of `embed` on the embedded corpus as a fraction of the first (< 10%).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Figure, copy_corpus, dev_corpus, format_table, save_report, yamnet_handle

ROUNDS = 3
PASSES = ("tensorflow", "onnxruntime", "end-to-end")


def timed_pass(mode: str, audio: Path, models: Path) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-m", "benchmarks.embed_worker", mode, str(audio), str(models)],
                            check=True, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "ECOSIGHT_YAMNET_HANDLE": yamnet_handle()})
    answer: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def worst_cosine(audio: Path, models: Path) -> float:
    from ecosight_daemon.audio import decode_audio
    from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
    from ecosight_daemon.embedding.tensorflow_runtime import YamnetEmbedder

    onnx, tensorflow = OnnxEmbedder.load(yamnet_handle(), models), YamnetEmbedder.load(yamnet_handle())
    worst = 1.0
    for path in sorted(audio.glob("*/*")):
        waveform = decode_audio(path.read_bytes(), 600).waveform
        a, b = onnx.embed(waveform), tensorflow.embed(waveform)
        cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        worst = min(worst, float(cosine.min()))
    return worst


def cli_embed_seconds(workdir: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ecosight_daemon", "--config", str(workdir / "config.toml"),
         "--log-level", "WARNING", "embed"],
        check=True, capture_output=True, env={**os.environ, "ECOSIGHT_YAMNET_HANDLE": yamnet_handle()},
    )
    return time.perf_counter() - started


def run() -> list[Figure]:
    from ecosight_daemon.embedding.identity import identify_local
    from ecosight_daemon.embedding.onnx_conversion import ensure_body

    with tempfile.TemporaryDirectory(prefix="ecosight-bench-") as tmp:
        work = Path(tmp)
        audio = copy_corpus(dev_corpus(), work / "audio")
        identity = identify_local(yamnet_handle())
        assert identity is not None, "the YAMNet SavedModel is not on disk"
        ensure_body(yamnet_handle(), work / "models", identity.model_id)
        rounds = [{mode: timed_pass(mode, audio, work / "models") for mode in PASSES} for _ in range(ROUNDS)]
        cosine = worst_cosine(audio, work / "models")
        (work / "config.toml").write_text('[paths]\naudio_dir = "audio"\nmodels_dir = "cli-models"\n')
        first_cli = cli_embed_seconds(work)
        second_cli = cli_embed_seconds(work)

    def rate(mode: str) -> float:
        rates = sorted(r[mode]["patches"] / r[mode]["seconds"] for r in rounds)
        return rates[len(rates) // 2]

    tensorflow, onnx, end_to_end = rate("tensorflow"), rate("onnxruntime"), rate("end-to-end")
    rerun = second_cli / first_cli
    figures = [
        Figure("TensorFlow SavedModel, model only", tensorflow, "patches/s"),
        Figure("ONNX runtime (NumPy front end + ONNX CNN), model only", onnx, "patches/s"),
        Figure("ONNX model only / TensorFlow model only", onnx / tensorflow, "ratio", ">= 2.0",
               onnx / tensorflow >= 2.0),
        Figure("end to end, ONNX runtime (files to cache rows)", end_to_end, "patches/s"),
        Figure("end to end / TensorFlow model only", end_to_end / tensorflow, "ratio", ">= 1.8",
               end_to_end / tensorflow >= 1.8),
        Figure("end to end / ONNX model only", end_to_end / onnx, "ratio", ">= 0.9", end_to_end / onnx >= 0.9),
        Figure("worst per-patch cosine, ONNX vs TensorFlow (dev corpus)", cosine, "", ">= 0.99999",
               cosine >= 0.99999),
        Figure("embed re-run / first run (CLI)", rerun, "ratio", "< 0.10", rerun < 0.10),
    ]
    save_report("embed_throughput", figures, {"rounds": rounds, "cli_first_s": first_cli,
                                              "cli_second_s": second_cli})
    return figures


if __name__ == "__main__":
    print(format_table(run()))
