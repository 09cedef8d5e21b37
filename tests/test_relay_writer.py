"""The writer process of `otc relay serve --workers N` (relay/writer.py), SQLite and PostgreSQL.

In process: a store whose writes go over a line to a writer thread gets the same answers and the same refusals
as one that commits them itself, and a line that sends anything but a request is dropped without running it.
As processes: the writer listens on no path, and killing it under load loses no answered write and stores no
message twice (sends carry idempotency keys; clients retry what was answered 503).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.errors import AddressQuota, MailboxFull, PresenceQuota, TooManyMailboxes
from relay.storage import Limits, Sent, open_store
from relay.storage.sql import SQLStore
from relay.writer import StopPipe, WriterLink, link, serve_writer
from tests.relay_fixtures import (  # noqa: F401 - fixtures
    RawClient,
    RelayProcess,
    db_url_fixture,
    postgres_fixture,
)

NOW = 1_750_000_000.0


class Linked:
    """A writer thread on its own store, and a 'worker' store whose writes go to it over a line."""

    def __init__(self, url: str) -> None:
        self.writer_store = open_store(url)
        self.store = open_store(url)
        assert isinstance(self.writer_store, SQLStore) and isinstance(self.store, SQLStore)
        writer_control, self.to_writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker_control, self.to_worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.stop = StopPipe()
        self.thread = threading.Thread(target=serve_writer, args=(self.writer_store, writer_control,
                                                                  self.stop.reader))
        self.thread.start()
        self._controls = [writer_control, worker_control]
        link(self.to_writer, self.to_worker, 1)
        self.store.use_writer(WriterLink(worker_control))

    def raw_line(self) -> socket.socket:
        """A second line to the writer, as a (misbehaving) worker would hold it."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        socket.send_fds(self.to_writer, [b"2"], [theirs.fileno()])
        theirs.close()
        return ours

    def close(self) -> None:
        self.stop.ring()
        self.thread.join(timeout=30)
        self.stop.close()
        for sock in [self.to_writer, self.to_worker, *self._controls]:
            sock.close()
        self.store.close()
        self.writer_store.close()


@pytest.fixture(name="linked")
def linked_fixture(db_url) -> Iterator[Linked]:
    linked = Linked(db_url)
    yield linked
    linked.close()


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_answers_and_refusals_come_back_as_they_would_in_process(linked):
    store = linked.store
    limits = Limits(max_messages=2, max_bytes=1 << 20, origin_max_bytes=1000, origin_new_mailboxes=2)
    first = store.send("alice", "", b"one", "k1", NOW, NOW + 60, limits, origin="o1")
    assert first == Sent(1, NOW + 60)
    assert store.send("alice", "", b"one", "k1", NOW, NOW + 60, limits, origin="o1") == Sent(1, NOW + 60, True)
    assert store.send("alice", "", b"two", "k2", NOW, NOW + 60, limits, origin="o1").ref == 2
    with pytest.raises(MailboxFull):
        store.send("alice", "", b"three", "k3", NOW, NOW + 60, limits, origin="o1")
    with pytest.raises(AddressQuota):
        store.send("bob", "", b"x" * 600, None, NOW, NOW + 60, limits, origin="o1")
    store.send("carol", "", b"c", None, NOW, NOW + 60, limits, origin="o2")
    store.send("dave", "", b"d", None, NOW, NOW + 60, limits, origin="o2")
    with pytest.raises(TooManyMailboxes):
        store.send("erin", "", b"e", None, NOW, NOW + 60, limits, origin="o2")
    # The refused sends left nothing behind; what was stored reads back and acknowledges as in process.
    found, complete = store.fetch([("alice", 0), ("bob", 0)], 10, 1 << 20, NOW)
    assert complete and [(m.mailbox, m.ref, m.contents) for m in found] == [("alice", 1, "one"), ("alice", 2, "two")]
    gone: list[str] = []
    assert store.ack("alice", 1, (), NOW, gone) == 1 and gone == []
    assert store.ack_cursors([("alice", 2), ("carol", 1)], NOW) == 2
    assert store.ack("alice", 2, (), NOW) == 0
    presence = Limits(max_messages=2, max_bytes=1, origin_presence=1)
    assert store.announce("h1", b"t" * 32, NOW, NOW + 60, "o1", "", presence) is not None
    with pytest.raises(PresenceQuota):
        store.announce("h2", b"t" * 32, NOW, NOW + 60, "o1", "", presence)
    assert store.withdraw("h1", b"u" * 32, NOW) is False
    assert store.withdraw("h1", b"t" * 32, NOW) is True
    assert store.withdraw("h1", b"t" * 32, NOW) is None
    assert store.origin_key() == linked.writer_store.origin_key()
    counts = store.sweep(NOW + 120, idle_before=NOW + 120)
    assert counts["messages"] == 1  # dave's, expired


