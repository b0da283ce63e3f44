"""The `ecosight-daemon` command: the one place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ecosight_daemon.cli_output import (
    embed_summary,
    format_retrain,
    format_review,
    format_scan,
    format_status,
    metrics_summary_or_none,
    scan_report,
)
from ecosight_daemon.config import Settings
from ecosight_daemon.config_file import find_config_path, load_settings
from ecosight_daemon.daemon.status import read_status
from ecosight_daemon.errors import (
    EXIT_FAILURE,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_RETRAIN_FAILED,
    EcosightError,
)
from ecosight_daemon.ingest.cli_sync import require_audio_dir, sync_cache
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.reconcile import reconcile
from ecosight_daemon.store.clip_index import FileState
from ecosight_daemon.store.database import Database
from ecosight_daemon.util.instance_lock import hold_daemon_lock, refuse_while_a_daemon_runs, running_daemon
from ecosight_daemon.versions.retraining_log import RetrainStatus

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
    except BrokenPipeError:  # `ecosight-daemon status | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


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
    embed.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local (default) or ray: embed on a Ray cluster (optional extra)")
    embed.add_argument("--address", help="with --engine ray: join this Ray cluster (default: start a local one)")
    embed.set_defaults(handler=cmd_embed)

    run = commands.add_parser("run", help="run the daemon in the foreground (systemd Type=notify)")
    run.set_defaults(handler=cmd_run)

    status = commands.add_parser("status", help="what the running daemon is doing")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=cmd_status)

    retrain = commands.add_parser("retrain", help="embed pending files, train, gate, promote")
    retrain.add_argument("--reason", default="manual", help="recorded in retraining_log.json")
    retrain.add_argument("--force", action="store_true", help="promote even if the gate says no")
    retrain.add_argument("--json", action="store_true", help="print the outcome as JSON")
    retrain.set_defaults(handler=cmd_retrain)

    predict = commands.add_parser("predict", help="classify audio files with the current model")
    predict.add_argument("files", nargs="+", type=Path, metavar="FILE")
    predict.add_argument("--json", action="store_true", help="print a JSON list")
    predict.set_defaults(handler=cmd_predict)

    detect = commands.add_parser("detect", help="find events (gun shots...) in long recordings with the current model")
    detect.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="recordings, or folders searched recursively")
    detect.add_argument("--out", type=Path, default=Path("detections"), help="folder for detections.csv, Raven and "
                        "Audacity tables and run.json (default: ./detections)")
    detect.add_argument("--timezone", default="UTC", help="time zone of times in file names (an IANA name; "
                        "AudioMoth names are UTC)")
    detect.add_argument("--start-time", help="when a recording with no time of its own started (ISO 8601)")
    detect.add_argument("--json", action="store_true", help="print run.json")
    detect.add_argument("--review", type=int, default=0, metavar="N",
                        help="queue up to N items from this run for review ([review] per_round waiting at most)")
    detect.set_defaults(handler=cmd_detect)

    review = commands.add_parser("review", help="the review queue: list items, decide, undo")
    actions = review.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the round's progress, pending items and disagreements")
    listing.add_argument("--all", action="store_true", help="every item, decided ones included")
    listing.add_argument("--json", action="store_true", help="print JSON")
    decide = actions.add_parser("decide", help="say what an item really is (a clip is written once reviewers agree)")
    decide.add_argument("item", type=int, metavar="ID")
    verdict = decide.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--label", metavar="CLASS", help="the class it is (the background class: not an event)")
    verdict.add_argument("--uncertain", action="store_true", help="cannot tell: never becomes a clip")
    verdict.add_argument("--skip", action="store_true", help="leave it to someone else")
    undo = actions.add_parser("undo", help="take back a decision (its clip goes)")
    undo.add_argument("item", type=int, metavar="ID")
    for action in (decide, undo):
        action.add_argument("--reviewer", default=os.environ.get("USER") or "cli", help="who decides (default: $USER)")
        action.add_argument("--json", action="store_true", help="print JSON")
    review.set_defaults(handler=cmd_review)

    sites = commands.add_parser("sites", help="how far each recorder's analysed audio moved its thresholds (for a "
                                "device port: --json)")
    sites.add_argument("--json", action="store_true", help="the offsets as JSON, beside the version's device files")
    sites.set_defaults(handler=cmd_sites)
    history = commands.add_parser("history", help="list every retraining attempt")
    history.add_argument("--json", action="store_true", help="print retraining_log.json's entries")
    history.set_defaults(handler=cmd_history)

    rollback = commands.add_parser("rollback", help="make an earlier promoted version current again")
    rollback.add_argument("version", nargs="?", help="default: the version promoted before the current one")
    rollback.set_defaults(handler=cmd_rollback)
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # TensorFlow's INFO lines once it logs; its warnings and errors still show.
        # The training process inherits it. (Its start-up notes: tf_start_up.py.)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def open_store(settings: Settings) -> Database:
    return Database.open(settings.cache_path, settings.embedding.storage_dtype)


def cmd_scan(settings: Settings, args: argparse.Namespace) -> int:
    audio_dir = require_audio_dir(settings)
    daemon_pid = running_daemon(settings.paths.models_dir)
    store = open_store(settings)
    try:
        if daemon_pid is None:
            reconcile(store, audio_dir, IngestLimits.from_settings(settings), hash_files=True)
        else:  # the daemon keeps the index current; two writers would only compete
            logger.info("a daemon (pid %d) keeps the index current; showing its index as it is", daemon_pid)
        report = scan_report(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_scan(report))
    return EXIT_OK


def cmd_embed(settings: Settings, args: argparse.Namespace) -> int:
    refuse_while_a_daemon_runs(settings.paths.models_dir, "embed",
                               "The daemon embeds new files itself; follow it with `ecosight-daemon status`.")
    store = open_store(settings)
    try:
        report = sync_cache(store, settings, args.engine, args.address)
        already_embedded = len(store.clips.files(FileState.EMBEDDED)) - report.embedded
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


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from ecosight_daemon.daemon.loop import Daemon
    from ecosight_daemon.embedding.loader import load_embedder
    from ecosight_daemon.http.front import HttpFrontEnd
    from ecosight_daemon.util.descriptors import raise_descriptor_limit

    lock = hold_daemon_lock(settings.paths.models_dir)  # held until this process ends
    raise_descriptor_limit()
    try:
        daemon = Daemon(settings, lambda handle: load_embedder(handle, settings.paths.models_dir,
                                                              settings.embedding.runtime,
                                                              settings.embedding.yamnet_sha256),
                        front_end=HttpFrontEnd)
        daemon.install_signal_handlers()
        return daemon.run()
    finally:
        lock.close()


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    status, problem = read_status(settings.paths.models_dir)
    if args.json:
        print(json.dumps({**(status or {}), "running": problem is None, "problem": problem}, indent=2))
    else:
        print(format_status(status, problem))
    return EXIT_OK if problem is None else EXIT_NOT_RUNNING


def cmd_retrain(settings: Settings, args: argparse.Namespace) -> int:
    from ecosight_daemon.versions.retrain import retrain

    pid = running_daemon(settings.paths.models_dir)  # only a pid whose lock is held: never a stranger
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        message = f"asked the running daemon (pid {pid}) to retrain; follow it with `ecosight-daemon status`"
        print(json.dumps({"daemon_pid": pid, "requested": True}) if args.json else message)
        return EXIT_OK
    store = open_store(settings)
    try:
        sync_cache(store, settings)
        outcome = retrain(settings, store, trigger=args.reason, force=args.force,
                          log_level=logging.getLevelName(logger.getEffectiveLevel()))
    finally:
        store.close()
    result = {
        "version": outcome.version,
        "promoted": outcome.promoted,
        "status": outcome.status.value,
        "reason": outcome.reason,
        "forced": outcome.forced,
        "new_samples": outcome.new_samples,
        "seconds": round(outcome.seconds, 2),
        "metrics": metrics_summary_or_none(outcome.metrics),
        "replaced_metrics": metrics_summary_or_none(outcome.incumbent_metrics),
        "gate": outcome.gate,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_retrain(result))
    if outcome.status is RetrainStatus.FAILED:
        return EXIT_RETRAIN_FAILED
    return EXIT_OK if outcome.promoted or outcome.status is RetrainStatus.UNCHANGED else EXIT_REJECTED


def cmd_detect(settings: Settings, args: argparse.Namespace) -> int:
    from ecosight_daemon.detection.cli_detect import detect_paths, parse_start_time
    from ecosight_daemon.detection.clock import parse_zone

    zone = parse_zone(args.timezone)
    reviewer = None
    if args.review > 0:
        from ecosight_daemon.review.commands import RunReviewer

        reviewer = RunReviewer(settings, args.review)
    try:
        summary = detect_paths(settings, list(args.paths), args.out, zone, parse_start_time(args.start_time, zone),
                               reviewer)
    finally:
        if reviewer is not None:
            reviewer.close()
    if reviewer is not None:
        summary["review_items_queued"] = reviewer.queued
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for recording in summary["recordings"]:
            what = recording.get("error") or f"{recording['events']} event(s)"
            print(f"{recording['file']}: {what}")
        print(f"{summary['hours_analysed']:.3f} h analysed with model {summary['model_version']}; "
              f"outputs in {args.out}")
    return EXIT_OK if all("error" not in r for r in summary["recordings"]) else EXIT_FAILURE


def cmd_review(settings: Settings, args: argparse.Namespace) -> int:
    from ecosight_daemon.review.commands import decide, queue_listing

    if args.action == "list":
        result = queue_listing(settings, args.all)
        print(json.dumps(result, indent=2) if args.json else format_review(result))
        return EXIT_OK
    verdict = "undo" if args.action == "undo" else "label" if args.label else "uncertain" if args.uncertain else "skip"
    result = decide(settings, args.item, args.reviewer, verdict, getattr(args, "label", None))
    item = result["item"]
    print(json.dumps(result, indent=2) if args.json else
          f"item {item['id']}: {item['outcome']}{' as ' + item['agreed_label'] if item['agreed_label'] else ''}"
          f"{'; clip ' + item['clip'] if item['clip'] else ''}")
    return EXIT_OK


def cmd_predict(settings: Settings, args: argparse.Namespace) -> int:
    from ecosight_daemon.versions.predict import predict_files

    results = predict_files(settings, list(args.files))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            if "error" in result:
                print(f"{result['file']}: error: {result['error']}")
            else:
                top = result["probabilities"][result["label"]]
                print(f"{result['file']}: {result['label']} ({top:.3f}, model {result['model_version']})")
    return EXIT_OK if all("error" not in r for r in results) else EXIT_FAILURE


def cmd_sites(settings: Settings, args: argparse.Namespace) -> int:
    from ecosight_daemon.detection.site_export import site_offsets_for_devices

    table = site_offsets_for_devices(settings, open_store(settings))
    if args.json:
        print(json.dumps(table, indent=2))
        return EXIT_OK
    print(f"model {table['model_version']}: {table['note']}")
    for site in table["sites"]:
        moved = {c: o for c, o in site["margin_offsets"].items() if o != 0} or "nothing"
        state = "applies" if site["applies"] else f"not yet ({table['min_hours']:g} h needed)"
        print(f"{site['recorder']}: {site['hours_learned']:.2f} h learned, {state}; thresholds moved (+ raised, "
              f"- lowered): {moved}")
    return EXIT_OK


def cmd_history(settings: Settings, args: argparse.Namespace) -> int:
    from ecosight_daemon.versions.registry import ModelRegistry

    registry = ModelRegistry(settings.paths.models_dir)
    entries = registry.retraining_log()
    if args.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    current = registry.current_version()
    if not entries:
        print("no retraining attempts yet")
    for entry in entries:
        metrics = entry.get("metrics") or {}
        score = f"macro-F1 {metrics['macro_f1']:.3f}" if metrics else ""
        marker = "*" if entry.get("version") and entry.get("version") == current else " "
        print(f"{marker} {entry['timestamp']}  {entry.get('version') or '-':>6}  {entry['status']:<11} "
              f"{score:<15} {entry['trigger_reason']}: {entry['reason']}")
    return EXIT_OK


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    from ecosight_daemon.versions.registry import ModelRegistry
    from ecosight_daemon.versions.rollback import roll_back

    refuse_while_a_daemon_runs(settings.paths.models_dir, "rollback",
                               "Stop the daemon and roll back, or roll back over its HTTP API (POST /rollback).")
    previous, current = roll_back(ModelRegistry(settings.paths.models_dir), args.version)
    print(f"current model is now {current} (was {previous})")
    return EXIT_OK
