"""One durable sync per package or unpackage call over the device RPC (issue 21).

The device commits a call's counter unsynced when the call is a package or an
unpackage, and the call's own commit (the reservation, the received mark)
syncs it with everything before it in the WAL; whatever the call does, the
counter is durable before the answer leaves. These tests count the syncs of a
real device server process with a preloaded shim that counts every
``fsync``/``fdatasync`` (bench/native/syncdelay.c, built with the system
compiler; SQLite's syncs go through it too), and check the store's rule for
unsynced commits directly.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench.bench_sync import Counter as Syncs
from bench.bench_sync import build_shim
from client.errors import RemoteError
from client.rpc import DeviceClient, pair
from client.state import ClientState
from device.engine import Device
from device.localpair import pair_local
from device.storage.padstore import PadStore
from onetimechat import attachment as att

ROOT = Path(__file__).resolve().parent.parent


def _shim(tmp: Path) -> Path:
    lib = build_shim(tmp)
    if lib is None:
        pytest.skip("no C compiler to build the sync-counting shim")
    return lib


@pytest.fixture
def counted_device(tmp_path):
    """Alice's device served in its own process under the counting shim; Bob's store in this one."""
    a, b = PadStore.init(tmp_path / "a", "alice"), PadStore.init(tmp_path / "b", "bob")
    pair_local(a, b, 1 << 20)
    a.close()
    b.close()
    counter = tmp_path / "syncs"
    counter.write_bytes(bytes(8))
    env = dict(os.environ, LD_PRELOAD=str(_shim(tmp_path)), OTC_SYNC_COUNTER=str(counter), OTC_SYNC_DELAY_US="0",
               PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "onetimechat.cli", "device", "serve", "--home", str(tmp_path / "a"),
         "--listen", "127.0.0.1:0", "--confirm", "auto"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    drain = None
    try:
        assert server.stdout is not None
        url = None
        for line in server.stdout:
            found = re.search(r"serving on (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "the device server did not start"
        drain = threading.Thread(target=server.stdout.read, daemon=True)  # keep its pipe drained
        drain.start()
        state = ClientState(tmp_path / "laptop")
        pair(url, name="test", code=(tmp_path / "a" / "pairing-code").read_text().strip(), state=state)
        client = DeviceClient(url, state=state)
        # Each of the server's 16 threads opens its own connection on its first call, and SQLite syncs the home
        # directory once with a connection's first sync: a cost of the first calls, not of each.
        for _ in range(48):
            client.status()
        yield client, Syncs(counter), tmp_path / "b"
    finally:
        server.terminate()
        server.wait(30)
        if drain is not None:
            drain.join(30)
        if server.stdout is not None:
            server.stdout.close()


def _syncs_per_call(syncs: Syncs, call, times: int = 10) -> float:
    """Syncs per call over ``times`` calls. Compared with bounds half a sync either side (one a call: under 1.5),
    not for equality: a sync now and then that no call causes by itself (a WAL checkpoint) must not fail a count
    of ten calls, while one sync a call more (2.0) or less (0.0) still does."""
    before = syncs.read()
    for _ in range(times):
        call()
    return (syncs.read() - before) / times


def test_a_package_call_syncs_once(counted_device):
    client, syncs, _ = counted_device
    client.package("bob", "warm up")
    assert _syncs_per_call(syncs, lambda: client.package("bob", "Grüße, one sync")) < 1.5  # two a call: 2.0


def test_an_unpackage_call_syncs_once_and_a_receipt_is_a_package_of_its_own(counted_device):
    client, syncs, bob_home = counted_device
    with Device(PadStore(bob_home)) as bob:
        packages = [bob.package("alice", f"message {i}".encode()).package for i in range(21)]
    feed = iter(packages)
    client.unpackage(bytes(next(feed)))  # type: ignore[arg-type]
    assert _syncs_per_call(syncs, lambda: client.unpackage(bytes(next(feed)))) < 1.5  # type: ignore[arg-type]
    # With a receipt the device also seals a package back (its own reservation): two.
    assert 1.5 < _syncs_per_call(syncs, lambda: client.unpackage(bytes(next(feed)), receipt=True)) < 2.5  # type: ignore


def test_a_folded_call_that_commits_nothing_still_makes_its_counter_durable(counted_device):
    """An unknown contact: no reservation follows the counter, so the device syncs it itself before it
    answers (else a power cut after the answer could let the same call be replayed)."""
    client, syncs, _ = counted_device

    def refused() -> None:
        with pytest.raises(RemoteError):
            client.package("nobody", "hello")

    assert 0.5 < _syncs_per_call(syncs, refused) < 1.5


def test_other_calls_keep_a_durable_counter(counted_device):
    client, syncs, _ = counted_device
    assert 0.5 < _syncs_per_call(syncs, client.status) < 1.5


# -- file parts (issue 24): the part's own commit carries the counter ---------------------------------------------


# Counted as "< 1.5 a call", not "== 1": a sync now and then that no call causes by itself (a WAL checkpoint, a
# server thread's first connection syncing its directory) must not fail a count of ten calls; two a call is 2.0.


def _file(parts: int) -> tuple[bytes, str]:
    data = os.urandom(parts * att.PART_SIZE)
    return data, hashlib.sha256(data).hexdigest()


def test_a_file_part_call_syncs_once(counted_device):
    """Sealing a part records its SHA-256 durably (one commit): the call's counter rides on that sync."""
    client, syncs, _ = counted_device
    data, sha256 = _file(11)
    file_id = client.call("file_begin", contact="bob", name="a.bin", size=len(data), sha256=sha256)["file"]["id"]
    parts = iter(range(11))

    def seal() -> None:
        index = next(parts)
        part = data[index * att.PART_SIZE:(index + 1) * att.PART_SIZE]
        client.call("file_part", file=file_id, index=index, data=part)

    seal()
    assert _syncs_per_call(syncs, seal) < 1.5  # one a call (before: two)


