"""What every benchmark shares: where the real data is, and how figures are reported."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
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


def yamnet_handle() -> str:
    return os.environ.get("ECOSIGHT_YAMNET_HANDLE") or str(SHARED / "models" / "yamnet")


def dev_corpus() -> Path:
    path = Path(os.environ.get("ECOSIGHT_DEV_DATA") or SHARED / "data" / "dev")
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
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def save_report(name: str, figures: list[Figure], details: dict[str, object]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"figures": [asdict(f) for f in figures], "details": details}, indent=2))
    return path
