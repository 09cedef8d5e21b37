"""The outside review of the store identity (red team relay-s31): its R1, R5 and R8 tests, as written.

R1: a laptop that recorded a relay from before store identities ('') must not acknowledge with no store once
the relay, upgraded, names one. R5: a laptop upgraded after its relay moved to a new store must not keep its old
cursors as refs of it. R8: the renewal readers name the store they read in their acknowledgement.
"""

from __future__ import annotations

import pytest
import requests

from client.mailstore import MailStore
from client.messenger import Event, Messenger
from client.relay import RelayClient
from client.rpc import DeviceClient
from client.state import ClientState
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.chat_fixtures import make_world
from tests.test_messaging_store_change import LyingRelay

_answer = LyingRelay._answer  # the review's own helper, the same lines


class _RelayBeforeIdentities(requests.Session):
    """A relay of the version before store identities (an honest one): it names no store, ignores the one it
    is given, and has no /v1/receive-bin."""

    def post(self, url, json=None, **kwargs):  # type: ignore[no-untyped-def, override]
        if "-bin" in url:
            return _answer(404, {"error": "not-found", "message": "no"})
        body = {k: v for k, v in (json or {}).items() if k != "store"}
        answer = super().post(url, json=body, timeout=kwargs.get("timeout"))
        return _answer(answer.status_code, {k: v for k, v in answer.json().items() if k != "store"})


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path, names=("alice", "bob"))
    yield w
    w.close()


def _messenger(world, who: str, session: requests.Session | None = None) -> Messenger:
    person = world.people[who]
    device = DeviceClient(person.url, state=ClientState(person.laptop), timeout=30)
    relay = RelayClient(world.relay_url, session=session) if session is not None else RelayClient(world.relay_url)
    return Messenger(device, relay, MailStore(device.url, home=person.laptop))


def test_r1_relay_upgraded_onto_a_new_store_after_an_old_relay_deletes_unread(world, tmp_path):
    """The laptop was upgraded first and read a relay from before store identities (it recorded ''). The
    operator then upgrades the relay and, as in the user's reproduction, starts it on a new store (--db) at the
    same address. The laptop's next read sends ack: true with no ``store`` (it knows none), so the relay cannot
    refuse it: the new store's messages up to the old cursor are deleted unread."""
    alice = _messenger(world, "alice")
    bob = _messenger(world, "bob", session=_RelayBeforeIdentities())
    seen: list[Event] = []
    for n in range(3):
        alice.send("bob", f"old {n}")
    bob.poll(seen.append)
    bob.acknowledge()
    assert bob.store.relay_store(world.relay_url) == ""  # a relay from before: no identity
    # The relay upgraded, on a new store at the same address.
    port = int(world.relay_url.rsplit(":", 1)[1])
    world.relay.close()
    world.relay = RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'new-store.db'}")), "127.0.0.1",
                              port, threads=8).start()
    for n in range(3):
        alice.send("bob", f"new {n}")  # refs 1..3 on the new store: answered, stored
    bob.relay = RelayClient(world.relay_url)  # the same laptop, now talking to the upgraded relay
    for _ in range(3):
        bob.poll(seen.append)
    bob.acknowledge()
    texts = [e.text for e in seen if e.kind == "text"]
    assert texts == [f"old {n}" for n in range(3)] + [f"new {n}" for n in range(3)], texts


def test_r5_a_laptop_upgraded_after_its_relay_moved_to_a_new_store_trusts_its_old_cursors(world, tmp_path):
    """The laptop's first read since it keeps identities learns the store "without acknowledging" and then keeps
    its cursors as refs of that store. If the relay had already been moved to a new store (the user's own
    reproduction, with the relay upgraded first and the laptop after), the cursors are refs of the old store:
    the read after them skips the new store's messages, and the next acknowledgement deletes them unread."""
    import sqlite3

    alice, bob = _messenger(world, "alice"), _messenger(world, "bob")
    seen: list[Event] = []
    for n in range(3):
        alice.send("bob", f"old {n}")
    bob.poll(seen.append)
    bob.acknowledge()
    with sqlite3.connect(bob.store.path) as db:  # a laptop from before store identities: cursors, no identity
        db.execute("DELETE FROM relay_stores")
    port = int(world.relay_url.rsplit(":", 1)[1])
    world.relay.close()
    world.relay = RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'new-store.db'}")), "127.0.0.1",
                              port, threads=8).start()
    for n in range(3):
        alice.send("bob", f"new {n}")  # refs 1..3 on the new store
    for _ in range(3):
        bob.poll(seen.append)  # the laptop, upgraded now
    bob.acknowledge()
    texts = [e.text for e in seen if e.kind == "text"]
    assert texts == [f"old {n}" for n in range(3)] + [f"new {n}" for n in range(3)], texts


def test_r8_renewals_acknowledged_without_a_store_delete_a_new_stores_packages(tmp_path):
    """fetch_renewals (client/rooms.py; `otc abe` renewals on the laptop) reads its mailboxes from 0 and then
    acknowledges through the last ref it read, naming no store. If the relay is restarted on a new store between
    the read and the acknowledgement (the window the store identity closes for `otc recv`), the new store's
    renewal packages at or below that ref are deleted unread. The device here is a stand-in that stores every
    package; the relay and the client code are real."""
    from client.rooms import fetch_renewals

    class Device:
        def __init__(self) -> None:
            self.opened: list[str] = []

        def call(self, method: str, **params):  # type: ignore[no-untyped-def]
            if method == "abe_renewal_mailboxes":
                return {"mailboxes": ["renewals"]}
            if method == "abe_open_renewal":
                self.opened.append(params["package"])
                return {"key": {"package": params["package"]}}
            raise AssertionError(method)

    servers = [RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'one.db'}")), "127.0.0.1", 0,
                           threads=8).start()]
    url = servers[0].url
    authority = RelayClient(url)

    class SwappedBeforeTheAck(requests.Session):
        """The operator restarts the relay on a new store just before the laptop's acknowledgement arrives."""

        def post(self, target, json=None, **kwargs):  # type: ignore[no-untyped-def, override]
            if target.endswith("/v1/ack") and len(servers) == 1:
                port = int(url.rsplit(":", 1)[1])
                servers[0].close()
                servers.append(RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'two.db'}")),
                                           "127.0.0.1", port, threads=8).start())
                for n in range(2):
                    authority.send("renewals", f"renewal new {n}", f"new-{n}")  # refs 1, 2 of the new store
            return super().post(target, json=json, **kwargs)

    try:
        for n in range(3):
            authority.send("renewals", f"renewal old {n}", f"old-{n}")
        device = Device()
        fetch_renewals(device, RelayClient(url, session=SwappedBeforeTheAck()))  # type: ignore[arg-type]
        fetch_renewals(device, RelayClient(url))  # type: ignore[arg-type]
        assert device.opened == [f"renewal old {n}" for n in range(3)] + [f"renewal new {n}" for n in range(2)], \
            device.opened
    finally:
        for server in servers:
            server.close()
