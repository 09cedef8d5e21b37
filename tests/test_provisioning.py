"""Pairing in person: the real ceremony over real sockets."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from device.engine import Device
from device.storage.padstore import INITIATOR, RESPONDER, PadStore
from onetimechat.errors import UsageError
from provisioning.ceremony import HOST, JOIN, Ceremony, Partial
from provisioning.errors import CeremonyAborted, CeremonyBroken, CeremonyError, CeremonyRefused
from provisioning.link import connect_address, listen_address
from provisioning.wire import Wire
from tests.conftest import ROOT

MiB = 1 << 20


def run_on(ceremony: Ceremony, sock: socket.socket):
    """Run a ceremony on a socket, closing it afterwards (the caller owns the connection)."""
    wire = Wire(sock)
    try:
        return ceremony.run(wire)
    finally:
        wire.close()


def homes(tmp_path: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        PadStore.init(tmp_path / name, name).close()
        out.append(tmp_path / name)
    return out


class Owners:
    """Two owners side by side: each says yes only if the other screen shows the same string."""

    def __init__(self) -> None:
        self.shown: dict[str, str] = {}
        self.cond = threading.Condition()

    def compare_for(self, me: str, other: str):
        def compare(sas: str) -> bool:
            with self.cond:
                self.shown[me] = sas
                self.cond.notify_all()
                self.cond.wait_for(lambda: other in self.shown, timeout=30)
                return self.shown.get(other) == sas
        return compare


def run_pair(home_a: Path, home_b: Path, size: int, connect=None, chunk: int = 64 * 1024, opener=PadStore,
             buffers: int = 0, **options):
    """Host on home_a, join from home_b over loopback; returns (host result, join result) or errors.

    ``opener`` opens a home's store; ``buffers`` (bytes) shrinks both sockets' buffers; ``options`` go to
    both ceremonies.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    owners = Owners()
    results: dict[str, object] = {}

    def side(role: str, home: Path, sock_factory) -> None:
        try:
            with opener(home) as store:
                ceremony = Ceremony(store, role, random_bytes=os.urandom, size=size if role == HOST else None,
                                    compare=owners.compare_for(role, JOIN if role == HOST else HOST), chunk=chunk,
                                    **options)
                sock = sock_factory()
                if buffers:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffers)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffers)
                record = run_on(ceremony, sock)
                results[role] = (record, ceremony.fingerprint, ceremony.sas)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[role] = exc

    def accept() -> socket.socket:
        conn, _ = listener.accept()
        return conn

    host = threading.Thread(target=side, args=(HOST, home_a, accept))
    host.start()
    join = threading.Thread(target=side, args=(JOIN, home_b,
                                               lambda: (connect or socket.create_connection)(("127.0.0.1", port))))
    join.start()
    host.join(120)
    join.join(120)
    listener.close()
    return results[HOST], results[JOIN]


def pad_of(home: Path, record) -> bytes:
    return (home / "pads" / f"{record.pad_id.hex()}.pad").read_bytes()


def test_a_share_frame_carries_its_payload_unencrypted_and_only_where_a_share_belongs():
    from provisioning.wire import PAYLOAD_OFFSET, SEALED, SHARE

    left, right = socket.socketpair()
    sender, receiver = Wire(left), Wire(right)
    keys = os.urandom(32), os.urandom(32)
    sender.set_keys(*keys)
    receiver.set_keys(keys[1], keys[0])
    payload = os.urandom(5000)
    buf = bytearray(PAYLOAD_OFFSET + len(payload))
    buf[PAYLOAD_OFFSET:] = payload
    into = bytearray(PAYLOAD_OFFSET + 6000)
    try:
        sender.send({"t": "key", "i": 0})
        sender.send_share({"t": "chunk", "i": 1}, buf, len(payload))
        assert payload in right.recv(1 << 16, socket.MSG_PEEK)  # as it is: the caller sealed it already
        kind, message, _ = receiver.recv_frame(into)
        assert (kind, message) == (SEALED, {"t": "key", "i": 0})
        kind, message, data = receiver.recv_frame(into)
        assert (kind, message, bytes(data)) == (SHARE, {"t": "chunk", "i": 1}, payload)
        assert data.obj is into  # received in place
        sender.send_share({"t": "chunk", "i": 2}, buf, len(payload))
        with pytest.raises(CeremonyBroken, match="broke the pairing protocol"):
            receiver.recv()  # a share where an ordinary message belongs
    finally:
        sender.close()
        receiver.close()


