"""An outside review of "ending early withdraws the period issued ahead" (issue 22), its attacks as regressions.

Each test plays the review's scenario end to end (real devices' stores, a real relay on loopback) and asserts
what docs/rooms.md and docs/abe.md promise; before the fixes each of them failed.
"""

from __future__ import annotations

import os

from device.abe.periods import DAY_S
from device.abe.renewal import plan_renewal, renew
from device.abe.store import AbeKeys
from tests.test_rooms_e2e import fetch_new_renewals, four, said, sync_all  # noqa: F401, F811 (fixture)


def _renewed_ahead_then_m2_revoked_and_ended_early(room, devices, clock, auth):
    """m1, m2, m4 in the room; everyone renewed ahead 6 days before period 1's end (period 2), m2 revoked, the
    period ended early (period 3 from now, period 2 withdrawn). m1 takes its renewals and moves to period 3."""
    m1, m2, m4 = devices["m1"], devices["m2"], devices["m4"]
    for d in devices.values():
        d.room = room
    for d in (m1, m2, m4):
        d.post(room, d.rooms.join("ops"))
        sync_all(room, devices)
    keys = AbeKeys(auth)
    first = keys.periods()[0]
    clock.now = first.ends - 6 * DAY_S
    for r in renew(keys, plan_renewal(keys, now=clock.now), os.urandom, now=clock.now):
        m1.relay.send(r.mailbox, r.package, r.key_id.hex())
    for d in (m1, m2, m4):
        fetch_new_renewals(d)
    sync_all(room, devices)
    keys.revoke("m2")
    for r in renew(keys, plan_renewal(keys, end_period=True, now=clock.now), os.urandom, now=clock.now):
        m1.relay.send(r.mailbox, r.package, r.key_id.hex())
    fetch_new_renewals(m1)
    sync_all(room, {"m1": m1, "m2": m2})
    sync_all(room, {"m1": m1, "m2": m2})
    assert m1.rooms.find("ops").period == 3
    return first


def test_a_member_renewed_late_while_its_withdrawn_periods_contribution_is_on_its_way_gets_back_in(four):  # noqa: F811
    """Finding 1: at period 2's original start m4 (its renewal delayed, offline) re-contributes under period 2,
    which its device cannot know was withdrawn; its period-3 renewal opens before that contribution comes back.
    The room moves to period 3 and skips m4's period-2 contribution: m4 must contribute again under period 3 and
    read on, not wait for itself for good."""
    room, devices, clock, auth = four
    m1, m4 = devices["m1"], devices["m4"]
    first = _renewed_ahead_then_m2_revoked_and_ended_early(room, devices, clock, auth)
    clock.now = first.ends + 60
    m4.sync(room)
    assert m4.rooms.find("ops").status()["joining"]  # its period-2 contribution is on its way
    assert fetch_new_renewals(m4) == [3]
    for _ in range(4):
        sync_all(room, devices)
        clock.now += m4.rooms.find("ops").leader_timeout + 1
    status = m4.rooms.find("ops").status()
    assert status["joined"] and status["period"] == 3 and status["my_period"] == 3 and not status["joining"]
    said(m1, "m1 in period three, for m4")
    sync_all(room, devices)
    assert "m1 in period three, for m4" in m4.read
    said(m4, "m4 back")
    sync_all(room, devices)
    assert "m4 back" in m1.read and "m4 back" not in devices["m2"].read
