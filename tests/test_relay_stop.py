"""Stopping a relay, and waiting on one (a user following the README cold found all three).

* `otc recv --wait N` with nothing arriving waits out its time in a few long polls; it asked with ``wait`` 0
  again and again in its last second until rate limited (429).
* Ctrl-C (SIGINT to the whole process group), SIGTERM to the parent, SIGTERM to every process (a service
  manager) and SIGHUP (the terminal closed) stop a multi-process relay with no traceback; a child that set its
  signals to ignored while the parent's SIGTERM was pending printed "Signal 15 ignored due to race condition".
* A long poll open while the relay stops gets its empty answer (200) at once: waitress's loop took the
  KeyboardInterrupt for a stop of its own, waited 5 s for every task and warned "thread(s) still running"
  before the relay's stop could wake the long polls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from tests.chat_fixtures import make_world
from tests.conftest import ROOT, otc
from tests.relay_fixtures import BACKENDS, RelayProcess, fresh_db, postgres_fixture  # noqa: F401 - fixtures

HANG_GUARD_S = 60  # only against a hang; nothing here is timed


def test_recv_waits_out_its_time_in_a_few_polls_when_nothing_arrives(tmp_path):
    world = make_world(tmp_path, names=("alice", "bob"))
    try:
        polls: list[str] = []
        app = world.relay.app
        inner = app.wsgi_app

        def counting(environ, start_response):
            if environ["PATH_INFO"].startswith("/v1/receive"):
                polls.append(environ["PATH_INFO"])
            return inner(environ, start_response)

        app.wsgi_app = counting
        bob = world.people["bob"].laptop
        done = otc("recv", "--relay", world.relay_url, "--wait", "2", env={"OTC_CLIENT_HOME": str(bob)},
                   timeout=HANG_GUARD_S)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stderr == b"" and done.stdout == b""
        assert 1 <= len(polls) <= 3, polls  # it asked ~220 times before, until the relay answered 429
    finally:
        world.close()


def _relay(tmp_path: Path, *extra: str, db: str = "") -> RelayProcess:
    return RelayProcess(db or f"sqlite:///{tmp_path / 'relay.db'}", "--rate-limit", "0", *extra,
                        log=tmp_path / "relay.log").start()


def _traffic(relay: RelayProcess) -> None:
    """Some sends and reads, on keep-alive connections, so every worker has served something."""
    with requests.Session() as session:
        for n in range(20):
            sent = session.post(f"{relay.url}/v1/send", json={"mailbox": "m" * 32, "contents": "aGk="}, timeout=30)
            assert sent.status_code == 200, sent.text
            got = session.post(f"{relay.url}/v1/receive", json={"mailboxes": {"m" * 32: 0}}, timeout=30)
            assert got.status_code == 200


def _long_poll(relay: RelayProcess, answers: list) -> threading.Thread:
    def poll() -> None:
        try:
            answer = requests.post(f"{relay.url}/v1/receive", json={"mailboxes": {"e" * 32: 0}, "wait": 60},
                                   timeout=HANG_GUARD_S)
            answers.append((answer.status_code, answer.json()))
        except requests.RequestException as exc:
            answers.append(exc)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return thread


def _connected(relay: RelayProcess) -> None:
    """Until a client has connected to the relay (Linux: /proc/net/tcp), then a moment for its request to be read:
    nothing the relay answers says a long poll is waiting. Were the poll late, it would get no answer and the test
    would fail, not pass."""
    port = f"{relay.port:04X}"
    for _ in range(1200):
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        # ESTABLISHED (01) on the relay's side: its local port is the relay's.
        if any(row[1].endswith(f":{port}") and row[3] == "01" for row in rows):
            threading.Event().wait(0.5)
            return
        threading.Event().wait(0.05)
    raise AssertionError("no client reached the relay")


def _assert_clean(log: str) -> None:
    """No traceback, and no sign of a stop cut short (waitress warns "thread(s) still running" when its own stop
    gave up on a long poll; the parent reports a worker it had to kill)."""
    for sign in ("Traceback", "ignored due to race condition", "still running", "while stopping", "failed"):
        assert sign not in log, log


def _stop(relay: RelayProcess, how: str) -> int:
    assert relay.proc is not None
    pid = relay.proc.pid
    if how == "sigint-group":
        os.killpg(pid, signal.SIGINT)  # Ctrl-C at the terminal
    elif how == "sigterm-all":
        os.killpg(pid, signal.SIGTERM)  # a service manager's stop
    elif how == "sighup-group":
        os.killpg(pid, signal.SIGHUP)  # the terminal closed
    else:
        relay.proc.send_signal(signal.SIGTERM)
    status = relay.proc.wait(timeout=HANG_GUARD_S)
    relay.rest_of_stdout()
    relay._close_pipe()
    return status


@pytest.mark.parametrize(("store", "extra"), [("sqlite", ("--workers", "2")), ("sqlite", ("--writer",)),
                                              ("postgresql", ()),  # a writer process, with one worker too
                                              ("sqlite", ())],  # one process: SIGHUP is new there too
                         ids=["2-workers", "writer", "postgresql", "1-process"])
@pytest.mark.parametrize("how", ["sigint-group", "sigterm-parent", "sigterm-all", "sighup-group"])
def test_a_relay_stops_cleanly_on_each_signal(request, tmp_path, store, extra, how):
    db = fresh_db(request, store, tmp_path)
    for _ in range(3):  # the race showed in 4 runs of 5
        relay = _relay(tmp_path, *extra, db=db)
        try:
            _traffic(relay)
            status = _stop(relay, how)
        finally:
            if relay.proc is not None and relay.proc.poll() is None:
                relay.kill()
        log = (tmp_path / "relay.log").read_text()
        assert status == 0, log
        _assert_clean(log)
        assert relay.tail.rstrip().endswith("otc relay: stopped")
        (tmp_path / "relay.log").unlink()


@pytest.mark.parametrize("extra", [(), ("--workers", "2")], ids=["1-worker", "2-workers"])
@pytest.mark.parametrize("how", ["sigint-group", "sigterm-parent"])
@pytest.mark.parametrize("store", BACKENDS)  # PostgreSQL: a writer process too, with one worker as with two
def test_a_long_poll_gets_its_empty_answer_when_the_relay_stops(request, tmp_path, store, extra, how):
    relay = _relay(tmp_path, *extra, db=fresh_db(request, store, tmp_path))
    answers: list = []
    try:
        assert requests.get(f"{relay.url}/v1/info", timeout=HANG_GUARD_S).status_code == 200  # a worker serves
        poller = _long_poll(relay, answers)
        _connected(relay)
        status = _stop(relay, how)
        poller.join(timeout=HANG_GUARD_S)
    finally:
        if relay.proc is not None and relay.proc.poll() is None:
            relay.kill()
    log = (tmp_path / "relay.log").read_text()
    assert status == 0, log
    # With the store's identity, as every read's answer (docs/relay-protocol.md, "Store identity").
    assert [(code, {k: v for k, v in body.items() if k != "store"}) for code, body in answers] == [
        (200, {"messages": [], "complete": True})], answers
    assert all(len(body["store"]) == 16 for _, body in answers), answers
    _assert_clean(log)


def test_recv_waiting_on_a_relay_that_stops_ends_with_one_line(tmp_path):
    world = make_world(tmp_path, names=("alice", "bob"))
    try:
        relay = RelayProcess(f"sqlite:///{tmp_path / 'other.db'}", log=tmp_path / "relay.log").start()
        bob = world.people["bob"].laptop
        recv = subprocess.Popen([sys.executable, "-m", "onetimechat.cli", "recv", "--relay", relay.url,
                                 "--wait", "60"], env={**os.environ, "OTC_CLIENT_HOME": str(bob)}, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _connected(relay)
            assert _stop(relay, "sigint-group") == 0
            out, err = recv.communicate(timeout=HANG_GUARD_S)
        finally:
            if recv.poll() is None:
                recv.kill()
                recv.wait()
        assert b"Traceback" not in err, err.decode()
        assert recv.returncode == 0 or (recv.returncode == 1 and err.decode().startswith("ERROR: ")
                                        and len(err.decode().splitlines()) == 1), (recv.returncode, err)
    finally:
        world.close()
