# ruff: noqa: F811
"""Red team 22 (ported from its review): attacks on per-room period secrets and tagged contributions
(docs/rooms.md "Period secrets, per room", "A flood of contributions ...", the mixed upgrade;
docs/abe.md renewal body v4).

The attackers build their items by hand from the documented formats (docs/rooms.md "Items"), never through the
devices' room code.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from device.abe.encoding import decode_public_key
from device.abe.policy import Policy
from device.abe.store import AbeKeys
from device.rooms.service import DeviceRooms
from device.rooms.wire import Room
from device.storage.padstore import PadStore
from tests.test_rooms_e2e import POLICY, Owner, four, sync_all  # noqa: F401 (fixture)
from tests.test_rooms_held_flood import renew_everyone_a_day_before
from tests.test_rooms_period_secrets import _contribution as _encode  # the attacker's own encoder
from tests.test_rooms_period_secrets import _ref_of

REPO = Path(__file__).resolve().parent.parent
BEFORE = "5b39562"  # the commit before per-room secrets and tags: what an older device runs


def _contribution(room, public_key, period: int, secret: bytes | None, *, kind: int = 5) -> str:
    """A named (5) or tagged (9) contribution under ``(policy) and PERIOD_<period>`` from the public key alone,
    by the attacker's own encoder (tests/test_rooms_period_secrets.py): bound with k_j, or with ``secret`` as the
    room's period secret; a type 9 carries the right tag under ``secret``, or (no secret) 32 random bytes."""
    tag = "none" if kind == 5 else "right" if secret is not None else "garbage"
    return _encode(room, public_key, period, secret, tag=tag, name=b"m9")


def _plant(device, room, plants: list[str]) -> list[int]:
    """Post ``plants`` from ``device``; their refs on the relay."""
    for p in plants:
        device.post(room, p)
    return [_ref_of(device, room, p) for p in plants]