def test_loopback_pairing_makes_identical_pads_with_mirrored_roles(tmp_path):
    a, b = homes(tmp_path, "alice", "bob")
    (ra, fa, sa), (rb, fb, sb) = run_pair(a, b, 3 * MiB + 1234)
    assert sa == sb and fa == fb
    assert pad_of(a, ra) == pad_of(b, rb) and len(pad_of(a, ra)) == 3 * MiB + 1234
    assert (ra.role, rb.role) == (INITIATOR, RESPONDER) and ra.pad_id == rb.pad_id
    assert (ra.contact, rb.contact) == ("bob", "alice")
    assert (ra.mailbox_out, ra.mailbox_in) == (rb.mailbox_in, rb.mailbox_out)
    assert not list((a / "pads").glob("*.partial")) and not list((b / "pads").glob("*.ceremony.json"))
    with Device.open(a) as alice, Device.open(b) as bob:
        assert bob.unpackage(alice.package("bob", b"made in person").package).plaintext == b"made in person"
        assert alice.unpackage(bob.package("alice", b"and back").package).plaintext == b"and back"


class Mallory:
    """A man in the middle: he runs his own key agreement with each side and relays nothing honest."""

    def __init__(self, tmp_path: Path, host_port: int) -> None:
        (self.home,) = homes(tmp_path, "mallory")
        self.host_port = host_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sas: dict[str, str] = {}

    def run(self) -> None:
        def toward_host() -> None:
            with PadStore(self.home) as store:
                c = Ceremony(store, JOIN, random_bytes=os.urandom, compare=lambda sas: True, name="alice")
                try:
                    run_on(c, socket.create_connection(("127.0.0.1", self.host_port)))
                except CeremonyError:
                    pass
                self.sas["host"] = c.sas

        def toward_join() -> None:
            conn, _ = self.listener.accept()
            with PadStore(self.home) as store:
                c = Ceremony(store, HOST, random_bytes=os.urandom, compare=lambda sas: True, size=1 * MiB,
                             name="bob")
                try:
                    run_on(c, conn)
                except CeremonyError:
                    pass
                self.sas["join"] = c.sas

        threads = [threading.Thread(target=toward_host), threading.Thread(target=toward_join)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)


def test_a_man_in_the_middle_is_caught_by_the_pairing_string(tmp_path):
    a, b = homes(tmp_path, "alice", "bob")
    listener = socket.create_server(("127.0.0.1", 0))
    mallory = Mallory(tmp_path, listener.getsockname()[1])
    owners = Owners()
    results: dict[str, object] = {}

    def side(role: str, home: Path, sock_factory) -> None:
        try:
            with PadStore(home) as store:
                other = JOIN if role == HOST else HOST
                ceremony = Ceremony(store, role, random_bytes=os.urandom, size=MiB if role == HOST else None,
                         compare=owners.compare_for(role, other))
                run_on(ceremony, sock_factory())
                results[role] = "paired"
        except CeremonyError as exc:
            results[role] = exc

    m = threading.Thread(target=mallory.run)
    m.start()
    host = threading.Thread(target=side, args=(HOST, a, lambda: listener.accept()[0]))
    join = threading.Thread(target=side, args=(JOIN, b, lambda: socket.create_connection(("127.0.0.1", mallory.port))))
    host.start()
    join.start()
    for t in (host, join, m):
        t.join(60)
    listener.close()
    mallory.listener.close()
    assert owners.shown[HOST] != owners.shown[JOIN]  # the strings differ, so the owners say no
    assert isinstance(results[HOST], CeremonyAborted) and isinstance(results[JOIN], CeremonyAborted)
    for home in (a, b):
        assert not list((home / "pads").iterdir())  # nothing stored, not even a partial
        with PadStore(home) as store:
            assert store.contacts() == [] and store.pads() == []


