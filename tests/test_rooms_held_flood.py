# ruff: noqa: F811
"""Rooms: a flood of contributions made from the public key alone does not evict the genuine ones held aside
(docs/rooms.md "Held contributions"). Ported from an outside review (abe2, findings B4 and B2).

The attackers are written here from the wire format (docs/rooms.md, docs/abe.md), not through the devices' own
room code paths.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device.abe.encoding import decode_public_key
from device.abe.periods import DAY_S
from device.abe.policy import Policy
from device.abe.renewal import plan_renewal, renew
from device.abe.scheme import encapsulate
from device.abe.store import AbeKeys
from device.rooms import wire
from device.rooms.service import DeviceRooms
from tests.test_rooms_e2e import fetch_new_renewals, four, said, sync_all  # noqa: F401 (fixture)


def _post_renewals(sender, renewals) -> None:
    for r in renewals:
        sender.relay.send(r.mailbox, r.package, r.key_id.hex())

def _plant(room, public_key, period: int, period_secret: bytes | None, name: str = "m1") -> str:
    """A contribution under ``(policy) and PERIOD_<period>`` made from the public key alone; bound with the
    period's secret when the attacker has one (a key holder of the authority reading its own device)."""
    enc = encapsulate(public_key, Policy.parse(f"({room.policy.text}) and PERIOD_{period}"))
    bind = wire.period_bind_key(enc.key, period_secret) if period_secret is not None else enc.key
    return wire.to_text(wire.contribution(room.room_id, enc.ciphertext.encode(), bind,
                                          X25519PrivateKey.generate(), Ed25519PrivateKey.generate(), name))

def _join(room, devices, names) -> None:
    for d in devices.values():
        d.room = room
    for n in names:
        devices[n].post(room, devices[n].rooms.join("ops"))
        sync_all(room, devices)

def renew_everyone_a_day_before(four, openers):
    """The authority renews every member for period 2 a day before it (at the test's clock); the devices
    ``openers`` open their renewals. The authority's keys and period 1."""
    _, _, clock, auth = four
    keys = AbeKeys(auth)
    first = keys.periods()[0]
    clock.now = first.ends - DAY_S
    _post_renewals(openers[0], renew(keys, plan_renewal(keys, now=clock.now), os.urandom, now=clock.now))
    for d in openers:
        assert fetch_new_renewals(d) == [2]
    return keys, first


class Behind:
    """A device's clock, ``offset`` seconds behind the test's (a Pi has no real clock)."""

    def __init__(self, clock) -> None:
        self.clock, self.offset = clock, 0.0

    def __call__(self) -> float:
        return self.clock.now - self.offset


def rollover_with_m4_behind(four, before_renewal=lambda: None):
    """m1 and m4 join (then ``before_renewal()``); everyone is renewed for period 2 a day before it, and m1 and
    m4 open their renewals; at the rollover m4's clock is a minute behind, and m1 moves first (its period-2
    contribution is posted; m4 has not synced). The players and the authority's keys."""
    room, devices, clock, auth = four
    m1, m4 = devices["m1"], devices["m4"]
    behind = Behind(clock)
    m4.rooms = DeviceRooms(m4.store, m4.owner, clock=behind)
    players = {"m1": m1, "m4": m4}
    _join(room, players, ("m1", "m4"))
    before_renewal()
    keys, first = renew_everyone_a_day_before(four, (m1, m4))
    behind.offset = 60.0
    clock.now = first.ends + 30  # period 2 has begun for m1, not yet for m4 (30 s to go, on its clock)
    sync_all(room, {"m1": m1}, 2)  # m1 moves, posts its period-2 contribution
    return players, keys


def _newcomer_joins(room, players, m2, clock) -> None:
    """m2 reads the room's history, then joins (as `otc room join` does); a few leader timeouts pass."""
    players["m2"] = m2
    m2.room = room
    sync_all(room, {"m2": m2}, 1)
    m2.post(room, m2.rooms.join("ops"))
    for _ in range(4):
        clock.now += 40
        sync_all(room, players, 2)


