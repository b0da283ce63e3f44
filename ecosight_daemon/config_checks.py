"""The value checks config.toml's settings declare: each returns None for a good value,
else what was expected (the error message names the key and the value)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import field
from typing import Any

Check = Callable[[Any], str | None]


def setting(default: Any, help: str, check: Check | None = None) -> Any:
    """A dataclass field carrying its help text and an optional value check."""
    return field(default=default, metadata={"help": help, "check": check})


def at_least(minimum: float) -> Check:
    return lambda value: None if value >= minimum else f"a number >= {minimum}"


def between(low: float, high: float) -> Check:
    return lambda value: None if low <= value <= high else f"a number from {low} to {high}"


def valid_extensions(values: tuple[str, ...]) -> str | None:
    if not values:
        return "a non-empty list of extensions such as [\".wav\"]"
    for value in values:
        if not value.startswith(".") or len(value) < 2 or "/" in value:
            return "extensions that start with a dot, such as \".wav\""
    return None


def valid_dtype(value: str) -> str | None:
    return None if value in ("float16", "float32") else "\"float16\" or \"float32\""


def valid_split(values: tuple[float, ...]) -> str | None:
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1) > 1e-6 or values[0] <= 0:
        return "three fractions [train, val, test] that add up to 1, such as [0.7, 0.15, 0.15]"
    return None


def valid_group_patterns(values: tuple[str, ...]) -> str | None:
    for value in values:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            return f"regular expressions ({value!r}: {exc})"
        if "group" not in pattern.groupindex:
            return f"regular expressions with a named group (?P<group>...) ({value!r} has none)"
    return None


def valid_units(values: tuple[int, ...]) -> str | None:
    return None if all(v >= 1 for v in values) else "a list of positive layer sizes such as [256], or []"


def one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else " or ".join(f'"{c}"' for c in choices)


def cron_trigger(expression: str) -> Any:
    """An APScheduler CronTrigger from 5 fields (minute hour day month weekday) or 6 with
    seconds first: the one parser, for the value check and the schedule alike."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) == 6:
        second, minute, hour, day, month, weekday = fields
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=weekday)
    return CronTrigger.from_crontab(expression)


def valid_cron(value: str) -> str | None:
    if not value.strip():
        return None
    try:
        cron_trigger(value)
    except ValueError as exc:
        return (f"a cron expression such as \"0 3 * * *\" (6 fields: seconds first), "
                f"or \"\" to disable ({exc})")
    return None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def valid_host(value: str) -> str | None:
    if value == "localhost" or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", value):
        return None
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return "an IP address or host name, such as \"127.0.0.1\""
    return None


def valid_zone(value: str) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if value.upper() == "UTC":
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return "a time zone name, such as \"UTC\" or \"Africa/Libreville\""
    return None


def valid_webhook(value: str) -> str | None:
    if value == "" or re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        return None
    return "empty (no webhook) or an http:// or https:// URL"
