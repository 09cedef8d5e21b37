"""A room whose relay comes back on a new store (R7; docs/rooms.md "The relay's store changes (R7)").

Before: the device kept each room's cursor (its last relay ref) with no store, and the laptop read the room's
mailbox after it; a relay back at the same address on a new store (SQLite moved to PostgreSQL, a lost disk)
numbers refs from 1 again, so a room's new items, under the cursor, were never shown. Now the device records the
store with the cursor, the laptop names it, and on a change the room forms again on the new store.

Real device stores behind DeviceRooms, a real relay (restarted on another SQLite file at the same address), and
the laptop's own code (client.rooms.RoomClient) through a stand-in for the device RPC. The hostile relay is
written here: a relay client that lies about the store's identity to one member, and an attacker posting the old
store's items (recorded from it) into the new one.
"""

from __future__ import annotations

import json

import pytest

from client.errors import RelayUnavailable, StoreChanged
from client.relay import RelayClient
from client.rooms import RoomClient, other_store
from device.abe.store import AbeKeys, grant_local
from device.rooms.errors import OtherStore
from device.rooms.protocol import RoomMember
from device.rooms.service import DeviceRooms
from device.rooms.wire import Room
from device.storage.padstore import PadStore
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.test_rooms_e2e import Clock, Owner

POLICY = "STAFF"
NAMES = ("alice", "bob", "carol", "dave")


class Local:
    """The device's room RPC (device/rooms/rpc.py), in process: what RoomClient calls."""

    def __init__(self, rooms: DeviceRooms) -> None:
        self.rooms = rooms

    def call(self, method: str, **p):
        r = self.rooms
        if method == "rooms":
            return r.list()
        if method == "room_receive":
            return r.receive(p["room"], [(ref, text) for ref, text in p["items"]], p.get("store"),
                             p.get("complete", False))
        if method == "room_store":
            return r.new_store(p["room"], p["store"])
        if method == "room_join":
            return {"post": [r.join(p["room"], p.get("name"))]}
        if method == "room_leave":
            return {"post": r.leave(p["room"])}
        if method == "room_send":
            return {"post": [r.send(p["room"], p["text"])]}
        raise AssertionError(method)


class Lying(RelayClient):
    """A relay that tells this laptop its store is ``fake`` (from when ``lying`` is set), though it is the same
    store: it answers every read naming ``fake`` as its own, and names ``fake`` in its answers."""

    fake = "0123456789abcdef"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.lying = False

    def receive(self, cursors, wait=0, limit=100, ack=False, store=None):
        if not self.lying:
            return super().receive(cursors, wait, limit, ack, store)
        if store is not None and store != self.fake:
            raise StoreChanged(self.fake)
        answer = super().receive(cursors, wait, limit, ack, None)
        self.store_seen = self.fake
        return answer


class Member:
    def __init__(self, tmp_path, name: str, auth: PadStore, clock: Clock, relay: RelayClient) -> None:
        PadStore.init(tmp_path / name, name).close()
        self.store = PadStore(tmp_path / name)
        grant_local(auth, self.store, "STAFF")
        self.rooms = DeviceRooms(self.store, Owner(), clock=clock)
        self.client = RoomClient(Local(self.rooms), relay)  # type: ignore[arg-type]
        self.events: list[dict] = []

    def sync(self) -> list[dict]:
        got = self.client.sync("ops")
        self.events += got
        return got

    @property
    def state(self) -> RoomMember:
        return self.rooms.find("ops")

    def texts(self, since: int = 0) -> list[tuple[str, str]]:
        return [(e["sender"], e["text"]) for e in self.events[since:] if e.get("text") is not None]


class MovableRelay:
    """A real relay on a SQLite file, which :meth:`new_store` moves to another at the same address."""

    def __init__(self, tmp_path) -> None:
        self.tmp = tmp_path
        self.server = RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'one.db'}")), "127.0.0.1", 0,
                                  threads=8).start()
        self.url = self.server.url

    def new_store(self, name: str) -> None:
        """Stopped and started again on the same address with another store (``--db``: moved to another
        database, or a lost disk)."""
        port = int(self.url.rsplit(":", 1)[1])
        self.server.close()
        self.server = RelayServer(create_app(RelayConfig(db=f"sqlite:///{self.tmp / name}")), "127.0.0.1", port,
                                  threads=8).start()


