"""Secrets kept in files (the API's bearer token, the webhook's signing key, reviewers'
tokens): refused unless only their owner can read them, with the command that fixes it."""

from __future__ import annotations

from pathlib import Path

from ecosight_daemon.errors import ConfigError

MIN_SECRET_CHARS = 16


def read_secret_text(path: Path, setting: str) -> str:
    """The file's text, stripped; a ConfigError when it cannot be read or others can read it."""
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{setting} = {str(path)!r} cannot be read ({getattr(exc, 'strerror', None) or exc}); "
                          "create it with a long random secret, e.g. "
                          f"`umask 077; openssl rand -hex 32 > {path}`") from exc
    if mode & 0o077:
        raise ConfigError(f"{setting} {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")
    return text


def checked_secret(secret: str, where: str) -> str:
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(f"{where} holds a secret of {len(secret)} characters; use at least {MIN_SECRET_CHARS} "
                          "(e.g. `openssl rand -hex 32`)")
    return secret


def read_secret(path: Path, setting: str) -> str:
    """A one-secret file (a token, a signing key)."""
    return checked_secret(read_secret_text(path, setting), f"{setting} {path}")
