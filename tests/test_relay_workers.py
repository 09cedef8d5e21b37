"""`otc relay serve --workers 2`: two processes on one socket and one store (SQLite and PostgreSQL).

Which worker holds a connection is read from /proc (the socket's inode among each worker's descriptors), so
each test really talks to two different processes; nothing in the relay reports its pid.
"""

from __future__ import annotations

import http.client
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.relay_fixtures import (  # noqa: F401 - fixtures
    RawClient,
    RelayProcess,
    db_url_fixture,
    postgres_fixture,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def worker_pids(relay: RelayProcess) -> list[int]:
    return [int(line.rsplit("pid ", 1)[1]) for line in relay.banner if ": pid " in line]


def server_inode(client_port: int, relay_port: int) -> int | None:
    """The inode of the relay's end of the loopback connection from ``client_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.rsplit(":", 1)[1], 16) == relay_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                return int(fields[9])
    return None


def holder(client: RawClient, relay_port: int, pids: list[int]) -> int | None:
    """The worker pid whose descriptors hold ``client``'s connection (None until a worker has accepted it)."""
    assert client.conn is not None and client.conn.sock is not None
    inode = server_inode(client.conn.sock.getsockname()[1], relay_port)
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                    return pid
            except OSError:
                continue
    return None


def one_per_worker(relay: RelayProcess, pids: list[int]) -> dict[int, RawClient]:
    """A keep-alive connection held by each worker (connections are opened until both have one)."""
    found: dict[int, RawClient] = {}
    spare: list[RawClient] = []
    for _ in range(200):
        client = RawClient("127.0.0.1", relay.port, timeout=30)
        conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30)
        # Connected, with no request: requests would spend the client's rate (a burst of 10), and the kernel may
        # hand many connections in a row to one worker.
        conn.connect()
        client.conn = conn
        pid = None
        deadline = time.monotonic() + 10
        while pid is None and time.monotonic() < deadline:  # until a worker has accepted it
            pid = holder(client, relay.port, pids)
            if pid is None:
                time.sleep(0.01)
        if pid is not None and pid not in found:
            found[pid] = client
        else:
            spare.append(client)
        if len(found) == len(pids):
            break
    for client in spare:
        client.close()
    assert len(found) == len(pids), f"connections reached only workers {sorted(found)} of {pids}"
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(name="two_workers")
def two_workers_fixture(db_url, tmp_path):
    relay = RelayProcess(db_url, "--workers", "2", "--rate-limit", "5", "--burst", "10", "--threads", "8",
                         log=tmp_path / "relay.log").start()
    yield relay
    relay.stop()


def test_a_send_in_one_worker_wakes_a_long_poll_in_the_other(two_workers):
    pids = worker_pids(two_workers)
    assert len(pids) == 2 and two_workers.proc is not None and two_workers.proc.pid not in pids
    clients = one_per_worker(two_workers, pids)
    sender, reader = (clients[pid] for pid in pids)
    try:
        latencies = []
        for n in range(3):
            answer: dict = {}
            woke = [0.0]

            def poll(cursor: int = n) -> None:
                answer["status"], answer["body"] = reader.post("/v1/receive", {"mailboxes": {"bob": cursor},
                                                                               "wait": 20})
                woke[0] = time.monotonic()

            thread = threading.Thread(target=poll)
            thread.start()
            time.sleep(0.5)  # the poll is waiting in the other worker
            sent_at = time.monotonic()
            status, sent = sender.post("/v1/send", {"mailbox": "bob", "contents": "aGk="})
            assert status == 200 and sent["ref"] == n + 1
            thread.join(timeout=20)
            assert not thread.is_alive()
            assert answer["status"] == 200 and [m["ref"] for m in answer["body"]["messages"]] == [n + 1]
            latencies.append(woke[0] - sent_at)
            time.sleep(2.1)  # the rate limit's bucket refills (5 a second, 10 at once)
        assert max(latencies) < 1.0, latencies
        # The connections stayed with their workers.
        assert holder(sender, two_workers.port, pids) == pids[0]
        assert holder(reader, two_workers.port, pids) == pids[1]
    finally:
        sender.close()
        reader.close()


def test_the_rate_limit_holds_across_workers(two_workers):
    pids = worker_pids(two_workers)
    clients = one_per_worker(two_workers, pids)  # no request spent
    time.sleep(2.5)  # full buckets again
    try:
        began = time.monotonic()
        statuses = []
        for n in range(40):
            client = clients[pids[n % 2]]
            assert client.conn is not None
            client.conn.request("GET", "/check")
            response = client.conn.getresponse()
            response.read()
            statuses.append(response.status)
        elapsed = time.monotonic() - began
        allowed = statuses.count(200)
        # One shared bucket: a burst of 10 and 5 a second; two buckets of their own would allow 20 and more.
        assert allowed <= 10 + 5 * elapsed + 1, (allowed, elapsed, statuses)
        assert statuses.count(429) >= 40 - allowed and allowed >= 9, statuses
    finally:
        for client in clients.values():
            client.close()


def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(two_workers):
    pids = worker_pids(two_workers)
    parent = two_workers.proc
    assert parent is not None
    time.sleep(2.5)  # past the start-up grace: a worker dying now is started again
    os.kill(pids[0], signal.SIGKILL)
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line.startswith("otc relay: worker 1 of 2: pid "), line
    replacement = int(line.rsplit("pid ", 1)[1])
    assert replacement not in pids and alive(replacement)
    assert f"worker 1 (pid {pids[0]}) killed by signal 9; starting it again" in two_workers.log.read_text()
    client = RawClient("127.0.0.1", two_workers.port, timeout=30)
    try:
        assert client.post("/v1/send", {"mailbox": "carol", "contents": "aGk="})[0] == 200
    finally:
        client.close()
    assert two_workers.stop() == 0
    assert "otc relay: stopped" in two_workers.rest_of_stdout()
    for pid in (pids[1], replacement):
        assert not alive(pid), f"worker {pid} outlived the relay"


def test_a_worker_that_dies_as_it_starts_stops_the_relay(tmp_path):
    # As a worker that cannot open its store would: restarting it would only fail again.
    relay = RelayProcess(f"sqlite:///{tmp_path / 'relay.db'}", "--workers", "2", log=tmp_path / "relay.log").start()
    try:
        pids = worker_pids(relay)
        os.kill(pids[1], signal.SIGKILL)
        assert relay.proc is not None
        assert relay.proc.wait(timeout=60) == 1
        assert "as it started; stopping the relay" in relay.log.read_text()
        assert not alive(pids[0])
    finally:
        relay.stop()
