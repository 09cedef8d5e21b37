"""NIST SP 800-90B continuous health tests (section 4.4) over a stream of byte samples.

Pure computation, no I/O. :class:`HealthMonitor` runs the Repetition Count
Test and the Adaptive Proportion Test on every sample, runs the start-up test
over the first :data:`STARTUP_SAMPLES` samples, and releases samples only in
whole APT windows that passed: when a test fails, nothing from the failing
window (nor from the rest of the same feed) is released, and the monitor
refuses all further samples.

Cutoffs are computed, not tabulated, from the claimed min-entropy per sample
``h`` and the false-alarm probability ``alpha`` (SP 800-90B 4.4.1 and 4.4.2):

* RCT: ``C = 1 + ceil(-log2(alpha) / h)``;
* APT: ``C = 1 + CRITBINOM(W, 2**-h, 1 - alpha)``, W = 512 for non-binary
  samples, capped at W so the test can always fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hrng.errors import HealthTestFailure, SourceHalted

# False-alarm probability per sample, the strict end of SP 800-90B's recommended 2^-20..2^-40: at 2^-30 a
# healthy source raised a false alarm in about one 1 GiB pad in four. For 8 bits per byte the RCT cutoff is
# 1 + ceil(40 / 8) = 6 and the APT cutoff over its 512-sample window 1 + CRITBINOM(512, 2^-8, 1 - 2^-40).
ALPHA = 2.0**-40
APT_WINDOW = 512  # SP 800-90B 4.4.2: W = 512 for non-binary samples
SAMPLE_BITS = 8  # the sources give byte samples
STARTUP_SAMPLES = 1024  # SP 800-90B 4.3: the start-up test covers at least 1024 samples


def binomial_upper_quantile(n: int, p: float, alpha: float) -> int:
    """The smallest k with P(Binomial(n, p) > k) <= alpha, i.e. CRITBINOM(n, p, 1 - alpha).

    Summed over the upper tail, in log space, so that alpha far below the
    double-precision spacing near 1 (2**-60, say) stays exact.
    """
    if n < 0 or not 0.0 < p < 1.0 or not 0.0 < alpha < 1.0:
        raise ValueError("need n >= 0, 0 < p < 1 and 0 < alpha < 1")
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    tail = 0.0  # P(X > k), summed from the top so that small terms are added first
    tails = [0.0] * (n + 1)
    for k in range(n, 0, -1):
        tails[k] = tail
        tail += math.exp(log_n - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q)
    tails[0] = tail
    for k in range(n + 1):
        if tails[k] <= alpha:
            return k
    return n  # unreachable: P(X > n) = 0


def rct_cutoff(h: float, alpha: float = ALPHA) -> int:
    """SP 800-90B 4.4.1: C = 1 + ceil(-log2(alpha) / h)."""
    _check_entropy(h)
    # Rounded first so that a claim like 0.3 does not pick up a float's last bit.
    return 1 + math.ceil(round(-math.log2(alpha) / h, 9))


def apt_cutoff(h: float, alpha: float = ALPHA, window: int = APT_WINDOW) -> int:
    """SP 800-90B 4.4.2: C = 1 + CRITBINOM(W, 2**-h, 1 - alpha), at most W."""
    _check_entropy(h)
    return min(window, 1 + binomial_upper_quantile(window, 2.0**-h, alpha))


def _check_entropy(h: float) -> None:
    if not (isinstance(h, (int, float)) and math.isfinite(h) and 0.0 < h <= SAMPLE_BITS):
        raise ValueError(f"claimed min-entropy must be above 0 and at most {SAMPLE_BITS} bits per sample")


@dataclass(frozen=True)
class Cutoffs:
    """The cutoffs of both tests for one entropy claim."""

    h: float
    alpha: float
    rct: int
    apt: int
    window: int

    @classmethod
    def for_entropy(cls, h: float, alpha: float = ALPHA, window: int = APT_WINDOW) -> Cutoffs:
        return cls(h=h, alpha=alpha, rct=rct_cutoff(h, alpha), apt=apt_cutoff(h, alpha, window), window=window)


@dataclass
class HealthStats:
    """What the tests saw, for `otc hrng test` and the device's status."""

    samples: int = 0  # samples tested
    released: int = 0  # samples released (whole passing windows after the start-up test)
    windows: int = 0  # complete APT windows that passed
    longest_run: int = 0  # the RCT's highest count
    highest_apt: int = 0  # the APT's highest count in a window
    startup_passed: bool = False
    alarms: int = 0  # alarms raised (each one restarts the tests with a new start-up test, or stops them)


