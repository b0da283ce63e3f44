"""The daemon's start-up time and idle memory on each embedding runtime, one run.

The dev corpus is copied and embedded first (`ecosight-daemon embed`, which also makes
the ONNX body once), so both daemons start on an indexed, fully cached corpus. Measured
for each runtime: process start to the `idle` state, the daemon's own RSS when idle,
and the whole process tree's (the daemon and its warm training process, once that has
finished loading TensorFlow).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    Figure,
    copy_corpus,
    dev_corpus,
    format_table,
    process_tree_usage,
    save_report,
    settled,
    start_daemon,
    wait_for,
    yamnet_handle,
)

TARGETS = {"startup_s": 4.0, "own_rss_mib": 400.0, "tree_rss_mib": 1.2 * 1024}


def measure(root: Path, runtime: str) -> dict[str, float]:
    (root / "config.toml").write_text(f'[paths]\naudio_dir = "audio"\nmodels_dir = "models"\n[http]\nport = 0\n'
                                      f'[embedding]\nruntime = "{runtime}"\n[triggers]\nmin_new_samples = 100000\n')
    started = time.monotonic()
    daemon = start_daemon(root)
    try:
        daemon.wait_idle(300)
        startup_s = time.monotonic() - started
        wait_for(lambda: settled(daemon.pid), 180, "the warm training process to finish loading")
        usage = process_tree_usage(daemon.pid)
        tensorflow_loaded = bool(daemon.status().get("tensorflow_loaded"))
    finally:
        daemon.stop()
    return {"startup_s": startup_s, "own_rss_mib": usage["own_rss_mib"], "tree_rss_mib": usage["rss_mib"],
            "children": usage["children"], "tensorflow_loaded": float(tensorflow_loaded)}


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="ecosight-footprint-") as tmp:
        root = Path(tmp)
        copy_corpus(dev_corpus(), root / "audio")
        (root / "config.toml").write_text('[paths]\naudio_dir = "audio"\nmodels_dir = "models"\n')
        subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(root / "config.toml"),
                        "--log-level", "WARNING", "embed"], check=True, capture_output=True,
                       env={**os.environ, "ECOSIGHT_YAMNET_HANDLE": yamnet_handle()})
        results = {runtime: measure(root, runtime) for runtime in ("tensorflow", "onnxruntime")}
    figures = []
    for runtime, result in results.items():
        onnx = runtime == "onnxruntime"
        for key, name, unit in (("startup_s", "start-up to idle", "s"), ("own_rss_mib", "idle RSS, daemon", "MiB"),
                                ("tree_rss_mib", "idle RSS, daemon + warm training process", "MiB")):
            target = f"<= {TARGETS[key]:g}" if onnx else ""
            met = result[key] <= TARGETS[key] if onnx else None
            figures.append(Figure(f"{name} ({runtime}, dev corpus indexed)", result[key], unit, target, met))
        figures.append(Figure(f"TensorFlow imported in the daemon ({runtime})", result["tensorflow_loaded"], "yes=1",
                              "0" if onnx else "", result["tensorflow_loaded"] == 0 if onnx else None))
    save_report("daemon_footprint", figures, results)
    return figures


if __name__ == "__main__":
    print(format_table(run()))
