"""`make bench`: run every benchmark, print one table of figures and targets, save JSON."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import Figure, format_table, save_report

BENCHMARKS = [
    "embed_throughput", "daemon_footprint", "daemon_latency", "daemon_scale", "incremental_retrain",
    "training_scale", "accuracy", "ray_throughput", "detect_long", "detection", "review_loop",
]


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    selected = sys.argv[1:] or BENCHMARKS
    figures: list[Figure] = []
    started = time.monotonic()
    for name in selected:
        print(f"running {name} ...", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        figures += module.run()
    elapsed = time.monotonic() - started
    print(format_table(figures))
    print(f"total benchmark time: {elapsed:.0f} s")
    save_report("all", figures, {"benchmarks": selected, "seconds": elapsed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
