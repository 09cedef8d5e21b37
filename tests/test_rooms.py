"""The room protocol as a state machine: epochs, leader duty, counting, refusals, deletion, storage."""

from __future__ import annotations

import base64
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.abe.scheme import encapsulate, keygen
from device.rooms import wire
from device.rooms.errors import MalformedRoomData, NoEpochKey, NotJoined
from device.rooms.protocol import RoomMember
from device.rooms.storage import MemoryRoomStore
from device.rooms.wire import Room
from tests.rooms_helpers import Keys, World

ATTRS = ["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS", "OPS"]  # the last does not satisfy the policy


def joined_world(attrs=ATTRS) -> World:
    w = World(attrs)
    for m in w.members:
        w.log.post(m.join())
        w.log.sync()
    return w


def outcomes(events, kind=None):
    return [(e.kind, e.outcome) for e in events if kind is None or e.kind == kind]


def test_satisfying_members_share_the_epoch_key_and_read_each_other():
    w = joined_world()
    a, b, c, d = w.members
    e = a.current_epoch
    assert {m.current_epoch for m in w.members} == {e}
    keys = {m.epochs[e].key for m in (a, b, c)}
    assert len(keys) == 1 and None not in keys
    assert d.epochs[e].key is None
    for m, text in ((a, "from a"), (b, "from b"), (c, "from c")):
        w.log.post(m.send(text))
    w.log.sync()
    for m in (a, b, c):
        assert w.log.texts(m) == ["from a", "from b", "from c"]
    # The fourth posted a contribution (it is on everyone's roster) but reads nothing.
    assert w.log.texts(d) == []
    assert a.status()["members"] == 4
    with pytest.raises(NoEpochKey):
        d.send("let me in")


def test_a_join_costs_each_existing_member_exactly_one_decapsulation():
    w = World(["STAFF,ADMIN"] * 6)
    for n, newcomer in enumerate(w.members):
        before = [m.decapsulations for m in w.members]
        w.log.post(newcomer.join())
        w.log.sync()
        after = [m.decapsulations for m in w.members]
        for i in range(n):
            assert after[i] - before[i] == 1
        assert after[n] - before[n] == n  # the newcomer: each contribution on the roster, once
        assert all(after[i] == 0 for i in range(n + 1, len(w.members)))  # not yet members: nothing
    e = w.members[0].current_epoch
    assert len({m.epochs[e].key for m in w.members}) == 1


def test_a_leaver_cannot_read_the_next_epoch_even_with_everything_it_had():
    w = joined_world()
    a, b, c, d = w.members
    # The leaver's whole device as it was just before it left: X25519, Ed25519, k_j values, epoch keys.
    snapshot = json.loads(json.dumps(b.to_dict()))
    w.log.post(b.leave())
    w.log.sync()
    assert not b.joined and b._x is None and b._ks == {}
    e = a.current_epoch
    assert a.epochs[e].key is not None and a.status()["epoch_members"] == 3
    w.log.post(a.send("b is gone"))
    w.log.sync()
    assert w.log.texts(c)[-1] == "b is gone"
    assert "b is gone" not in w.log.texts(b)
    # A copy that kept the leaver's keys, with its attribute key, reads the next epoch's items: nothing opens.
    thief = RoomMember.from_dict(snapshot, b.keys, clock=w.clock)
    events = [thief.receive(ref, text) for ref, text in enumerate(w.log.items, 1) if ref > thief.last_ref]
    assert ("distribution", "accepted") not in outcomes(events)
    assert all(ev.text is None for ev in events)
    assert thief.epochs[e].key is None


def test_stolen_attribute_key_after_deletion_opens_no_recorded_message():
    w = joined_world()
    a, b, c, d = w.members
    old = a.current_epoch
    w.log.post(a.send("secret of the old epoch"))
    w.log.sync()
    w.log.post(c.leave())
    w.log.sync()
    w.clock.now += a.grace + 1
    w.log.post(a.send("tick"))
    w.log.sync()
    assert old not in a.epochs and old not in c.epochs  # deleted on schedule, everywhere
    assert c._x is None and c._ks == {}
    # The thief takes c's attribute key and c's device state after deletion, and has recorded the relay.
    thief = RoomMember.from_dict(json.loads(json.dumps(c.to_dict())), c.keys, clock=w.clock)
    thief.last_ref = 0
    texts = [thief.receive(ref, t).text for ref, t in enumerate(w.log.items, 1)]
    assert "secret of the old epoch" not in texts
    # Nor does a fresh start with c's attribute key (and a's, still a member) open it: K_abe is
    # computable from the recorded contributions, but G_e was sealed to X25519 keys the thief lacks.
    for keys in (c.keys, a.keys):
        fresh = w.member(keys)
        events = [fresh.receive(ref, t) for ref, t in enumerate(w.log.items, 1)]
        assert all(ev.text is None for ev in events)


