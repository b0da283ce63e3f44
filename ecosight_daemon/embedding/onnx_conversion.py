"""YAMNet's CNN body as an ONNX model, made once from the configured SavedModel.

The whole SavedModel does not convert (tf2onnx fails on the STFT's complex magnitude),
so the graph is cut where the log-mel patches enter the first convolution: the front
end runs in NumPy (frontend.py), the body in ONNX Runtime. The cut is found by
shape, not by name, so any SavedModel with YAMNet's call contract converts: the
(N, 96, 64) tensor reshaped into the first Conv2D, and the per-patch (N, 1024)
embeddings before their final reshape.

The conversion runs in a child process (`python -m ecosight_daemon.embedding.onnx_conversion`), never
in the daemon: it needs TensorFlow. Its output goes under models_dir/onnx/<model id>/
with the AudioSet layer and a verification record (NumPy front end + ONNX body against
TensorFlow's embeddings on fixed waveforms, per-patch cosine >= MIN_COSINE); a folder
whose files do not match that record is rebuilt, never trusted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.errors import EcosightError
from ecosight_daemon.util.digest import sha256_of
from ecosight_daemon.util.instance_lock import pid_alive
from ecosight_daemon.util.systemd import SystemdNotifier

logger = logging.getLogger(__name__)

BODY_FILE = "yamnet_body.onnx"
HEAD_FILE = "audioset_head.npz"
RECORD_FILE = "verification.json"
MIN_COSINE = 0.99999  # the float16 storage quantum: caches made with TensorFlow stay valid
CONVERT_TIMEOUT_S = 900.0
EXTEND_EVERY_S = 10.0  # how often a running conversion asks systemd for more start time
OPSET = 17


class OnnxUnavailable(EcosightError):
    """The ONNX body cannot be made or used here; the message says why."""


def body_folder(models_dir: Path, model_id: str) -> Path:
    return models_dir / "onnx" / model_id


def intact(folder: Path, model_id: str) -> bool:
    """The folder holds a verified body for this model, its files as recorded."""
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError):  # missing, unreadable, not JSON (UnicodeDecodeError included)
        return False
    if not isinstance(record, dict):  # valid JSON of another shape: damaged all the same
        return False
    cosine = record.get("worst_cosine")
    try:
        return bool(record.get("model_id") == model_id and isinstance(cosine, (int, float)) and cosine >= MIN_COSINE
                    and sha256_of(folder / BODY_FILE) == record.get("body_sha256")
                    and sha256_of(folder / HEAD_FILE) == record.get("head_sha256"))
    except OSError:
        return False


def remove_abandoned_conversions(models_dir: Path) -> None:
    """Remove the half-written folders of conversions whose process is gone (killed, or the
    machine lost power); a conversion still running elsewhere keeps its own."""
    for leftover in (models_dir / "onnx").glob("*.partial-*"):
        pid = leftover.name.rpartition(".partial-")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            logger.info("removing %s, left by a conversion that did not finish", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def ensure_body(handle: str, models_dir: Path, model_id: str) -> Path:
    """The verified body folder for this model, converted now (in a child process) if
    it is missing or damaged. Raises OnnxUnavailable with the reason otherwise."""
    folder = body_folder(models_dir, model_id)
    remove_abandoned_conversions(models_dir)
    if intact(folder, model_id):
        return folder
    if folder.exists():
        logger.warning("the ONNX body in %s does not match its verification record; rebuilding it", folder)
        shutil.rmtree(folder, ignore_errors=True)
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    logger.info("converting YAMNet's CNN body to ONNX (once per model; about a minute)")
    started = time.monotonic()
    returncode, stderr = _run_conversion(handle, partial, model_id)
    if returncode != 0 or not intact(partial, model_id):
        shutil.rmtree(partial, ignore_errors=True)
        last = (stderr.strip().splitlines() or ["no message"])[-1]
        raise OnnxUnavailable(f"the conversion failed: {last}")
    try:
        partial.rename(folder)
    except OSError:  # another process (the CLI beside the daemon) finished first
        shutil.rmtree(partial, ignore_errors=True)
        if not intact(folder, model_id):
            raise OnnxUnavailable(f"cannot put the converted body in place at {folder}") from None
    record = json.loads((folder / RECORD_FILE).read_text())
    logger.info("ONNX body ready in %.0f s (worst per-patch cosine to TensorFlow %.7f)",
                time.monotonic() - started, record["worst_cosine"])
    return folder


def _run_conversion(handle: str, partial: Path, model_id: str) -> tuple[int, str]:
    """The child process, waited for in slices: under systemd each slice asks for more start
    time (the unit's TimeoutStartSec is 300 s, a conversion on a slow machine may take longer).
    Returns (exit code, stderr); OnnxUnavailable past CONVERT_TIMEOUT_S."""
    notifier = SystemdNotifier()
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", __name__, handle, str(partial), model_id],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while True:
        notifier.extend_start_timeout(2 * EXTEND_EVERY_S)
        try:
            _, stderr = child.communicate(timeout=EXTEND_EVERY_S)
            return child.returncode, stderr
        except subprocess.TimeoutExpired:
            if time.monotonic() - started > CONVERT_TIMEOUT_S:
                child.kill()
                child.communicate()
                shutil.rmtree(partial, ignore_errors=True)
                raise OnnxUnavailable(f"the conversion took longer than {CONVERT_TIMEOUT_S:.0f} s") from None


def test_waveforms() -> list[np.ndarray]:
    """Fixed waveforms the conversion is verified on: silence, noise, tones, clicks, lengths
    from empty to 10 s (1 to 20 patches)."""
    rng = np.random.default_rng(20261128)
    t = np.arange(160_000, dtype=np.float32) / 16_000
    clicks = np.zeros(48_000, np.float32)
    clicks[rng.integers(0, 48_000, 40)] = 0.8
    return [np.zeros(0, np.float32), np.zeros(16_000, np.float32),
            (0.3 * rng.standard_normal(8_000)).astype(np.float32),
            (0.5 * np.sin(2 * np.pi * 440 * t[:16_000])).astype(np.float32), clicks,
            (0.2 * rng.standard_normal(160_000) + 0.3 * np.sin(2 * np.pi * 1_000 * t)).astype(np.float32)]


def worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)))


def convert(handle: str, target: Path, model_id: str) -> dict[str, Any]:
    """In the child: cut, convert, save the AudioSet layer, verify, record."""
    import onnxruntime
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from ecosight_daemon.embedding.frontend import log_mel_patches
    from ecosight_daemon.embedding.tensorflow_runtime import YamnetEmbedder

    embedder = YamnetEmbedder.load(handle)
    if embedder.model_id != model_id:
        raise OnnxUnavailable(f"{handle} is {embedder.model_id}, not {model_id}")
    model = embedder._model
    frozen = convert_variables_to_constants_v2(model.signatures["serving_default"])
    patches, embeddings = _cut(frozen.graph)
    target.mkdir(parents=True, exist_ok=True)
    tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=[patches.name],
                                   output_names=[embeddings.name], opset=OPSET, output_path=str(target / BODY_FILE))
    head = embedder.audioset_head()
    np.savez(target / HEAD_FILE, kernel=head.kernel, bias=head.bias)
    session = onnxruntime.InferenceSession(str(target / BODY_FILE), providers=["CPUExecutionProvider"])
    worst = 1.0
    for waveform in test_waveforms():
        reference = embedder.embed(waveform)
        ours = session.run(None, {session.get_inputs()[0].name: log_mel_patches(waveform)})[0].reshape(-1, 1024)
        worst = min(worst, worst_cosine(ours, reference))
    if worst < MIN_COSINE:
        raise OnnxUnavailable(f"the converted body's embeddings differ from TensorFlow's (worst cosine {worst:.7f})")
    record = {
        "model_id": model_id, "handle": handle, "worst_cosine": worst, "opset": OPSET,
        "body_sha256": sha256_of(target / BODY_FILE), "head_sha256": sha256_of(target / HEAD_FILE),
        "tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, "onnxruntime": onnxruntime.__version__,
        "cut": {"patches": patches.name, "embeddings": embeddings.name},
    }
    (target / RECORD_FILE).write_text(json.dumps(record, indent=2))
    return record


def _cut(graph: Any) -> tuple[Any, Any]:
    """The log-mel patches tensor (N, 96, 64) and the per-patch embeddings (N, 1024) in a
    frozen YAMNet graph, found by shape; the embeddings are taken before any reshape whose
    target shape is computed from the waveform (that would pull the front end in)."""
    conv = next((op for op in graph.get_operations() if op.type == "Conv2D"
                 and op.inputs[0].shape.rank == 4 and op.inputs[0].shape.as_list()[1:] == [96, 64, 1]), None)
    if conv is None:
        raise OnnxUnavailable("no convolution reads (96, 64, 1) log-mel patches: not YAMNet's graph")
    patches = conv.inputs[0]
    while patches.shape.rank != 3 or patches.shape.as_list()[1:] != [96, 64]:
        if not patches.op.inputs:
            raise OnnxUnavailable("the (N, 96, 64) log-mel patches were not found before the first convolution")
        patches = patches.op.inputs[0]
    outputs = [t for t in graph.outputs if t.shape.rank == 2 and t.shape.as_list()[-1] == 1024]
    if len(outputs) != 1:
        raise OnnxUnavailable("the graph has no single (N, 1024) embeddings output")
    embeddings = outputs[0]
    while _reads_the_waveform(embeddings, patches):  # a reshape or slice sized from the waveform: step back
        if not embeddings.op.inputs:
            raise OnnxUnavailable("the embeddings cannot be separated from the front end")
        embeddings = embeddings.op.inputs[0]
    if embeddings.shape.rank != 2 or embeddings.shape.as_list()[-1] != 1024:
        raise OnnxUnavailable(f"the body ends in {embeddings.name} of shape {embeddings.shape}, not (N, 1024)")
    return patches, embeddings


def _reads_the_waveform(tensor: Any, patches: Any) -> bool:
    """Whether computing `tensor` needs a graph input other than through `patches`."""
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        current = stack.pop()
        if current.name == patches.name or current.name in seen:
            continue
        seen.add(current.name)
        if current.op.type == "Placeholder":
            return True
        stack.extend(current.op.inputs)
    return False


def main() -> int:
    handle, target, model_id = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    try:
        convert(handle, target, model_id)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