@pytest.mark.parametrize("plants", ["none (control)", "flood of old-period junk"])
def test_B4_junk_under_a_past_period_does_not_shut_a_newcomer_out_of_the_running_period(four, plants):
    """After the room moved to period 2, anyone with the public key posts MAX_HELD contributions under PERIOD_1
    (the members skip them: an earlier period; no cost to them). A newcomer (m2, renewed, joining in period 2)
    reads the room's history first: everything of a later period than its (not yet joined) room state is held, the
    bound evicts the highest period first, so the genuine period-2 contributions go and the junk stays. Its roster
    then lacks every member: it must still end up in the same room as m1 and m4."""
    from device.rooms.protocol import MAX_HELD

    room, devices, clock, auth = four
    m1, m2, m3, m4 = (devices[n] for n in ("m1", "m2", "m3", "m4"))
    players = {"m1": m1, "m4": m4}
    _join(room, players, ("m1", "m4"))
    keys, first = renew_everyone_a_day_before(four, (m1, m2, m4))
    clock.now = first.ends + 5
    for _ in range(3):
        sync_all(room, players, 2)
    assert m1.rooms.find("ops").period == 2 and m1.rooms.find("ops").status()["keyed"]
    public = decode_public_key(keys.master().public.encode())
    for _ in range(MAX_HELD if plants != "none (control)" else 0):
        m3.post(room, _plant(room, public, 1, None))
    _newcomer_joins(room, players, m2, clock)
    said(m1, "welcome m2")
    for _ in range(2):
        sync_all(room, players, 2)
    r1, r2 = m1.rooms.find("ops"), m2.rooms.find("ops")
    print("m1", r1.status()["epoch_members"], "m2", r2.status(), "dropped", r2.held_dropped)
    assert r2.status()["epoch_members"] == r1.status()["epoch_members"] == 3, "the newcomer sees another roster"
    assert "welcome m2" in m2.read

@pytest.mark.parametrize("plants", ["none (control)", "flood"])
def test_B2_a_flood_of_public_key_plants_ahead_of_the_rollover_does_not_evict_the_genuine_move(four, plants):
    """Anyone with the public key and the invite posts MAX_HELD (128) contributions under PERIOD_2 during period
    1. At the rollover m4's clock is a minute behind the others' (a Pi has no real clock): m1's genuine moving
    contribution reaches m4 before m4's key of period 2 has begun. m4 must still end up keyed in period 2 and read
    what m1 says there (docs: 'it gets no key until the next roster change')."""
    from device.rooms.protocol import MAX_HELD

    room, devices, clock, auth = four
    m1, m3, m4 = devices["m1"], devices["m3"], devices["m4"]
    public = decode_public_key(AbeKeys(auth).master().public.encode())

    def plant() -> None:
        for _ in range(MAX_HELD if plants == "flood" else 0):
            m3.post(room, _plant(room, public, 2, None))  # no key needed at all
        sync_all(room, {"m1": m1, "m4": m4}, 1)

    players, _ = rollover_with_m4_behind(four, plant)
    sync_all(room, {"m4": m4}, 1)  # m4 sees it while it cannot check it yet
    print("m4 held_dropped:", m4.rooms.find("ops").held_dropped)
    for _ in range(6):  # later: everyone's clock well past the start; leader timeouts pass
        clock.now += 40
        sync_all(room, players, 2)
    # A roster change that does not remove m1's evicted contribution (m2 joins) does not heal the split.
    m2 = devices["m2"]
    fetch_new_renewals(m2)
    _newcomer_joins(room, players, m2, clock)
    said(m1, "hello period two")
    for _ in range(3):
        clock.now += 40
        sync_all(room, players, 2)
    r1, r4 = m1.rooms.find("ops"), m4.rooms.find("ops")
    print("m1", r1.status(), "\nm4", r4.status())
    assert r1.status()["keyed"]
    assert r4.status()["epoch_members"] == r1.status()["epoch_members"], "m4 sees another roster (alone)"
    assert "hello period two" in m4.read, "m4 is shut out of period 2: its roster lacks m1's evicted contribution"
