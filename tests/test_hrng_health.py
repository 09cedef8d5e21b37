"""SP 800-90B health tests: computed cutoffs, the monitor on known-good and known-bad streams,
and the release rule (only whole passing windows, nothing from a failing one)."""

from __future__ import annotations

import hashlib
import math
import os
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hrng.errors import HealthTestFailure, SourceHalted
from hrng.estimate import byte_counts, chi_square, chi_square_sf, most_common_value
from hrng.health import (
    ALPHA,
    APT_WINDOW,
    STARTUP_SAMPLES,
    Cutoffs,
    HealthMonitor,
    apt_cutoff,
    binomial_upper_quantile,
    rct_cutoff,
)

BYTES = Cutoffs.for_entropy(8.0)


def shake(label: str, n: int) -> bytes:
    return hashlib.shake_256(label.encode()).digest(n)


def biased(label: str, n: int) -> bytes:
    """Deterministic bytes whose high four bits are stuck at zero: 4 bits of min-entropy, not 8."""
    return bytes(b & 0x0F for b in shake(label, n))


# -- cutoffs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("h", "expected"),
    [(8, 6), (7.5, 7), (7, 7), (6, 8), (5, 9), (4, 11), (3, 15), (2, 21), (1, 41), (0.5, 81), (0.3, 135)],
)
def test_rct_cutoff_is_one_plus_ceil_40_over_h(h, expected):
    assert rct_cutoff(h) == expected
    assert expected == 1 + math.ceil(Fraction(40) / Fraction(str(h)))


def test_rct_cutoff_at_other_alphas():
    # jitterentropy-library, src/jitterentropy-health.h: "From an SP800-90B perspective, this RCT
    # cutoff value is equal to 31" (alpha 2^-30, H = 1) and 61 for the permanent alpha 2^-60.
    assert rct_cutoff(1, 2.0**-30) == 31
    assert rct_cutoff(1, 2.0**-60) == 61
    assert rct_cutoff(8, 2.0**-20) == 4


# Issue 17 pins alpha = 2^-40 (RCT 6, APT 19 for bytes at 8 bits); earlier rounds pinned 2^-30 (RCT 5,
# APT 16); the rest follow from the same formula (checked in exact arithmetic below).
@pytest.mark.parametrize(
    ("h", "alpha_log2", "window", "expected"),
    [
        (8, -40, 512, 19),
        (8, -30, 512, 16),
        (7, -30, 512, 22),
        (6, -30, 512, 31),
        (4, -30, 512, 71),
        (2, -30, 512, 190),
        (1, -30, 512, 325),
        (8, -20, 512, 13),
        (4, -20, 512, 62),
        (2, -20, 512, 177),
        (1, -20, 512, 311),
        (8, -20, 1024, 18),
        (4, -20, 1024, 105),
        (2, -20, 1024, 325),
        (1, -20, 1024, 589),
    ],
)
def test_apt_cutoff_pinned(h, alpha_log2, window, expected):
    assert apt_cutoff(h, 2.0**alpha_log2, window) == expected


def critbinom_exact(n: int, p: Fraction, alpha: Fraction) -> int:
    """CRITBINOM(n, p, 1 - alpha) in exact rational arithmetic: an independent implementation."""
    cum = Fraction(0)
    for k in range(n + 1):
        cum += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if cum >= 1 - alpha:
            return k
    return n


