# ruff: noqa: F811
"""The rooms an authority created (red team 22, F2 and F3): the only rooms it issues period secrets for, recorded at
create, never from an invite; at most MAX_ROOM_SECRETS of them; the rooms an authority from before the records
knew counted once; a member whose rooms were cut is named in `otc abe members` and the renewal plan."""

from __future__ import annotations

import base64
import os

import pytest

from device.abe.policy import Policy
from device.abe.renewal import plan_renewal
from device.abe.rpc import abe_members
from device.abe.store import MAX_ROOM_SECRETS, OWN_ROOMS_COUNTED, AbeKeys, decode_room_secrets
from device.home import open_home
from device.rooms.errors import RoomError
from device.rooms.service import DeviceRooms
from device.rooms.wire import Room
from device.storage.padstore import PadStore, device_id_for
from tests.conftest import otc
from tests.test_cli import one_line_error
from tests.test_rooms_e2e import Owner, four  # noqa: F401 (fixture)


@pytest.fixture
def authority(tmp_path):
    auth = PadStore.init(tmp_path / "auth", "auth")
    member = PadStore.init(tmp_path / "member", "member")
    keys = AbeKeys(auth)
    keys.become_authority()
    try:
        yield auth, member, keys
    finally:
        auth.close()
        member.close()


def _invite(keys: AbeKeys, room_id: bytes, name: str, policy: str) -> Room:
    public = keys.master().public
    return Room(room_id, name, Policy.parse(policy), public.name, public.authority_id, 1)


def _issue(keys: AbeKeys, member: PadStore, attributes: str):
    period = keys.period_for_grant(None)
    return keys.issue(attributes, member="member", member_device_id=device_id_for(member.identity_public),
                      how="local", period=period), period


def test_only_rooms_the_authority_created_get_secrets(authority):
    auth, member, keys = authority
    rooms = DeviceRooms(auth, Owner())
    mine = rooms.create("mine", "STAFF")
    added = rooms.add(_invite(keys, os.urandom(16), "added", "STAFF"))  # an invite naming it, made elsewhere
    key, period = _issue(keys, member, "STAFF")
    blob = keys.room_secrets_for(period.number, key.all_attributes)
    assert decode_room_secrets(blob, mine.room_id) is not None
    assert decode_room_secrets(blob, added.room_id) is None
    assert set(keys.own_rooms()) == {mine.room_id}


def test_an_invite_of_an_own_room_with_another_policy_is_refused_on_the_authority(authority):
    auth, _, keys = authority
    rooms = DeviceRooms(auth, Owner())
    genuine = rooms.create("ops", "STAFF and OPS")
    doctored = dict(genuine.to_dict(), policy="STAFF or OPS")
    other = DeviceRooms(auth, Owner())
    other.store.delete(genuine.room_id)  # its state lost
    with pytest.raises(RoomError, match="not the room this authority created"):
        DeviceRooms(auth, Owner()).add(Room.from_dict(doctored))
    assert DeviceRooms(auth, Owner()).add(genuine).policy.text == "STAFF and OPS"  # the genuine one comes back


def test_create_refuses_past_the_cap(authority):
    auth, _, keys = authority
    for _ in range(MAX_ROOM_SECRETS - 1):
        keys.record_own_room(os.urandom(16), Policy.parse("STAFF"), 1)
    rooms = DeviceRooms(auth, Owner())
    rooms.create("last", "STAFF")
    with pytest.raises(RoomError, match=f"the most it can issue secrets for \\({MAX_ROOM_SECRETS}\\)"):
        rooms.create("one-too-many", "STAFF")
    with pytest.raises(Exception, match="one-too-many"):
        rooms.find("one-too-many")


def test_an_authority_from_before_the_records_counts_the_rooms_it_knew_once(authority):
    auth, member, keys = authority
    rooms = DeviceRooms(auth, Owner())
    known = [rooms.add(_invite(keys, os.urandom(16), f"r{i}", "STAFF")) for i in range(MAX_ROOM_SECRETS + 2)]
    auth.delete_setting(OWN_ROOMS_COUNTED)  # as an authority from before the records, with these rooms
    assert set(keys.own_rooms()) == {r.room_id for r in known}  # counted once, at the first look
    later = rooms.add(_invite(keys, os.urandom(16), "later", "STAFF"))
    assert later.room_id not in keys.own_rooms()  # from then on, only rooms it creates
    # Past the cap (possible only so): the member is named, in members and in the renewal plan.
    key, period = _issue(keys, member, "STAFF")
    assert keys.rooms_cut(key.attributes) == 2
    blob = keys.room_secrets_for(period.number, key.all_attributes)
    assert (len(blob) - 1) // 48 == MAX_ROOM_SECRETS
    listed = abe_members(auth)["issued"]
    assert [i["rooms_cut"] for i in listed] == [2]


