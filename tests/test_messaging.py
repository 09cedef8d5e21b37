"""otc send / otc recv and the messenger underneath: nothing lost, warnings where they belong.

Real relay and device servers on 127.0.0.1 (tests/chat_fixtures.py).
"""

from __future__ import annotations

import base64
import json
import sqlite3

import pytest
import requests

from client.errors import RelayUnavailable
from client.mailstore import MailStore
from client.messenger import Messenger
from client.relay import RelayClient
from client.rpc import DeviceClient
from client.state import ClientState
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.chat_fixtures import make_world
from tests.conftest import otc


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path, names=("alice", "bob"))
    yield w
    w.close()


def send(world, who: str, to: str, text: str, *extra: str):
    person = world.people[who]
    return otc("send", "--device", person.url, "--relay", world.relay_url, *extra, to, text, env=person.env)


def recv(world, who: str, *extra: str):
    person = world.people[who]
    result = otc("recv", "--device", person.url, "--relay", world.relay_url, "--json", *extra, env=person.env)
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    return result, lines


def messenger(world, who: str) -> Messenger:
    person = world.people[who]
    device = DeviceClient(person.url, state=ClientState(person.laptop), timeout=30)
    return Messenger(device, RelayClient(world.relay_url), MailStore(device.url, home=person.laptop))


def relay_rows(world) -> list[tuple]:
    with sqlite3.connect(world.relay_db) as db:
        rows = db.execute("SELECT mailbox, ref, contents FROM messages ORDER BY mailbox, ref").fetchall()
    return [tuple(v.decode() if isinstance(v, bytes) else v for v in row) for row in rows]


def test_send_and_recv_with_receipts(world):
    assert send(world, "alice", "bob", "hello bob").returncode == 0
    assert send(world, "alice", "bob", "second").returncode == 0
    result, lines = recv(world, "bob")
    assert result.returncode == 0, result.stderr
    assert [(m["contact"], m["kind"], m["text"], m["warnings"]) for m in lines] == [
        ("alice", "text", "hello bob", []), ("alice", "text", "second", [])]
    assert lines[0]["ref"] < lines[1]["ref"]
    # Bob's device answered each with a receipt; alice's client matches them to what she sent.
    result, lines = recv(world, "alice")
    assert [(m["kind"], m["delivered"]) for m in lines] == [("receipt", True), ("receipt", True)]
    # Everything delivered was deleted from the relay.
    assert relay_rows(world) == []
    # Nothing new: no output, exit 0.
    result, lines = recv(world, "bob")
    assert result.returncode == 0 and lines == []


def test_receipts_can_be_switched_off(world):
    send(world, "alice", "bob", "no receipt please")
    recv(world, "bob", "--no-receipts")
    assert recv(world, "alice")[1] == []


def test_relay_dropping_a_message_gives_a_gap_warning(world):
    for text in ("one", "two", "three"):
        send(world, "alice", "bob", text)
    mailbox, ref, _ = relay_rows(world)[1]
    requests.post(world.relay_url + "/v1/ack", json={"mailbox": mailbox, "refs": [ref]}, timeout=10)  # dropped
    _, lines = recv(world, "bob")
    assert [m["text"] for m in lines] == ["one", "three"]
    assert lines[0]["warnings"] == []
    assert len(lines[1]["warnings"]) == 1 and lines[1]["warnings"][0].startswith("gap:")


def test_replayed_package_gives_a_replay_warning_and_no_duplicate(world):
    send(world, "alice", "bob", "pay the bearer 10")
    mailbox, _, contents = relay_rows(world)[0]
    _, first = recv(world, "bob")
    requests.post(world.relay_url + "/v1/send", json={"mailbox": mailbox, "contents": contents}, timeout=10)
    result, lines = recv(world, "bob")
    assert result.returncode == 0
    assert [m["text"] for m in first] == ["pay the bearer 10"]
    assert len(lines) == 1 and lines[0]["text"] is None and lines[0]["error"] == "replay"
    assert lines[0]["warnings"][0].startswith("replay:")
    plain = otc("recv", "--device", world.people["bob"].url, "--relay", world.relay_url,
                env=world.people["bob"].env)
    assert "pay the bearer" not in plain.stdout.decode()


