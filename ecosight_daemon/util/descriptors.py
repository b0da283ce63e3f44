"""The process's file-descriptor allowance: the soft limit raised to the hard one at start.

The daemon holds a descriptor per HTTP connection, watched folder (inotify), open file and
SQLite handle. systemd's default soft limit is 1,024 while its hard limit is far higher;
a few hundred idle connections used to exhaust the soft one.
"""

from __future__ import annotations

import logging
import resource

logger = logging.getLogger(__name__)

MOST_DESCRIPTORS = 65_536  # the unit's LimitNOFILE; more buys nothing here


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MOST_DESCRIPTORS if hard == resource.RLIM_INFINITY else min(hard, MOST_DESCRIPTORS)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return int(soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        logger.warning("cannot raise the open-file limit from %d (%s)", soft, exc)
        return int(soft)
    return int(wanted)