class CuttingProxy:
    """Forwards both ways and cuts the connection once ``limit`` bytes went from host to join."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def connect(self, address):
        upstream = socket.create_connection(address)
        ours, theirs = socket.socketpair()

        def pump(src: socket.socket, dst: socket.socket, counted: bool) -> None:
            sent = 0
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if counted and sent + len(data) > self.limit:
                        dst.sendall(data[: self.limit - sent])
                        break
                    dst.sendall(data)
                    sent += len(data)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

        threading.Thread(target=pump, args=(upstream, theirs, True), daemon=True).start()
        threading.Thread(target=pump, args=(theirs, upstream, False), daemon=True).start()
        return ours


def test_a_transfer_cut_halfway_resumes_and_completes(tmp_path):
    a, b = homes(tmp_path, "alice", "bob")
    size = 4 * MiB
    host, join = run_pair(a, b, size, connect=CuttingProxy(size // 2).connect)
    assert isinstance(host, CeremonyBroken) and isinstance(join, CeremonyBroken)
    with PadStore(a) as store:
        partial = Partial.for_peer(store, PadStore(b).device_id)
        assert partial is not None and 0 < len(partial.hashes) < size // (64 * 1024)
        assert store.pads() == []  # nothing usable yet
        resumed_from = len(partial.hashes)
    (ra, fa, _), (rb, fb, _) = run_pair(a, b, size)
    assert fa == fb and pad_of(a, ra) == pad_of(b, rb)
    assert ra.pad_id.hex() == partial.pad_id  # the same pad, finished
    assert resumed_from > 0


def test_a_pad_file_left_with_no_record_is_swept_by_the_next_ceremony(tmp_path):
    # A ceremony killed between making its pad file and its first record leaves a file nothing can
    # resume from; the next ceremony deletes it once it is old, and keeps what can still resume.
    a, b, c = homes(tmp_path, "alice", "bob", "carol")
    size = 4 * MiB
    run_pair(a, c, size, connect=CuttingProxy(size // 2).connect)  # resumable: its record stays
    pads = a / "pads"
    resumable = sorted(pads.glob("*.pad.partial"))
    assert len(resumable) == 1
    orphan, young, tmp = pads / f"{'ab' * 16}.pad.partial", pads / f"{'cd' * 16}.pad.partial", \
        pads / f"{'ef' * 16}.ceremony.json.tmp"
    for path in (orphan, young, tmp):
        path.write_bytes(os.urandom(8192))
    long_ago = time.time() - 3600
    os.utime(orphan, (long_ago, long_ago))
    os.utime(tmp, (long_ago, long_ago))
    (ra, fa, _), (rb, fb, _) = run_pair(a, b, 1 * MiB)
    assert fa == fb
    assert not orphan.exists() and not tmp.exists()
    assert young.exists()  # it could be a ceremony that is running right now
    assert sorted(pads.glob("*.pad.partial")) == sorted([*resumable, young])
    with PadStore(a) as store:
        assert any(e["event"] == "ceremony-swept" and "abababab" in e["detail"] for e in store.events())
        assert Partial.for_peer(store, PadStore(c).device_id) is not None  # carol's pad can still resume


def test_resuming_the_largest_pad_offers_every_recorded_tag_in_one_frame(tmp_path, monkeypatch):
    # A 1 TiB pad has 262,144 chunks of 4 MiB: both records' tags must cross in the offer (a list of
    # hex strings in the frame's JSON once outgrew the 8 MiB frame) and the resume point is exact.
    a, b = homes(tmp_path, "alice", "bob")
    size, chunk = 1 << 40, 4 << 20
    count = size // chunk
    tags = [os.urandom(16).hex() for _ in range(count - 1)]  # all but the last: a whole record is settled first
    theirs = list(tags)
    theirs[200_000] = os.urandom(16).hex()  # the records part at chunk 200,000
    pad_id, boxes = os.urandom(16).hex(), (os.urandom(16).hex(), os.urandom(16).hex())
    for home, peer, role, recorded in ((a, b, HOST, tags), (b, a, JOIN, theirs)):
        with PadStore(home) as store, PadStore(peer) as other:
            Partial(pad_id=pad_id, peer_device_id=other.device_id.hex(), role=role, size=size, chunk=chunk,
                    mailbox_h2j=boxes[0], mailbox_j2h=boxes[1], contact=other.device_name,
                    hashes=recorded).save(store)
            store.partials.data_path(bytes.fromhex(pad_id)).touch()
    starts = {}

    def transfer(self, wire, partial, start):
        starts[self.role] = (start, len(partial.hashes))
        raise CeremonyBroken("stopped by the test")

    monkeypatch.setattr(Ceremony, "_check_space", lambda self, size, kept=0: None)
    monkeypatch.setattr(Ceremony, "_transfer", transfer)
    host, join = run_pair(a, b, size, chunk=chunk)
    assert isinstance(host, CeremonyBroken) and isinstance(join, CeremonyBroken), (host, join)
    assert starts == {HOST: (200_000, 200_000), JOIN: (200_000, 200_000)}


def test_both_devices_sending_through_full_buffers_never_deadlock(tmp_path):
    # Each device sends its shares while the other's arrive; with buffers far smaller than a chunk both
    # sends block at once, and each device must still read (an earlier version then hung for good).
    a, b = homes(tmp_path, "alice", "bob")
    (ra, fa, _), (rb, fb, _) = run_pair(a, b, 8 * MiB, chunk=MiB, buffers=64 * 1024)
    assert fa == fb and pad_of(a, ra) == pad_of(b, rb)


def _overwrite(path: Path, start: int) -> None:
    """Other bytes from ``start`` on: chunks a device wrote but never recorded (it was killed first)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(os.urandom(size - start))


