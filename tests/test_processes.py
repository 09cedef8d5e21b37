"""The pad rules across processes: concurrent packaging, and SIGKILL at random moments."""

from __future__ import annotations

import hashlib
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.engine import Device
from device.storage.padstore import PadStore
from onetimechat import package as fmt
from tests.conftest import ROOT, make_pair, otc, pad_bytes, receive_state

WORKER = str(ROOT / "tests" / "worker.py")


def read_packages(path: Path) -> list[bytes]:
    """Complete lines only: a worker killed mid-write leaves a partial last line."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline is unfinished
    return [fmt.decode(line) for line in complete if line]


def kill_during_work(proc: subprocess.Popen, out: Path) -> None:
    """SIGKILL ``proc`` at a random moment after it has started writing new results to ``out``."""
    size = out.stat().st_size if out.exists() else 0
    deadline = time.monotonic() + 60
    while (not out.exists() or out.stat().st_size == size) and time.monotonic() < deadline:
        assert proc.poll() is None, "the worker stopped by itself"
        time.sleep(0.002)
    time.sleep(secrets.randbelow(50) / 1000)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def assert_disjoint(packages: list[bytes]) -> list[tuple[int, int]]:
    segments = sorted(fmt.parse(p).segment for p in packages)
    for prev, cur in zip(segments, segments[1:]):
        assert prev[1] <= cur[0], f"segments {prev} and {cur} overlap: pad handed out twice"
    return segments


def test_eight_processes_packaging_at_once_never_share_pad(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=1 << 20)
    per_process = 150
    start_at = time.time() + 2.0  # every worker starts its loop at the same moment
    outs = [tmp_path / f"out{n}" for n in range(8)]
    procs = [
        subprocess.Popen([sys.executable, WORKER, "package", str(home_a), "bob", str(per_process), str(out),
                          str(start_at)])
        for out in outs
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    packages = [p for out in outs for p in read_packages(out)]
    assert len(packages) == 8 * per_process
    segments = assert_disjoint(packages)
    with PadStore(home_a) as store:
        pad = store.pads("bob")[0]
        assert pad.send_used == sum(e - s for s, e in segments)  # nothing reserved and lost
    # Every segment is destroyed on the sender, and every package opens on the receiver.
    sender_pad = pad_bytes(home_a, pad_id)
    assert all(sender_pad[s:e] == bytes(e - s) for s, e in segments)
    with Device.open(home_b) as b:
        for package in packages:
            assert b.unpackage(package).plaintext.startswith(b"message ")


def test_eight_otc_commands_at_once(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=1 << 16)
    cmd = [sys.executable, "-m", "onetimechat.cli", "device", "package", "--home", str(home_a), "bob"]
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        for _ in range(8)
    ]
    outputs = [p.communicate(f"concurrent {n}".encode(), timeout=120) for n, p in enumerate(procs)]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outputs]
    packages = [fmt.decode(out) for out, _ in outputs]
    assert_disjoint(packages)
    texts = set()
    for package in packages:
        result = otc("device", "unpackage", "--home", str(home_b), input=fmt.encode(package).encode(), check=True)
        texts.add(result.stdout)
    assert len(texts) == 8


@pytest.mark.slow
def test_sigkill_while_packaging_never_hands_out_pad_twice(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=4 << 20)
    original = pad_bytes(home_b, pad_id)
    out = tmp_path / "packages"
    kills = 40
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, WORKER, "package", str(home_a), "bob", "0", str(out)])
        kill_during_work(proc, out)
    packages = read_packages(out)
    assert len(packages) > kills  # each run made some before it died
    segments = assert_disjoint(packages)

    # A fresh store finishes any destruction a killed process left undone.
    with PadStore(home_a) as store:
        pad = store.pads("bob")[0]
        assert store._read("SELECT count(*) FROM pending_wipe")[0][0] == 0
        reserved = store.consumed(pad_id)
    assert list(reserved) == [(16, pad.send_next)]  # one run of reserved pad from 16 (after R)
    assert all(s >= 16 and e <= pad.send_next for s, e in segments)
    sender_pad = pad_bytes(home_a, pad_id)
    assert sender_pad[:16] == original[:16]  # R, the authentication key, is never touched
    assert sender_pad[16 : pad.send_next] == bytes(pad.send_next - 16)  # everything reserved is destroyed
    assert sender_pad[pad.send_next :] == original[pad.send_next :]  # nothing else touched
    assert not [p for p in (home_a / "run").iterdir() if p.suffix == ".lock"]

    # After the kills, packaging goes on from fresh pad.
    with Device.open(home_a) as a:
        after = a.package("bob", b"after the crashes")
    assert after.offset >= max(e for _, e in segments)
    # Every package recorded decrypts on the receiver: each used its own pad.
    with Device.open(home_b) as b:
        for package in [*packages, after.package]:
            b.unpackage(package)


@pytest.mark.parametrize("where", ["before-wipe", "before-sync"])
def test_sigkill_between_a_packages_commit_and_its_wipe_still_destroys_the_segment(tmp_path, where):
    """One sync per call (issue 21): the wipe's sync is batched after the commit. A process killed between
    the two leaves the segment's pending row; whoever opens the store next overwrites it."""
    import sqlite3

    home_a, home_b, pad_id = make_pair(tmp_path, size=1 << 16)
    original = pad_bytes(home_a, pad_id)
    out = tmp_path / "packages"
    proc = subprocess.run([sys.executable, WORKER, "package-die", str(home_a), "bob", "5", str(out), where],
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(home_a / "device.db") as db:
        [(start, end)] = db.execute('SELECT start, "end" FROM pending_wipe').fetchall()
        send_next = db.execute("SELECT send_next FROM pads").fetchone()[0]
    db.close()
    assert end == send_next  # the last call's reservation committed
    if where == "before-wipe":
        assert pad_bytes(home_a, pad_id)[start:end] == original[start:end]  # its pad still there
    with PadStore(home_a) as store:  # the next opener finishes it
        assert store._read("SELECT count(*) FROM pending_wipe")[0][0] == 0
    assert pad_bytes(home_a, pad_id)[16:end] == bytes(end - 16)
    assert pad_bytes(home_a, pad_id)[end:] == original[end:]
    with Device.open(home_b) as b:  # the five before it open; none of them reused the segment
        for package in read_packages(out):
            assert fmt.parse(package).segment[1] <= start
            b.unpackage(package)


@pytest.mark.slow
def test_sigkill_while_unpackaging_never_releases_plaintext_twice(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=4 << 20)
    with Device.open(home_a) as a:
        messages = [f"message number {i}".encode() * 4 for i in range(400)]
        packages = [a.package("bob", m).package for m in messages]
    inbox = tmp_path / "inbox"
    inbox.write_text("".join(fmt.encode(p) + "\n" for p in packages))
    out = tmp_path / "results"
    for _ in range(25):
        proc = subprocess.Popen([sys.executable, WORKER, "unpackage", str(home_b), str(inbox), str(out)])
        kill_during_work(proc, out)
    # A final run to the end.
    subprocess.run([sys.executable, WORKER, "unpackage", str(home_b), str(inbox), str(out)], check=True)
    released = [line.split()[1] for line in out.read_text().splitlines() if line.startswith("ok ")]
    assert len(released) == len(set(released)), "a plaintext was released twice"
    assert set(released) <= {hashlib.sha256(m).hexdigest() for m in messages}
    assert len(released) >= len(messages) - 25  # at most one lost per kill, in its commit window
    assert receive_state(home_b)["pending_wipe"] == []  # killed runs' wipes were finished
    with PadStore(home_b) as store:
        consumed = store.consumed(pad_id)
    receiver_pad = pad_bytes(home_b, pad_id)
    assert consumed.total() == 16 * len(messages) + sum(map(len, messages))  # every package consumed once
    assert all(receiver_pad[s:e] == bytes(e - s) for s, e in consumed)
