"""Rate limits per client address: a token bucket each, in memory.

The workers of one `otc relay serve --workers N` share their buckets
(:class:`SharedRateLimiter`: a table in memory the parent maps before it
forks them), so N workers allow the same rate as one. Separate relay
processes (say, behind a load balancer) each keep their own buckets, so N of
them allow up to N times the rate. IPv6 clients are counted per /64,
the block one subscriber usually gets, so one host cannot dodge the limit by
hopping addresses; and all the /64s of one /48 share a bucket of
``BLOCK_SHARES`` times the rate, so a subscriber with a /56 does not get 256
(onetimechat/net.py).
"""

from __future__ import annotations

import hashlib
import mmap
import multiprocessing
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

from onetimechat.net import client_keys

if TYPE_CHECKING:
    from relay.config import RelayConfig

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


# The shared table: this many slots, each a key's 64-bit hash and its bucket (tokens, when); a key lives in one
# of PROBE slots from its hash's. 4 MiB a table; past that many busy addresses, the stalest bucket in a key's
# window is forgotten (its client starts again with a full bucket, as MAX_TRACKED forgets above).
SHARED_SLOTS = 1 << 17
PROBE = 16
LOCK_WAIT_S = 1.0


class SharedRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose buckets live in shared memory, made before the worker processes are forked.

    The clock is ``time.monotonic`` (CLOCK_MONOTONIC is one clock for every process of the machine). The lock is
    a process-shared semaphore held for a few microseconds; a worker killed while holding it would leave it
    taken, so a wait past ``LOCK_WAIT_S`` goes ahead without it (one bucket update may then be lost).
    """

    def __init__(self, rate: float, burst: int, slots: int = SHARED_SLOTS) -> None:
        super().__init__(rate, burst)
        self._slots = slots
        self._keys_map = mmap.mmap(-1, 8 * slots)  # anonymous and shared: forked workers see one table
        self._values_map = mmap.mmap(-1, 16 * slots)
        self._keys = memoryview(self._keys_map).cast("Q")
        self._values = memoryview(self._values_map).cast("d")
        self._shared_lock = multiprocessing.get_context("fork").Lock()

    def take(self, key: str) -> float:
        if not self.enabled:
            return 0.0
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") | 1  # 0: an empty slot
        now = self._clock()
        keys, values = self._keys, self._values
        locked = self._shared_lock.acquire(timeout=LOCK_WAIT_S)
        try:
            found = free = stalest = -1
            for n in range(PROBE):
                i = (h + n) % self._slots
                k = keys[i]
                if k == h:
                    found = i
                    break
                if k == 0:
                    if free < 0:
                        free = i
                elif stalest < 0 or values[2 * i + 1] < values[2 * stalest + 1]:
                    stalest = i
            if found >= 0:
                tokens = min(self.burst, values[2 * found] + (now - values[2 * found + 1]) * self.rate)
            else:
                found = free if free >= 0 else stalest
                keys[found] = h
                tokens = self.burst
            if tokens < 1.0:
                values[2 * found], values[2 * found + 1] = tokens, now
                return (1.0 - tokens) / self.rate
            values[2 * found], values[2 * found + 1] = tokens - 1.0, now
            return 0.0
        finally:
            if locked:
                self._shared_lock.release()


class Limiters(NamedTuple):
    """A relay's four buckets per client: requests per address and per IPv6 /48, announcements likewise."""

    requests: RateLimiter
    block_requests: RateLimiter
    presence: RateLimiter
    block_presence: RateLimiter

    @classmethod
    def of(cls, config: RelayConfig, shared: bool = False) -> Limiters:
        """The limits ``config`` sets; ``shared``: in shared memory, for worker processes forked after this."""
        make = SharedRateLimiter if shared else RateLimiter
        shares = config.block_shares
        return cls(make(config.rate_limit, config.rate_burst),
                   # An IPv6 /48's shared bucket (onetimechat/net.py); with no block shares, none.
                   make(config.rate_limit * shares, config.rate_burst * shares),
                   make(config.presence_rate, config.presence_burst),
                   make(config.presence_rate * shares, config.presence_burst * shares))
