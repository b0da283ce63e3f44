"""Reading config.toml into Settings: parse, coerce each value to its declared type, run its
check, refuse unsafe layouts, apply the environment's override; and SIGHUP's reload."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

from ecosight_daemon.config import HANDLE_ENV, Settings, sections
from ecosight_daemon.config_checks import is_loopback
from ecosight_daemon.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

logger = logging.getLogger(__name__)

CONFIG_ENV = "ECOSIGHT_CONFIG"
DEFAULT_CONFIG_NAME = "config.toml"

# A running daemon keeps these sections as they were at its start.
RESTART_ONLY_SECTIONS = ("paths", "embedding", "audio", "watch", "http", "alerts", "review")


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
    known = {item.name: item for item in sections()}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown section [{unknown[0]}] in config; expected one of: {', '.join(sorted(known))}"
        )
    built: dict[str, Any] = {}
    for name in known:
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
    recordings = settings.detection.recordings_dir
    if recordings != Path(""):
        resolved = recordings.resolve()
        if resolved == audio or audio in resolved.parents or resolved in audio.parents:
            raise ConfigError(
                f"detection.recordings_dir = {str(recordings)!r} overlaps paths.audio_dir ({audio}): hour-long "
                "recordings are not training clips; give them their own folder, e.g. /var/lib/ecosight/recordings")
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