def test_a_file_open_call_syncs_once_and_a_refused_one_too(counted_device):
    """Opening a part records its place durably (one commit), and a part refused (out of order, given twice)
    commits nothing: the device syncs the counter itself before it answers."""
    client, syncs, bob_home = counted_device
    data, sha256 = _file(11)
    with Device(PadStore(bob_home)) as bob:
        header, packaged = bob.files.begin("alice", "a.bin", len(data), bytes.fromhex(sha256))
        view = memoryview(data)
        sealed = [bytes(bob.files.seal(header.file_id, i, view[i * att.PART_SIZE:(i + 1) * att.PART_SIZE])[0] or b"")
                  for i in range(header.parts)]
    client.unpackage(bytes(packaged.package))  # type: ignore[arg-type]
    feed = iter(sealed)
    client.call("file_open", part=next(feed))
    assert _syncs_per_call(syncs, lambda: client.call("file_open", part=next(feed))) < 1.5  # one a call (before: two)

    def refused(part: bytes, code: str) -> None:
        with pytest.raises(RemoteError) as caught:
            client.call("file_open", part=part)
        assert caught.value.code == code

    assert _syncs_per_call(syncs, lambda: refused(sealed[0], "file-duplicate"), times=4) < 1.5


# -- the store's rule for unsynced commits ---------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    s = PadStore.init(tmp_path / "home", "alice")
    yield s
    s.close()


def _count_fsyncs(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def _light(store: PadStore) -> None:
    with store._transaction(durable=False) as conn:
        conn.execute("UPDATE device SET name = name WHERE id = 1")


def test_an_unsynced_commit_alone_is_synced_by_make_durable(store, monkeypatch):
    _light(store)
    calls = _count_fsyncs(monkeypatch)
    store.make_durable()
    assert len(calls) == 1
    store.make_durable()  # nothing left to make durable
    assert len(calls) == 1


def test_a_later_durable_commit_covers_an_unsynced_one(store, monkeypatch):
    _light(store)
    store.log_event("test-event")  # a durable commit after it: its sync covers the WAL before it
    calls = _count_fsyncs(monkeypatch)
    store.make_durable()
    assert calls == []


def test_a_durable_commit_on_another_thread_covers_it_too(store, monkeypatch):
    _light(store)
    worker = threading.Thread(target=store.log_event, args=("test-event",))
    worker.start()
    worker.join(30)
    calls = _count_fsyncs(monkeypatch)
    store.make_durable()
    assert calls == []


def test_an_earlier_durable_commit_does_not_cover_a_later_unsynced_one(store, monkeypatch):
    store.log_event("test-event")
    _light(store)
    calls = _count_fsyncs(monkeypatch)
    store.make_durable()
    assert len(calls) == 1


def test_an_unsynced_commit_leaves_the_connection_durable_for_the_next(store):
    _light(store)
    assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
