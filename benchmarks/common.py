"""What every benchmark shares: where the real data is, and how figures are reported."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from testkit.daemon_process import DaemonProcess, wait_for
from testkit.paths import REPO_ROOT, SHARED, yamnet_handle
from testkit.paths import dev_corpus as shared_dev_corpus

__all__ = ["REPO_ROOT", "SHARED", "DaemonProcess", "wait_for", "yamnet_handle"]  # shared with the tests (testkit)

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Figure:
    """One measured number, and the target it is held to (if any)."""

    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None

    def row(self) -> list[str]:
        verdict = {True: "met", False: "MISSED", None: ""}[self.met]
        return [self.name, f"{self.value:,.3f}".rstrip("0").rstrip("."), self.unit, self.target, verdict]


def dev_corpus() -> Path:
    path = shared_dev_corpus()
    if not (path / "MANIFEST.csv").is_file():
        raise SystemExit(f"dev corpus not found at {path}; set ECOSIGHT_DEV_DATA")
    return path


def copy_corpus(source: Path, target: Path) -> Path:
    """A writable copy of the class folders (never the manifest) for a benchmark to use."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("MANIFEST.csv"))
    return target


def format_table(figures: list[Figure]) -> str:
    rows = [["figure", "value", "unit", "target", ""], *(f.row() for f in figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def save_report(name: str, figures: list[Figure], details: dict[str, object]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"figures": [asdict(f) for f in figures], "details": details}, indent=2))
    return path


def start_daemon(root: Path) -> DaemonProcess:
    """`python -m ecosight_daemon run` on root/config.toml, as an operator would start it
    (warnings only in root/daemon.log), with the real YAMNet."""
    env = {"ECOSIGHT_YAMNET_HANDLE": yamnet_handle()}
    return DaemonProcess(root, env=env, log_level="WARNING", notify=False).start()


def settled(pid: int) -> bool:
    """Less than 10% of a core used over 2 s: the warm training process is done importing
    (which takes a whole core). 2% was tried: an idle daemon's tree measured 3-4.5% on a
    busy day (the loop's turns, the HTTP server's ticks), and the wait never ended."""
    before = process_tree_usage(pid)["cpu_s"]
    time.sleep(2)
    return process_tree_usage(pid)["cpu_s"] - before < 0.2


def child_pids(pid: int) -> list[int]:
    """Children started by any of the process's threads (the decoders start from worker threads)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in children.read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return found


def process_tree_usage(pid: int) -> dict[str, float]:
    """CPU seconds (user+system) and RSS (MiB) of a process and of its live children."""
    pids = [pid, *child_pids(pid)]
    ticks = os.sysconf("SC_CLK_TCK")
    usage = {"cpu_s": 0.0, "rss_mib": 0.0, "own_rss_mib": 0.0, "children": len(pids) - 1}
    for index, one in enumerate(pids):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a child that ended meanwhile
            continue
        usage["cpu_s"] += (int(fields[11]) + int(fields[12])) / ticks
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        usage["rss_mib"] += rss
        if index == 0:
            usage["own_rss_mib"] = rss
    return usage
