# ruff: noqa: F811
"""Rooms: a second outside red team on per-room period secrets (issue 22, docs/rooms.md "Period secrets, per
room", findings F1-F4 of "Red team 22b").

* F1, F2: in a period the room does not tag (the one it was made in; the one issued ahead before it was made),
  some members hold the room's secret (keys granted or renewed after the room) and some do not (before). The
  room's first contribution of such a period is a move: honest members split if the bind checked depends on
  what a device holds. Binds are now decided by the room's descriptor and the period only.
* F3: ``otc abe members`` read every own-room record once per key ever issued.
* F4: an authority upgraded from software before its own-room records, whose room's state was lost there,
  re-adds the room's genuine invite: the room got no secret, silently.

The attackers' contributions are built by the attacker's own encoder (tests/test_rooms_period_secrets.py), from
the wire format and derivations the documents give, never through the devices' room code.
"""

from __future__ import annotations

import os

import pytest

from device.abe.encoding import decode_public_key
from device.abe.periods import DAY_S
from device.abe.policy import Policy
from device.abe.renewal import plan_renewal, renew
from device.abe.rpc import abe_members
from device.abe.store import MAX_ROOM_SECRETS, OWN_ROOMS_COUNTED, AbeKeys, grant_local
from device.rooms.service import DeviceRooms
from device.rooms.wire import Room
from device.storage.padstore import PadStore, device_id_for
from tests.test_rooms_e2e import Device, Owner, fetch_new_renewals, four, sync_all  # noqa: F401 (fixture)
from tests.test_rooms_period_secrets import _contribution, _room_secret, _what_its_device_holds
from tests.test_rooms_period_secrets_review import _plant


def _new_member(four, tmp_path, name: str, attributes: str = "STAFF,ADMIN") -> Device:
    """A member granted now (after the fixture's room was made): its key carries the room's secret."""
    room, devices, clock, auth = four
    PadStore.init(tmp_path / name, name).close()
    d = Device(tmp_path / name, devices["m1"].relay, clock)
    grant_local(auth, d.store, attributes)
    d.rooms = DeviceRooms(d.store, d.owner, clock=clock)
    d.rooms.add(Room.from_invite(room.invite()))
    return d


def _agree(room, players: dict) -> list:
    """Every player's room sees the same roster and the same epoch key; that roster."""
    rooms = [d.rooms.find(room.name) for d in players.values()]
    first = rooms[0]
    for r in rooms[1:]:
        assert r.roster == first.roster, {n: len(d.rooms.find(room.name).roster) for n, d in players.items()}
        assert r.current_epoch == first.current_epoch
        assert r.epochs[r.current_epoch].key == first.epochs[first.current_epoch].key
    return first.roster


# -- F1: granted before the room and granted after it, in the period it was made in ---------------------------


@pytest.mark.parametrize("first", ["granted before the room", "granted after the room"])
def test_a_member_granted_after_the_room_and_one_granted_before_see_each_other(four, tmp_path, first):
    room, devices, clock, auth = four
    m1 = devices["m1"]  # granted before the room (fixture): no secret of the room for period 1
    m5 = _new_member(four, tmp_path, "m5")  # same period, after the room exists
    assert not [s for s in _what_its_device_holds(m1.store) if s == _room_secret(AbeKeys(auth).period_secret_for(1),
                                                                                 room.room_id)]
    assert _room_secret(AbeKeys(auth).period_secret_for(1), room.room_id) in _what_its_device_holds(m5.store)
    players = {"m1": m1, "m5": m5}
    for d in (m1, m5) if first.endswith("before the room") else (m5, m1):
        d.post(room, d.rooms.join("ops"))
        sync_all(room, players)
    assert len(_agree(room, players)) == 2
    assert m1.rooms.find("ops").epochs[m1.rooms.find("ops").current_epoch].key is not None


