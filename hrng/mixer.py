"""The mixer: random bytes = XOR of every health-checked hardware source and the OS CSPRNG.

Pads and session keys take bytes only from a :class:`Mixer`. The XOR is at
least as unpredictable as its best input, so neither the hardware nor the
kernel alone has to be trusted; the health tests make sure the hardware input
is still there and still noisy.

A health-test alarm discards the batch being drawn and reruns the source's
start-up test (the ``on_recovered`` hook hears of it: the device logs it); a
second alarm in the same draw (the mixer's life: one pad, one key), or any
other failure of a source (a disconnect, a stall), stops the mixer for good:
it raises at once, calls the ``on_alarm`` hook (the device logs it and puts it
on its screen), and refuses every later read.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TextIO

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hrng.errors import HealthTestFailure, HRNGError, InsecureSource, SourceHalted
from hrng.health import ALPHA, Cutoffs, HealthMonitor, HealthStats
from hrng.sources import Source, SourceURL, open_source, parse_url

RandomBytes = Callable[[int], bytes]
AlarmHook = Callable[[HRNGError], None]
INSECURE_NOTICE = "INSECURE: the OS CSPRNG alone, no hardware random source"
OS_ONLY_PAD_NOTICE = ("otc: pad bytes come from the operating system's CSPRNG, not a hardware RNG: "
                      "development and demo use only")


class OSStream:
    """The OS CSPRNG for bulk pad bytes where no hardware source is mixed in (the stand-in).

    Requests below ``SMALL`` bytes are ``os.urandom`` itself. Larger ones are
    an AES-256-CTR keystream under a key drawn from ``os.urandom`` for that
    request (a new key for every ``SEGMENT`` bytes of it) and dropped at once:
    the construction the kernel's own generator uses (a stream cipher keyed
    from its pool), at AES speed instead of one ``getrandom`` copy at a time.

    The keystream comes out of the AES-GCM engine (the encryption of zeros
    under nonce ``j`` is the CTR keystream from counter block ``j || 2``, one
    nonce per ``PIECE``), which on CPUs with vector AES runs twice as fast as
    the plain CTR one. Each piece's 16-byte tag lands where the next piece
    then writes; the last 16 bytes of a request are ``os.urandom``.

    No state outlives a call, so it is safe across threads and forks, and
    nothing kept in memory reproduces bytes already handed out. It is only
    for the no-hardware case (``pad_random`` without URLs): with a hardware
    source the :class:`Mixer` XORs in ``os.urandom`` directly.
    """

    SMALL = 4096
    SEGMENT = 64 << 20  # keystream per key: 2^22 blocks, far inside AES-CTR's bounds
    PIECE = 1 << 20  # keystream per nonce (from as many zero bytes, kept in cache)
    TAG = 16

    _zeros = memoryview(bytes(PIECE))

    def __call__(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must be >= 0")
        if n < self.SMALL:
            return os.urandom(n)
        buf = bytearray(n)
        self.into(buf)
        return bytes(buf)

    def into(self, buf: bytearray | memoryview) -> None:
        """Fill ``buf`` with random bytes in place."""
        view = memoryview(buf).cast("B")
        if len(view) < self.SMALL:
            view[:] = os.urandom(len(view))
            return
        stream = len(view) - self.TAG  # the last piece's tag needs room: these bytes come last
        for start in range(0, stream, self.SEGMENT):
            aead = AESGCM(os.urandom(32))
            end = min(start + self.SEGMENT, stream)
            for nonce, at in enumerate(range(start, end, self.PIECE)):
                n = min(self.PIECE, end - at)
                aead.encrypt_into(nonce.to_bytes(12, "big"), self._zeros[:n], None, view[at : at + n + self.TAG])
        view[stream:] = os.urandom(self.TAG)


os_stream = OSStream()


class CheckedSource:
    """A hardware source behind the health tests: :meth:`read` gives only samples of passing windows.

    Its life is one draw. The first alarm discards the batch being read and reruns the start-up test
    (``on_recovered`` hears of it); a second alarm stops the source, with both alarms in its text.
    """

    def __init__(self, source: Source, *, alpha: float = ALPHA,
                 on_recovered: Callable[[HealthTestFailure], None] | None = None) -> None:
        self.source = source
        self.cutoffs = Cutoffs.for_entropy(source.claimed_entropy, alpha)
        self.monitor = HealthMonitor(self.cutoffs, source=source.url)
        self.on_recovered = on_recovered
        self._ready = bytearray()
        self.failure: HRNGError | None = None
        self.first_alarm: HealthTestFailure | None = None

    @property
    def stats(self) -> HealthStats:
        return self.monitor.stats

    def read(self, n: int) -> bytes:
        """Exactly ``n`` checked bytes; raises the source's failure (and keeps raising after it)."""
        if self.failure is not None:
            raise SourceHalted(f"{self.source.url} stopped after a failure; open it again to restart it.")
        while True:
            try:
                parts = [bytes(self._ready)] if self._ready else []
                have = len(self._ready)
                self._ready.clear()
                while have < n:
                    released = self.monitor.feed(self.source.read(n - have + self.cutoffs.window))
                    parts.append(released)
                    have += len(released)
                break
            except HealthTestFailure as exc:
                if self.first_alarm is None:  # the batch is discarded and the start-up test runs again
                    self.first_alarm = exc
                    parts.clear()
                    self.monitor.restart()
                    if self.on_recovered is not None:
                        self.on_recovered(exc)
                    continue
                self.failure = exc.after(self.first_alarm)
                raise self.failure from None
            except HRNGError as exc:
                self.failure = exc
                raise
        data = b"".join(parts)
        self._ready += data[n:]
        return data[:n]

    def close(self) -> None:
        self._ready.clear()
        self.source.close()