class HealthMonitor:
    """Runs the RCT and the APT on every sample fed to it; returns only samples of passing windows."""

    def __init__(self, cutoffs: Cutoffs, *, source: str = "source", startup: int = STARTUP_SAMPLES) -> None:
        if startup < 0 or startup % cutoffs.window:
            raise ValueError("the start-up test must cover whole APT windows")
        self.cutoffs = cutoffs
        self.source = source
        self.startup = startup  # the stream index where the (latest) start-up test ends
        self._startup_length = startup
        self.stats = HealthStats()
        self.failure: HealthTestFailure | None = None
        self._pending = b""  # samples of the current, incomplete window (already RCT-tested)
        self._last = -1  # the RCT's previous sample (-1: none yet)
        self._run = 0  # the RCT's count B
        self._fed_end = 0  # after a failure: the stream index just past the failing feed

    def restart(self) -> None:
        """After an alarm: forget the failing window and run the start-up test again from the next sample.

        The rest of the failing feed is discarded; the stream's count goes on (sample indices stay those of
        the source's stream); the RCT starts afresh and the APT's windows are aligned to the restart.
        """
        self.stats.samples = max(self.stats.samples, self._fed_end)
        self.failure = None
        self._pending = b""
        self._last, self._run = -1, 0
        self.startup = self.stats.samples + self._startup_length
        self.stats.startup_passed = False

    def feed(self, data: bytes) -> bytes:
        """Test ``data`` (the next samples of the stream); return the samples now released.

        Raises :class:`HealthTestFailure` at the first failing sample; nothing
        fed in this call is released then, and every later call raises
        :class:`SourceHalted`.
        """
        if self.failure is not None:
            raise SourceHalted(f"{self.source} stopped after an HRNG alarm; open it again to restart it.")
        if not data:
            return b""
        buf = self._pending + bytes(data)
        arr = np.frombuffer(buf, dtype=np.uint8)
        base = self.stats.samples - len(self._pending)  # stream index of buf[0]
        fail_rct = self._rct(arr[len(self._pending) :])
        fail_apt, full = self._apt(arr)
        fails = [(i + len(self._pending), "RCT") for i in (fail_rct,) if i >= 0]
        fails += [(i, "APT") for i in (fail_apt,) if i >= 0]
        if fails:
            index, test = min(fails)
            sample = base + index
            self.stats.samples = sample + 1
            self._fed_end = base + len(buf)  # the rest of this feed is discarded with it
            self.stats.alarms += 1
            self._pending = b""
            self.failure = HealthTestFailure(
                test=test,
                source=self.source,
                sample=sample,
                cutoff=self.cutoffs.rct if test == "RCT" else self.cutoffs.apt,
                startup=sample < self.startup,
            )
            raise self.failure
        self.stats.samples = base + len(buf)
        W = self.cutoffs.window
        end = full * W
        self._pending = buf[end:]
        # Windows of the start-up test are tested and then dropped, never released.
        skip = min(end, max(0, self.startup - base))
        self.stats.windows += full
        if base + end >= self.startup:
            self.stats.startup_passed = True
        out = buf[skip:end]
        self.stats.released += len(out)
        return out

    def _rct(self, x: np.ndarray) -> int:
        """SP 800-90B 4.4.1 over new samples ``x``: index of the first failing one, or -1."""
        n = len(x)
        if n == 0:
            return -1
        C = self.cutoffs.rct
        eq = np.empty(n, dtype=bool)  # eq[i]: x[i] repeats the sample before it
        eq[0] = int(x[0]) == self._last
        np.equal(x[1:], x[:-1], out=eq[1:])
        idx = np.flatnonzero(eq)
        if idx.size == 0:
            self._last, self._run = int(x[-1]), 1
            self.stats.longest_run = max(self.stats.longest_run, 1)
            return -1
        # Group consecutive repeat positions: each group extends one run of equal samples.
        brk = np.flatnonzero(np.diff(idx) != 1)
        starts = idx[np.concatenate(([0], brk + 1))]
        ends = idx[np.concatenate((brk, [idx.size - 1]))]
        counts = ends - starts + 1
        base = np.ones(starts.size, dtype=np.int64)
        if starts[0] == 0:
            base[0] = self._run  # the run carried over from the previous feed
        runs = base + counts  # B at the end of each run
        self.stats.longest_run = max(self.stats.longest_run, int(runs.max()))
        bad = np.flatnonzero(runs >= C)
        if bad.size:
            g = bad[0]
            return int(starts[g] + (C - base[g]) - 1)  # where B reached C
        self._run = int(runs[-1]) if ends[-1] == n - 1 else 1
        self._last = int(x[-1])
        return -1

    def _apt(self, arr: np.ndarray) -> tuple[int, int]:
        """SP 800-90B 4.4.2 over ``arr`` (which starts at a window boundary).

        Returns (index of the first failing sample or -1, number of complete windows).
        """
        W, C = self.cutoffs.window, self.cutoffs.apt
        full = len(arr) // W
        first = -1
        if full:
            windows = arr[: full * W].reshape(full, W)
            matches = windows == windows[:, :1]  # B counts the window's first sample A itself
            counts = np.count_nonzero(matches, axis=1)
            self.stats.highest_apt = max(self.stats.highest_apt, int(counts.max()))
            bad = np.flatnonzero(counts >= C)
            if bad.size:
                w = int(bad[0])
                first = w * W + int(np.argmax(np.cumsum(matches[w]) >= C))
                return first, full
        tail = arr[full * W :]
        if tail.size:
            matches = tail == tail[0]
            count = int(np.count_nonzero(matches))
            self.stats.highest_apt = max(self.stats.highest_apt, count)
            if count >= C:
                first = full * W + int(np.argmax(np.cumsum(matches) >= C))
        return first, full