def test_devices_holding_and_not_holding_the_secret_decide_every_item_alike(four, tmp_path):
    """The same item sequence, on the relay before any honest join: plants of the room's first period bound with
    the room's secret of it (as an insider granted after the room could), bound with k_j from the public key,
    and tagged (type 9, which the room does not use in that period); then three honest joins. A device holding
    the secret (m5, m6) and one that does not (m1) must end with the same roster and epoch key."""
    room, devices, clock, auth = four
    m1 = devices["m1"]
    m5, m6 = _new_member(four, tmp_path, "m5"), _new_member(four, tmp_path, "m6")
    keys = AbeKeys(auth)
    public = decode_public_key(keys.master().public.encode())
    r1 = _room_secret(keys.period_secret_for(1), room.room_id)
    plants = [_contribution(room, public, 1, r1, name=b"p1"), _contribution(room, public, 1, r1, tag="right"),
              _contribution(room, public, 1, None, tag="garbage"), _contribution(room, public, 1, None, name=b"p2")]
    _plant(m1, room, plants)
    players = {"m1": m1, "m5": m5, "m6": m6}
    for d in (m5, m1, m6):
        d.post(room, d.rooms.join("ops"))
        sync_all(room, players)
    roster = _agree(room, players)
    mine = {d.rooms.find("ops").me for d in players.values()}
    assert mine <= set(roster)


# -- F2: a room made between two members' renewals ahead ------------------------------------------------------


def _send_renewals(keys: AbeKeys, plan, device, now: float) -> None:
    for r in renew(keys, plan, os.urandom, now=now):
        device.relay.send(r.mailbox, r.package, r.key_id.hex())


def _m1_renewed_a_day_ahead(four):
    """`otc abe renew m1` a day before period 1 ends (period 2 issued ahead to m1 alone): m1, m4, the
    authority's keys, period 1, the clock."""
    room0, devices, clock, auth = four
    keys = AbeKeys(auth)
    first = keys.periods()[0]
    clock.now = first.ends - DAY_S
    _send_renewals(keys, plan_renewal(keys, "m1", now=clock.now), devices["m1"], clock.now)
    return devices["m1"], devices["m4"], keys, first, clock


def test_a_room_made_between_two_members_renewals_ahead_splits_at_the_period_change(four):
    """The owner renews m1 ahead (`otc abe renew m1`), makes a room, then renews m4: m4's key of period 2 carries
    R_2(late), m1's does not; the room is tagged from period 3. Both are in it in period 1; at the move to 2
    each must take the other's moving contribution."""
    m1, m4, keys, first, clock = _m1_renewed_a_day_ahead(four)
    late = DeviceRooms(keys.store, Owner()).create("late", "STAFF and (ADMIN or OPS)")
    assert late.tagged_from == 3  # period 2 exists already (issued ahead to m1)
    _send_renewals(keys, plan_renewal(keys, "m4", now=clock.now), m4, clock.now)
    assert fetch_new_renewals(m1) == [2] and fetch_new_renewals(m4) == [2]
    r2 = _room_secret(keys.period_secret_for(2), late.room_id)
    assert r2 in _what_its_device_holds(m4.store) and r2 not in _what_its_device_holds(m1.store)
    players = {"m1": m1, "m4": m4}
    for d in players.values():
        d.rooms.add(Room.from_invite(late.invite()))
    for d in players.values():
        d.post(late, d.rooms.join("late"))
        sync_all(late, players)
    assert len(_agree(late, players)) == 2
    clock.now = first.ends + 30  # period 2 begins: both move
    for _ in range(3):
        sync_all(late, players, 2)
        clock.now += 40
    a = m1.rooms.find("late")
    assert a.period == m4.rooms.find("late").period == 2
    assert len(_agree(late, players)) == 2
    assert a.epochs[a.current_epoch].key is not None


# -- F3: otc abe members reads the own-room records once ------------------------------------------------------