def test_forged_package_is_refused_and_finished_with(world):
    send(world, "alice", "bob", "genuine")
    mailbox, ref, contents = relay_rows(world)[0]
    raw = bytearray(base64.b64decode(contents))
    raw[40] ^= 1
    requests.post(world.relay_url + "/v1/ack", json={"mailbox": mailbox, "through": ref}, timeout=10)
    requests.post(world.relay_url + "/v1/send", timeout=10,
                  json={"mailbox": mailbox, "contents": base64.b64encode(bytes(raw)).decode()})
    requests.post(world.relay_url + "/v1/send", json={"mailbox": mailbox, "contents": "not a package"}, timeout=10)
    _, lines = recv(world, "bob")
    assert [(m["error"], m["warnings"][0].split(":")[0]) for m in lines] == [("invalid", "tamper"),
                                                                           ("malformed", "tamper")]
    assert recv(world, "bob")[1] == []  # refused for good: not fetched again


def test_message_waits_while_the_device_is_away(world):
    send(world, "alice", "bob", "are you there?")
    world.people["bob"].stop()
    result, lines = recv(world, "bob")
    assert result.returncode == 1 and lines == []
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "does not answer" in err
    assert len(relay_rows(world)) == 1  # still there
    world.people["bob"].start()
    result, lines = recv(world, "bob")
    assert [m["text"] for m in lines] == ["are you there?"]


def test_outbox_holds_packages_while_the_relay_is_down(world, tmp_path):
    port = world.relay.port
    world.relay.close()
    result = send(world, "alice", "bob", "sent while the relay was down")
    assert result.returncode == 0 and result.stdout.decode().startswith("queued for bob")
    # The outbox holds ciphertext only.
    store = MailStore(world.people["alice"].url, home=world.people["alice"].laptop)
    (item,) = store.queued()
    assert "sent while" not in json.dumps(item.__dict__)
    assert b"sent while" not in store.path.read_bytes()
    world.relay = RelayServer(create_app(RelayConfig(db=f"sqlite:///{world.relay_db}")), "127.0.0.1", port).start()
    assert send(world, "alice", "bob", "and after").returncode == 0
    _, lines = recv(world, "bob")
    assert [m["text"] for m in lines] == ["sent while the relay was down", "and after"]


def test_a_message_opened_before_a_crash_is_not_reported_as_an_attack(world):
    send(world, "alice", "bob", "once only")
    m = messenger(world, "bob")
    m.refresh_contacts()
    # A run that handed the message to the device and stopped before finishing it.
    cursors = m.store.cursors(m.relay.url, sorted(m.inbound))
    (message,), _ = m.relay.receive(cursors)
    m.store.begin_open(m.relay.url, message.mailbox, message.ref)
    m.device.unpackage(message.contents)
    events = []
    m.poll(events.append)
    assert [(e.kind, e.code) for e in events] == [("reopened", "reopened")]
    assert events[0].warnings[0].startswith("lost:")


def test_relay_down_on_recv_is_one_line(world):
    world.relay.close()
    result, _ = recv(world, "bob")
    err = result.stderr.decode().strip()
    assert result.returncode == 1 and err.startswith("ERROR: The relay at") and len(err.splitlines()) == 1


@pytest.mark.parametrize("args, needle", [
    (["send", "--device", "{bob}", "--relay", "{relay}", "nobody", "hi"], "No contact named 'nobody'"),
    (["send", "--device", "http://127.0.0.1:9", "--relay", "{relay}", "bob", "hi"], "not paired"),
    (["recv", "--device", "http://127.0.0.1:9", "--relay", "{relay}"], "not paired"),
    (["send", "--device", "{bob}", "--relay", "{relay}", "alice"], "required"),
    (["recv", "--device", "{bob}", "--relay", "{relay}", "--wait", "soon"], "invalid float"),
    (["recv", "--device", "{bob}"], "No relay given and none remembered"),
    (["chat", "--device", "{bob}"], "needs a terminal"),
    (["send", "--device", "{bob}", "--relay", "not a url", "alice", "hi"], "A relay URL looks like"),
])
def test_cli_errors_are_one_line(world, args, needle):
    bob = world.people["bob"]
    argv = [a.format(bob=bob.url, relay=world.relay_url) for a in args]
    result = otc(*argv, env=bob.env)
    err = result.stderr.decode().strip()
    assert result.returncode != 0
    assert len(err.splitlines()) == 1 and err.startswith("ERROR: ") and needle in err, err
    assert "Traceback" not in err


def test_declined_send_is_one_line_and_nothing_queued(world):
    world.people["alice"].source.decline.add("regret")
    result = send(world, "alice", "bob", "regret")
    err = result.stderr.decode().strip()
    assert result.returncode == 1 and len(err.splitlines()) == 1 and "did not approve" in err
    assert relay_rows(world) == []


def test_relay_answers_are_checked(world):
    relay = RelayClient(world.relay_url)
    with pytest.raises(RelayUnavailable):
        RelayClient("http://127.0.0.1:9").receive({"ab": 0})
    messages, complete = relay.receive({"00" * 16: 0})
    assert messages == [] and complete