@pytest.mark.parametrize("h", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("alpha_log2", [-20, -30, -40])
def test_apt_cutoff_matches_exact_arithmetic(h, alpha_log2):
    exact = 1 + critbinom_exact(APT_WINDOW, Fraction(1, 2**h), Fraction(1, 2**-alpha_log2))
    assert apt_cutoff(h, 2.0**alpha_log2) == min(APT_WINDOW, exact)


# jitterentropy-library, src/jitterentropy-health.c, jent_apt_cutoff_lookup and
# jent_apt_cutoff_permanent_lookup: W = 512, H = 1/osr for osr = 1..20, alpha = 2^-30 and 2^-60,
# computed there as C = 2 + qbinom(1 - alpha, 511, 2^(-1/osr)) (the corrected cutoff of the UL
# comments on SP 800-90B, #10b), capped at 512. An independent check of our binomial quantile,
# including at an alpha far below what 1 - alpha can represent in a double.
JENT_APT_2_30 = [325, 422, 459, 477, 488, 494, 499, 502, 505, 507, 508, 509, 510, 511, 512, 512, 512, 512, 512, 512]
JENT_APT_2_60 = [355, 447, 479, 494, 502, 507, 510, 512, 512, 512, 512, 512, 512, 512, 512, 512, 512, 512, 512, 512]


@pytest.mark.parametrize(("alpha", "table"), [(2.0**-30, JENT_APT_2_30), (2.0**-60, JENT_APT_2_60)])
def test_binomial_quantile_reproduces_jitterentropy_tables(alpha, table):
    got = [min(512, 2 + binomial_upper_quantile(511, 2.0 ** (-1 / osr), alpha)) for osr in range(1, 21)]
    assert got == table


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=0.05, max_value=8.0), st.floats(min_value=0.05, max_value=8.0))
def test_cutoffs_never_loosen_as_the_claim_grows(h1, h2):
    lo, hi = sorted((h1, h2))
    assert rct_cutoff(hi) <= rct_cutoff(lo)
    assert apt_cutoff(hi) <= apt_cutoff(lo)
    assert 2 <= apt_cutoff(hi) <= APT_WINDOW


@pytest.mark.parametrize("h", [0, -1, 8.01, float("nan"), float("inf")])
def test_impossible_claims_are_refused(h):
    with pytest.raises(ValueError):
        rct_cutoff(h)
    with pytest.raises(ValueError):
        apt_cutoff(h)


def test_default_cutoffs_for_bytes():
    # SP 800-90B at alpha = 2^-40 for 8 bits per byte: RCT 1 + ceil(40 / 8) = 6; APT 1 + CRITBINOM(512, 2^-8,
    # 1 - 2^-40) = 19 (P(Binomial(512, 1/256) > 18) is below 2^-40, P(> 17) above it).
    assert ALPHA == 2.0**-40
    assert (BYTES.rct, BYTES.apt, BYTES.window, BYTES.alpha) == (6, 19, 512, ALPHA)


# -- the monitor against a sample-by-sample reference ---------------------------------


def reference(stream: bytes, cut: Cutoffs) -> tuple[int, str] | None:
    """SP 800-90B 4.4.1 and 4.4.2 as written, one sample at a time: (first failing index, test)."""
    fails = []
    run, last = 0, None
    for i, x in enumerate(stream):
        run = run + 1 if x == last else 1
        last = x
        if run >= cut.rct:
            fails.append((i, "RCT"))
            break
    for i, x in enumerate(stream):
        if i % cut.window == 0:
            first, count = x, 0
        count += x == first
        if count >= cut.apt:
            fails.append((i, "APT"))
            break
    return min(fails) if fails else None