class Mixer:
    """XOR of the checked hardware sources and the OS CSPRNG."""

    def __init__(
        self,
        sources: Iterable[Source] = (),
        *,
        insecure_os_only: bool = False,
        on_alarm: AlarmHook | None = None,
        os_random: RandomBytes = os.urandom,
        alpha: float = ALPHA,
        on_recovered: AlarmHook | None = None,
    ) -> None:
        sources = list(sources)
        hardware = [s for s in sources if s.hardware]
        if not hardware and not insecure_os_only:
            raise InsecureSource()
        if hardware and insecure_os_only:
            raise ValueError("insecure_os_only is only for a mixer without hardware sources")
        self.insecure = not hardware
        self.others = [s for s in sources if not s.hardware]  # os: named explicitly; it is always mixed in
        self.checked = [CheckedSource(s, alpha=alpha, on_recovered=on_recovered) for s in hardware]
        self.on_alarm = on_alarm
        self._os_random = os_random
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.failure: HRNGError | None = None
        self.produced = 0

    @classmethod
    def from_urls(
        cls,
        urls: Sequence[str | SourceURL],
        *,
        insecure_os_only: bool = False,
        on_alarm: AlarmHook | None = None,
        alpha: float = ALPHA,
        on_recovered: AlarmHook | None = None,
    ) -> Mixer:
        """Open every source the URLs name (all URLs are checked before any hardware is touched)."""
        specs = [u if isinstance(u, SourceURL) else parse_url(u) for u in urls]
        if not any(s.hardware for s in specs) and not insecure_os_only:
            raise InsecureSource()
        opened: list[Source] = []
        try:
            for spec in specs:
                opened.append(open_source(spec))
            return cls(opened, insecure_os_only=insecure_os_only, on_alarm=on_alarm, alpha=alpha,
                       on_recovered=on_recovered)
        except BaseException:
            for source in opened:
                source.close()
            raise

    def read(self, n: int) -> bytes:
        """``n`` random bytes: the OS CSPRNG XOR ``n`` checked bytes of every hardware source."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            if self.failure is not None:
                raise SourceHalted(f"The random source stopped after a failure: {self.failure}")
            if n == 0:
                return b""
            try:
                inputs = self._read_hardware(n)
            except HRNGError as exc:
                self.failure = exc
                if self.on_alarm is not None:
                    self.on_alarm(exc)
                raise
            os_bytes = self._os_random(n)
            if len(os_bytes) != n:
                raise ValueError("the OS CSPRNG gave the wrong number of bytes")
            acc = np.frombuffer(os_bytes, dtype=np.uint8).copy()
            for data in inputs:
                np.bitwise_xor(acc, np.frombuffer(data, dtype=np.uint8), out=acc)
            self.produced += n
            return acc.tobytes()

    __call__ = read

    def random_bytes(self, n: int) -> bytes:
        """The ``Callable[[int], bytes]`` that pad generation takes (``os.urandom``'s shape)."""
        return self.read(n)

    def _read_hardware(self, n: int) -> list[bytes]:
        if len(self.checked) <= 1:
            return [c.read(n) for c in self.checked]
        # Several devices are read at once so that the slowest sets the pace, not their sum.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=len(self.checked), thread_name_prefix="hrng")
        futures = [self._pool.submit(c.read, n) for c in self.checked]
        results, first_error = [], None
        for future in futures:
            try:
                results.append(future.result())
            except HRNGError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results

    def describe(self) -> str:
        if self.insecure:
            return INSECURE_NOTICE
        return " XOR ".join([c.source.describe() for c in self.checked] + ["the OS CSPRNG"])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for c in self.checked:
            c.close()
        for s in self.others:
            s.close()

    def __enter__(self) -> Mixer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def pad_random(
    urls: Sequence[str], *, on_alarm: AlarmHook | None = None, stream: TextIO | None = None,
    on_recovered: AlarmHook | None = None,
) -> Iterator[RandomBytes]:
    """Where a pad's bytes come from, said on ``stream`` (stderr): the mixer over ``urls``.

    With no URLs, the OS CSPRNG alone (:data:`os_stream`), which is for
    development and demos only (``otc pad pair-local`` without ``--hrng``).
    """
    stream = stream if stream is not None else sys.stderr
    if not urls:
        print(OS_ONLY_PAD_NOTICE, file=stream)
        yield os_stream
        return
    with Mixer.from_urls(urls, on_alarm=on_alarm, on_recovered=on_recovered) as mixer:
        print(f"otc: pad bytes come from {mixer.describe()}", file=stream)
        yield mixer.random_bytes
