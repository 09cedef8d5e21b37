"""HRNG benchmarks (`make bench`): figures printed, never asserted.

* health tests + mixer throughput over an in-memory source (64 KiB source
  reads, 1 MiB mixer reads, as pad generation asks), beside the health tests
  alone and the OS CSPRNG alone;
* the rate achieved reading an emulated 1 MB/s serial source (`otc hrng
  emulate` in its own process, on a real pseudo-terminal, through pyserial,
  the health tests and the mixer).

Targets (issue 7): at least 50 MB/s for health tests + mixer, so they are
never the bottleneck (real USB HRNGs give 40 KB/s to 1 MB/s), and at least
95% of an emulated 1 MB/s source.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hrng.health import Cutoffs, HealthMonitor  # noqa: E402
from hrng.mixer import Mixer  # noqa: E402
from hrng.sources import BytesSource  # noqa: E402

MiB = 1 << 20


def rates(rounds: int, mb: float, fn) -> str:
    """MB/s of ``rounds`` runs of ``fn`` over ``mb`` MB: the median, and the slowest and fastest run."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return f"{mb / statistics.median(times):,.0f} MB/s ({mb / max(times):,.0f}-{mb / min(times):,.0f})"


def in_memory(total_mib: int, rounds: int) -> None:
    data = os.urandom(16 * MiB)
    total = total_mib * MiB

    def health_only() -> None:
        monitor = HealthMonitor(Cutoffs.for_entropy(8.0))
        for i in range(0, total, 64 * 1024):
            start = i % len(data)
            monitor.feed(data[start : start + 64 * 1024])

    def os_only() -> None:
        for _ in range(total // MiB):
            os.urandom(MiB)

    def mixer(sources: int) -> None:
        with Mixer([BytesSource(data, repeat=True) for _ in range(sources)]) as m:
            for _ in range(total // MiB):
                m.read(MiB)

    mb = total / 1e6
    print(f"health tests alone: {rates(rounds, mb, health_only)}; OS CSPRNG alone: {rates(rounds, mb, os_only)}")
    print(f"health tests + mixer, one hardware source: {rates(rounds, mb, lambda: mixer(1))} (target >= 50 MB/s; "
          f"{total_mib} MiB in 1 MiB reads; the median of {rounds} runs, then the slowest and fastest)")
    print(f"health tests + mixer, two hardware sources: {rates(rounds, mb, lambda: mixer(2))}")


def emulated(rate: int, seconds: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "onetimechat.cli", "hrng", "emulate", "--rate", str(rate)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        with Mixer.from_urls([url]) as mixer:
            mixer.read(64 * 1024)  # past the start-up test and the device's first FIFO burst
            want = int(rate * seconds)
            t0 = time.perf_counter()
            got = 0
            while got < want:
                got += len(mixer.read(min(64 * 1024, want - got)))
            elapsed = time.perf_counter() - t0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    achieved = got / elapsed
    print(f"emulated {rate / 1e6:g} MB/s serial source through pyserial + health tests + mixer: "
          f"{achieved / 1e6:.3f} MB/s = {100 * achieved / rate:.1f}% of its rate (target >= 95%; "
          f"{got:,} bytes in {elapsed:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB through the mixer per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the in-memory figures (median and spread)")
    parser.add_argument("--rate", type=int, default=1_000_000, help="the emulated source's rate, bytes/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to read the emulated source")
    args = parser.parse_args()
    in_memory(args.mib, args.rounds)
    emulated(args.rate, args.seconds)


if __name__ == "__main__":
    main()
