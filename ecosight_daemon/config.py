"""Typed, frozen settings read from config.toml: the only home of defaults.

Every field declares its default and a one-line help; `load_settings` rejects
unknown keys and bad values before anything starts, naming the key, the value
and what was expected.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from ecosight_daemon.config_checks import (
    at_least,
    between,
    is_loopback,
    one_of,
    setting,
    valid_cron,
    valid_dtype,
    valid_extensions,
    valid_group_patterns,
    valid_host,
    valid_split,
    valid_units,
)
from ecosight_daemon.errors import ConfigError
from ecosight_daemon.pooling import POOLINGS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

logger = logging.getLogger(__name__)

CONFIG_ENV = "ECOSIGHT_CONFIG"
HANDLE_ENV = "ECOSIGHT_YAMNET_HANDLE"
DEFAULT_CONFIG_NAME = "config.toml"
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
        (".wav", ".flac", ".ogg"), "file endings to ingest, compared case-insensitively", valid_extensions
    )
    max_duration_s: float = setting(600.0, "longer files are refused with a reason", at_least(0.01))
    min_duration_s: float = setting(
        0.05, "shorter files (a 1-sample clip) carry too little sound to learn from and are refused", at_least(0.0)
    )
    max_file_mb: float = setting(512.0, "larger files are refused before they are read", at_least(0.001))
    min_peak_dbfs: float = setting(
        -60.0, "files whose loudest sample is below this (digital silence or nearly) are refused", between(-200.0, 0.0)
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
        0.05, "a drop rejects a candidate only when a paired McNemar test gives p below this", between(1e-6, 0.5)
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
    source: Path | None = None

    @property
    def cache_path(self) -> Path:
        return self.paths.cache_path if self.paths.cache_path != Path("") else (
            self.paths.models_dir / "embedding_cache.sqlite3"
        )

    def describe(self) -> str:
        """The effective configuration as one log-friendly line."""
        parts = []
        for section in _sections():
            values = getattr(self, section.name)
            for item in dataclasses.fields(values):
                value = self.cache_path if item.name == "cache_path" else getattr(values, item.name)
                parts.append(f"{section.name}.{item.name}={value!s}")
        return ", ".join(parts)


def _sections() -> list[dataclasses.Field[Any]]:
    return [item for item in dataclasses.fields(Settings) if item.name != "source"]


RESTART_ONLY_SECTIONS = ("paths", "embedding", "audio", "watch", "http")  # a running daemon keeps these


def reload_settings(current: Settings) -> Settings | None:
    """SIGHUP: config.toml read again; sections that need a restart keep their running
    values (with a warning). None, logged, when the file is now invalid."""
    if current.source is None:
        return None
    try:
        fresh = load_settings(current.source)
    except ConfigError as exc:
        logger.error("SIGHUP: %s; keeping the running configuration", exc)
        return None
    kept = [name for name in RESTART_ONLY_SECTIONS if getattr(fresh, name) != getattr(current, name)]
    if kept:
        logger.warning("SIGHUP: changes to [%s] take effect after a restart", "], [".join(kept))
        fresh = dataclasses.replace(fresh, **{name: getattr(current, name) for name in kept})
    logger.info("SIGHUP: configuration reloaded from %s", current.source)
    return fresh


def find_config_path(cli_path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """`--config`, else $ECOSIGHT_CONFIG, else ./config.toml."""
    if cli_path:
        return Path(cli_path)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return Path(DEFAULT_CONFIG_NAME)


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate config.toml; raise ConfigError naming the key, value and expectation."""
    environ = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"config file {path} does not exist; pass --config PATH or set {CONFIG_ENV}"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return settings_from_mapping(raw, base_dir=path.resolve().parent, environ=environ, source=path)


def settings_from_mapping(
    raw: Mapping[str, Any],
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
    source: Path | None = None,
) -> Settings:
    """Build Settings from parsed TOML; relative paths resolve against base_dir."""
    environ = os.environ if environ is None else environ
    sections = {item.name: item for item in _sections()}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(
            f"unknown section [{unknown[0]}] in config; expected one of: {', '.join(sorted(sections))}"
        )
    built: dict[str, Any] = {}
    for name in sections:
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table of keys, got {table!r}")
        built[name] = _build_section(name, get_type_hints(Settings)[name], table, base_dir)
    handle = resolve_handle(built["embedding"].yamnet_handle, base_dir)
    built["embedding"] = dataclasses.replace(built["embedding"], yamnet_handle=handle)
    settings = _apply_environment(Settings(**built, source=source), environ)
    check_paths(settings)
    return settings