class World:
    def __init__(self, tmp_path) -> None:
        self.movable = MovableRelay(tmp_path)
        self.url = self.movable.url
        self.clock = Clock()
        self.auth = PadStore.init(tmp_path / "auth", "auth")
        AbeKeys(self.auth).become_authority()
        self.relay = RelayClient(self.url)
        self.lying = Lying(self.url)
        self.m = {n: Member(tmp_path, n, self.auth, self.clock, self.lying if n == "carol" else self.relay)
                  for n in NAMES}
        self.room = DeviceRooms(self.auth, Owner()).create("ops", POLICY)
        for member in self.m.values():
            member.rooms.add(Room.from_invite(self.room.invite()))

    def new_store(self, name: str) -> None:
        self.movable.new_store(name)

    def items(self) -> list[str]:
        """Everything the room's mailbox holds now, in relay order (what an attacker records)."""
        return [m.contents for m in self.relay.receive({self.room.mailbox: 0}, limit=1000)[0]]

    def post(self, items: list[str]) -> None:
        for i, item in enumerate(items):
            self.relay.send(self.room.mailbox, item, f"attacker-{len(item)}-{i}-{hash(item) & 0xffffffff:x}")

    def converge(self, who: tuple[str, ...], rounds: int = 4) -> None:
        """Each of ``who`` syncs, round after round; a leader that is not there (a membership nobody holds the
        keys of) is passed after its timeout, as on a real clock."""
        for _ in range(rounds):
            for n in who:
                self.m[n].sync()
            if all(self.m[n].rooms.describe("ops")["keyed"] for n in who):
                continue
            self.clock.now += self.m[who[0]].state.leader_timeout + 1
        for n in who:
            self.m[n].sync()

    def send(self, who: str, text: str) -> None:
        self.m[who].client.send("ops", text, wait=0)

    def close(self) -> None:
        for member in self.m.values():
            member.store.close()
        self.auth.close()
        self.movable.server.close()


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def formed(w: World, who: tuple[str, ...]) -> tuple[int, list[bytes], bytes]:
    """The room as every one of ``who`` holds it: the same current epoch, roster and epoch key on each (they do
    not split), every one of them on it; (epoch, roster, key)."""
    states = [w.m[n].state for n in who]
    e = states[0].current_epoch
    assert e is not None
    views = {(s.current_epoch, tuple(s.epochs[e].roster), s.epochs[e].key) for s in states}
    assert len(views) == 1, views
    key = states[0].epochs[e].key
    assert key is not None
    assert all(s.me in states[0].epochs[e].roster for s in states)
    return e, states[0].epochs[e].roster, key


def start(w: World, who: tuple[str, ...] = ("alice", "bob", "carol")) -> None:
    for n in who:
        w.m[n].client.join("ops")
        w.converge(who)
    formed(w, who)


def test_the_rule_is_the_laptops():
    assert not other_store(None, None, 5) and not other_store("", None, 5) and not other_store("a" * 16, None, 5)
    assert not other_store("a" * 16, "a" * 16, 5)
    assert not other_store(None, "a" * 16, 0) and not other_store("", "a" * 16, 0)  # learnt: nothing read yet
    assert other_store(None, "a" * 16, 5) and other_store("", "a" * 16, 5)  # a first identity for a cursor
    assert other_store("a" * 16, "b" * 16, 0) and other_store("a" * 16, "b" * 16, 5)


def test_before_the_new_store_numbered_under_the_cursor_and_nothing_was_read(world):
    """The reproduction: a laptop from before R7 (it names no store) reads nothing of the new store."""
    w = world
    start(w)
    for n in ("alice", "bob", "carol", "alice", "bob"):
        w.send(n, f"old {n}")
        w.converge(("alice", "bob", "carol"), 1)
    cursor = w.m["bob"].state.last_ref
    some = w.items()[-1]
    w.new_store("two.db")
    assert w.relay.receive({w.room.mailbox: 0})[0] == [] and cursor > 3
    w.post([some])  # a member's item: ref 1 of the new store
    assert w.relay.receive({w.room.mailbox: cursor})[0] == []  # read after the cursor: nothing, for good
    assert [m.ref for m in w.relay.receive({w.room.mailbox: 0})[0]] == [1]


