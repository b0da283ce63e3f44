"""A name as it may appear in one log line: control characters (a newline in a file name
could forge a `DETECTION gun_shot` line) shown as escapes, everything else as it is."""

from __future__ import annotations


def printable(text: object) -> str:
    value = str(text)
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in value)
