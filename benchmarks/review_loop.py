"""Is reviewing worth a ranger's time? False alarms per hour and gun-shot recall on sites the
model never trained on or was reviewed on, after 0, 1, 2 and 3 rounds of review.

For each seed the source recordings (MANIFEST `group`) of the dev corpus and the field set
are dealt, class by class, into training sites (half), review sites (a quarter) and test
sites (a quarter).
The workspace starts with the training sites' clips; `retrain` makes the first version.
Each round then runs the product's own code in this process, as the daemon would:

1. a REVIEW_SECONDS soundscape is built from the review sites (a new one each round:
   their backgrounds, their gun shots, dog barks, engines and confusers at 0-15 dB) and detected in
   with `detect_paths`, queueing up to PER_ROUND items (`--review`);
2. a simulated reviewer answers every queued item from the known truth (the class of the
   placed event overlapping the item's clip most, else the background class) through
   `review.commands.decide`: agreed items become clips in audio_dir;
3. the cache is synced (the clips embedded) and `retrain` runs with its gate (a candidate
   the gate rejects leaves the model as it was: that is what the loop would do);
4. the current model detects in the test sites' TEST_SECONDS soundscape (the same one every
   round): gun-shot recall (0.5 s collar) and false alarms per hour (detected gun-shot
   events that overlap no shot).

Figures are min / median / max over seeds (SEEDS, or the seeds given: `python -m
benchmarks.review_loop 7 11` saves review_loop_7_11.json).

The field set's source recordings are dealt as a team would have them (since 2026-12-07):
its 29 minutes of outdoor background and its 100 impulsive confusers (thunder, fireworks, rock
falls...) in the background class of the training sites, the review and test sites' background
drawn from dev and field alike, and their confusers placed like events. The simulated reviewer
calls a confuser background; the test hour's false alarms are also counted by what they fell
on. `python -m benchmarks.review_loop dev 7 11` (saved as review_loop_dev_7_11.json) runs it
as before, on the dev corpus alone: the test soundscape's background is then its sites' share
of the corpus's 10 minutes of `clips`, repeated at random offsets and gains, and no confuser.
"""

from __future__ import annotations

import csv
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SHARED, Figure, dev_corpus, save_report, yamnet_handle
from benchmarks.detection import FELL_ON, Scored, best_recall_within, match
from ecosight_daemon.config_file import load_settings
from ecosight_daemon.detection.cli_detect import detect_paths
from ecosight_daemon.detection.outputs import read_detections_csv
from ecosight_daemon.detection.scoring import Scoring
from ecosight_daemon.detection.window_trace import WindowTrace
from ecosight_daemon.ingest.cli_sync import sync_cache
from ecosight_daemon.review.commands import RunReviewer, decide, queue_listing
from ecosight_daemon.store.database import Database
from ecosight_daemon.training.event_mixing import PlacedEvent, Soundscape
from ecosight_daemon.versions.retrain import retrain
from testkit.field_recordings import manifest, soundscape_from, training_workspace, write_recording

logger = logging.getLogger(__name__)
SEEDS = (42, 1, 2)
ROUNDS = 3
PER_ROUND = 50
REVIEW_SECONDS = 1800.0
TEST_SECONDS = 1800.0
COLLAR_S = 0.5
EVENT_CLASSES = ("gun_shot", "dog_bark", "engine_idling")
BACKGROUND = "clips"
CONFUSER = "confuser"  # a field confuser: placed like an event, background to the reviewer and in training
HALF = 0.5  # the review goal is judged at a fixed recall: false alarms per hour to find half the shots


