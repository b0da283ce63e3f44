"""Shared by the reliability suite: how to run the daemon without root's file privileges."""

from __future__ import annotations

import os
import shutil

import pytest


def unprivileged_prefix() -> tuple[str, ...]:
    """A command prefix that runs the daemon unable to bypass file permissions.

    As root, the daemon would read a mode-000 file anyway. Dropping CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH (setpriv) makes it obey permission bits like a service user,
    while it can still run the interpreter (here under /root, mode 700, so switching
    to `nobody` is not possible).
    """
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable to the daemon")
    drop = "-dac_override,-dac_read_search"
    return (setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}")