def test_three_members_form_the_room_again_on_the_new_store(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    w.send("alice", "before")
    w.converge(who, 1)
    old_epoch, _, old_key = formed(w, who)
    w.new_store("two.db")
    marks = {n: len(w.m[n].events) for n in who}
    w.converge(who)
    # Each member was told once, in one event, and joined again.
    for n in who:
        notes = [e for e in w.m[n].events[marks[n]:] if e["kind"] == "store"]
        assert notes == [{"ref": 0, "kind": "store", "outcome": "changed", "first": False, "rejoin": True}]
        assert w.m[n].state.store == w.relay.store_seen and w.m[n].state.store
    e, roster, key = formed(w, who)
    assert len(roster) == 3 and key != old_key
    for n in who:  # the old store's epochs are gone from every device: nothing of them can meet the new refs
        assert old_epoch not in w.m[n].state.epochs or w.m[n].state.epochs[old_epoch].key != old_key
    since = {n: len(w.m[n].events) for n in who}
    for n in who:
        w.send(n, f"after from {n}")
        w.converge(who, 1)
    for n in who:
        assert w.m[n].texts(since[n]) == [(m, f"after from {m}") for m in who]
    # No second notice, and nothing refused or unreadable on the new store.
    for n in who:
        later = w.m[n].events[marks[n]:]
        assert sum(e["kind"] == "store" for e in later) == 1
        assert not [e for e in later if e["outcome"] in ("refused", "unreadable")]


def test_a_member_offline_during_the_change_converges_when_it_comes_back(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    w.new_store("two.db")
    w.converge(("alice", "bob"))
    w.send("alice", "while carol was away")
    w.converge(("alice", "bob"), 1)
    mark = len(w.m["carol"].events)
    w.converge(who)
    formed(w, who)
    assert [e["kind"] for e in w.m["carol"].events[mark:]].count("store") == 1
    w.send("bob", "carol is back")
    w.converge(who, 1)
    assert ("bob", "carol is back") in w.m["carol"].texts(mark)
    # What was sent before carol joined the new store is not hers to read (as for any newcomer).
    assert ("alice", "while carol was away") not in w.m["carol"].texts(mark)


def test_a_member_not_joined_stays_out_and_a_device_added_later_joins_the_new_store(world):
    w = world
    start(w, ("alice", "bob"))
    w.m["carol"].sync()  # carol follows the room without joining
    w.new_store("two.db")
    w.converge(("alice", "bob"))
    w.m["carol"].sync()
    assert [e for e in w.m["carol"].events if e["kind"] == "store"][-1]["rejoin"] is False
    assert not w.m["carol"].rooms.describe("ops")["joined"] and not w.m["carol"].rooms.describe("ops")["joining"]
    formed(w, ("alice", "bob"))
    assert len(w.m["alice"].state.roster) == 2
    # dave adds the room only now: the new store is the first he reads (no notice), and he joins it.
    mark = len(w.m["dave"].events)
    w.m["dave"].client.join("ops")
    w.converge(("alice", "bob", "dave"))
    formed(w, ("alice", "bob", "dave"))
    assert not [e for e in w.m["dave"].events[mark:] if e["kind"] == "store"]


def test_the_device_refuses_items_of_another_store_than_its_cursors(world):
    w = world
    start(w, ("alice",))
    rooms = w.m["alice"].rooms
    recorded = rooms.describe("ops")["store"]
    assert recorded and rooms.describe("ops")["last_ref"] > 0
    with pytest.raises(OtherStore):
        rooms.receive("ops", [], "f" * 16)
    assert rooms.receive("ops", [], "")["status"]["store"] == recorded  # a relay naming none: read as before
    before = json.dumps(rooms.find("ops").to_dict(), sort_keys=True)
    answer = rooms.new_store("ops", recorded)
    assert (answer["events"], answer["post"]) == ([], [])
    assert json.dumps(rooms.find("ops").to_dict(), sort_keys=True) == before  # the same store: nothing changes


# -- the hostile relay ------------------------------------------------------------------------------------------


def test_a_lie_about_the_store_splits_nobody_and_shows_nothing_twice(world):
    """The relay tells carol its store changed, though it did not: she reads the room from its start as a
    newcomer, ends her old membership and joins again. The others see a leave and a join; all three converge;
    what carol had read does not come again as new."""
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    for n in who:
        w.send(n, f"old {n}")
        w.converge(who, 1)
    mark = {n: len(w.m[n].events) for n in who}
    w.lying.lying = True
    w.converge(who)
    e, roster, _ = formed(w, who)
    assert len(roster) == 3  # carol's old membership ended by her own leave: no ghost on the roster
    assert [x["kind"] for x in w.m["carol"].events[mark["carol"]:]].count("store") == 1
    assert w.m["carol"].texts(mark["carol"]) == []  # the old messages: not shown again
    for n in who:
        w.send(n, f"new {n}")
        w.converge(who, 1)
    for n in who:
        # Carol's new membership chose the name her old one had: shown with its short id, by everyone, as any
        # member joining again is (RoomMember.label).
        assert [(s.split("~")[0], t) for s, t in w.m[n].texts(mark[n])] == [(m, f"new {m}") for m in who], n
    # A relay that answers from another store at each request: an error, not a loop of re-formings.
    class Flap(Lying):
        def receive(self, cursors, wait=0, limit=100, ack=False, store=None):
            self.fake = f"{int(self.fake, 16) + 1:016x}"
            return super().receive(cursors, wait, limit, ack, store)

    flap = Flap(w.url)
    flap.lying = True
    client = RoomClient(Local(w.m["carol"].rooms), flap)  # type: ignore[arg-type]
    with pytest.raises(RelayUnavailable, match="another store at each request"):
        client.sync("ops")


def replayed_everything(w: World, who: tuple[str, ...]) -> list[str]:
    """The old store's life: the three members and dave, who joins, reads, and leaves; messages of several epochs
    (so distributions, leaves, contributions of every kind). Returns what the relay recorded."""
    start(w, who)
    w.m["dave"].client.join("ops")
    w.converge((*who, "dave"))
    for n in (*who, "dave"):
        w.send(n, f"old {n}")
        w.converge((*who, "dave"), 1)
    w.m["dave"].client.leave("ops")
    w.converge(who)
    w.send("alice", "old after dave left")
    w.converge(who, 1)
    return w.items()


@pytest.mark.parametrize("where", ["first", "interleaved", "without-leaves"])
def test_the_old_stores_items_replayed_into_the_new_one_gain_nothing(world, where):
    """A hostile relay posts the old store's items (recorded) into the new store: before anything else, between
    the members' new items, or with every leave left out (so each old membership, dave's too, goes on the new
    roster). Nobody outside the room reads anything; dave, who left, is not back (his device deleted the keys of
    his old membership when he left, and a copy of his device now opens nothing); no old message is shown as new
    or under another sender; the honest members hold one roster and one key."""
    w = world
    who = ("alice", "bob", "carol")
    recorded = replayed_everything(w, who)
    dave_left = json.loads(json.dumps(w.m["dave"].state.to_dict()))
    w.new_store("two.db")
    replay = recorded if where != "without-leaves" else [
        item for item in recorded if not _is_leave(w, item)]
    if where in ("first", "without-leaves"):
        w.post(replay)
    mark = {n: len(w.m[n].events) for n in (*who, "dave")}
    for i, n in enumerate(who):
        w.m[n].sync()
        if where == "interleaved":
            w.post(replay[i::3])
    w.converge(who, 6)
    e, roster, key = formed(w, who)
    since = {n: len(w.m[n].events) for n in (*who, "dave")}
    for n in who:
        w.send(n, f"new {n}")
        w.converge(who, 1)
    if where == "interleaved":
        w.post(recorded)  # and once more, after everything
        w.converge(who, 1)
    for n in who:
        shown = w.m[n].texts(mark[n])
        assert all(not text.startswith("old") for _, text in shown), shown  # nothing old shown as new
        # Under the right names, and the right memberships: the replayed old ones chose the same names, so each
        # is shown with its short id, which is the sender's new membership's.
        assert [(s.split("~")[0], t) for s, t in w.m[n].texts(since[n])] == [(m, f"new {m}") for m in who]
        assert [e["sender_id"] for e in w.m[n].events[since[n]:] if e.get("text")] == [
            w.m[m].state.me.hex()[:12] for m in who]  # type: ignore[union-attr]
    formed(w, who)
    # dave: his device follows the room without being in it, and reads nothing new.
    w.m["dave"].sync()
    assert not w.m["dave"].rooms.describe("ops")["joined"]
    assert w.m["dave"].texts(mark["dave"]) == []
    # A thief with dave's device as it was after his leave (its state and its attribute key) opens nothing of the
    # new store, from the start.
    thief = RoomMember.from_dict(dave_left, AbeKeys(w.m["dave"].store), clock=w.clock)
    thief, _ = thief.on_new_store(w.relay.store_seen or "")
    everything = w.relay.receive({w.room.mailbox: 0}, limit=1000)[0]
    assert not [t for t in (thief.receive(m.ref, m.contents).text for m in everything) if t]
    # An outsider (a device of the authority with no satisfying key: none here; the authority itself holds no
    # member key) reading with a fresh state opens nothing either.
    outsider = RoomMember(w.room, AbeKeys(w.auth), clock=w.clock)
    assert not [t for t in (outsider.receive(m.ref, m.contents).text for m in everything) if t]
    if where == "without-leaves":
        # The old memberships are on the roster (as a relay withholding their leaves keeps them), sealed the
        # key, opened by nobody: every member's device deleted their keys (at the store change, or at the leave).
        assert len(roster) > 3


def _is_leave(w: World, item: str) -> bool:
    from device.rooms import wire

    return isinstance(wire.decode(wire.from_text(item), w.room.room_id), wire.Leave)


def test_a_room_kept_from_before_r7_takes_the_relays_first_identity_as_a_store_change(world):
    """A room state stored before R7 has a cursor and no store: the relay may have moved meanwhile (R5 of the
    1:1 review), so the first identity it names is a store change, as for the laptop's cursors: the room forms
    again on the store the relay names, said once ("names its store for the first time")."""
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    for n in who:  # states as a device from before R7 stored them
        state = w.m[n].state.to_dict()
        del state["store"]
        w.m[n].rooms.store.save(w.m[n].state.room.room_id, state)
        w.m[n].rooms = DeviceRooms(w.m[n].store, Owner(), clock=w.clock)
        w.m[n].client = RoomClient(Local(w.m[n].rooms), w.relay)  # type: ignore[arg-type]
        assert w.m[n].rooms.describe("ops")["store"] is None
    mark = {n: len(w.m[n].events) for n in who}
    w.converge(who)
    for n in who:
        assert [e for e in w.m[n].events[mark[n]:] if e["kind"] == "store"] == [
            {"ref": 0, "kind": "store", "outcome": "changed", "first": True, "rejoin": True}]
    formed(w, who)
    w.send("bob", "on")
    w.converge(who, 1)
    assert all(("bob", "on") in [(s.split("~")[0], t) for s, t in w.m[n].texts(mark[n])] for n in who)


def test_a_relay_naming_no_store_is_read_as_before(world):
    """A relay from before store identities: nothing recorded but "", nothing reset, the room read as before."""
    w = world

    class Unnamed(RelayClient):
        def receive(self, cursors, wait=0, limit=100, ack=False, store=None):
            answer = super().receive(cursors, wait, limit, ack, None)
            self.store_seen = None
            return answer

    unnamed = Unnamed(w.url)
    for n in ("alice", "bob"):
        w.m[n].client = RoomClient(Local(w.m[n].rooms), unnamed)  # type: ignore[arg-type]
    start(w, ("alice", "bob"))
    assert all(w.m[n].rooms.describe("ops")["store"] == "" for n in ("alice", "bob"))
    assert not [e for n in ("alice", "bob") for e in w.m[n].events if e["kind"] == "store"]


def test_a_revoked_member_stays_out_of_the_new_store(world):
    """Dave is revoked and the period ended early: the room moved to period 2 without him. On the new store the
    relay replays the whole old store first (dave's period-1 contributions among it), and dave's own device (its
    period-1 key still running in its eyes, wanting to be in the room) joins the new store first, under period 1.
    The renewed members' contributions move the room to period 2 past all of it: dave reads nothing new, and
    what he sends is shown to nobody."""
    import os

    from device.abe.renewal import plan_renewal, renew
    from tests.test_rooms_e2e import fetch_renewals

    w = world
    who = ("alice", "bob", "carol")
    start(w, (*who, "dave"))
    keys = AbeKeys(w.auth)
    keys.revoke("dave")
    for r in renew(keys, plan_renewal(keys, end_period=True, now=w.clock.now), os.urandom, now=w.clock.now):
        w.relay.send(r.mailbox, r.package, r.key_id.hex())
    for n in who:
        w.m[n].relay = w.relay  # type: ignore[attr-defined]
        assert len(fetch_renewals(w.m[n])) == 1  # type: ignore[arg-type]
    w.converge((*who, "dave"))
    assert w.m["alice"].state.period == 2
    formed(w, who)
    recorded = w.items()
    w.new_store("two.db")
    w.post(recorded)
    mark = {n: len(w.m[n].events) for n in (*who, "dave")}
    w.converge(("dave", *who), 6)
    e, roster, _ = formed(w, who)
    assert w.m["alice"].state.period == 2 and len(roster) == 3
    assert w.m["dave"].state.me not in roster
    assert all(w.m["alice"].state.members[m].period == 2 for m in roster)
    try:
        w.m["dave"].client.send("ops", "revoked but talking", wait=0)
    except Exception:  # noqa: BLE001 - whatever his device says (no key, moving): nothing to show anyway
        pass
    for n in who:
        w.send(n, f"new {n}")
        w.converge((*who, "dave"), 1)
    assert not [t for _, t in w.m["dave"].texts(mark["dave"]) if t.startswith("new")]
    for n in who:
        shown = [t for _, t in w.m[n].texts(mark[n])]
        assert shown == [f"new {m}" for m in who], (n, shown)


def test_a_send_the_owner_approves_while_the_room_forms_again_sends_nothing(world):
    """The owner confirms a message while the chat's reader finds the store changed: nothing is sent, and the
    room's new state is not overwritten by the one the owner was shown."""
    from device.rooms.errors import EpochChanged

    w = world
    start(w, ("alice", "bob"))
    alice = w.m["alice"]
    recorded = alice.rooms.describe("ops")["store"]
    other = "f" * 16 if recorded != "f" * 16 else "e" * 16

    class Owner:
        def ask(self, request) -> bool:
            alice.rooms.new_store("ops", other)  # meanwhile, on the reader's thread
            return True

    alice.rooms.confirm = Owner()  # type: ignore[assignment]
    with pytest.raises(EpochChanged, match="store changed while you decided"):
        alice.rooms.send("ops", "not sent")
    assert alice.rooms.describe("ops")["store"] == other and alice.rooms.describe("ops")["last_ref"] == 0
    assert DeviceRooms(alice.store, Owner(), clock=w.clock).describe("ops")["store"] == other  # as stored


def test_a_membership_from_before_display_names_joins_the_new_store_under_the_devices_name(world):
    """A state stored before display names holds none: contributing again without one is refused in a period the
    room tags (here period 1 is not tagged: the name is taken all the same), which would have kept the member out
    of the new store and failed every sync."""
    w = world
    who = ("alice", "bob")
    start(w, who)
    state = w.m["alice"].state.to_dict()
    state["name"] = None
    w.m["alice"].rooms.store.save(w.m["alice"].state.room.room_id, state)
    w.m["alice"].rooms = DeviceRooms(w.m["alice"].store, Owner(), clock=w.clock)
    w.m["alice"].client = RoomClient(Local(w.m["alice"].rooms), w.relay)  # type: ignore[arg-type]
    assert w.m["alice"].state.name is None
    w.new_store("two.db")
    w.converge(who)
    formed(w, who)
    assert w.m["alice"].rooms.describe("ops")["display_name"] == "alice"
