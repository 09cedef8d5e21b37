"""A separate process that drives a real device home, for concurrency and crash tests.

    python tests/worker.py package HOME CONTACT COUNT OUT [START_AT]
        packages COUNT messages (endless if COUNT is 0), appending one
        base64 package per line to OUT as each is made.
    python tests/worker.py package-die HOME CONTACT COUNT OUT WHERE
        packages COUNT messages, then SIGKILLs itself in the next call, at
        WHERE: "before-wipe" (its reservation committed, nothing of the
        segment overwritten yet) or "before-sync" (overwritten, the batched
        sync of the zeros not yet done).
    python tests/worker.py unpackage HOME IN OUT
        unpackages every line of IN, appending "ok <sha256 of plaintext>" or
        "refused <code>" per line to OUT.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from device.engine import Device  # noqa: E402
from onetimechat import package as fmt  # noqa: E402
from onetimechat.errors import PackageRefused  # noqa: E402


def main(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "package":
        home, contact, count, out = argv[1], argv[2], int(argv[3]), argv[4]
        start_at = float(argv[5]) if len(argv) > 5 else 0.0
        with Device.open(home) as device, open(out, "a", buffering=1) as sink:
            while time.time() < start_at:
                time.sleep(0.001)
            counter = range(count) if count else itertools.count()
            for i in counter:
                message = f"message {os.getpid()}-{i} ".encode() * (1 + i % 3)
                sink.write(fmt.encode(device.package(contact, message).package) + "\n")
        return 0
    if mode == "package-die":
        import signal

        from device.storage.padfile import PadFile

        home, contact, count, out, where = argv[1], argv[2], int(argv[3]), argv[4], argv[5]
        with Device.open(home) as device, open(out, "a", buffering=1) as sink:
            for i in range(count):
                sink.write(fmt.encode(device.package(contact, f"message {i}".encode()).package) + "\n")
            device.store.sync_wipes()
            real_wipe = PadFile.wipe

            def die_in_wipe(self, start, length, sync=True):
                if where == "before-sync":
                    real_wipe(self, start, length, sync)
                os.kill(os.getpid(), signal.SIGKILL)

            PadFile.wipe = die_in_wipe  # type: ignore[method-assign]
            device.package(contact, b"the last message")
        return 1
    if mode == "unpackage":
        home, source, out = argv[1], argv[2], argv[3]
        with Device.open(home) as device, open(source) as lines, open(out, "a", buffering=1) as sink:
            for line in lines:
                try:
                    plaintext = device.unpackage_base64(line).plaintext
                    sink.write(f"ok {hashlib.sha256(plaintext).hexdigest()}\n")
                except PackageRefused as exc:
                    sink.write(f"refused {exc.code}\n")
        return 0
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
