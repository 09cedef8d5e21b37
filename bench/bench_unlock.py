"""Unlock benchmark (`make bench`): the time one PIN try takes at the real scrypt cost; printed, never asserted.

One try is one scrypt derivation with the parameters new locks get (device/storage/lock.py KDF_PARAMS), as
the device does it on each unlock and as a thief with a copy of the SD card does it per guess. Run on the Pi
itself, this is the figure docs/pin-lock.md scales from; elsewhere the Pi 4 estimate uses the factor
documented there (PI4_FACTOR).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.storage.lock import KDF_PARAMS, TEST_KDF_ENV, StoreLock  # noqa: E402
from device.storage.padstore import PadStore  # noqa: E402

PI4_FACTOR = 3.0  # a Raspberry Pi 4 core against the development machine's (docs/pin-lock.md, "Cost")
PIN = "482916"


def main() -> None:
    os.environ.pop(TEST_KDF_ENV, None)  # the real cost, whatever the environment says
    with tempfile.TemporaryDirectory(prefix="otc-bench-unlock-") as tmp:
        home = Path(tmp) / "home"
        PadStore.init(home, "bench", pin=PIN).close()
        times = []
        for _ in range(5):
            lock = StoreLock(home)
            start = time.perf_counter()
            if not lock.unlock(PIN).ok:
                raise SystemExit("unlock failed")
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    memory = 128 * KDF_PARAMS["n"] * KDF_PARAMS["r"] * KDF_PARAMS["p"] >> 20
    print(f"unlock: scrypt n=2^{KDF_PARAMS['n'].bit_length() - 1} r={KDF_PARAMS['r']} p={KDF_PARAMS['p']} "
          f"({memory} MiB): {median:.2f} s per try here (median of {len(times)}, min {min(times):.2f} s); "
          f"about {median * PI4_FACTOR:.1f} s on a Raspberry Pi 4 at the assumed factor {PI4_FACTOR:g}")
    for digits in (6, 8, 10):
        core_hours = 10**digits * median / 3600
        print(f"unlock: a {digits}-digit PIN offline, every guess: {core_hours:,.0f} core-hours of this machine")


if __name__ == "__main__":
    main()
