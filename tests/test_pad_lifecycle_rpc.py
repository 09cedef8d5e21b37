"""Moving the split over the device RPC and a real relay (issue 23, docs/pad-lifecycle.md).

Two device servers and a relay on 127.0.0.1 (tests/chat_fixtures.py), each laptop's Messenger moving packages
between them as `otc send`, `otc recv` and the chat do. The packages are read off the relay's wire by the
outside checker (tests/lifecycle_checker.py).
"""

from __future__ import annotations

import threading

import pytest

from client.errors import RelayUnavailable, RemoteError
from client.mailstore import MailStore
from client.messenger import Event, Messenger
from client.relay import RelayClient
from client.rpc import DeviceClient
from client.state import ClientState
from onetimechat import package as fmt
from tests import lifecycle_checker as checker
from tests.chat_fixtures import make_world
from tests.test_pad_lifecycle import both_talk

SIZE = 8192


class Wire(RelayClient):
    """The real relay client, with a tap: every package handed to the relay is kept for the checker."""

    def __init__(self, url: str, seen: list[bytes], lock: threading.Lock) -> None:
        super().__init__(url)
        self.seen, self.lock = seen, lock

    def send(self, mailbox: str, contents: str, message_id: str) -> int:
        with self.lock:
            if fmt.decode(contents) not in self.seen:  # an outbox resend is the same package
                self.seen.append(fmt.decode(contents))
        return super().send(mailbox, contents, message_id)


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path, names=("alice", "bob"), size=SIZE)
    yield w
    w.close()


def messenger(world, who: str, seen: list[bytes], lock: threading.Lock) -> Messenger:
    person = world.people[who]
    device = DeviceClient(person.url, state=ClientState(person.laptop), timeout=30)
    return Messenger(device, Wire(world.relay_url, seen, lock), MailStore(device.url, home=person.laptop))


def pad_of(m: Messenger) -> dict:
    (contact,) = m.device.status()["contacts"]
    (pad,) = contact["pads"]
    return pad


def test_a_request_and_grant_through_the_relay_move_the_split_and_both_devices_agree(world):
    seen: list[bytes] = []
    lock = threading.Lock()
    alice, bob = messenger(world, "alice", seen, lock), messenger(world, "bob", seen, lock)
    out = None
    while out is None or not out.asked:  # alice talks until her device asks bob's for more
        out = alice.send("bob", "a" * 150)
    events: list[Event] = []
    bob.poll(events.append)
    (request,) = [e for e in events if e.kind == "control"]
    assert request.control["type"] == "request" and request.control["outcome"] == "request"
    assert request.reply is not None  # bob's device granted by itself (alice is low, bob is not)
    events.clear()
    alice.poll(events.append)
    (grant,) = [e for e in events if e.kind == "control"]
    assert grant.control["type"] == "grant" and grant.control["outcome"] == "applied"
    assert any(w.startswith("split-moved:") for w in grant.warnings)
    a_pad, b_pad = pad_of(alice), pad_of(bob)
    assert a_pad["split"] == b_pad["split"] > SIZE // 2 and a_pad["split_epoch"] == b_pad["split_epoch"] == 1
    assert a_pad["send"]["total"] == b_pad["receive"]["total"]  # both agree how much alice may send
    # Alice goes on with what bob gave; bob reads it all.
    sent_after = 0
    while True:
        try:
            alice.send("bob", "b" * 150)
        except RemoteError as exc:  # the device's refusal once the pad is out
            assert exc.code == "pad-exhausted", exc
            break
        sent_after += 1
    events.clear()
    bob.poll(events.append)
    assert [e.kind for e in events if e.kind == "text"] == ["text"] * sent_after
    assert all(not w.startswith(("replay", "tamper")) for e in events for w in e.warnings)
    # Bob has seen alice use what he gave; what he gave since (alice asked again at 10%) is not used yet.
    alice.poll(events.append)
    assert bob.device.status()["contacts"][0]["granted_unseen"] == pad_of(bob)["split"] - a_pad["split"]
    checker.assert_no_byte_twice(seen, SIZE)
    assert max(checker.segment(p)[1] for p in seen if checker.segment(p)[0] < a_pad["split"]) > SIZE // 2


def test_concurrent_sends_over_the_rpc_while_a_request_and_grant_are_in_flight(world):
    """Both laptops send and receive at once, in threads, through one relay; requests and grants travel among
    the messages. Every package on the wire is checked: no pad byte in two packages."""
    seen: list[bytes] = []
    lock = threading.Lock()
    people = {"alice": messenger(world, "alice", seen, lock), "bob": messenger(world, "bob", seen, lock)}
    stop = threading.Event()
    outcomes: list[str] = []
    errors: list[str] = []

    def talk(me: str, peer: str, size: int, count: int) -> None:
        for _ in range(count):
            try:
                people[me].send(peer, "x" * size)
            except RemoteError as exc:  # pad-exhausted while a grant is on its way
                if exc.code != "pad-exhausted":
                    errors.append(repr(exc))
                stop.wait(0.05)

    # The listeners get their own messengers (a Messenger is one thread's), on the same laptops.
    people_listen = {n: messenger(world, n, seen, lock) for n in people}

    def listen_with(me: str) -> None:
        while not stop.is_set():
            try:
                people_listen[me].poll(
                    lambda e: outcomes.append(e.control["outcome"]) if e.kind == "control" else None, wait=1)
            except RelayUnavailable:  # the relay's rate limit: back off as the chat does
                stop.wait(0.5)

    both_talk([threading.Thread(target=talk, args=("alice", "bob", 200, 50)),
               threading.Thread(target=talk, args=("bob", "alice", 20, 50))],
              [threading.Thread(target=listen_with, args=("alice",)),
               threading.Thread(target=listen_with, args=("bob",))], stop)
    for _ in range(3):  # what is still on its way arrives (a grant answered in the last round, say)
        for name in people_listen:
            for m in (people[name], people_listen[name]):
                m.flush()  # anything the relay's rate limit left in an outbox
            people_listen[name].poll(
                lambda e: outcomes.append(e.control["outcome"]) if e.kind == "control" else None)
    assert not errors
    checker.assert_no_byte_twice(seen, SIZE)
    assert "applied" in outcomes
    a_pad, b_pad = pad_of(people["alice"]), pad_of(people["bob"])
    assert a_pad["split"] <= b_pad["split"]
    assert a_pad["split"] == b_pad["split"]  # every grant arrived: both agree
