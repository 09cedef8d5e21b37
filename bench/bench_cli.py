"""Command-line start-up (`make bench`): figures printed, never asserted.

`otc` imports only the part it runs (onetimechat/cli/__init__.py). Timed here, as whole
processes like a user starts them: `otc --version` and `otc --help` (target:
under 80 ms on the project's 2-core machine) and `otc send` up to the point
where it would talk to the device (`otc send --help` imports everything
`otc send` needs; target: under 150 ms). Medians of 15 runs, with the spread.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OTC = [sys.executable, "-m", "onetimechat.cli"]
RUNS = 15


def timed(*args: str, env: dict | None = None) -> list[float]:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run([*OTC, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                       env=env)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    interpreter = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        interpreter.append(time.perf_counter() - t0)
    print(f"python itself: {statistics.median(interpreter) * 1000:.0f} ms median")
    for label, args in (("otc --version", ("--version",)), ("otc --help", ("--help",)),
                        ("otc send start-up (otc send --help)", ("send", "--help")),
                        ("otc device start-up (otc device --help)", ("device", "--help"))):
        times = timed(*args)
        q = statistics.quantiles(times, n=4)
        print(f"{label}: {statistics.median(times) * 1000:.0f} ms median "
              f"(quartiles {q[0] * 1000:.0f}-{q[2] * 1000:.0f} ms, {RUNS} runs)")
    # The whole way to the device: every import `otc send` runs, its state read; with no laptop paired it stops
    # where it would open the connection.
    with tempfile.TemporaryDirectory(prefix="otc-bench-cli-") as home:
        times = timed("send", "--device", "http://127.0.0.1:9", "bob", "Grüße",
                      env={**os.environ, "OTC_CLIENT_HOME": home})
        q = statistics.quantiles(times, n=4)
        print(f"otc send up to the device (all its imports; unpaired, it stops there): "
              f"{statistics.median(times) * 1000:.0f} ms median (quartiles {q[0] * 1000:.0f}-{q[2] * 1000:.0f} ms, "
              f"{RUNS} runs)")


if __name__ == "__main__":
    main()