SMALL = Cutoffs(h=2.0, alpha=ALPHA, rct=4, apt=7, window=16)  # small numbers, so failures are common


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=400),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=40),
)
def test_monitor_agrees_with_the_reference_however_the_stream_is_cut(values, cuts):
    stream = bytes(values)
    monitor = HealthMonitor(SMALL, startup=32)
    released = b""
    failure = None
    pos = 0
    i = 0
    while pos < len(stream):
        piece = stream[pos : pos + cuts[i % len(cuts)]]
        i += 1
        try:
            released += monitor.feed(piece)
        except HealthTestFailure as exc:
            failure = exc
            break
        pos += len(piece)
    expected = reference(stream, SMALL)
    if expected is None:
        assert failure is None
        whole = len(stream) // 16 * 16
        assert released == stream[32:whole]
    else:
        assert failure is not None
        assert (failure.sample, failure.test) == expected
        assert failure.cutoff == (4 if expected[1] == "RCT" else 7)
        assert failure.startup == (expected[0] < 32)
        # Released bytes are whole windows after the start-up test, all before the failing window.
        assert released == stream[32 : 32 + len(released)]
        assert len(released) % 16 == 0
        assert len(released) <= max(0, expected[0] // 16 * 16 - 32)
        with pytest.raises(SourceHalted):
            monitor.feed(b"\x00")


# -- known-good and known-bad byte streams ------------------------------------------------


def test_good_bytes_pass_and_release_all_whole_windows_after_startup():
    data = os.urandom(1 << 20)
    monitor = HealthMonitor(BYTES, source="good")
    out = monitor.feed(data[:1000]) + monitor.feed(data[1000:777_777]) + monitor.feed(data[777_777:])
    assert out == data[STARTUP_SAMPLES:]
    stats = monitor.stats
    assert stats.samples == len(data) and stats.released == len(data) - STARTUP_SAMPLES
    assert stats.startup_passed and stats.windows == len(data) // 512
    assert stats.longest_run < BYTES.rct and stats.highest_apt < BYTES.apt


def test_nothing_is_released_until_the_startup_test_has_passed():
    data = shake("startup", 4096)
    monitor = HealthMonitor(BYTES)
    assert monitor.feed(data[:1023]) == b""
    assert not monitor.stats.startup_passed
    assert monitor.feed(data[1023:1024]) == b""  # the start-up test's samples are never released
    assert monitor.stats.startup_passed
    assert monitor.feed(data[1024:1535]) == b""  # a window is released only when it is whole
    assert monitor.feed(data[1535:1536]) == data[1024:1536]


@pytest.mark.parametrize("value_differs", [False, True])
def test_stuck_source_is_caught_within_the_rct_cutoff(value_differs):
    good = shake("stuck", 10_000)
    stuck_at = 9000
    last = good[stuck_at - 1]
    value = (last + 1) % 256 if value_differs else last
    stream = good[:stuck_at] + bytes([value]) * 2000
    expected = reference(stream, BYTES)
    monitor = HealthMonitor(BYTES, source="serial:///dev/stuck")
    released = b""
    with pytest.raises(HealthTestFailure) as info:
        for i in range(0, len(stream), 100):
            released += monitor.feed(stream[i : i + 100])
    alarm = info.value
    assert alarm.test == "RCT" and (alarm.sample, alarm.test) == expected
    # Caught within the cutoff: at most C stuck samples in a row, counting a last good one equal to them.
    assert stuck_at <= alarm.sample <= stuck_at + BYTES.rct - 1
    assert alarm.sample == stuck_at + (BYTES.rct - 2 if not value_differs else BYTES.rct - 1)
    assert "Repetition Count Test" in str(alarm) and "serial:///dev/stuck" in str(alarm)
    assert str(value) not in str(alarm).split("at sample")[0]  # the text carries no sample value
    # Nothing from the failing window (nor this feed) was released.
    fail_window = alarm.sample // 512 * 512
    assert len(released) <= fail_window - STARTUP_SAMPLES
    assert released == stream[STARTUP_SAMPLES : STARTUP_SAMPLES + len(released)]


def test_biased_source_is_caught_by_the_apt():
    good = shake("bias/good", 8192)
    stream = good + biased("bias", 8192)
    monitor = HealthMonitor(BYTES, source="bias")
    with pytest.raises(HealthTestFailure) as info:
        monitor.feed(stream)
    alarm = info.value
    assert alarm.test == "APT" and not alarm.startup
    assert 8192 <= alarm.sample < 8192 + 512  # the first biased window
    assert (alarm.sample, alarm.test) == reference(stream, BYTES)
    assert monitor.stats.released == 0  # one feed: none of it left the monitor


def test_biased_from_the_start_fails_the_startup_test():
    monitor = HealthMonitor(BYTES)
    with pytest.raises(HealthTestFailure) as info:
        monitor.feed(biased("early", 1024))
    assert info.value.startup and "start-up test" in str(info.value)


def test_apt_counts_only_the_windows_first_value():
    # Value 7 fills a third of the window but does not start it: the APT does not count it.
    window = bytearray([1] + [b for b in shake("apt-first", 4096) if b not in (1, 7)][:511])
    window[1::3] = bytes([7]) * len(window[1::3])
    assert window.count(7) > 100 and len(window) == 512
    assert reference(bytes(window), BYTES) is None
    assert HealthMonitor(BYTES, startup=0).feed(bytes(window)) == bytes(window)


@pytest.mark.parametrize("count", [15, 16])
def test_apt_fails_exactly_at_the_cutoff(count):
    filler = [b for b in shake("apt", 4096) if b != 0x42][:511]
    window = bytearray([0x42] + filler)
    for i in range(count - 1):  # count occurrences in all, spread out so the RCT never fires
        window[1 + 30 * i] = 0x42
    monitor = HealthMonitor(BYTES, startup=0)
    if count < BYTES.apt:
        assert monitor.feed(bytes(window)) == bytes(window)
    else:
        with pytest.raises(HealthTestFailure) as info:
            monitor.feed(bytes(window))
        assert info.value.test == "APT" and info.value.sample == 1 + 30 * (count - 2)


def test_a_failure_mid_stream_releases_nothing_from_the_failing_window():
    stream = bytearray(shake("mid", 20 * 512))
    fail_at = 13 * 512 + 200
    stream[fail_at : fail_at + 6] = b"\x99" * 6
    monitor = HealthMonitor(BYTES)
    released = []
    with pytest.raises(HealthTestFailure) as info:
        for i in range(0, len(stream), 64):
            released.append(monitor.feed(bytes(stream[i : i + 64])))
    out = b"".join(released)
    assert info.value.sample <= fail_at + 5
    assert out == bytes(stream[STARTUP_SAMPLES : 13 * 512])  # every whole window before, none after
    assert bytes(stream[13 * 512 : 13 * 512 + 64]) not in out


# -- estimates ------------------------------------------------------------------------------


def test_most_common_value_estimate_formula():
    # L = 1000 with one value 100 times: p = 0.1, p_u = 0.1 + 2.576 sqrt(0.1 * 0.9 / 999).
    counts = byte_counts(bytes([0]) * 100 + bytes(range(1, 226)) * 4)
    est = most_common_value(counts)
    p_u = 0.1 + 2.576 * math.sqrt(0.1 * 0.9 / 999)
    assert est.samples == 1000 and est.p_hat == pytest.approx(0.1)
    assert est.p_upper == pytest.approx(p_u) and est.min_entropy == pytest.approx(-math.log2(p_u))


def test_most_common_value_estimate_on_good_and_bad_bytes():
    good = most_common_value(byte_counts(shake("mcv", 1 << 20)))
    assert 7.8 < good.min_entropy < 8.0
    bad = most_common_value(byte_counts(biased("mcv", 1 << 20)))
    assert 3.8 < bad.min_entropy < 4.0
    assert most_common_value(byte_counts(b"\x05" * 100)).min_entropy == 0.0


def test_chi_square():
    flat = chi_square(byte_counts(bytes(range(256)) * 10))
    assert flat.statistic == 0.0 and flat.dof == 255 and flat.p_value == 1.0
    # The 5% critical value of chi-square at 255 degrees of freedom is 293.25.
    assert chi_square_sf(293.25, 255) == pytest.approx(0.05, abs=0.002)
    assert chi_square(byte_counts(biased("chi", 1 << 16))).p_value < 1e-12
    assert chi_square(byte_counts(shake("chi", 1 << 20))).p_value > 1e-6