def corpus_with_field(root: Path) -> tuple[Path, list[dict[str, str]]]:
    """One folder holding the dev corpus and the field set (symlinks), and its rows: the field
    background as `clips/field_*` (class `clips`), its confusers as `clips/confuser_*` (class
    CONFUSER, so they are dealt and placed like events but copied into the background class)."""
    corpus, field = dev_corpus(), SHARED / "data" / "field"
    if not (field / "MANIFEST.csv").is_file():
        raise SystemExit(f"field set not found at {field}")
    rows = manifest(corpus)
    for row in rows:
        link = root / row["file"]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(corpus / row["file"])
    with (field / "MANIFEST.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            confuser = row["kind"] != "background"
            name = f"clips/{'confuser' if confuser else 'field'}_{Path(row['file']).name}"
            (root / name).symlink_to(field / row["file"])
            rows.append({"file": name, "class": CONFUSER if confuser else BACKGROUND, "group": row["group"]})
    return root, rows


def deal_sites(rows: list[dict[str, str]], seed: int) -> dict[str, list[dict[str, str]]]:
    """Each class's source recordings: half to training, a quarter to review, a quarter to test."""
    rng = np.random.default_rng(seed)
    sites: dict[str, list[dict[str, str]]] = {"train": [], "review": [], "test": []}
    for label in sorted({r["class"] for r in rows}):
        groups = sorted({r["group"] for r in rows if r["class"] == label})
        order = [groups[i] for i in rng.permutation(len(groups))]
        quarter = max(1, len(order) // 4)
        where = {g: "test" for g in order[:quarter]} | {g: "review" for g in order[quarter:2 * quarter]}
        for row in rows:
            if row["class"] == label:
                sites[where.get(row["group"], "train")].append(row)
    return sites


def truth_at(events: list[PlacedEvent], centre_s: float, clip_s: float) -> str:
    """What a reviewer who knows the truth says the clip cut around an item is: the event
    that overlaps it most, else the background."""
    start, end = centre_s - clip_s / 2, centre_s + clip_s / 2
    overlaps = [(min(end, e.end_s) - max(start, e.start_s), e.label) for e in events]
    best = max(overlaps, default=(0.0, BACKGROUND))
    return best[1] if best[0] > 0 and best[1] != CONFUSER else BACKGROUND


def threshold_sweep(trace: WindowTrace, scoring: Scoring, truth: Soundscape, hours: float) -> dict[str, float]:
    """The current model's gun-shot scores at every threshold: the best recall within 1 and 5
    false alarms per hour, and the false alarms per hour it takes to find half the shots."""
    gun = scoring.classes.index("gun_shot")
    scored = Scored(truth.events, hours, trace.scores()[:, gun], trace.window_s, 0.5)
    shots = sum(e.label == "gun_shot" for e in truth.events)
    grid = np.unique(np.quantile(scored.scores, np.linspace(0.8, 1.0, 401)))
    at_half = float("inf")
    for threshold in grid:
        found, false_alarms = match(scored, float(threshold))
        if len(found) / shots >= HALF:
            at_half = min(at_half, false_alarms / hours)
    return {"best_recall_at_1_per_hour": best_recall_within(scored, 1.0),
            "best_recall_at_5_per_hour": best_recall_within(scored, 5.0),
            "false_alarms_per_hour_at_recall_0.5": at_half}


def score_test(settings: Any, recording: Path, truth: Soundscape, out: Path) -> dict[str, float]:
    traces: list[tuple[WindowTrace, Scoring]] = []
    summary = detect_paths(settings, [recording], out, on_recording=lambda _, trace, scoring: traces.append(
        (trace, scoring)))
    rows = [r for r in read_detections_csv(out / "detections.csv") if r["class"] == "gun_shot"]
    shots = [e for e in truth.events if e.label == "gun_shot"]
    found: set[int] = set()
    fell_on = dict.fromkeys([*FELL_ON.values(), "background"], 0)
    for row in rows:
        start, end = float(row["start_s"]), float(row["end_s"])
        near = [e for e in truth.events if start < e.end_s + COLLAR_S and end > e.start_s - COLLAR_S]
        hits = [i for i, s in enumerate(shots) if s in near]
        found.update(hits)
        if not hits:
            under = next((e.label for e in near if e.label in FELL_ON), None)
            fell_on[FELL_ON[under] if under else "background"] += 1
    hours = float(summary["hours_analysed"])
    return {"recall": len(found) / max(1, len(shots)), "false_alarms_per_hour": sum(fell_on.values()) / hours,
            **{f"false_alarms_per_hour_on_{k}": v / hours for k, v in fell_on.items()},
            "model_version": summary["model_version"],
            "priority_scorer": traces[0][1].parameters.get("priority_scorer", "(clip model)"),
            **threshold_sweep(*traces[0], truth, hours)}


def review_round(settings: Any, root: Path, corpus: Path, sites: dict[str, list[dict[str, str]]], seed: int,
                 round_number: int) -> dict[str, Any]:
    scape = soundscape_from(corpus, sites["review"], REVIEW_SECONDS, seed=seed * 100 + round_number,
                            event_labels=(*EVENT_CLASSES, CONFUSER))
    reviewer = RunReviewer(settings, PER_ROUND)
    name = next(n for n in (f"R{round_number}{k:02d}_20260501_{k:02d}0000.WAV" for k in range(24))
                if not reviewer.reserved_for_evaluation(n))
    recording = write_recording(root / "review_sites" / name, scape)
    try:
        detect_paths(settings, [recording], root / f"review-out-{round_number}", on_recording=reviewer)
    finally:
        reviewer.close()
    answers: dict[str, int] = {}
    for item in queue_listing(settings, everything=False)["pending"]:
        label = truth_at(scape.events, float(item["centre_s"]), settings.review.clip_s)
        decide(settings, int(item["id"]), "simulated", "label", label)
        answers[label] = answers.get(label, 0) + 1
    store = Database.open(settings.cache_path, settings.embedding.storage_dtype)
    try:
        sync_cache(store, settings)
        outcome = retrain(settings, store, trigger=f"review round {round_number}")
    finally:
        store.close()
    detector = outcome.event_detector or {}
    return {"queued": len(reviewer.queued), "answers": answers, "retrain": outcome.status.value,
            "reason": outcome.reason, "candidate_scorer": detector.get("priority_scorer"),
            "candidate_scorer_reason": detector.get("priority_scorer_reason")}


def one_seed(seed: int, with_field: bool = True) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="ecosight-review-loop-") as tmp:
        root = Path(tmp)
        if with_field:
            corpus, rows = corpus_with_field(root / "corpus")
        else:
            corpus = dev_corpus()
            rows = manifest(corpus)
        sites = deal_sites(rows, seed)
        training_workspace(root, yamnet_handle(), corpus, sites["train"])
        with (root / "config.toml").open("a") as config:
            config.write(f"[review]\nper_round = {PER_ROUND}\n")
        settings = load_settings(root / "config.toml")
        store = Database.open(settings.cache_path, settings.embedding.storage_dtype)
        try:
            sync_cache(store, settings)
            first = retrain(settings, store, trigger="first model", force=True)  # a model to start from
        finally:
            store.close()
        if first.version is None:
            raise RuntimeError(f"no first model: {first.reason}")
        test = soundscape_from(corpus, sites["test"], TEST_SECONDS, seed=seed, event_labels=(*EVENT_CLASSES, CONFUSER))
        test_file = write_recording(root / "test_sites" / "T01_20260601_000000.WAV", test)
        rounds = [{"round": 0, **score_test(settings, test_file, test, root / "test-out-0")}]
        for number in range(1, ROUNDS + 1):
            started = time.monotonic()
            done = review_round(settings, root, corpus, sites, seed, number)
            scored = score_test(settings, test_file, test, root / f"test-out-{number}")
            rounds.append({"round": number, **done, **scored, "seconds": time.monotonic() - started})
            logger.info("seed %d round %d: %s", seed, number, rounds[-1])
    return rounds


FIGURES = (("recall", "gun-shot recall at the default operating point", ""),
           ("false_alarms_per_hour", "false alarms per hour at the default operating point", "/h"),
           ("best_recall_at_1_per_hour", "best gun-shot recall at <= 1 false alarm per hour", ""),
           ("best_recall_at_5_per_hour", "best gun-shot recall at <= 5 false alarms per hour", ""),
           ("false_alarms_per_hour_at_recall_0.5", "false alarms per hour to find half the shots", "/h"))


def _cut(before: float, after: float) -> float:
    """The share of false alarms a round of review removed (0 when there were none, or none is defined)."""
    if not np.isfinite(before) or before == 0:
        return 0.0
    return 1 - after / before


def run(seeds: tuple[int, ...] = SEEDS, with_field: bool = True) -> list[Figure]:
    runs = {seed: one_seed(seed, with_field) for seed in seeds}
    figures: list[Figure] = []
    for key, label, unit in FIGURES:
        for number in range(ROUNDS + 1):
            values = sorted(r[number][key] for r in runs.values())
            figures.append(Figure(f"after {number} rounds: {label} (median; min {values[0]:.2f}, max {values[-1]:.2f})",
                                  float(np.median(values)), unit))
    key = "false_alarms_per_hour_at_recall_0.5"
    cut = float(np.median([_cut(r[0][key], r[ROUNDS][key]) for r in runs.values()]))
    change = float(np.median([r[ROUNDS]["best_recall_at_1_per_hour"] - r[0]["best_recall_at_1_per_hour"]
                              for r in runs.values()]))
    figures.append(Figure(f"false alarms per hour (at recall 0.5) cut by {ROUNDS} rounds, median over seeds",
                          cut, "share", ">= 0.30", cut >= 0.30))
    figures.append(Figure(f"best recall at <= 1 false alarm per hour, change after {ROUNDS} rounds", change, "",
                          ">= -0.02", change >= -0.02))
    name = "review_loop" + ("" if with_field else "_dev")
    if seeds != SEEDS:
        name += "_" + "_".join(map(str, seeds))
    save_report(name, figures, {"seeds": list(seeds), "per_round": PER_ROUND,
                                         "review_seconds": REVIEW_SECONDS, "test_seconds": TEST_SECONDS,
                                         "with_field": with_field,
                                         "runs": {str(k): v for k, v in runs.items()}})
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    arguments = sys.argv[1:]
    dev_only = arguments[:1] == ["dev"]
    for figure in run(tuple(int(a) for a in arguments[dev_only:]) or SEEDS, with_field=not dev_only):
        print(figure.row())
