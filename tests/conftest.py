"""Shared fixtures: real device homes on real files in a temporary folder."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from device.engine import Device
from device.localpair import pair_local
from device.storage.padstore import PadStore

# A run started in the background of a non-interactive shell (`pytest ... &`) inherits SIGINT ignored, and so
# would every program it starts: the tests that press Ctrl-C at a prompt, or stop an emulator with SIGINT,
# would see nothing happen. Python's own handler here gives every child the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("onetimechat", "device", "client", "relay", "hrng", "provisioning")  # the packages setup.py installs

# The test-only scrypt knob (device/storage/lock.py): new PIN locks in tests derive with n=2^10, not the real
# cost (about a second a try on a Pi). Subprocesses inherit it. tests/test_pin_strength.py runs the real
# default once.
os.environ["OTC_TEST_CHEAP_KDF"] = "1"

pytest_plugins = ("tests.rpc_fixtures",)


def det_bytes(label: str | bytes, n: int) -> bytes:
    """Deterministic test bytes (never the `random` module)."""
    if isinstance(label, str):
        label = label.encode()
    return hashlib.shake_256(label).digest(n)


class Counter:
    """An injectable random source that yields pinned, distinct bytes."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return det_bytes(f"{self.label}/{self.calls}", n)


def make_pair(tmp_path: Path, size: int = 1 << 16, names: tuple[str, str] = ("alice", "bob"),
              random_bytes=None) -> tuple[Path, Path, bytes]:
    """Two device homes sharing one pad; returns (home_a, home_b, pad_id)."""
    home_a, home_b = tmp_path / names[0], tmp_path / names[1]
    for home, name in ((home_a, names[0]), (home_b, names[1])):
        if not (home / "device.db").exists():
            PadStore.init(home, name).close()
    with PadStore(home_a) as a, PadStore(home_b) as b:
        pad_id = pair_local(a, b, size, random_bytes=random_bytes or os.urandom)
    return home_a, home_b, pad_id


@pytest.fixture
def pair(tmp_path):
    """(alice, bob, pad_id): open Devices sharing a 64 KiB pad; alice is the initiator."""
    home_a, home_b, pad_id = make_pair(tmp_path)
    a, b = Device.open(home_a), Device.open(home_b)
    yield a, b, pad_id
    a.close()
    b.close()


def receive_state(home: Path) -> dict:
    """Everything that makes up a device's pad state, except the event log."""
    conn = sqlite3.connect(home / "device.db")
    try:
        state = {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("contacts", "pads", "consumed", "pending_wipe")
        }
    finally:
        conn.close()
    state["pad_files"] = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((home / "pads").glob("*.pad"))
    }
    return state


def pad_bytes(home: Path, pad_id: bytes) -> bytes:
    return (home / "pads" / f"{pad_id.hex()}.pad").read_bytes()


def build_wheel(work: Path) -> Path:
    """The project's wheel, built in ``work`` from a copy of the sources (no build/ left in the tree, none reused)."""
    import shutil

    src = work / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for part in PARTS:
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(work / "dist"), str(src)], check=True, capture_output=True, timeout=600)
    (wheel,) = (work / "dist").glob("onetimechat-*.whl")
    return wheel


def otc(*args: str, input: bytes | None = None, env: dict | None = None, check: bool = False,
        timeout: float = 60, new_session: bool = False) -> subprocess.CompletedProcess:
    """Run the real `otc` command."""
    result = subprocess.run(
        [sys.executable, "-m", "onetimechat.cli", *args],
        input=input if input is not None else b"",
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=ROOT,
        start_new_session=new_session,  # no controlling terminal
    )
    if check and result.returncode != 0:
        raise AssertionError(f"otc {' '.join(args)} failed: {result.stderr.decode()}")
    return result
