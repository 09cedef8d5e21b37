"""Syncs per call, and what they cost on an SD card (`make bench`): figures printed, never asserted.

On a Pi the pad device's store sits on an SD card, where a sync costs
milliseconds, not the ~0.15 ms of this machine's disk: syncs, not crypto,
decide the cost of a message there (issue 21). This machine's kernel has no
device-mapper (no dm-delay), so the bench builds a small preloaded shim
(bench/native/syncdelay.c, with the system compiler) that makes every
``fsync``/``fdatasync`` of the process wait first and counts them; SQLite's
syncs go through it too. Each figure is printed for the plain disk and with
the delay, in the same run:

* syncs per durable 100-byte package and unpackage call in the engine, and
  per package and unpackage call over the device RPC (client and device in
  one process, so a laptop's sync would count too; it makes none: its call
  counters follow the clock);
* p50 and p90 of each call.

The delay: 2 ms per sync. The SD Association's A1 application performance
class guarantees 500 random 4 KiB writes per second, 2 ms each; a sync
writes at least one such block (SQLite's WAL frame, a pad segment's zeros),
so 2 ms is a floor for a good card; cheaper cards take 5-20 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SD_DELAY_US = 2000


def build_shim(out: Path) -> Path | None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    lib = out / "syncdelay.so"
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(lib), str(ROOT / "bench/native/syncdelay.c"),
                    "-ldl"], check=True)
    return lib


class Counter:
    """The shim's shared counter of syncs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int:
        return int.from_bytes(self.path.read_bytes()[:8], "little")


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(int(len(ordered) * 0.9), len(ordered) - 1)]
    return f"p50 {statistics.median(ordered):.2f} ms, p90 {p90:.2f} ms"


def timed(call, count: int, counter: Counter) -> tuple[list[float], float]:
    samples = []
    before = counter.read()
    for _ in range(count):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples, (counter.read() - before) / count


def child(count: int) -> None:
    """Run inside the shim: the engine's calls, then the RPC's."""
    from client.rpc import DeviceClient, pair
    from client.state import ClientState
    from device.confirm import AutoConfirm
    from device.engine import Device
    from device.localpair import pair_local
    from device.server import Server, ServerConfig
    from device.storage.padstore import PadStore

    counter = Counter(Path(os.environ["OTC_SYNC_COUNTER"]))
    label = f"{int(os.environ['OTC_SYNC_DELAY_US']) / 1000:g} ms a sync" if int(
        os.environ["OTC_SYNC_DELAY_US"]) else "this disk"
    with tempfile.TemporaryDirectory(prefix="otc-bench-sync-") as tmp:
        root = Path(tmp)
        a, b = PadStore.init(root / "a", "alice"), PadStore.init(root / "b", "bob")
        pair_local(a, b, 16 << 20)
        alice, bob = Device(a), Device(b)
        message = "ü€ message ".encode() * 8  # 100 bytes of non-ASCII text
        message = message[:100]
        packages: list[bytes | bytearray] = []
        samples, syncs = timed(lambda: packages.append(alice.package("bob", message).package), count, counter)
        print(f"  [{label}] engine package:   {syncs:.2f} syncs/call, {summary(samples)}")
        feed = iter(packages)
        samples, syncs = timed(lambda: bob.unpackage(next(feed)), count, counter)
        print(f"  [{label}] engine unpackage: {syncs:.2f} syncs/call, {summary(samples)}")
        incoming = [bob.package("alice", message).package for _ in range(count + 5)]  # for the RPC's unpackage
        alice.close()
        bob.close()
        server = Server(ServerConfig(home=root / "a", source=AutoConfirm(root / "a")), "127.0.0.1", 0).start()
        try:
            state = ClientState(root / "laptop")
            pair(server.url, name="bench", code=(root / "a" / "pairing-code").read_text().strip(), state=state)
            client = DeviceClient(server.url, state=state)
            text = message.decode("utf-8", "ignore")
            for _ in range(5):
                client.package("bob", text)
            samples, syncs = timed(lambda: client.package("bob", text), count, counter)
            print(f"  [{label}] RPC package call: {syncs:.2f} syncs/call, {summary(samples)} "
                  "(the laptop's and the device's syncs)")
            arriving = iter(incoming)
            for _ in range(5):
                client.unpackage(bytes(next(arriving)))  # type: ignore[arg-type]
            samples, syncs = timed(lambda: client.unpackage(bytes(next(arriving))), count,  # type: ignore[arg-type]
                                   counter)
            print(f"  [{label}] RPC unpackage call: {syncs:.2f} syncs/call, {summary(samples)}")
        finally:
            server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--delay-us", type=int, default=SD_DELAY_US)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.calls)
        return
    with tempfile.TemporaryDirectory(prefix="otc-bench-shim-") as tmp:
        shim = build_shim(Path(tmp))
        if shim is None:
            print("syncs per call: skipped (no C compiler to build the sync shim)")
            return
        print(f"Syncs per call, on this disk and with {args.delay_us / 1000:g} ms added to every sync "
              f"(an SD card's floor; {args.calls} calls each):")
        for delay in (0, args.delay_us):
            counter = Path(tmp) / "counter"
            counter.write_bytes(bytes(8))
            env = dict(os.environ, LD_PRELOAD=str(shim), OTC_SYNC_COUNTER=str(counter),
                       OTC_SYNC_DELAY_US=str(delay), OTC_TEST_CHEAP_KDF="1")
            run = subprocess.run([sys.executable, __file__, "--child", "--calls", str(args.calls)], env=env,
                                 check=True, capture_output=True, text=True)
            print("\n".join(line for line in run.stdout.splitlines() if line.startswith("  [")))


if __name__ == "__main__":
    main()