def test_members_listing_reads_the_own_room_records_once(tmp_path, monkeypatch):
    """256 own rooms (the cap), 40 keys issued: one listing unseals each own-room record at most twice (it read
    each once per key issued: 10,240). Counted, not timed."""
    auth = PadStore.init(tmp_path / "auth", "auth")
    member = PadStore.init(tmp_path / "member", "member")
    keys = AbeKeys(auth)
    keys.become_authority()
    for _ in range(MAX_ROOM_SECRETS):
        keys.record_own_room(os.urandom(16), Policy.parse("STAFF and (ADMIN or OPS)"), 1)
    period = keys.period_for_grant(None)
    for i in range(40):
        keys.issue("STAFF,ADMIN", member=f"m{i}", member_device_id=device_id_for(member.identity_public),
                   how="local", period=period)
    opened = []
    real = AbeKeys._open

    def counting(self, sealed, context):
        if context.startswith(b"abe own room "):
            opened.append(context)
        return real(self, sealed, context)

    monkeypatch.setattr(AbeKeys, "_open", counting)
    listed = abe_members(auth)
    assert len(listed["issued"]) == 40
    print(f"own-room records unsealed for one listing (256 rooms, 40 keys): {len(opened)}")
    assert len(opened) <= 2 * MAX_ROOM_SECRETS, f"{len(opened)} own-room records unsealed for one listing"
    auth.close()
    member.close()


# -- F4: an upgraded authority re-adds a lost room's genuine invite --------------------------------------------


def test_a_genuine_room_re_added_after_the_upgrade_gets_its_secrets_or_the_owner_is_told(tmp_path):
    auth = PadStore.init(tmp_path / "auth", "auth")
    member = PadStore.init(tmp_path / "member", "member")
    keys = AbeKeys(auth)
    public = keys.become_authority()
    auth.delete_setting(OWN_ROOMS_COUNTED)  # software from before the records; G's state was lost there
    genuine = Room(os.urandom(16), "roomzq", Policy.parse("STAFF"), public.name, public.authority_id, 1)
    DeviceRooms(auth, Owner()).add(genuine)  # the genuine invite, re-added after the upgrade
    period = keys.period_for_grant(None)
    key = keys.issue("STAFF", member="member", member_device_id=device_id_for(member.identity_public),
                     how="local", period=period)
    got = _room_secret(keys.period_secret_for(period.number), genuine.room_id)
    told = plan_renewal(keys).question()
    assert got in _secrets_issued(keys, period.number, key.all_attributes) or "roomzq" in told, \
        "the genuine tagged room gets no secret and the owner is not told"
    auth.close()
    member.close()


def _secrets_issued(keys: AbeKeys, period: int, attributes) -> list[bytes]:
    """The room secrets the authority sends with a key of ``period`` and ``attributes``: "R" and entries of
    room id (16) and secret (32) (docs/abe.md)."""
    blob = keys.room_secrets_for(period, attributes)
    return [blob[at + 16:at + 48] for at in range(1, len(blob), 48)]