def _old_module(path: str, name: str):
    """A module as an older device runs it (BEFORE), loaded beside the current code."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE}:{path}"], check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    try:
        exec(compile(source, f"{BEFORE}:{path}", "exec"), module.__dict__)
    finally:
        sys.modules.pop(name, None)
    return module


def _said(device, room, name: str, text: str) -> None:
    device.post(room, device.rooms.send(name, text))


# -- 1. mixed upgrade: a type-9 item in a room made before tags splits old devices from updated ones ----------


def test_a_type_9_item_in_a_room_made_before_tags_splits_old_and_updated_devices(four):
    """Claim 4 ("older devices keep working in rooms made before the change"). A room made before tags (no
    tagged_from) has older and updated members. Anyone with the public key posts ONE type-9 contribution under
    the room's running period, with a garbage tag. Updated devices take it (the room tags no period, so
    RoomMember._tag_ok says True without looking at the tag) as a roster slot and start a new epoch at its ref;
    an older device refuses type 9 as malformed (its wire.decode), so it stays in the old epoch: the two no
    longer share a roster, a sid, an epoch. One item from an outsider splits every mixed room made before tags.

    The fix this test asks for: an updated device refuses (skips) a type-9 item in a period the room does not tag,
    as an older device does, so both agree on every roster."""
    room, devices, clock, auth = four
    m1, m3, m4 = devices["m1"], devices["m3"], devices["m4"]
    # A room made before tags: its descriptor has no tagged_from (as older authorities made them).
    legacy = Room.from_dict({k: v for k, v in DeviceRooms(auth, Owner()).create("old", POLICY).to_dict().items()
                             if k != "tagged_from"})
    assert legacy.tagged_from is None
    players = {"m1": m1, "m4": m4}
    for d in players.values():
        d.rooms.add(legacy)
    for d in players.values():
        d.post(legacy, d.rooms.join("old"))
        sync_all(legacy, players)
    r1 = m1.rooms.find("old")
    assert r1.status()["keyed"] and r1.status()["epoch_members"] == 2
    epoch_before = r1.current_epoch

    public = decode_public_key(AbeKeys(auth).master().public.encode())
    plant = _contribution(legacy, public, r1.period, None, kind=9)  # garbage tag, bound with k_j it made
    m3.post(legacy, plant)
    ref = _ref_of(m1, legacy, plant)

    # An older device's wire (BEFORE) refuses the item outright: it never enters its roster.
    old_wire = _old_module("device/rooms/wire.py", "old_wire_rt22")
    with pytest.raises(old_wire.MalformedRoomData):
        old_wire.decode(base64.b64decode(plant), legacy.room_id)

    sync_all(legacy, players, 2)
    r1, r4 = m1.rooms.find("old"), m4.rooms.find("old")
    # What the older device sees: the epoch it had, two members. The updated devices must agree with it.
    for r in (r1, r4):
        assert r.current_epoch == epoch_before and r.status()["epoch_members"] == 2, (
            f"an updated device took the type-9 item at ref {ref} as a roster slot (epoch {r.current_epoch}, "
            f"{r.status()['epoch_members']} members) that an older device refuses: the room is split")


# -- 2. the authority's room list is built from invites: a re-added invite with a weaker policy ----------------


def test_a_reenrolled_invite_with_a_weaker_policy_hands_the_rooms_secret_to_a_key_holder_outside_it(four):
    """Claim 1. docs/rooms.md tells an authority whose device lost a room's state to `otc room add` the room's
    invite again. An invite is public, unsigned JSON: m3 (OPS only, outside STAFF and (ADMIN or OPS)) hands the
    authority the room's invite with the policy changed to STAFF or OPS (every member still satisfies it, and so
    does m3). AbeKeys.room_secrets_for trusts the policy
    stored with the descriptor and room_secret() derives R_k from the room id alone, so m3's period-2 renewal
    carries the genuine room's R_2: m3 then binds and tags a period-2 contribution that every member accepts,
    takes a roster slot ahead of them and places the room's move.

    Fix: derive R_k(room) from the whole descriptor (room id, policy, tagged_from), not the id alone, so a secret
    issued for a doctored descriptor opens nothing in the genuine room (or MAC the descriptor under the master
    key at create and refuse to issue for an own-authority room without it)."""
    from device.storage.room_states import DeviceRoomStore

    room, devices, clock, auth = four
    m1, m3, m4 = devices["m1"], devices["m3"], devices["m4"]
    players = {"m1": m1, "m4": m4}
    for d in players.values():
        d.room = room
    for n in ("m1", "m4"):
        players[n].post(room, players[n].rooms.join("ops"))
        sync_all(room, players)
    # The authority's device loses the room's state; it is re-added from an invite m3 doctored.
    DeviceRoomStore(auth).delete(room.room_id)
    doctored = dict(json.loads(base64.urlsafe_b64decode(room.invite()[len("otcroom1."):] + "==")))
    doctored["policy"] = "STAFF or OPS"  # weaker: every member still in, m3 too
    # Now: the authority's device refuses an invite of a room it created that says another policy. A device that
    # took it before (or any other way a doctored descriptor lands in its room states) must still not issue the
    # genuine room's secret to m3: the doctored state is written directly.
    from device.rooms.errors import RoomError
    from device.rooms.protocol import RoomMember
    with pytest.raises(RoomError):
        DeviceRooms(auth, Owner()).add(Room.from_dict(doctored))
    DeviceRoomStore(auth).save(room.room_id, RoomMember(Room.from_dict(doctored), AbeKeys(auth)).to_dict())

    keys, first = renew_everyone_a_day_before(four, (m1, m3, m4))
    got = AbeKeys(m3.store).room_period_secret(room.authority_id, room.room_id, 2)
    public = decode_public_key(keys.master().public.encode())
    # m3's own device may hold the genuine room's secret of period 2: its plant, if so
    plant_refs = _plant(m3, room, [_contribution(room, public, 2, got, kind=9)] if got is not None else [])
    clock.now = first.ends + 5
    for _ in range(3):
        sync_all(room, players, 2)
    r1, r4 = m1.rooms.find("ops"), m4.rooms.find("ops")
    for r in (r1, r4):
        assert r.moves[2] not in plant_refs, "m3's plant (outside the policy) placed the room's move"
        assert r.status()["epoch_members"] == 2, "m3's plant took a roster slot of period 2"


# -- 3. the 256 cap: a room past it silently gets no secret ----------------------------------------------------


def test_every_room_a_key_satisfies_gets_its_secret_or_the_authority_is_told(tmp_path):
    """Claim 1/4 liveness. AbeKeys.room_secrets_for keeps the first MAX_ROOM_SECRETS (256) rooms by room id and
    drops the rest without a word: a member of a room past the cap gets a key of a tagged period without the
    room's secret and cannot contribute there (RoomError "came without the room's secret") until... never: the
    cap stays. The rooms the authority's device knows include any invite added there that names it (room ids
    the invite's maker chose: 00.. sorts first), so pushing genuine rooms past the cap needs only invites.

    Fix: refuse (or warn and say which rooms) at create/add beyond the cap, or split across renewals; and do not
    count rooms added from invites the authority did not make."""
    from device.abe.store import MAX_ROOM_SECRETS
    from device.storage.padstore import device_id_for

    auth = PadStore.init(tmp_path / "auth", "auth")
    member = PadStore.init(tmp_path / "member", "member")
    try:
        keys = AbeKeys(auth)
        keys.become_authority()
        public = keys.master().public
        rooms = DeviceRooms(auth, Owner())
        genuine = rooms.create("genuine", "STAFF")
        for i in range(MAX_ROOM_SECRETS):  # invites naming the authority, ids chosen to sort first
            rooms.add(Room(bytes([0]) + i.to_bytes(2, "big") + bytes(13), f"junk{i}", Policy.parse("STAFF"),
                           public.name, public.authority_id, genuine.tagged_from))
        period = keys.period_for_grant(None)
        key = keys.issue("STAFF", member="member", member_device_id=device_id_for(member.identity_public),
                         how="local", period=period)
        AbeKeys(member).add_member_key(decode_public_key(public.encode()), key, window=(period.starts, period.ends),
                                       period_secret=keys.room_secrets_for(period.number, key.all_attributes))
        got = AbeKeys(member).room_period_secret(public.authority_id, genuine.room_id, period.number)
        assert got is not None, "the authority's own room got no secret: pushed past the cap by added invites"
    finally:
        auth.close()
        member.close()


# -- 4. the held-tag check looks the room's secret up for every held record at every item -----------------------


def test_a_flood_read_before_the_renewal_opens_costs_a_secret_lookup_per_held_record_per_item(four, monkeypatch):
    """Claim 2, cost. A device whose renewal has not opened (the documented case: it holds the flood aside with
    the items' bytes) runs RoomMember._check_held_tags from _take_held, _bound_held and prune_held at EVERY item
    it reads, and that calls AbeKeys.room_period_secret (a database read of every held key, and an unseal) once
    per held record: up to 128 x 3 lookups per item. 400 junk items from the public key cost about 114,000
    lookups and ~3 s of a 4 s sync on a fast x86 core (profiled); a Pi is several times slower and the laptop
    fetches 500 items a sync, so anyone with the public key can pin a member device's CPU for minutes.

    Fix: look the secret up once per distinct held period per call (or remember which periods lacked a secret
    and re-check only when a key is added), not once per record."""
    from device.abe.store import AbeKeys as Keys
    from tests.test_rooms_held_flood import _join

    room, devices, clock, auth = four
    m1, m3, m4 = devices["m1"], devices["m3"], devices["m4"]
    players = {"m1": m1, "m4": m4}
    _join(room, players, ("m1", "m4"))
    keys, first = renew_everyone_a_day_before(four, (m1,))  # m4's renewal not opened yet
    clock.now = first.ends + 5
    sync_all(room, {"m1": m1}, 2)
    public = decode_public_key(keys.master().public.encode())
    count = 200
    for _ in range(count):
        m3.post(room, _contribution(room, public, 2, None))
    calls = []
    real = Keys.room_period_secret

    def counted(self, *args):
        calls.append(args)
        return real(self, *args)

    monkeypatch.setattr(Keys, "room_period_secret", counted)
    sync_all(room, {"m4": m4}, 1)
    print(f"{len(calls)} room secret lookups for {count} junk items read in one sync")
    assert len(calls) < count, f"{len(calls)} secret lookups for {count} items read: not once per held period"