def test_own_room_records_are_sealed_in_a_pin_locked_home_and_cut_members_named_at_the_command_line(tmp_path):
    """What an authority created stays as private as its room states (sealed under the storage key when the home
    is PIN-locked: no policy text in the row); `otc abe members` names a member whose rooms were cut, and
    `otc room create` refuses past the cap with one line."""
    pin = tmp_path / "pin"
    pin.write_text("493817\n")
    auth, alice = tmp_path / "campus", tmp_path / "alice"
    for home in (auth, alice):
        otc("device", "init", "--home", str(home), "--name", home.name, "--pin-file", str(pin), check=True)
    otc("abe", "authority", "--home", str(auth), "--pin-file", str(pin), check=True)
    otc("abe", "grant-local", "--attributes", "STAFF", str(auth), str(alice), "--auth-pin-file", str(pin),
        "--member-pin-file", str(pin), check=True)
    otc("room", "create", "--home", str(auth), "--pin-file", str(pin), "--name", "hidden", "--policy", "QWERTY",
        check=True)
    with open_home(auth, pin) as store:
        (row,) = store.settings_with_prefix("abe-own-room:").values()
        assert b"QWERTY" not in base64.b64decode(row)
        assert [p.text for p, _ in AbeKeys(store).own_rooms().values()] == ["QWERTY"]
        # An authority from before the records that knew more rooms than a key carries (as room states).
        keys, rooms = AbeKeys(store), DeviceRooms(store, Owner())
        for i in range(MAX_ROOM_SECRETS + 1):
            rooms.add(_invite(keys, os.urandom(16), f"r{i}", "STAFF"))
        store.delete_setting(OWN_ROOMS_COUNTED)
    shown = otc("abe", "members", "--home", str(auth), "--pin-file", str(pin), check=True).stdout.decode()
    assert "alice" in shown and "1 room CUT" in shown
    refused = otc("room", "create", "--home", str(auth), "--pin-file", str(pin), "--name", "more", "--policy", "X")
    assert "the most it can issue secrets for" in one_line_error(refused)


def test_the_renewal_plan_names_members_whose_rooms_were_cut(four):
    """Members renewed over their pads (the four devices' fixture): those whose keys satisfy more of an older
    authority's rooms than a key carries are named in the plan the owner confirms, and in its question."""
    _, _, _, auth = four
    keys = AbeKeys(auth)
    rooms = DeviceRooms(auth, Owner())
    for i in range(MAX_ROOM_SECRETS):
        rooms.add(_invite(keys, os.urandom(16), f"r{i}", "STAFF"))
    assert plan_renewal(keys).cut == []  # counted already (the fixture's authority is new): nothing cut
    auth.delete_setting(OWN_ROOMS_COUNTED)  # as an authority from before the records, with these rooms
    plan = plan_renewal(keys)
    staff = sorted(name for _, name in plan.members
                   if "STAFF" in next(i.attributes for i in keys.issued() if i.member == name))
    assert staff and sorted(why.split(":")[0] for why in plan.cut) == staff
    assert all(why.endswith(": 1 room cut") for why in plan.cut)  # the fixture's room and these 256
    assert "Renewed without some rooms' secrets" in plan.question()


def test_a_room_recorded_mid_cycle_gets_secrets_from_the_next_period_only(authority):
    """Red team 22c F3: `otc room add --own` while keys of the current period are out (some issued before the
    record, some after) would give that period's secret to those after only; in a room without ``tagged_from``
    the two kinds of member refuse each other's moves. Before: every key issued after the record carried it. Now:
    keys of the period after the newest issued at the record and later (``secrets_from``), the authority's own
    device alike."""
    auth, member, keys = authority
    keys.own_rooms()  # the one-time count is behind this authority: later rooms are recorded, or not, one by one
    room = DeviceRooms(auth, Owner()).add(
        Room(os.urandom(16), "lost", Policy.parse("STAFF"), keys.master().public.name,
             keys.master().public.authority_id, None))  # its state lost before an upgrade, re-added
    before, period = _issue(keys, member, "STAFF")
    DeviceRooms(auth, Owner()).record_own(room)
    after, same = _issue(keys, member, "STAFF")
    assert same.number == period.number
    for key in (before, after):
        assert decode_room_secrets(keys.room_secrets_for(period.number, key.all_attributes), room.room_id) is None
    authority_id = keys.master().public.authority_id
    assert keys.room_period_secret(authority_id, room.room_id, period.number) is None
    nxt = period.number + 1
    assert decode_room_secrets(keys.room_secrets_for(nxt, after.all_attributes), room.room_id) is not None
    assert keys.room_period_secret(authority_id, room.room_id, nxt) is not None
