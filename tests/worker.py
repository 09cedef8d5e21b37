"""A separate process that drives a real device home, for concurrency and crash tests.

    python tests/worker.py package HOME CONTACT COUNT OUT [START_AT]
        packages COUNT messages (endless if COUNT is 0), appending one
        base64 package per line to OUT as each is made.
    python tests/worker.py package-die HOME CONTACT COUNT OUT WHERE
        packages COUNT messages, then SIGKILLs itself in the next call, at
        WHERE: "before-wipe" (its reservation committed, nothing of the
        segment overwritten yet) or "before-sync" (overwritten, the batched
        sync of the zeros not yet done).
    python tests/worker.py package-until-full HOME CONTACT SIZE OUT
        packages messages of SIZE bytes until the pad is exhausted, one base64
        package per line to OUT (and any request for more pad made with one).
    python tests/worker.py grant-loop HOME PAD_HEX AMOUNT OUT
        gives the peer AMOUNT bytes of pad, then sends it a short message, over
        and over (5 ms apart) until nothing is left to give; a line per package.
    python tests/worker.py grant-die HOME PAD_HEX AMOUNT
        gives AMOUNT bytes and SIGKILLs itself after the grant's commit, before
        its package exists (a grant lost before it left the device).
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
    if mode == "package-until-full":
        from device.errors import PadExhausted

        home, contact, size, out = argv[1], argv[2], int(argv[3]), argv[4]
        with Device.open(home) as device, open(out, "a", buffering=1) as sink:
            for i in itertools.count():
                try:
                    made = device.package(contact, f"{os.getpid()}-{i} ".encode().ljust(size, b"."))
                except PadExhausted:
                    return 0
                for package in (made.package, *(c.package for c in made.control)):
                    sink.write(fmt.encode(package) + "\n")
    if mode in ("grant-loop", "grant-die"):
        import signal

        from device.errors import NothingToGrant, PadExhausted

        home, pad_id, amount = argv[1], bytes.fromhex(argv[2]), int(argv[3])
        with Device.open(home) as device:
            if mode == "grant-die":
                device.store.grant(pad_id, amount, lambda *made: os.kill(os.getpid(), signal.SIGKILL))
                return 1
            contact = device.store.pad(pad_id).contact
            with open(argv[4], "a", buffering=1) as sink:
                while True:
                    try:
                        sink.write(fmt.encode(device.grant(pad_id, amount)[0].package) + "\n")
                        sink.write(fmt.encode(device.package(contact, b"and a word from me").package) + "\n")
                    except (NothingToGrant, PadExhausted):
                        return 0
                    time.sleep(0.005)
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
