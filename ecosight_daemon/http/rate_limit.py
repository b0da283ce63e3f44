"""A token bucket per key (a reviewer): `rate_per_s` sustained, `burst` at once. Keys are
kept for the most recent `max_keys` only, so the table stays bounded."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimit:
    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate, self._burst, self._max_keys, self._clock = rate_per_s, float(burst), max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def wait_s(self, key: str) -> float:
        """0 when this request may go (and it is counted); else seconds until one may."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - at) * self._rate)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
            return 0.0 if allowed else (1.0 - tokens) / self._rate
