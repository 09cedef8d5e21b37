"""A separate process that drives a real device home, for concurrency and crash tests.

    python tests/worker.py package HOME CONTACT COUNT OUT [START_AT]
        packages COUNT messages (endless if COUNT is 0), appending one
        base64 package per line to OUT as each is made.
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

from device import package as fmt  # noqa: E402
from device.engine import Device  # noqa: E402
from device.errors import MessageRejected  # noqa: E402


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
    if mode == "unpackage":
        home, source, out = argv[1], argv[2], argv[3]
        with Device.open(home) as device, open(source) as lines, open(out, "a", buffering=1) as sink:
            for line in lines:
                try:
                    plaintext = device.unpackage_base64(line).plaintext
                    sink.write(f"ok {hashlib.sha256(plaintext).hexdigest()}\n")
                except MessageRejected as exc:
                    sink.write(f"refused {exc.code}\n")
        return 0
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
