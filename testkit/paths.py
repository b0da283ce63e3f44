"""Where the repository, the shared resources (YAMNet, the dev corpus) and CI are."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"


def yamnet_handle() -> str:
    """The YAMNet SavedModel: ECOSIGHT_YAMNET_HANDLE, else the shared copy."""
    return os.environ.get("ECOSIGHT_YAMNET_HANDLE") or str(SHARED / "models" / "yamnet")


def dev_corpus() -> Path:
    """The labeled dev clips: ECOSIGHT_DEV_DATA, else the shared copy."""
    return Path(os.environ.get("ECOSIGHT_DEV_DATA") or SHARED / "data" / "dev")
CHROMIUM = Path(os.environ.get("ECOSIGHT_CHROMIUM", "/usr/bin/chromium"))  # Debian's; never `playwright install`
BROWSER_TIMEOUT_MS = 240_000


def specimens() -> Path:
    """Files that break audio libraries (../shared/data/specimens): used by path, never copied in."""
    return Path(os.environ.get("ECOSIGHT_SPECIMENS") or SHARED / "data" / "specimens")


def hanging_wav() -> Path:
    """3 KB on which libsndfile 1.2.2's info and read never return."""
    return specimens() / "list_info_hang.wav"
