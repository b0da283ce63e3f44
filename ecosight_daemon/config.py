"""Typed, frozen settings: the only home of defaults.

Every field declares its default, a one-line help and its value check; config_file.py
reads config.toml into them, rejecting unknown keys and bad values before anything
starts.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecosight_daemon.audio import READABLE_EXTENSIONS
from ecosight_daemon.config_checks import (
    at_least,
    between,
    one_of,
    setting,
    valid_cron,
    valid_dtype,
    valid_extensions,
    valid_group_patterns,
    valid_host,
    valid_split,
    valid_units,
    valid_webhook,
    valid_zone,
)
from ecosight_daemon.pooling import POOLINGS

HANDLE_ENV = "ECOSIGHT_YAMNET_HANDLE"
DEFAULT_YAMNET_HANDLE = "https://tfhub.dev/google/yamnet/1"

@dataclass(frozen=True)
class PathSettings:
    audio_dir: Path = setting(Path("augmented_audio"), "class folders to watch; a folder name is a label")
    models_dir: Path = setting(Path("models"), "where models, metrics, logs and the status file go")
    cache_path: Path = setting(
        Path(""), "SQLite embedding cache; empty means <models_dir>/embedding_cache.sqlite3"
    )


@dataclass(frozen=True)
class AudioSettings:
    extensions: tuple[str, ...] = setting(
        READABLE_EXTENSIONS, "file endings to ingest, compared case-insensitively", valid_extensions
    )
    max_duration_s: float = setting(600.0, "longer files are refused with a reason", at_least(0.01))
    min_duration_s: float = setting(
        0.05, "shorter files (a 1-sample clip) carry too little sound to learn from and are refused", at_least(0.0)
    )
    max_file_mb: float = setting(512.0, "larger files are refused before they are read", at_least(0.001))
    min_peak_dbfs: float = setting(
        -60.0, "files whose loudest sample is below this (digital silence or nearly) are refused", between(-200.0, 0.0)
    )
    max_decode_s: float = setting(
        60.0, "the daemon stops decoding a file after this many seconds (wall clock) and records it failed "
        "(a 600 s clip takes ~1 s here)", at_least(0.1)
    )


@dataclass(frozen=True)
class EmbeddingSettings:
    yamnet_handle: str = setting(
        DEFAULT_YAMNET_HANDLE, f"TF Hub URL or local SavedModel folder; {HANDLE_ENV} overrides it"
    )
    storage_dtype: str = setting("float16", "how per-patch embeddings are stored", valid_dtype)
    yamnet_sha256: str = setting(
        "", "if set, the SavedModel's sha256 (graph and weights) must equal it, or the daemon does not start",
        lambda value: None if value == "" or re.fullmatch(r"[0-9a-f]{64}", value)
        else "64 lowercase hex digits or \"\"",
    )
    runtime: str = setting(
        "onnxruntime", "onnxruntime (the CNN converted once, no TensorFlow in the daemon) or tensorflow; "
        "both give the same embeddings", one_of("onnxruntime", "tensorflow"),
    )


# Applied in order to a file name without extension; each match replaces the key with
# its `group`: strip augmentation suffixes (x_aug3, x-pitch+2), then reduce UrbanSound8K's
# <fsID>-<classID>-<occurrence>-<slice> to the Freesound recording id.
DEFAULT_GROUP_PATTERNS = (
    r"(?P<group>.+?)__review_\d+ms(?:-i\d+)?",  # clips cut from one recording by review (review/clips.py)
    r"(?P<group>.+?)(?:[_-](?:aug|augmented|copy|noise|noisy|reverb)\d*"
    r"|[_-](?:pitch|speed|gain|shift|stretch|timestretch|tempo|vol|volume)[+-]?\d+(?:\.\d+)?(?:db)?)+",
    r"(?P<group>\d+)-\d+-\d+-\d+",
)


@dataclass(frozen=True)
class TrainingSettings:
    epochs: int = setting(100, "maximum training epochs", at_least(1))
    batch_size: int = setting(64, "training batch size", at_least(1))
    seed: int = setting(42, "seed for weights and shuffling (splits depend on group keys only)", at_least(0))
    min_class_files: int = setting(5, "classes with fewer distinct files are left out", at_least(1))
    split: tuple[float, ...] = setting((0.70, 0.15, 0.15), "train/val/test fractions of groups", valid_split)
    group_patterns: tuple[str, ...] = setting(
        DEFAULT_GROUP_PATTERNS, "regexes with (?P<group>...) mapping a file name to its recording",
        valid_group_patterns,
    )
    pooling: str = setting("mean_max_audioset", "patch pooling: mean, mean_max, mean_std or mean_max_audioset",
                           one_of(*POOLINGS))
    head: str = setting("logistic", "classifier head: logistic (convex, refitted on all data) or keras",
                        one_of("logistic", "keras"))
    logistic_c: float = setting(1.0, "inverse L2 strength of the logistic head", between(1e-4, 1e4))
    hidden_units: tuple[int, ...] = setting((), "hidden layer sizes; [] is a linear model", valid_units)
    dropout: float = setting(0.3, "dropout after each hidden layer", between(0.0, 0.9))
    batch_norm: bool = setting(False, "batch normalization after each hidden layer")
    learning_rate: float = setting(0.001, "Adam learning rate", between(1e-6, 1.0))
    l2: float = setting(0.001, "L2 weight penalty", between(0.0, 1.0))
    patience: int = setting(15, "epochs without val_loss improvement before stopping", at_least(1))
    time_limit_s: float = setting(1800.0, "a training run taking longer is stopped", at_least(10))
    keep_warm: bool = setting(
        True, "the daemon keeps a training process with TensorFlow loaded (~0.5 GiB) so a retrain starts at once"
    )
    priority_class: str = setting("gun_shot", "the class whose recall matters most")
    priority_recall_target: float = setting(
        0.98, "validation recall the priority threshold aims for", between(0.0, 1.0)
    )
    priority_min_precision: float = setting(
        0.95, "the threshold never drops (out-of-fold or validation) precision of the priority class below this",
        between(0.0, 1.0),
    )


@dataclass(frozen=True)
class PromotionSettings:
    macro_f1_tolerance: float = setting(
        0.02, "largest macro-F1 drop (on the current test split) a candidate may have", between(0.0, 1.0)
    )
    min_macro_f1: float = setting(0.5, "floor the first model must clear", between(0.0, 1.0))
    min_priority_recall: float = setting(
        0.5, "priority-class recall floor the first model must clear", between(0.0, 1.0)
    )
    significance: float = setting(
        0.05, "a drop (clips, or detection on the test split) rejects a candidate only when its paired test "
        "gives p below this", between(1e-6, 0.5)
    )
    keep_versions: int = setting(
        20, "version folders kept under models_dir/versions (the current and previous always)", at_least(3)
    )


@dataclass(frozen=True)
class TriggerSettings:
    min_new_samples: int = setting(100, "new or changed samples that start a retrain", at_least(1))
    schedule: str = setting("", "cron expression for scheduled retrains; empty disables", valid_cron)
    drift_min_accuracy: float = setting(
        0.0, "retrain when the current model's accuracy on newly arrived samples falls below; 0 = off",
        between(0.0, 1.0),
    )
    drift_min_samples: int = setting(20, "new samples needed before drift is judged", at_least(1))


@dataclass(frozen=True)
class WatchSettings:
    settle_s: float = setting(2.0, "a created/modified file must keep its size and mtime this long",
                              between(0.0, 3600.0))
    reconcile_interval_s: float = setting(600.0, "full rescan of audio_dir to catch lost events",
                                          at_least(1.0))
    polling: bool = setting(False, "poll instead of inotify (for network file systems)")
    poll_interval_s: float = setting(5.0, "how often the polling observer looks", at_least(0.1))


@dataclass(frozen=True)
class HttpSettings:
    enabled: bool = setting(True, "serve the HTTP API, dashboard and /metrics; false: no listener at all")
    host: str = setting("127.0.0.1", "address to listen on, and the Host name requests must use (or localhost); "
                        "a non-loopback address needs token_file", valid_host)
    port: int = setting(8000, "TCP port; 0 picks a free one at start (status shows it)", between(0, 65535))
    token_file: Path = setting(Path(""), "file holding a bearer token, mode 0600 or stricter; required for a "
                               "non-loopback host; when set, POST requests need it")
    max_connections: int = setting(256, "open connections at most; past it the oldest one that has not sent "
                                   "a request is closed (or the new one)", between(8, 60_000))
    request_timeout_s: float = setting(10.0, "a connection that has not sent a whole request head this long "
                                       "after connecting (or after its last answer) is closed", at_least(0.5))
    body_timeout_s: float = setting(30.0, "a request whose body stops arriving for this long is answered 408",
                                    at_least(0.5))


@dataclass(frozen=True)
class DetectionSettings:
    background_class: str = setting("clips", "the class that is background: detection reports no events of it")
    window_patches: int = setting(4, "patches per window the clip model scores in a long recording "
                                  "(4 = 2.40 s), one 0.48 s hop apart; used when a version has no event "
                                  "detector", between(1, 64))
    train_detector: bool = setting(True, "each retrain also trains the event detector for long recordings "
                                   "(soundscapes built from the training split; ~15 s for 250 clips)")
    false_alarms_per_hour: float = setting(1.0, "the event detector's gun-shot threshold (and each other event "
                                           "class's) is calibrated, out of fold, for at most this many false alarms "
                                           "per hour", at_least(0.01))
    confusers_per_hour: float = setting(25.0, "loud non-shot impulses (thunder, fireworks, falling branches) a field "
                                        "hour holds: the calibration mixes its confusers far denser, and counts an "
                                        "alarm on one as this share of them; 0: each counts whole (most cautious)",
                                        between(0.0, 10_000.0))
    shot_cnn_epochs: int = setting(8, "the detector's third gun-shot candidate, YAMNet's score plus a small CNN on "
                                   "the log-mel patch, is trained this many epochs (4 fits a retrain, ~1-2 min "
                                   "each for 250 clips on 2 cores); it ships only where it wins out of fold; 0: not "
                                   "tried", between(0, 100))
    context_trees: bool = setting(True, "the fourth: that sum plus gradient-boosted trees on YAMNet's view of the "
                                  "patch and the 3 either side (4 fits, ~15 s each on 2 cores; needs "
                                  "shot_cnn_epochs > 0); it ships only where it wins out of fold; false: not tried")
    recordings_dir: Path = setting(Path("recordings"), "long field recordings the daemon detects in (files copied "
                                   "in, any depth; outside audio_dir); empty: off")
    incomplete_settle_s: float = setting(60.0, "a WAV holding less audio than its header says is taken only once "
                                         "it has not changed for this long: it may still be being copied (a "
                                         "recorder that lost power wrote it: it is analysed after the wait)",
                                         between(0.0, 86_400.0))
    scan_interval_s: float = setting(5.0, "how often recordings_dir is looked at for new or changed files",
                                     between(0.1, 3600.0))
    timezone: str = setting("UTC", "time zone of times in recordings' file names (AudioMoth: UTC)", valid_zone)
    min_sample_rate: int = setting(8_000, "recordings whose header says a lower sample rate are refused (a damaged "
                                   "header can claim 10 Hz: days of audio once resampled)", between(1, 768_000))
    max_hours: float = setting(48.0, "recordings longer than this many hours are refused with a reason; each "
                               "analysed hour keeps ~27 MB of embeddings and CNN inputs in the cache",
                               between(0.01, 10_000.0))
    turn_minutes: float = setting(60.0, "minutes of one recording analysed before the next waiting recording has "
                                  "its turn (a 24 h file does not hold up the rest)", between(1.0, 100_000.0))
    site_learning: bool = setting(True, "learn each recorder's own background from its analysed recordings (no "
                                  "review needed): where a class alarms more often than false_alarms_per_hour on a "
                                  "site's own audio (a recurring frog, a generator), its threshold there is raised "
                                  "(the site's highest-scoring 0.1% of patches held out for the real events); once "
                                  "3 alarms at the budget can be counted (3 h at 1 an hour), the gun-shot threshold "
                                  "is also lowered where the site's own audio crossed it less often than that")
    site_learning_min_hours: float = setting(1.0, "hours of a recorder's audio analysed before its learned background "
                                             "applies", between(0.1, 10_000.0))


@dataclass(frozen=True)
class AlertSettings:
    webhook_url: str = setting("", "POST each gun-shot detection as JSON here (retried with back-off on its own "
                               "thread); empty: none", valid_webhook)
    webhook_timeout_s: float = setting(5.0, "seconds one attempt may take in all (name lookup, connect, send, "
                                       "status and headers; the answer's body is never read)", between(0.1, 120.0))
    webhook_attempts: int = setting(6, "tries per alert (waits 1, 2, 4 ... s between them) before it is dropped "
                                    "with a log line; a redirect or a 4xx answer is not tried again", between(1, 20))
    webhook_secret_file: Path = setting(Path(""), "file (mode 0600) holding a key: each POST is signed "
                                        "(X-EcoSight-Signature: sha256=HMAC of '<X-EcoSight-Timestamp>.<body>'); "
                                        "empty: unsigned")


@dataclass(frozen=True)
class ReviewSettings:
    per_round: int = setting(50, "review items waiting at most at a time; detection runs queue more once "
                             "some are decided", between(1, 1000))
    clip_s: float = setting(4.0, "seconds of a training clip cut around a reviewed item (the dev corpus's median "
                            "clip length)", between(0.96, 30.0))
    retrain_after: int = setting(0, "a retrain once this many review clips were written since the last retrain "
                                 "began (0: review clips only count toward [triggers] min_new_samples)",
                                 between(0, 100_000))
    reviewers_file: Path = setting(Path(""), "file (mode 0600) of `name token` lines, one per reviewer: a review "
                                   "decision needs its reviewer's token (or [http] token_file's); empty and no "
                                   "token_file: review decisions only from the command line")
    decisions_per_minute: int = setting(60, "review decisions one reviewer may send a minute (bursts of 10); "
                                        "past it: 429 with Retry-After", between(1, 10_000))


@dataclass(frozen=True)
class Settings:
    paths: PathSettings = field(default_factory=PathSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    promotion: PromotionSettings = field(default_factory=PromotionSettings)
    triggers: TriggerSettings = field(default_factory=TriggerSettings)
    watch: WatchSettings = field(default_factory=WatchSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)
    source: Path | None = None

    @property
    def cache_path(self) -> Path:
        return self.paths.cache_path if self.paths.cache_path != Path("") else (
            self.paths.models_dir / "embedding_cache.sqlite3"
        )

    def describe(self) -> str:
        """The effective configuration as one log-friendly line."""
        parts = []
        for section in sections():
            values = getattr(self, section.name)
            for item in dataclasses.fields(values):
                value = self.cache_path if item.name == "cache_path" else getattr(values, item.name)
                parts.append(f"{section.name}.{item.name}={value!s}")
        return ", ".join(parts)


def sections() -> list[dataclasses.Field[Any]]:
    return [item for item in dataclasses.fields(Settings) if item.name != "source"]
