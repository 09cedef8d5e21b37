"""A relay given a new store at the same address loses no message (docs/client.md, "Cursors and the relay's store").

The reproduction a user found following the README cold: bob reads three messages, the relay is restarted on
the same address with another ``--db``, alice sends two more ("sent to bob"), and bob's `otc recv` showed nothing
while its acknowledgement deleted them (the new store numbers refs from 1 again; bob's cursor was 3). Real relay
and device servers on 127.0.0.1, the real `otc` and client code; the new store is SQLite or PostgreSQL (the
tests' real server).
"""

from __future__ import annotations

import io
import json as _json
import secrets
import sqlite3
import time

import pytest
import requests
import urllib3

from client.errors import RelayUnavailable
from client.mailstore import MailStore
from client.messenger import Event, Messenger
from client.relay import RelayClient
from client.rpc import DeviceClient
from client.state import ClientState
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.chat_fixtures import World, make_world
from tests.conftest import otc
from tests.relay_fixtures import BACKENDS, fresh_db, postgres_fixture  # noqa: F401 - fixtures

NOTICE = "has a new store: reading it from the start"


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path, names=("alice", "bob"))
    yield w
    w.close()


def send(world: World, who: str, to: str, text: str) -> str:
    person = world.people[who]
    result = otc("send", "--device", person.url, "--relay", world.relay_url, to, text, env=person.env)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def recv(world: World, who: str) -> tuple[list[str], str]:
    """The texts `otc recv --json` shows, and what it writes on stderr."""
    import json

    person = world.people[who]
    result = otc("recv", "--device", person.url, "--relay", world.relay_url, "--json", env=person.env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert all(not line["warnings"] for line in lines), lines  # no gap, no replay, no tamper
    return [line["text"] for line in lines if line["kind"] == "text"], result.stderr.decode()


def new_store(world: World, db: str) -> None:
    """The relay stopped and started again on the same address with another store (``--db``)."""
    port = int(world.relay_url.rsplit(":", 1)[1])
    world.relay.close()
    world.relay = RelayServer(create_app(RelayConfig(db=db)), "127.0.0.1", port, threads=32).start()


def stored(world: World, who: str = "bob") -> list[int]:
    """The refs the relay's store holds for ``who``'s mailboxes."""
    person = world.people[who]
    mailboxes = [m for c in DeviceClient(person.url, state=ClientState(person.laptop)).contacts()
                 for m in c.get("mailboxes_in", [])]
    relay = world.relay.app.extensions["otc_relay"]
    found, _ = relay.store.fetch([(m, 0) for m in sorted(mailboxes)], 1000, 1 << 30, time.time())
    return [m.ref for m in found]


def messenger(world: World, who: str, session: requests.Session | None = None) -> Messenger:
    person = world.people[who]
    device = DeviceClient(person.url, state=ClientState(person.laptop), timeout=30)
    relay = RelayClient(world.relay_url) if session is None else RelayClient(world.relay_url, session=session)
    return Messenger(device, relay, MailStore(device.url, home=person.laptop))


def another_db(request: pytest.FixtureRequest, backend: str, tmp_path) -> str:
    folder = tmp_path / f"store-{secrets.token_hex(4)}"
    folder.mkdir()
    return fresh_db(request, backend, folder)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_users_reproduction_loses_nothing(world, request, backend, tmp_path):
    for text in ("one", "two", "three"):
        send(world, "alice", "bob", text)
    assert recv(world, "bob") == (["one", "two", "three"], "")
    new_store(world, another_db(request, backend, tmp_path))  # moving to PostgreSQL, or a lost disk
    for text in ("four", "five"):
        assert send(world, "alice", "bob", text).strip() == "sent to bob"
    assert stored(world) == [1, 2]
    texts, stderr = recv(world, "bob")
    assert texts == ["four", "five"]
    assert stderr.strip() == f"WARNING: the relay at {world.relay_url} {NOTICE}"  # one line, once
    assert stored(world) == []  # read, then acknowledged on the new store
    assert recv(world, "bob") == ([], "")
    send(world, "alice", "bob", "six")
    assert recv(world, "bob") == (["six"], "")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_store_already_past_the_readers_cursor_loses_nothing(world, request, backend, tmp_path):
    """As in the load test: the new store's refs had passed the reader's cursor before it read (12 of 12
    deleted there, cursor 29): a check of the cursor against the store's next ref would not see it."""
    alice, bob = messenger(world, "alice"), messenger(world, "bob")
    for n in range(3):
        alice.send("bob", f"old {n}")
    seen: list[Event] = []
    bob.poll(seen.append)
    bob.acknowledge()
    new_store(world, another_db(request, backend, tmp_path))
    for n in range(5):
        alice.send("bob", f"new {n}")
    assert stored(world) == [1, 2, 3, 4, 5]  # past bob's cursor, 3
    while bob.poll(seen.append).handled:
        pass
    bob.acknowledge()
    assert [e.text for e in seen if e.kind == "text"] == [f"old {n}" for n in range(3)] + [f"new {n}" for n in range(5)]
    assert [e.warnings for e in seen if e.kind == "notice"] == [[f"the relay at {world.relay_url} {NOTICE}"]]
    assert all(not e.warnings for e in seen if e.kind == "text")
    assert stored(world) == []


def test_a_laptop_that_knows_no_store_reads_once_without_acknowledging(world):
    """A first read at a relay, or the first after an upgrade from before store identities (cursors kept, no
    identity): nothing is deleted before the relay has said which store the cursors are refs of. Cursors kept
    without an identity are not trusted as refs of the store it names (they may be an older store's): read from
    the start, what was finished and not yet deleted comes again, refused by the device as replays."""
    alice, bob = messenger(world, "alice"), messenger(world, "bob")
    for n in range(3):
        alice.send("bob", f"m{n}")
    seen: list[Event] = []
    bob.poll(seen.append)  # the first read: learns the store
    assert stored(world) == [1, 2, 3]
    with sqlite3.connect(bob.store.path) as db:  # as a laptop from before: cursors, no identity
        db.execute("DELETE FROM relay_stores")
    bob.poll(seen.append)
    assert stored(world) == [1, 2, 3]  # read without acknowledging
    assert bob.store.relay_store(world.relay_url) == world.relay.app.extensions["otc_relay"].store_id
    assert [e.code for e in seen if e.kind != "text"] == ["store-changed", "replay", "replay", "replay"]
    bob.poll(seen.append)
    assert stored(world) == []  # now acknowledged, naming the store
    assert [e.text for e in seen if e.kind == "text"] == ["m0", "m1", "m2"]


def test_the_chat_reads_a_new_store_from_the_start(world, tmp_path):
    bob = world.chat("bob")
    bob.wait_for("contacts: alice")
    send(world, "alice", "bob", "before the move")
    bob.wait_for("alice: before the move", timeout=60)
    new_store(world, f"sqlite:///{tmp_path / 'two.db'}")
    for text in ("after one", "after two"):
        send(world, "alice", "bob", text)
    screen = bob.wait_for("alice: after two", timeout=90)
    assert "alice: after one" in screen
    assert screen.count(NOTICE) == 1
    assert "tamper" not in screen and "replay" not in screen and "gap" not in screen
    deadline = time.monotonic() + 60  # the chat's next read acknowledges them
    while stored(world) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stored(world) == []
    assert bob.close() == 0
    assert "Traceback" not in bob.text()


class LyingRelay(requests.Session):
    """A hostile relay in front of an honest store: it keeps every message (acknowledgements are dropped) and
    names whatever store identity it likes in its answers (``lie``), checking none it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.lie = "aaaaaaaaaaaaaaaa"
        self.flapping = False  # another identity in every answer

    def post(self, url, json=None, **kwargs):  # type: ignore[no-untyped-def, override]
        if "-bin" in url:  # JSON only, so the lie is easy to write
            return self._answer(404, {"error": "not-found", "message": "no"})
        body = dict(json or {})
        body.pop("store", None)
        if url.endswith("/v1/ack"):
            return self._answer(200, {"mailbox": body.get("mailbox"), "deleted": 0, "store": self.lie})
        body["ack"] = False
        answer = super().post(url, json=body, timeout=kwargs.get("timeout"))
        data = answer.json()
        if self.flapping:
            self.lie = secrets.token_hex(8)
        data["store"] = self.lie
        return self._answer(answer.status_code, data)

    @staticmethod
    def _answer(status: int, data: dict) -> requests.Response:
        raw = _json.dumps(data).encode()
        response = requests.Response()
        response.status_code = status
        response.headers["Content-Type"] = "application/json"
        response.headers["Content-Length"] = str(len(raw))
        response.raw = urllib3.HTTPResponse(body=io.BytesIO(raw), preload_content=False)
        return response


def test_a_relay_lying_about_its_store_makes_the_laptop_read_again_never_lose_or_repeat(world):
    """A hostile relay can already withhold and delete anything; a lie about its store only has the laptop read
    from the start, and what it had read comes again as the replays the device refuses (shown as replays, as
    any copy a relay sends again): no message lost, none shown twice."""
    lying = LyingRelay()
    alice = messenger(world, "alice")
    person = world.people["bob"]
    device = DeviceClient(person.url, state=ClientState(person.laptop), timeout=30)
    bob = Messenger(device, RelayClient(world.relay_url, session=lying), MailStore(device.url, home=person.laptop))
    for n in range(3):
        alice.send("bob", f"m{n}")
    seen: list[Event] = []
    bob.poll(seen.append)
    bob.acknowledge()
    lying.lie = "bbbbbbbbbbbbbbbb"  # "a new store": the same messages, refs from 1
    alice.send("bob", "m3")
    for _ in range(3):
        bob.poll(seen.append)
    texts = [e.text for e in seen if e.kind == "text"]
    assert texts == ["m0", "m1", "m2", "m3"]  # each once, none lost
    assert [e.code for e in seen if e.kind == "refused"] == ["replay"] * 3
    assert [e.code for e in seen if e.kind == "notice"] == ["store-changed"]
    assert stored(world) == [1, 2, 3, 4]  # the lying relay kept everything: it could anyway


class OldRelay(requests.Session):
    """A relay from before store identities: it names no store and ignores the one it is given."""

    def post(self, url, json=None, **kwargs):  # type: ignore[no-untyped-def, override]
        if "-bin" in url:
            return LyingRelay._answer(404, {"error": "not-found", "message": "no"})
        body = {k: v for k, v in (json or {}).items() if k != "store"}
        answer = super().post(url, json=body, timeout=kwargs.get("timeout"))
        data = {k: v for k, v in answer.json().items() if k != "store"}
        return LyingRelay._answer(answer.status_code, data)


def test_a_relay_from_before_store_identities_is_read_and_acknowledged_as_before(world):
    alice = messenger(world, "alice")
    person = world.people["bob"]
    device = DeviceClient(person.url, state=ClientState(person.laptop), timeout=30)
    bob = Messenger(device, RelayClient(world.relay_url, session=OldRelay()), MailStore(device.url, home=person.laptop))
    seen: list[Event] = []
    for round_ in range(2):
        for n in range(2):
            alice.send("bob", f"r{round_} m{n}")
        bob.poll(seen.append)
        bob.acknowledge()
        assert stored(world) == []  # acknowledged as before, no identity named
    assert bob.store.relay_store(world.relay_url) == ""
    assert [e.text for e in seen] == ["r0 m0", "r0 m1", "r1 m0", "r1 m1"]
    # The relay upgraded in place (its store the same): its first identity resets the cursors (they could be an
    # older store's); what was acknowledged is gone, so only the new message comes, nothing again.
    bob.relay = RelayClient(world.relay_url)
    alice.send("bob", "after the upgrade")
    bob.poll(seen.append)
    assert [e.text for e in seen][-1:] == ["after the upgrade"]
    assert [e.code for e in seen if e.kind != "text"] == ["store-changed"]
    assert bob.store.relay_store(world.relay_url) == world.relay.app.extensions["otc_relay"].store_id


def test_the_chats_polls_alone_acknowledge_to_a_relay_from_before_store_identities(world):
    """The chat only polls: a relay that names no store is acknowledged after the read's answer said so (the read
    itself no longer acknowledges with no store: it may meet that relay upgraded onto a new store), and only the
    mailboxes whose cursor moved."""
    acks: list[dict] = []

    class Counting(OldRelay):
        def post(self, url, json=None, **kwargs):  # type: ignore[no-untyped-def, override]
            if url.endswith("/v1/ack"):
                acks.append(dict(json or {}))
            return super().post(url, json=json, **kwargs)

    alice, bob = messenger(world, "alice"), messenger(world, "bob", session=Counting())
    seen: list[Event] = []
    for n in range(2):
        alice.send("bob", f"m{n}")
    bob.poll(seen.append)  # learns '': nothing acknowledged before it knew
    assert stored(world) == [1, 2] and acks == []
    bob.poll(seen.append)
    assert stored(world) == [] and [a["through"] for a in acks] == [2]
    bob.poll(seen.append)  # nothing moved: no acknowledgement again
    assert len(acks) == 1 and [e.text for e in seen] == ["m0", "m1"]


def test_a_relay_naming_another_store_in_every_answer_is_unavailable_and_loses_nothing(world):
    lying = LyingRelay()
    alice = messenger(world, "alice")
    person = world.people["bob"]
    device = DeviceClient(person.url, state=ClientState(person.laptop), timeout=30)
    bob = Messenger(device, RelayClient(world.relay_url, session=lying), MailStore(device.url, home=person.laptop))
    seen: list[Event] = []
    bob.poll(seen.append)  # learns "aaa..."
    alice.send("bob", "held")
    lying.flapping = True
    with pytest.raises(RelayUnavailable, match="another store at each request"):
        bob.poll(seen.append)
    lying.flapping = False
    bob.poll(seen.append)
    assert [e.text for e in seen if e.kind == "text"] == ["held"]
