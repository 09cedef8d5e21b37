"""Rate limits per client address: a token bucket each, in this process's memory.

Behind a load balancer each relay process keeps its own buckets, so N
processes allow up to N times the rate. IPv6 clients are counted per /64,
the block one subscriber usually gets, so one host cannot dodge the limit by
hopping addresses; and all the /64s of one /48 share a bucket of
``BLOCK_SHARES`` times the rate, so a subscriber with a /56 does not get 256
(onetimechat/net.py).
"""

from __future__ import annotations

import threading
import time

from onetimechat.net import client_keys

# Past this many addresses, buckets that have refilled (idle clients) are forgotten.
MAX_TRACKED = 100_000


def client_key(address: str | None) -> str:
    """The bucket an address counts against: an IPv4 address, or an IPv6 /64 (its /48's: client_keys)."""
    return client_keys(address)[0]


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(max(1, burst))
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """Spend one token: 0.0 if allowed, else the seconds until one is due."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, when = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self.rate
            if key not in self._buckets and len(self._buckets) >= MAX_TRACKED:
                self._forget_idle(now)
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0

    def _forget_idle(self, now: float) -> None:
        full = [k for k, (t, w) in self._buckets.items() if t + (now - w) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= MAX_TRACKED:
            # Still full of busy clients: forget the oldest half rather than grow without bound.
            oldest = sorted(self._buckets, key=lambda k: self._buckets[k][1])[: MAX_TRACKED // 2]
            for key in oldest:
                del self._buckets[key]
