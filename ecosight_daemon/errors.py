"""Errors the daemon raises on purpose, and every exit code the program uses (the one list;
README "Exit codes" is its documentation)."""

from __future__ import annotations

# sysexits.h values, so systemd units and shell scripts can tell failures apart.
EXIT_OK = 0
EXIT_FAILURE = 1
# 2: a usage error, from argparse itself (an unknown command or option)
EXIT_NOT_RUNNING = 3  # status: no daemon answers (LSB's "program is not running")
EXIT_RETRAIN_FAILED = 4  # retrain could not train (too little data, training process died, time limit)
EXIT_REJECTED = 5  # retrain finished, but the gate kept the current model
EXIT_ALREADY_RUNNING = 73  # EX_CANTCREAT: another daemon holds models_dir (systemd does not restart on it)
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: the embedding model could not be loaded
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: try again later (another run holds the lock)
EXIT_CONFIG = 78  # EX_CONFIG: systemd's RestartPreventExitStatus=78 stops restart loops


class EcosightError(Exception):
    """Base of every error meant for an operator; the message says what to do."""

    exit_code = EXIT_FAILURE


class ConfigError(EcosightError):
    """config.toml (or an environment override) holds a key or value we cannot use."""

    exit_code = EXIT_CONFIG


class ModelLoadError(EcosightError):
    """The YAMNet handle could not be loaded."""

    exit_code = EXIT_UNAVAILABLE


class CacheError(EcosightError):
    """The embedding cache cannot be opened or is of an unknown schema."""


class AudioDecodeError(EcosightError):
    """One audio file cannot be used; the message is the reason recorded for it."""