def check_paths(settings: Settings) -> None:
    """Refuse layouts where the daemon would write where it reads labeled audio.

    Every folder under audio_dir is a label and the daemon promises never to write
    there; a models_dir or cache inside it would turn its own files into training
    input (and needs audio_dir writable, which the systemd unit forbids).
    """
    audio = settings.paths.audio_dir.resolve()
    for key, path in (("paths.models_dir", settings.paths.models_dir), ("paths.cache_path", settings.cache_path)):
        resolved = path.resolve()
        if resolved == audio or audio in resolved.parents:
            raise ConfigError(
                f"{key} = {str(path)!r} is inside paths.audio_dir ({audio}); the daemon never writes "
                "into the audio folder: put it elsewhere, e.g. /var/lib/ecosight/models"
            )
    if settings.cache_path.is_dir():
        raise ConfigError(f"paths.cache_path = {str(settings.cache_path)!r} is a folder; name a file in it")
    check_handle(settings.embedding.yamnet_handle, "embedding.yamnet_handle")
    http = settings.http
    if http.enabled and not is_loopback(http.host) and http.token_file == Path(""):
        raise ConfigError(f"http.host = {http.host!r} is reachable from other machines, so http.token_file is "
                          "required: a file holding a long random token, mode 0600 "
                          "(`umask 077; openssl rand -hex 32 > /etc/ecosight/http.token`)")


def check_handle(handle: str, where: str) -> None:
    if "://" in handle and not handle.startswith(("https://", "http://", "gs://")):
        raise ConfigError(f"{where} = {handle!r}: a URL must be https://, http:// or gs://; or give a local folder")


def _build_section(name: str, cls: type, table: Mapping[str, Any], base_dir: Path) -> Any:
    hints = get_type_hints(cls)
    fields = {item.name: item for item in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {name}.{unknown[0]} in config; {name} accepts: {', '.join(sorted(fields))}"
        )
    values: dict[str, Any] = {}
    for key, item in fields.items():
        if key not in table:
            value = item.default
        else:
            value = _coerce(f"{name}.{key}", table[key], hints[key])
        if isinstance(value, Path) and value != Path("") and not value.is_absolute():
            value = (base_dir / value).resolve()
        check = item.metadata.get("check")
        problem = check(value) if check and key in table else None
        if problem:
            raise ConfigError(f"{name}.{key} = {table[key]!r} is not allowed; expected {problem}")
        values[key] = value
    return cls(**values)


def _coerce(key: str, value: Any, expected: Any) -> Any:
    def wrong(what: str) -> ConfigError:
        return ConfigError(f"{key} = {value!r} has the wrong type; expected {what}")

    if expected is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("a whole number")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    if expected is str:
        if not isinstance(value, str):
            raise wrong("a string in quotes")
        return value
    if expected is Path:
        if not isinstance(value, str) or "\0" in value:
            raise wrong("a path in quotes")
        return Path(value)
    if expected == tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise wrong("a list of strings")
        return tuple(value)
    if expected == tuple[int, ...]:
        if not isinstance(value, list) or not all(
            isinstance(item, int) and not isinstance(item, bool) for item in value
        ):
            raise wrong("a list of whole numbers")
        return tuple(value)
    if expected == tuple[float, ...]:
        if not isinstance(value, list) or not all(
            isinstance(item, (int, float)) and not isinstance(item, bool) for item in value
        ):
            raise wrong("a list of numbers")
        return tuple(float(item) for item in value)
    raise TypeError(f"config field {key} has unsupported type {expected}")  # a bug, not user error


def _apply_environment(settings: Settings, environ: Mapping[str, str]) -> Settings:
    handle = environ.get(HANDLE_ENV, "").strip()
    if handle:
        check_handle(handle, HANDLE_ENV)
        embedding = dataclasses.replace(
            settings.embedding, yamnet_handle=resolve_handle(handle, Path.cwd())
        )
        settings = dataclasses.replace(settings, embedding=embedding)
    return settings


def resolve_handle(handle: str, base_dir: Path) -> str:
    """A URL stays as it is; a local path becomes absolute (relative to base_dir)."""
    if "://" in handle:
        return handle
    path = Path(handle).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())
