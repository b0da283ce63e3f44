"""The `ecosight-daemon` command: the one place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import Settings, find_config_path, load_settings
from .errors import EXIT_OK, EcosightError
from .ingest import EmbedReport, IngestLimits, embed_pending, reconcile
from .progress import ProgressReporter
from .store import ClassCounts, EmbeddingStore, FileState

logger = logging.getLogger("ecosight_daemon")

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        settings = load_settings(find_config_path(args.config, os.environ))
        logger.debug("effective configuration: %s", settings.describe())
        return int(args.handler(settings, args))
    except EcosightError as exc:
        logger.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecosight-daemon",
        description="Watch labeled audio folders, cache YAMNet embeddings, retrain the classifier.",
    )
    parser.add_argument("--config", help="config file (default: $ECOSIGHT_CONFIG, else ./config.toml)")
    parser.add_argument(
        "--log-level", default=os.environ.get("ECOSIGHT_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default: INFO",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scan = commands.add_parser("scan", help="report per-class files, embedded, pending, failed, conflicts")
    scan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    scan.set_defaults(handler=cmd_scan)

    embed = commands.add_parser("embed", help="embed every pending file, then exit")
    embed.add_argument("--json", action="store_true", help="print a JSON summary")
    embed.set_defaults(handler=cmd_embed)
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)


def ingest_limits(settings: Settings) -> IngestLimits:
    return IngestLimits(
        extensions=settings.audio.extensions,
        max_duration_s=settings.audio.max_duration_s,
        max_file_bytes=int(settings.audio.max_file_mb * 1_000_000),
    )


def open_store(settings: Settings) -> EmbeddingStore:
    return EmbeddingStore.open(settings.cache_path, settings.embedding.storage_dtype)


def require_audio_dir(settings: Settings) -> Path:
    audio_dir = settings.paths.audio_dir
    if not audio_dir.is_dir():
        raise EcosightError(
            f"audio folder {audio_dir} does not exist; create it with one sub-folder per class "
            "(for example gun_shot/) or set [paths] audio_dir in the config"
        )
    return audio_dir


def cmd_scan(settings: Settings, args: argparse.Namespace) -> int:
    audio_dir = require_audio_dir(settings)
    store = open_store(settings)
    try:
        reconcile(store, audio_dir, ingest_limits(settings), hash_files=True)
        report = scan_report(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_scan(report))
    return EXIT_OK


def scan_report(store: EmbeddingStore) -> dict[str, Any]:
    counts = store.class_counts()
    unclassified = counts.pop("", ClassCounts())
    totals = {key: sum(getattr(c, key) for c in counts.values()) for key in ClassCounts().as_dict()}
    conflicts = store.conflicting_hashes()
    records = store.files()
    return {
        "classes": {label: c.as_dict() for label, c in counts.items()},
        "totals": totals,
        "unclassified": unclassified.files,
        "failed": [
            {"path": r.path, "reason": r.reason} for r in records if r.state is FileState.FAILED
        ],
        "conflicts": [
            {"path": r.path, "class": r.label, "sha256": r.sha256}
            for r in records if r.sha256 in conflicts
        ],
        "embedding_model": store.model_id,
    }


def format_scan(report: dict[str, Any]) -> str:
    keys = list(ClassCounts().as_dict())
    rows = [["class", *keys]]
    rows += [[label, *(str(c[k]) for k in keys)] for label, c in report["classes"].items()]
    rows.append(["total", *(str(report["totals"][k]) for k in keys)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(row, widths))) for row in rows]
    if report["unclassified"]:
        lines.append(f"{report['unclassified']} file(s) are not in a class folder and are ignored")
    for failure in report["failed"]:
        lines.append(f"failed: {failure['path']}: {failure['reason']}")
    for conflict in report["conflicts"]:
        lines.append(f"label conflict (same bytes in two classes, left out of training): "
                     f"{conflict['path']}")
    return "\n".join(lines)


def cmd_embed(settings: Settings, args: argparse.Namespace) -> int:
    audio_dir = require_audio_dir(settings)
    limits = ingest_limits(settings)
    store = open_store(settings)
    try:
        adopt_model_without_loading(store, settings.embedding.yamnet_handle)
        reconcile(store, audio_dir, limits)
        if store.files(FileState.PENDING):
            report = embed_with_model(store, settings, audio_dir, limits)
        else:
            report = EmbedReport()  # nothing to do: do not pay for loading TensorFlow
        already_embedded = len(store.files(FileState.EMBEDDED)) - report.embedded
        report.skipped = max(report.skipped, already_embedded)
    finally:
        store.close()
    logger.info(
        "embed finished: %d embedded, %d already cached, %d failed, %d deferred in %.1f s",
        report.embedded, report.skipped, report.failed, report.deferred, report.seconds,
    )
    if args.json:
        print(json.dumps(embed_summary(report), indent=2))
    return EXIT_OK  # bad files are reported and recorded, never fatal


def adopt_model_without_loading(store: EmbeddingStore, handle: str) -> None:
    """Switch the cache to the configured model when its files are on disk, TF not needed."""
    from .embedder import fingerprint_of, local_model_folder, model_id_for

    folder = local_model_folder(handle)
    if folder is not None:
        fingerprint = fingerprint_of(handle, folder)
        store.adopt_model(model_id_for(fingerprint), fingerprint)


def embed_with_model(
    store: EmbeddingStore, settings: Settings, audio_dir: Path, limits: IngestLimits
) -> EmbedReport:
    from .embedder import YamnetEmbedder  # imports TensorFlow: only when there is work

    embedder = YamnetEmbedder.load(settings.embedding.yamnet_handle)
    store.adopt_model(embedder.model_id, embedder.fingerprint)
    return embed_pending(store, embedder, audio_dir, limits, progress=ProgressReporter("embedded"))


def embed_summary(report: EmbedReport) -> dict[str, Any]:
    return {
        "embedded": report.embedded,
        "failed": report.failed,
        "skipped": report.skipped,
        "deferred": report.deferred,
        "patches": report.patches,
        "seconds": round(report.seconds, 3),
        "failures": [{"path": p, "reason": r} for p, r in report.failures],
    }
