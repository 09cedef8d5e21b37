"""Device RPC benchmarks (`make bench`): figures printed, never asserted.

A real device server (waitress, loopback, auto confirmation) and a paired
client: the round trip of a 100-byte package call (p50, p99), and MB/s for a
1 MiB package call. Targets (issue 3): p50 at most 10 ms, 1 MiB in at most
100 ms.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.rpc import DeviceClient, pair  # noqa: E402
from client.state import ClientState  # noqa: E402
from device.confirm import AutoConfirm  # noqa: E402
from device.localpair import pair_local  # noqa: E402
from device.server import Server, ServerConfig  # noqa: E402
from device.storage.padstore import PadStore  # noqa: E402

MiB = 1 << 20


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(len(ordered) * pct / 100), len(ordered) - 1)]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="otc-bench-rpc-") as tmp:
        root = Path(tmp)
        a, b = PadStore.init(root / "a", "alice"), PadStore.init(root / "b", "bob")
        pair_local(a, b, 64 * MiB)
        a.close()
        b.close()
        source = AutoConfirm(root / "a")
        server = Server(ServerConfig(home=root / "a", source=source), "127.0.0.1", 0).start()
        try:
            state = ClientState(root / "laptop")
            code = (root / "a" / "pairing-code").read_text().strip()
            pair(server.url, name="bench", code=code, state=state)
            client = DeviceClient(server.url, state=state)
            message = "m" * 100
            for _ in range(50):  # warm up connections and caches
                client.package("bob", message)
            samples = []
            for _ in range(1000):
                t0 = time.perf_counter()
                client.package("bob", message)
                samples.append((time.perf_counter() - t0) * 1000)
            print(f"100-byte package call round trip: p50 {statistics.median(samples):.2f} ms, "
                  f"p99 {percentile(samples, 99):.2f} ms (1000 calls, loopback, auto confirm)")
            big = "x" * MiB
            times = []
            for _ in range(10):
                t0 = time.perf_counter()
                client.package("bob", big)
                times.append(time.perf_counter() - t0)
            best, median = min(times), statistics.median(times)
            print(f"1 MiB package call: median {median * 1000:.1f} ms ({MiB / 1e6 / median:.1f} MB/s), "
                  f"best {best * 1000:.1f} ms (10 calls)")
        finally:
            server.close()


if __name__ == "__main__":
    main()