def test_a_re_added_room_with_no_record_is_flagged_and_recorded_only_as_the_owner_confirms(tmp_path, capsys,
                                                                                            monkeypatch):
    """`otc room add` on the upgraded authority warns (naming the room and what its members lose), `otc room
    list` and the renewal plan flag it; `otc room add --own` records it only as the owner confirms on the device,
    with the device's own descriptor (never a doctored policy); keys issued after carry its secret."""
    from client.errors import RemoteError
    from client.rpc import DeviceClient
    from onetimechat.cli import main
    from tests.test_rooms_confirmed import Owner as Declining
    from tests.test_rooms_confirmed import paired

    PadStore.init(tmp_path / "auth", "auth").close()
    PadStore.init(tmp_path / "member", "member").close()
    with PadStore(tmp_path / "auth") as auth:
        public = AbeKeys(auth).become_authority()
        auth.delete_setting(OWN_ROOMS_COUNTED)  # software from before the records; G's state was lost there
    lost = Room(os.urandom(16), "roomzq", Policy.parse("STAFF"), public.name, public.authority_id, 1)
    owner = Declining()
    with paired(tmp_path, "auth", owner) as (relay, person, state):
        monkeypatch.setenv("OTC_CLIENT_HOME", str(person.laptop))
        cli = ["--device", person.url, "--relay", relay.url]
        capsys.readouterr()
        assert main(["room", "add", *cli, lost.invite()]) == 0
        out, err = capsys.readouterr()
        assert "Added room roomzq" in out
        assert "roomzq" in err and "no secret" in err and "--own" in err
        assert main(["room", "list", *cli]) == 0
        assert "no record of creating roomzq" in capsys.readouterr().out

        device = DeviceClient(person.url, state=state)
        doctored = Room(lost.room_id, "roomzq", Policy.parse("OPS"), public.name, public.authority_id, 1)
        owner.decline_kinds = {"room-own"}
        with pytest.raises(RemoteError) as declined:
            device.call("room_add", invite=doctored.invite(), own=True)
        assert declined.value.code == "declined"
        assert "Policy: STAFF\n" in owner.asked[-1]  # the device's descriptor, not the doctored invite's
        owner.decline_kinds = set()
        with pytest.raises(RemoteError) as bad:
            device.call("room_add", invite=lost.invite(), own="yes")
        assert bad.value.code == "bad-request"
        assert main(["room", "add", "--own", *cli, lost.invite()]) == 0
        out, err = capsys.readouterr()
        assert "recorded as this authority's own" in out and "warning" not in err
        assert owner.kinds[-1] == "room-own"
        with pytest.raises(RemoteError, match="nothing to record"):
            device.call("room_add", invite=lost.invite(), own=True)
        # A new room whose record the owner declines is still added (the first question was approved): said so.
        other = Room(os.urandom(16), "roomzr", Policy.parse("STAFF"), public.name, public.authority_id, 1)
        owner.decline_kinds = {"room-own"}
        with pytest.raises(RemoteError, match="the room was added, but not recorded as this authority's own"):
            device.call("room_add", invite=other.invite(), own=True)
        owner.decline_kinds = set()
        assert main(["room", "list", *cli]) == 0
        assert "roomzr" in capsys.readouterr().out
    with PadStore(tmp_path / "auth") as auth, PadStore(tmp_path / "member") as member:
        keys = AbeKeys(auth)
        assert keys.own_rooms()[lost.room_id][0].text == "STAFF"
        assert "roomzq" not in plan_renewal(keys).question()
        key = keys.issue("STAFF", member="member", member_device_id=device_id_for(member.identity_public),
                         how="local", period=keys.period_for_grant(None))
        got = _room_secret(keys.period_secret_for(key.period), lost.room_id)
        assert got in _secrets_issued(keys, key.period, key.all_attributes)


def test_a_catch_up_renewal_with_the_secret_of_a_room_made_since_does_not_split_it(four):
    """The catch-up route to F2: m1 is renewed for period 2 before the room is made, m4 is not; period 2 begins,
    the room is made (tagged from 3), then the renewal plan gives m4 the running period's key late, with
    R_2(room). m1 holds no R_2(room), m4 does: both must take each other's contribution in period 2."""
    m1, m4, keys, first, clock = _m1_renewed_a_day_ahead(four)
    assert fetch_new_renewals(m1) == [2]
    clock.now = first.ends + 30  # period 2 runs; m4 holds no key of it
    late = DeviceRooms(keys.store, Owner()).create("late", "STAFF and (ADMIN or OPS)")
    assert late.tagged_from == 3
    plan = plan_renewal(keys, "m4", now=clock.now)
    assert [name for _, name in plan.catch_up] == ["m4"]
    _send_renewals(keys, plan, m4, clock.now)
    assert fetch_new_renewals(m4) == [2]
    r2 = _room_secret(keys.period_secret_for(2), late.room_id)
    assert r2 in _what_its_device_holds(m4.store) and r2 not in _what_its_device_holds(m1.store)
    players = {"m1": m1, "m4": m4}
    for d in players.values():
        d.rooms.add(Room.from_invite(late.invite()))
    for d in (m4, m1):
        d.post(late, d.rooms.join("late"))
        sync_all(late, players)
    assert m1.rooms.find("late").period == 2
    assert len(_agree(late, players)) == 2