class Run:
    """Unpickling this runs a command: what a hostile line would send."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("frame", ["code", "unknown-operation", "too-long", "not-a-pickle"])
def test_a_line_sending_anything_but_a_request_is_dropped_and_nothing_runs(linked, tmp_path, frame):
    marker = tmp_path / "ran"
    data = {
        "code": pickle.dumps((1, "send", (Run(marker),), "")),
        "unknown-operation": pickle.dumps((1, "_lock_mailbox", (), "")),
        "not-a-pickle": b"\x00" * 40,
    }.get(frame)
    line = linked.raw_line()
    try:
        line.sendall(struct.pack(">I", 1 << 30) if data is None else struct.pack(">I", len(data)) + data)
        line.settimeout(30)
        assert line.recv(100) == b""  # the writer closed it without an answer
    finally:
        line.close()
    assert not marker.exists()
    # The writer goes on serving its other lines.
    assert linked.store.send("alice", "", b"one", None, NOW, NOW + 60, Limits(10, 1 << 20)).ref == 1


def _unix_socket_paths() -> dict[int, str]:
    """Every AF_UNIX socket's inode and its path ('' for an unnamed one), from /proc/net/unix."""
    found = {}
    for row in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = row.split()
        found[int(fields[6])] = fields[7] if len(fields) > 7 else ""
    return found


def _sockets(pid: int) -> list[int]:
    """The inodes of the sockets process ``pid`` holds."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                found.append(int(target[8:-1]))
    return found


def _banner_pid(relay: RelayProcess, what: str) -> int:
    return next(int(line.rsplit(" ", 1)[1]) for line in relay.banner if what in line)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_writer_can_be_reached_by_no_path_and_holds_no_network_socket(tmp_path):
    relay = RelayProcess(f"sqlite:///{tmp_path / 'relay.db'}", "--workers", "2", "--writer",
                         log=tmp_path / "relay.log").start()
    try:
        writer = _banner_pid(relay, "writer process, pid")
        # Its control line, its stop pipe (two ends) and one line per worker (taken from the control line as it
        # gets to them): all unnamed AF_UNIX sockets.
        deadline = time.monotonic() + 30
        while len(sockets := _sockets(writer)) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(sockets) == 5, sockets
        paths = _unix_socket_paths()
        assert all(paths.get(inode) == "" for inode in sockets), (sockets, [paths.get(i) for i in sockets])
    finally:
        assert relay.stop() == 0


def _sender(port: int, who: int, stop: threading.Event, answered: dict, statuses: list) -> None:
    client = RawClient("127.0.0.1", port, timeout=60)
    n = 0
    try:
        while not stop.is_set():
            n += 1
            body = {"mailbox": f"box-{who}", "contents": f"m-{who}-{n}", "id": f"id-{who}-{n}"}
            while True:  # the same send, under the same key, until it is answered 200
                try:
                    status, answer = client.post("/v1/send", body)
                except OSError:
                    status, answer = 0, {}
                statuses.append(status)
                if status == 200:
                    answered[body["contents"]] = answer["ref"]
                    break
                assert status in (0, 503), (status, answer)
                time.sleep(0.05)
    finally:
        client.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_killing_the_writer_under_load_loses_no_answered_write(db_url, tmp_path):
    relay = RelayProcess(db_url, "--workers", "2", "--writer", "--rate-limit", "100000", "--burst", "100000",
                         log=tmp_path / "relay.log").start()
    try:
        writer = _banner_pid(relay, "writer process, pid")
        stop = threading.Event()
        answered: dict[str, int] = {}
        statuses: list[int] = []
        senders = [threading.Thread(target=_sender, args=(relay.port, who, stop, answered, statuses))
                   for who in range(8)]
        for thread in senders:
            thread.start()
        time.sleep(3.0)  # past the start-up grace: a writer dying now is started again
        before = len(answered)
        os.kill(writer, signal.SIGKILL)
        assert relay.proc is not None and relay.proc.stdout is not None
        line = relay.proc.stdout.readline()
        assert line.startswith("otc relay: writer process, pid "), line
        assert int(line.rsplit(" ", 1)[1]) != writer
        deadline = time.monotonic() + 60
        while len(answered) < before + 50 and time.monotonic() < deadline:
            time.sleep(0.1)  # writes succeed again after the restart
        stop.set()
        for thread in senders:
            thread.join(timeout=120)
        assert len(answered) >= before + 50
        assert 503 in statuses, "no write was waiting for the writer when it died"
        assert "the writer (pid" in relay.log.read_text()
        # Every answered send is stored, under the ref it was answered with, and none twice.
        reader = RawClient("127.0.0.1", relay.port)
        try:
            stored: dict[str, list[int]] = {}
            for who in range(8):
                cursor = 0
                while True:
                    status, body = reader.post("/v1/receive", {"mailboxes": {f"box-{who}": cursor}})
                    assert status == 200
                    for message in body["messages"]:
                        stored.setdefault(message["contents"], []).append(message["ref"])
                        cursor = message["ref"]
                    if body["complete"]:
                        break
        finally:
            reader.close()
        assert all(len(refs) == 1 for refs in stored.values()), "a message was stored twice"
        assert {c: stored.get(c, [None])[0] for c in answered} == answered
    finally:
        assert relay.stop() == 0