def test_leader_that_cannot_distribute_is_replaced_after_the_timeout():
    w = World(["OPS", "STAFF,ADMIN", "STAFF,OPS"])  # the leader (first on the roster) is not satisfied
    d, a, b = w.members
    for m in w.members:
        w.log.post(m.join())
        w.log.sync()
    e = a.current_epoch
    assert a.epochs[e].roster[0] == d.me and a.epochs[e].key is None
    # a is second: its turn comes after one timeout; b's after two.
    w.clock.now += a.leader_timeout
    w.log.sync()
    assert a.epochs[e].key is not None and a.epochs[e].key == b.epochs[e].key
    leaders = [ev.sender_id for ev in w.log.events[id(b)] if ev.kind == "distribution" and ev.outcome == "accepted"]
    assert leaders[-1] == a.me[:6].hex()


def tamper(text: str, at: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_tampered_and_forged_distributions_are_refused_cleanly():
    w = World(["STAFF,ADMIN", "STAFF,OPS", "OPS"])
    a, b, d = w.members
    for m in w.members:
        w.log.post(m.join())
        w.log.deliver(a), w.log.deliver(b), w.log.deliver(d)
    e = a.current_epoch
    (genuine,) = a.duties()
    text = wire.to_text(genuine)
    n = len(base64.b64decode(text))
    # Altered anywhere: header, sid, a sealed G_e, the MAC, the signature.
    for at in (30, 40, n - 150, n - 80, n - 5):
        ref = w.log.post(tamper(text, at))
        assert b.receive(ref, w.log.items[ref - 1]).outcome == "refused"
    # One that leaves out a member, made by a real member with the real K_abe: refused.
    roster = b.epochs[e].roster
    short = wire.distribution(w.room.room_id, e, wire.sid(w.room.room_id, e, roster), a.me,
                              [(m, a.members[m].x_pub) for m in roster[:-1]], os.urandom(32), a.epochs[e].kabe,
                              _sig(a), _x())
    ref = w.log.post(short)
    assert b.receive(ref, w.log.items[ref - 1]).outcome == "refused"
    # A forgery by the unsatisfied member: it is on the roster and signs, but cannot know K_abe.
    forged = wire.distribution(w.room.room_id, e, wire.sid(w.room.room_id, e, roster), d.me,
                               [(m, a.members[m].x_pub) for m in roster], os.urandom(32), os.urandom(32),
                               _sig(d), _x())
    ref = w.log.post(forged)
    assert b.receive(ref, w.log.items[ref - 1]).outcome == "refused"
    assert b.epochs[e].key is None  # nothing changed
    ref = w.log.post(genuine)
    assert b.receive(ref, w.log.items[ref - 1]).outcome == "accepted"
    assert a.receive(ref, w.log.items[ref - 1]).outcome == "accepted"
    assert a.epochs[e].key == b.epochs[e].key
    # Replayed later: ignored, the key stays.
    ref = w.log.post(genuine)
    assert b.receive(ref, w.log.items[ref - 1]).outcome == "ignored"


def _sig(member: RoomMember):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(member._sig)


def _x():
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.generate()


def test_tampered_replayed_and_forged_messages_are_refused_cleanly():
    w = joined_world()
    a, b, c, d = w.members
    genuine = wire.to_text(a.send("hello"))
    n = len(base64.b64decode(genuine))
    for at in (25, 30, 60, n - 70, n - 5):
        ref = w.log.post(tamper(genuine, at))
        assert b.receive(ref, w.log.items[ref - 1]).outcome in ("refused", "unreadable")
    ref = w.log.post(genuine)
    assert b.receive(ref, genuine).text == "hello"
    ref = w.log.post(genuine)  # the relay replays it
    assert b.receive(ref, genuine).outcome == "refused"
    # A member signing as itself but sealed with the wrong slot, or the unsatisfied member guessing a key.
    e = a.current_epoch
    fake = wire.message(w.room.room_id, e, d.me, a.epochs[e].roster.index(d.me), 1, os.urandom(32), b"hi", _sig(d))
    ref = w.log.post(fake)
    assert b.receive(ref, w.log.items[ref - 1]).outcome == "refused"
    ref = w.log.post(a.send("still fine"))
    assert b.receive(ref, w.log.items[ref - 1]).text == "still fine"
    ref = w.log.post("not base64!")
    assert b.receive(ref, "not base64!").outcome == "refused"


def test_contributions_that_do_not_decapsulate_are_skipped_by_every_member():
    w = joined_world(["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"])
    a, b, c = w.members
    e = a.current_epoch
    # Under another policy; a copied ciphertext with the copier's own keys (bind fails); garbage.
    other = encapsulate(w.master.public, "STAFF")
    x, s = _x(), _sig(a)
    ref1 = w.log.post(wire.contribution(w.room.room_id, other.ciphertext.encode(), other.key, x, s))
    mine = encapsulate(w.master.public, w.room.policy)
    honest = wire.contribution(w.room.room_id, mine.ciphertext.encode(), mine.key, x, s)
    copied = honest[:-wire.SIG_BYTES - 32] + os.urandom(32)
    ref2 = w.log.post(copied + s.sign(copied))
    w.log.sync()
    for m in w.members:
        ev = {x.ref: x.outcome for x in w.log.events[id(m)]}
        assert ev[ref1] == "skipped" and ev[ref2] == "skipped"
        assert m.current_epoch == e and len(m.roster) == 3
    # A late newcomer, reading the history, skips the copy in its one pass too.
    late = w.member(Keys(w.master.public, keygen(w.master, "STAFF,OPS")))
    w.log.members.append(late)
    w.log.post(late.join())
    w.log.sync()
    assert late.roster == a.roster and late.decapsulations == 4  # three members and the bad copy
    assert late.epochs[late.current_epoch].key == a.epochs[a.current_epoch].key


def test_state_survives_the_store_midway():
    w = joined_world(["STAFF,ADMIN", "STAFF,OPS"])
    a, b = w.members
    store = MemoryRoomStore()
    store.save(w.room.room_id, b.to_dict())
    b2 = RoomMember.from_dict(store.load_all()[w.room.room_id], b.keys, clock=w.clock)
    w.log.members[1] = b2
    w.log.events[id(b2)] = []
    w.log.post(a.send("one"))
    w.log.post(b2.send("two"))
    w.log.sync()
    assert w.log.texts(b2) == ["one", "two"] and w.log.texts(a)[-2:] == ["one", "two"]
    store.delete(w.room.room_id)
    assert store.load_all() == {}


def test_not_joined_cannot_send_or_leave():
    w = World(["STAFF,ADMIN"])
    (a,) = w.members
    with pytest.raises(NotJoined):
        a.send("x")
    with pytest.raises(NotJoined):
        a.leave()


def test_invite_round_trip_and_refusals():
    w = World(["STAFF"])
    invite = w.room.invite()
    assert Room.from_invite(invite) == w.room
    for bad in ("", "otcroom1.", "otcroom1.!!!", "hello", "otcroom1." + "A" * 9000,
                "otcroom1." + base64.urlsafe_b64encode(b'{"room_id": 1}').decode()):
        with pytest.raises(MalformedRoomData):
            Room.from_invite(bad)


@given(st.binary(max_size=400))
@settings(max_examples=200, deadline=None)
def test_decoding_refuses_garbage_with_one_error(data):
    room_id = bytes(16)
    for raw in (data, wire.MAGIC + bytes([data[0] % 5 if data else 1]) + room_id + data):
        try:
            wire.decode(raw, room_id)
        except MalformedRoomData:
            pass


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_invite_parser_refuses_garbage_with_one_error(text):
    try:
        Room.from_invite("otcroom1." + text)
    except MalformedRoomData:
        pass


def test_a_member_that_leaves_and_rejoins_reads_what_follows_and_nothing_from_while_away():
    """Issue 22: leaving deleted every k_j but left the contributions marked settled, so a rejoin never keyed."""
    w = joined_world()
    a, b, c, d = w.members
    first_membership = b.me
    w.log.post(b.leave())
    w.log.sync()
    w.log.post(a.send("while b was away"))
    w.log.sync()
    old_me = a.status()["members"]  # 3 on the roster while b is away
    w.log.post(b.join())
    w.log.sync()
    assert old_me == 3 and b.joined and b.me != first_membership  # a fresh membership key
    e = a.current_epoch
    assert b.current_epoch == e and b.epochs[e].key is not None and b.epochs[e].key == a.epochs[e].key
    assert b.status()["keyed"] and b.status()["epoch_members"] == 4
    w.log.post(a.send("welcome back"))
    w.log.post(b.send("glad to be back"))
    w.log.sync()
    assert "welcome back" in w.log.texts(b) and "glad to be back" in w.log.texts(c)
    assert "while b was away" not in w.log.texts(b)
    # A second leave and rejoin works the same way, through the store too.
    w.log.post(b.leave())
    w.log.sync()
    b2 = RoomMember.from_dict(json.loads(json.dumps(b.to_dict())), b.keys, clock=w.clock)
    w.log.members[w.log.members.index(b)] = b2
    w.log.post(b2.join())
    w.log.sync()
    w.log.post(c.send("third time"))
    w.log.sync()
    assert w.log.texts(b2)[-1] == "third time"


def _events(w: World, member: RoomMember, kind: str = "message") -> list:
    return [e for e in w.log.events[id(member)] if e.kind == kind and e.outcome == "accepted"]


def test_senders_are_shown_by_the_display_name_their_contribution_binds():
    w = World(ATTRS[:3])
    a, b, c = w.members
    for m, name in ((a, "alice"), (b, "bob"), (c, "carol")):
        w.log.post(m.join(name))
        w.log.sync()
    w.log.post(b.send("hello"))
    w.log.sync()
    (seen,) = _events(w, a)
    assert (seen.sender, seen.sender_id, seen.text) == ("bob", b.me[:6].hex(), "hello")
    assert a.status()["display_name"] == "alice" and b.label(a.me) == "alice"
    # The name is inside the signed contribution and under its bind tag (a MAC under k_j): nobody can change
    # the name in bob's item (its signature, and the bind, fail), and a member who learnt bob's k_j (only
    # once bob's contribution is on the relay) cannot wrap bob's ciphertext in keys and a name of its own:
    # that ciphertext is taken.
    raw = next(r for r in map(wire.from_text, w.log.items) if wire.member_id(r) == b.me)
    item = wire.decode(raw, w.room.room_id)
    assert isinstance(item, wire.Contribution) and item.name == "bob"
    renamed = raw.replace(b"\x03bob", b"\x03eve")
    assert a.receive(len(w.log.items) + 1, wire.to_text(renamed)).outcome == "refused"  # its signature fails
    k = a._ks[b.me]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    x, sig = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    copied = wire.contribution(w.room.room_id, item.ciphertext_bytes, k, x, sig, "bob2")
    assert a.receive(len(w.log.items) + 2, wire.to_text(copied)).outcome == "ignored"  # that ciphertext is taken


def test_a_name_two_memberships_chose_is_shown_with_each_ones_id():
    w = World(ATTRS[:3])
    a, b, c = w.members
    for m, name in ((a, "alice"), (b, "bob"), (c, "bob")):  # c claims bob's name
        w.log.post(m.join(name))
        w.log.sync()
    w.log.post(b.send("the real bob"))
    w.log.post(c.send("also bob"))
    w.log.sync()
    shown = {e.text: e.sender for e in _events(w, a)}
    assert shown == {"the real bob": f"bob~{b.me[:6].hex()}", "also bob": f"bob~{c.me[:6].hex()}"}
    assert shown["the real bob"] != shown["also bob"]
    # Even once the first bob left, the second is still shown with its id: the name was taken in this room.
    w.log.post(b.leave())
    w.log.sync()
    w.log.post(c.send("only bob now"))
    w.log.sync()
    assert _events(w, a)[-1].sender == f"bob~{c.me[:6].hex()}"
    with pytest.raises(Exception):
        wire.contribution(w.room.room_id, b"", os.urandom(32), *(_keys()), "bob~123456")  # not a name


def _keys():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def test_a_type_1_contribution_is_still_read_and_shown_by_its_id():
    w = World(ATTRS[:2])
    a, b = w.members
    w.log.post(a.join("alice"))
    w.log.sync()
    w.log.post(b.join())  # no name: a type-1 contribution
    w.log.sync()
    w.log.post(b.send("anonymous"))
    w.log.sync()
    assert _events(w, a)[-1].sender == f"member~{b.me[:6].hex()}"
    state = a.to_dict()
    for row in state["members"]:
        del row[7:]  # a state stored before names
    old = RoomMember.from_dict(json.loads(json.dumps(state)), a.keys, clock=w.clock)
    assert old.label(a.me) == f"member~{a.me[:6].hex()}"


def _period_world() -> tuple[World, list[Keys]]:
    """Three members with keys of period 1; returns the world and a period-2 renewal for each."""
    w = World(ATTRS[:3])
    for keys, attrs in zip(w.keys, ATTRS[:3]):
        keys.member = keygen(w.master, attrs, period=1)
    for m in w.members:
        w.log.post(m.join())
        w.log.sync()
    renewed = [Keys(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:3]]
    return w, renewed


def _renew(keys: Keys, new: Keys) -> None:
    """The device now holds its period-1 key and the period-2 one (as a device store would)."""
    old = keys.member
    assert old is not None and new.member is not None

    def decaps(ct, old=old, new=new.member):
        for k in (new, old):
            if ct.policy.prune(k.Kx) is not None:
                from device.abe.scheme import decapsulate
                return decapsulate(k, ct, keys.public)
        from device.abe.errors import NotSatisfied
        raise NotSatisfied()

    keys.decapsulate = decaps  # type: ignore[method-assign]
    keys.periods_held = lambda aid: {1: (0.0, float("inf")), 2: (0.0, float("inf"))}  # type: ignore[method-assign]


def test_renewed_members_move_the_room_to_the_next_period_one_by_one():
    w, renewed = _period_world()
    a, b, c = w.members
    assert a.period == 1 and a.status()["keyed"]
    _renew(w.keys[0], renewed[0])
    w.log.sync()  # a re-contributes by itself under period 2: the room moves; b and c hold it aside
    assert a.period == 2 and a.status()["my_period"] == 2 and a.status()["members"] == 1
    assert b.period == 1 and b.status()["later_periods"] == [2]
    w.log.post(a.send("only a can read"))
    w.log.sync()
    assert "only a can read" not in w.log.texts(b)
    _renew(w.keys[1], renewed[1])  # b is renewed later: it catches up from what it held aside
    w.log.sync()
    assert b.period == 2 and b.status()["keyed"] and a.status()["epoch_members"] == 2
    e = a.current_epoch
    assert a.epochs[e].key == b.epochs[e].key
    w.log.post(b.send("b is back in"))
    w.log.sync()
    assert "b is back in" in w.log.texts(a) and "b is back in" not in w.log.texts(c)
    # c, not renewed, joins again with its period-1 key: skipped by a and b.
    w.log.post(c.leave())
    w.log.sync()
    w.log.post(c.join())
    w.clock.now += 3 * a.leader_timeout
    w.log.sync()
    assert a.status()["epoch_members"] == 2
    w.log.post(a.send("still two"))
    w.log.sync()
    assert "still two" in w.log.texts(b) and "still two" not in w.log.texts(c)


def test_a_contribution_under_a_period_nobody_holds_changes_nothing():
    """Anyone can encapsulate under any period: one nobody holds keys of is held aside, never moves the room."""
    w, _ = _period_world()
    a, b, c = w.members
    room = RoomMember(w.room, w.keys[0], clock=w.clock)
    enc = encapsulate(w.master.public, room.policy_for(99))
    x, sig = _keys()
    w.log.post(wire.contribution(w.room.room_id, enc.ciphertext.encode(), enc.key, x, sig, "mallory"))
    w.log.sync()
    assert [m.period for m in (a, b, c)] == [1, 1, 1] and a.status()["later_periods"] == [99]
    assert a.status()["members"] == 3 and a.status()["keyed"]
    w.log.post(c.send("nothing changed"))
    w.log.sync()
    assert "nothing changed" in w.log.texts(a)
    # And the state, with what it holds aside, comes back from the store the same.
    again = RoomMember.from_dict(json.loads(json.dumps(a.to_dict())), a.keys, clock=w.clock)
    assert again.period == 1 and list(again.future) == list(a.future)


def test_an_honest_member_neither_sends_nor_distributes_once_its_period_has_ended():
    w, _ = _period_world()
    a, b, c = w.members
    for keys in w.keys:
        keys.windows[1] = (0.0, w.clock.now + 60)
    w.clock.now += 61
    with pytest.raises(Exception, match="period has ended"):
        a.send("too late")
    w.log.post(c.leave())
    w.log.sync()
    assert a.duties() == [] and not a.status()["keyed"]


def test_a_hostile_relays_huge_item_ref_is_refused_and_changes_nothing():
    """An outside review: a ref of 2^64 on a contribution raised struct.error inside receive (an internal
    error), after adding the member with no epoch; the room then failed on every sync."""
    from device.rooms.wire import to_text
    from tests.rooms_helpers import World

    world = World(["STAFF,ADMIN", "STAFF,OPS"])
    a, b = world.members
    world.log.post(a.join("a"))
    world.log.sync()
    before = (a.last_ref, a.status()["members"], a.current_epoch)
    contribution = to_text(b.join("b"))
    for ref in (2**63, 2**64, 2**64 + 5, 0, -1):
        assert a.receive(ref, contribution).outcome == "refused"
    assert (a.last_ref, a.status()["members"], a.current_epoch) == before


def test_a_contribution_under_a_period_still_to_come_does_not_move_the_room_early():
    """An outside review: anyone holding the authority's public key posted a contribution under the next
    period once members held their renewed (not yet begun) keys; they moved the room, dropped their own
    memberships and could not send until the period began. Now it is held aside until then."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from device.abe.errors import NotSatisfied
    from device.abe.scheme import decapsulate, encapsulate, keygen
    from device.rooms import wire
    from device.rooms.protocol import RoomMember
    from tests.rooms_helpers import Keys, World

    attrs = ["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"]
    t1_end, t2_end = 1_000_000.0, 2_000_000.0

    class Renewed(Keys):
        """Keys of periods 1 and (once renewed) 2, each with its window; decapsulates with any it holds."""

        def __init__(self, public, first) -> None:
            super().__init__(public, first)
            self.held, self.windows = [first], {1: (0.0, t1_end)}

        def renew(self, key) -> None:
            self.held.append(key)
            self.windows[key.period] = (t1_end, t2_end)

        def decapsulate(self, ct):
            for key in self.held:
                if ct.policy.prune(key.Kx) is not None:
                    return decapsulate(key, ct, self.public)
            raise NotSatisfied()

        def periods_held(self, authority_id):
            return dict(self.windows)

        def room_period_secret(self, authority_id, room_id, period):
            return None

    w = World(attrs)
    w.keys = [Renewed(w.master.public, keygen(w.master, a, period=1)) for a in attrs]
    w.members = [w.member(k) for k in w.keys]
    w.log.members = w.members
    w.log.events = {id(m): [] for m in w.members}
    for m in w.members:
        w.log.post(m.join(f"m{w.members.index(m)}"))
        w.log.sync()
    a, b, _c = w.members
    for i in (0, 1):  # a and b renewed for period 2 (it begins at t1_end); c is not
        w.keys[i].renew(keygen(w.master, attrs[i], period=2))
    # The forger: the public key is all it needs for a contribution under (policy) and PERIOD_2.
    helper = RoomMember(w.room, w.keys[0], clock=w.clock)
    enc = encapsulate(w.master.public, helper.policy_for(2))
    w.log.post(wire.contribution(w.room.room_id, enc.ciphertext.encode(), enc.key, X25519PrivateKey.generate(),
                                 Ed25519PrivateKey.generate(), "forger"))
    w.log.sync()
    assert a.period == b.period == 1 and a.joined and b.joined
    w.log.post(a.send("still period 1"))
    w.log.sync()
    assert "still period 1" in w.log.texts(b)
    w.clock.now = t1_end + 1  # period 2 begins: the renewed members move the room themselves
    w.clock.now += 10 * a.leader_timeout
    w.log.sync(4)
    assert a.period == 2 and a.joined and b.joined