def test_a_resume_starts_at_the_last_record_whatever_was_written_after_it(tmp_path):
    # Progress is recorded every few chunks, so a killed device may hold chunks on disk that its record
    # does not count, and the two records may differ: the resume starts where both records agree.
    a, b = homes(tmp_path, "alice", "bob")
    size, chunk = 4 * MiB, 64 * 1024
    host, join = run_pair(a, b, size, connect=CuttingProxy(size // 2).connect, persist_every=5)
    assert isinstance(host, CeremonyBroken) and isinstance(join, CeremonyBroken)
    with PadStore(a) as store_a, PadStore(b) as store_b:
        partial_a = Partial.for_peer(store_a, store_b.device_id)
        partial_b = Partial.for_peer(store_b, store_a.device_id)
    assert partial_a is not None and partial_b is not None and partial_a.pad_id == partial_b.pad_id
    recorded = min(len(partial_a.hashes), len(partial_b.hashes))
    assert recorded > 3  # a break (not a kill) records everything both devices verified
    partial_a.hashes = partial_a.hashes[: recorded - 3]  # alice's last record lagged three chunks behind
    with PadStore(a) as store_a:
        partial_a.save(store_a)
        _overwrite(store_a.partials.data_path(bytes.fromhex(partial_a.pad_id)), (recorded - 3) * chunk)
    with PadStore(b) as store_b:
        _overwrite(store_b.partials.data_path(bytes.fromhex(partial_b.pad_id)), len(partial_b.hashes) * chunk)
    views: list = []
    (ra, fa, _), (rb, fb, _) = run_pair(a, b, size, on_progress=views.append)
    assert ra.pad_id.hex() == partial_a.pad_id and fa == fb and pad_of(a, ra) == pad_of(b, rb)
    assert min(v.done for v in views if v.stage == "transfer") == (recorded - 3) * chunk


def test_progress_is_recorded_every_few_chunks_and_never_ahead_of_the_disk(tmp_path, monkeypatch):
    import provisioning.ceremony as ceremony_module

    monkeypatch.setattr(ceremony_module, "PERSIST_SECONDS", 10.0**9)  # by count alone, for this test
    events: list[tuple[str, int]] = []
    written = ceremony_module._Writer._write_chunk
    sync, save = os.fdatasync, Partial.save

    def write_chunk(self, i, buf, chunk):
        written(self, i, buf, chunk)
        events.append(("write", i))

    def fdatasync(fd):
        events.append(("sync", -1))
        sync(fd)

    def record(self, store):
        events.append(("save", len(self.hashes)))
        save(self, store)

    # Only the host runs in this process (the joiner is `otc pair join`), so every event is the host's.
    monkeypatch.setattr(ceremony_module._Writer, "_write_chunk", write_chunk)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(Partial, "save", record)
    a, b = homes(tmp_path, "alice", "bob")
    size, chunk, every = 2 * MiB + 5000, 64 * 1024, 4
    total = -(-size // chunk)
    listener = socket.create_server(("127.0.0.1", 0))
    join = _cli(b, "join", "--connect", f"127.0.0.1:{listener.getsockname()[1]}")
    conn, _ = listener.accept()
    listener.close()
    with PadStore(a) as store:
        ceremony = Ceremony(store, HOST, random_bytes=os.urandom, compare=lambda sas: True, size=size, chunk=chunk,
                            persist_every=every)
        record = run_on(ceremony, conn)
    assert join.wait(timeout=60) == 0
    join.stdout.close()
    assert pad_of(a, record) == next(iter(_usable(b).values()))
    done, synced, counts = 0, 0, []
    for kind, value in events:
        if kind == "write":
            assert value == done  # in order
            done += 1
        elif kind == "sync":
            synced = done
        else:
            assert value <= synced  # a record never counts a chunk that is not yet on disk
            counts.append(value)
    progress = [c for c in counts if c > 0]
    assert progress == sorted(set(progress)) and progress[-1] == total
    assert all(later - earlier >= every for earlier, later in zip(progress, progress[1:-1]))
    assert len(progress) <= total // every + 1  # not a record per chunk


def test_odd_chunk_sizes_make_the_same_pad(tmp_path):
    # 12388-byte chunks: most start and end off a page boundary. The last chunk is short.
    a, b = homes(tmp_path, "alice", "bob")
    (ra, fa, _), (rb, fb, _) = run_pair(a, b, 1 * MiB + 333, chunk=3 * 4096 + 100)
    assert fa == fb and pad_of(a, ra) == pad_of(b, rb) and len(pad_of(a, ra)) == MiB + 333


@pytest.mark.parametrize("advice", ["refused", "missing"])
def test_a_system_without_page_cache_advice_still_writes_the_pad(tmp_path, monkeypatch, advice):
    # The writer asks the kernel to write each chunk back at once and drop it from the cache; that is
    # advice only, and the pad is the same (and synced) without it.
    import errno

    refused: list[int] = []
    if advice == "missing":
        monkeypatch.delattr(os, "posix_fadvise", raising=False)
    else:
        def refuse(fd, offset, length, what):
            refused.append(offset)
            raise OSError(errno.ESPIPE, "no advice here")

        monkeypatch.setattr(os, "posix_fadvise", refuse, raising=False)
    a, b = homes(tmp_path, "alice", "bob")
    (ra, fa, _), (rb, fb, _) = run_pair(a, b, 2 * MiB)
    assert fa == fb and pad_of(a, ra) == pad_of(b, rb)
    assert bool(refused) == (advice == "refused")  # asked, and refused: the pad is made all the same


def test_a_pin_locked_home_pairs_with_the_pad_encrypted_at_rest(tmp_path):
    from device.storage.lock import StoreLock

    pins = {"alice": "246810", "bob": "135790"}
    for name in pins:
        PadStore.init(tmp_path / name, name, pin=pins[name]).close()

    def unlocked(home: Path) -> PadStore:
        lock = StoreLock(home)
        assert lock.unlock(pins[home.name]).ok
        return PadStore(home, storage_key=lock.key)

    a, b = tmp_path / "alice", tmp_path / "bob"
    size = MiB + 4096 + 77  # an odd-sized last chunk
    (ra, fa, _), (rb, fb, _) = run_pair(a, b, size, opener=unlocked)
    assert fa == fb
    with unlocked(a) as store_a, unlocked(b) as store_b:
        pad_a = bytes(store_a.pad_file(store_a.pad(ra.pad_id)).read(0, size))
        pad_b = bytes(store_b.pad_file(store_b.pad(rb.pad_id)).read(0, size))
        paths = store_a.pad_path(ra.pad_id), store_b.pad_path(rb.pad_id)
    assert pad_a == pad_b and len(pad_a) == size
    assert all(ra.pad_id.hex() not in path.name for path in paths)  # named by an HMAC of the id, not by it
    raw_a, raw_b = paths[0].read_bytes(), paths[1].read_bytes()
    assert len(raw_a) == size and raw_a != pad_a and raw_b != pad_b and raw_a != raw_b  # each under its own key


@pytest.mark.parametrize("text, expected", [
    ("0.0.0.0:7000", ("0.0.0.0", 7000)),  # every address: the ceremony trusts no link anyway
    ("[::]:7000", ("::", 7000)),
    ("192.168.7.1:0", ("192.168.7.1", 0)),
    ("[fe80::1]:7000", ("fe80::1", 7000)),
])
def test_a_laptop_listens_on_an_address_of_its_own_or_all_of_them(text, expected):
    assert listen_address(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("192.168.7.1:7000", ("192.168.7.1", 7000)),
    ("alice-laptop.local:7000", ("alice-laptop.local", 7000)),  # names are resolved when connecting
    ("[fe80::1]:7000", ("fe80::1", 7000)),
])
def test_the_joining_side_connects_to_an_address_or_a_name(text, expected):
    assert connect_address(text) == expected


@pytest.mark.parametrize("parse, text, message", [
    (listen_address, "laptop.local:7000", "literal IP address"),
    (listen_address, "7000", "HOST:PORT"),
    (listen_address, "1.2.3.4:70000", "HOST:PORT"),
    (listen_address, ":7000", "HOST:PORT"),
    (connect_address, "0.0.0.0:7000", "not a wildcard"),
    (connect_address, "192.168.7.1:0", "not a wildcard"),
    (connect_address, "192.168.7.1", "HOST:PORT"),
    (connect_address, "[::]:7000", "not a wildcard"),
])
def test_bad_addresses_get_one_clear_line(parse, text, message):
    with pytest.raises(UsageError) as info:
        parse(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_contact_conflicts_are_refused_before_any_transfer(tmp_path):
    a, b, c = homes(tmp_path, "alice", "bob", "carol")
    run_pair(a, b, MiB)
    # carol renames herself "bob" on a new device: alice already has a bob.
    impostor = tmp_path / "bob2"
    PadStore.init(impostor, "bob").close()
    host, join = run_pair(a, impostor, MiB)
    assert isinstance(host, CeremonyRefused) and isinstance(join, CeremonyRefused)
    assert not list((impostor / "pads").iterdir())


def _cli(home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "onetimechat.cli", "pair", *args, "--home", str(home),
                             "--confirm", "auto"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                            text=True)


def _usable(home: Path) -> dict[bytes, bytes]:
    with PadStore(home) as store:
        return {p.pad_id: (home / "pads" / f"{p.pad_id.hex()}.pad").read_bytes() for p in store.pads()}


@pytest.mark.slow
def test_a_ceremony_killed_at_random_moments_never_leaves_a_half_pad_in_use(tmp_path):
    a, b = homes(tmp_path, "alice", "bob")
    size = 8 * MiB
    for _ in range(6):
        host = _cli(a, "host", "--listen", "127.0.0.1:0", "--size", str(size))
        line = host.stdout.readline()
        port = line.strip().rsplit(":", 1)[1]
        join = _cli(b, "join", "--connect", f"127.0.0.1:{port}")
        time.sleep(secrets.randbelow(400) / 1000)
        victim = host if secrets.randbelow(2) else join
        victim.send_signal(signal.SIGKILL)
        for proc in (host, join):
            try:
                proc.wait(timeout=5)  # the survivor sees the broken connection and stops
            except subprocess.TimeoutExpired:
                proc.kill()  # a host still waiting for a joiner that died before connecting
                proc.wait()
            proc.stdout.close()
        usable_a, usable_b = _usable(a), _usable(b)
        for pads in (usable_a, usable_b):
            assert all(len(pad) == size for pad in pads.values())  # never a half pad
        for pad_id in usable_a.keys() & usable_b.keys():
            assert usable_a[pad_id] == usable_b[pad_id]
    host = _cli(a, "host", "--listen", "127.0.0.1:0", "--size", str(size))
    port = host.stdout.readline().strip().rsplit(":", 1)[1]
    join = _cli(b, "join", "--connect", f"127.0.0.1:{port}")
    assert host.wait(timeout=60) == 0 and join.wait(timeout=60) == 0
    host.stdout.close()
    join.stdout.close()
    usable_a, usable_b = _usable(a), _usable(b)
    shared = usable_a.keys() & usable_b.keys()
    assert shared and all(usable_a[p] == usable_b[p] for p in shared)


_SMALL_CHUNK_HOST = """
import socket, sys
from device.storage.padstore import PadStore
from hrng.mixer import os_stream
from provisioning.ceremony import HOST, Ceremony
from provisioning.wire import Wire
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
print("connected", flush=True)
with PadStore(sys.argv[1]) as store:
    Ceremony(store, HOST, random_bytes=os_stream, compare=lambda sas: True, size=int(sys.argv[2]),
             chunk=64 * 1024, persist_every=5).run(Wire(conn))
"""


@pytest.mark.slow
def test_killed_while_recording_every_few_chunks_it_still_resumes_to_equal_pads(tmp_path):
    # 512 chunks of 64 KiB, recorded every 5: kills land between records, with chunks on disk that no
    # record counts, and the two devices' records apart. Whatever survives must resume to one pad.
    a, b = homes(tmp_path, "alice", "bob")
    size = 32 * MiB

    def host() -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen([sys.executable, "-c", _SMALL_CHUNK_HOST, str(a), str(size)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return proc, proc.stdout.readline().strip()

    for _ in range(6):
        proc, port = host()
        join = _cli(b, "join", "--connect", f"127.0.0.1:{port}")
        proc.stdout.readline()  # connected: the ceremony is under way
        time.sleep(secrets.randbelow(200) / 1000)
        (proc if secrets.randbelow(2) else join).send_signal(signal.SIGKILL)
        for p in (proc, join):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()
        for pads in (_usable(a), _usable(b)):
            assert all(len(pad) == size for pad in pads.values())  # never a half pad
    proc, port = host()
    join = _cli(b, "join", "--connect", f"127.0.0.1:{port}")
    assert proc.wait(timeout=60) == 0 and join.wait(timeout=60) == 0, "the last, undisturbed ceremony completes"
    proc.stdout.close()
    join.stdout.close()
    usable_a, usable_b = _usable(a), _usable(b)
    assert usable_a.keys() & usable_b.keys()
    assert all(usable_a[p] == usable_b[p] for p in usable_a.keys() & usable_b.keys())


def _netns_available() -> str | None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "network namespaces need root and iproute2"
    probe = subprocess.run(["ip", "netns", "add", "otc-probe"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces here: {probe.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", "otc-probe"], capture_output=True)
    return None


@pytest.mark.skipif(_netns_available() is not None, reason=str(_netns_available()))
def test_two_devices_in_two_network_namespaces(tmp_path):
    a, b = homes(tmp_path, "alice", "bob")
    tag = secrets.token_hex(3)
    ns_a, ns_b = f"otc-a-{tag}", f"otc-b-{tag}"
    veth_a, veth_b = f"otca{tag}", f"otcb{tag}"
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True)  # noqa: E731
    try:
        run("ip", "netns", "add", ns_a)
        run("ip", "netns", "add", ns_b)
        run("ip", "link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        run("ip", "link", "set", veth_a, "netns", ns_a)
        run("ip", "link", "set", veth_b, "netns", ns_b)
        run("ip", "-n", ns_a, "addr", "add", "10.77.0.1/30", "dev", veth_a)
        run("ip", "-n", ns_b, "addr", "add", "10.77.0.2/30", "dev", veth_b)
        for ns, veth in ((ns_a, veth_a), (ns_b, veth_b)):
            run("ip", "-n", ns, "link", "set", veth, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        otc = [sys.executable, "-m", "onetimechat.cli", "pair"]
        host = subprocess.Popen(["ip", "netns", "exec", ns_a, *otc, "host", "--home", str(a), "--listen",
                                 "10.77.0.1:8471", "--size", str(2 * MiB), "--confirm", "auto"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True)
        host.stdout.readline()  # waiting
        join = subprocess.run(["ip", "netns", "exec", ns_b, *otc, "join", "--home", str(b), "--connect",
                               "10.77.0.1:8471", "--confirm", "auto"], capture_output=True, cwd=ROOT, text=True,
                              timeout=120)
        out, err = host.communicate(timeout=120)
        assert host.returncode == 0 and join.returncode == 0, (err, join.stderr)
        fp_host = [ln for ln in out.splitlines() if ln.startswith("Pad fingerprint")]
        fp_join = [ln for ln in join.stdout.splitlines() if ln.startswith("Pad fingerprint")]
        assert fp_host == fp_join and fp_host
        assert _usable(a) == _usable(b) != {}
    finally:
        subprocess.run(["ip", "netns", "del", ns_a], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns_b], capture_output=True)
