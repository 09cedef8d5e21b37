# ruff: noqa: F811 (the fixture four, imported, is each test's argument)
"""An outside review of "ending early withdraws the period issued ahead" (issue 22), its attacks as regressions.

Each test plays the review's scenario end to end (real devices' stores, a real relay on loopback) and asserts
what docs/rooms.md and docs/abe.md promise; before the fixes each of them failed.
"""

from __future__ import annotations

import os

import pytest

from device.abe.periods import DAY_S
from device.abe.renewal import plan_renewal, renew
from device.abe.store import AbeKeys
from device.storage.padstore import PadStore
from tests.test_rooms_e2e import fetch_new_renewals, four, said, sync_all  # noqa: F401, F811 (fixture)


def _joined(room, devices, names=("m1", "m2", "m4")) -> None:
    """Every device reads the room; ``names`` join it, one after the other, everyone syncing after each."""
    for d in devices.values():
        d.room = room
    for name in names:
        devices[name].post(room, devices[name].rooms.join("ops"))
        sync_all(room, devices)


def _post(sender, renewals) -> None:
    """The authority's laptop (here through ``sender``'s relay client) posts each renewal to its mailbox."""
    for r in renewals:
        sender.relay.send(r.mailbox, r.package, r.key_id.hex())


def _renewed_ahead_then_m2_revoked_and_ended_early(room, devices, clock, auth):
    """m1, m2, m4 in the room; everyone renewed ahead 6 days before period 1's end (period 2), m2 revoked, the
    period ended early (period 3 from now, period 2 withdrawn). m1 takes its renewals and moves to period 3."""
    m1, m2, m4 = devices["m1"], devices["m2"], devices["m4"]
    _joined(room, devices)
    keys = AbeKeys(auth)
    first = keys.periods()[0]
    clock.now = first.ends - 6 * DAY_S
    _post(m1, renew(keys, plan_renewal(keys, now=clock.now), os.urandom, now=clock.now))
    for d in (m1, m2, m4):
        fetch_new_renewals(d)
    sync_all(room, devices)
    keys.revoke("m2")
    _post(m1, renew(keys, plan_renewal(keys, end_period=True, now=clock.now), os.urandom, now=clock.now))
    fetch_new_renewals(m1)
    sync_all(room, {"m1": m1, "m2": m2})
    sync_all(room, {"m1": m1, "m2": m2})
    assert m1.rooms.find("ops").period == 3
    return first


def test_a_member_renewed_late_while_its_withdrawn_periods_contribution_is_on_its_way_gets_back_in(four):
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


def _use_up_renewal_pad(auth, keys: AbeKeys, name: str) -> None:
    """The authority's renewal pad with ``name`` used up (a member renewed many times over the years)."""
    device_id = next(i.member_device_id for i in keys.issued() if i.member == name)
    with auth._transaction() as conn:
        conn.execute("UPDATE abe_pads SET next = size WHERE role = 'authority' AND peer_device_id = ?", (device_id,))


def _period_two_starts_and_m4_speaks(room, devices, clock, first) -> None:
    clock.now = first.ends + 60  # period 2's original start: m2 (revoked, renewed ahead) moves into it
    for _ in range(3):
        sync_all(room, devices)
        clock.now += 100
    said(devices["m4"], "m4 secret after the withdrawal")
    sync_all(room, devices)


def _ahead_for_everyone(room, devices, clock, auth):
    m1 = devices["m1"]
    _joined(room, devices)
    keys = AbeKeys(auth)
    first = keys.periods()[0]
    clock.now = first.ends - 6 * DAY_S
    _post(m1, renew(keys, plan_renewal(keys, now=clock.now), os.urandom, now=clock.now))
    for name in ("m1", "m2", "m4"):
        assert fetch_new_renewals(devices[name]) == [2]
    return keys, first


def test_a_used_up_renewal_pad_leaves_its_member_out_and_renews_the_others(four):
    """Finding 2: m3's renewal pad is used up. Planned: m3 is left out at once, saying why. Used up between the
    plan and the approval: renew() reports m3 and renews the members after it (before, it stopped at m3 after the
    early end was made: m4 got nothing and followed the revoked m2 into the withdrawn period 2), and no key is
    recorded issued to m3 without a package."""
    room, devices, clock, auth = four
    m1, m2 = devices["m1"], devices["m2"]
    keys, first = _ahead_for_everyone(room, devices, clock, auth)
    keys.revoke("m2")
    _use_up_renewal_pad(auth, keys, "m3")
    planned = plan_renewal(keys, end_period=True, now=clock.now)
    assert [n for _, n in planned.members] == ["m1", "m4"]
    assert any(why.startswith("m3: renewal pad used up") for why in planned.left)
    # Now the race: planned while m3's pad had room, used up before the owner approved.
    with auth._transaction() as conn:
        conn.execute("UPDATE abe_pads SET next = 16 WHERE role = 'authority' AND peer_device_id = ?",
                     (next(i.member_device_id for i in keys.issued() if i.member == "m3"),))
    plan = plan_renewal(keys, end_period=True, now=clock.now)
    assert [n for _, n in plan.members] == ["m1", "m3", "m4"]
    _use_up_renewal_pad(auth, keys, "m3")
    done = renew(keys, plan, os.urandom, now=clock.now)
    assert sorted(r.member for r in done) == ["m1", "m4"]
    assert len(done.failed) == 1 and done.failed[0].startswith("m3: ") and "used up" in done.failed[0]
    assert not [i for i in keys.issued() if i.member == "m3" and i.period == 3]  # no record without a package
    _post(m1, done)
    for name in ("m1", "m4"):
        assert fetch_new_renewals(devices[name]) == [3]
    sync_all(room, devices)
    _period_two_starts_and_m4_speaks(room, devices, clock, first)
    assert "m4 secret after the withdrawal" in m1.read
    assert "m4 secret after the withdrawal" not in m2.read


def test_a_member_left_out_of_the_early_end_is_given_the_running_period_over_its_pad(four):
    """Finding 2: a member left out of the early end (here `otc abe renew --end-period m1`) and renewed later over
    its pad gets the running period (3), not the one after it (4, starting when 3 ends): with period 4 its device
    did not see period 2 as withdrawn and followed the revoked m2 into it at its original start."""
    room, devices, clock, auth = four
    m1, m2, m4 = devices["m1"], devices["m2"], devices["m4"]
    keys, first = _ahead_for_everyone(room, devices, clock, auth)
    keys.revoke("m2")
    _post(m1, renew(keys, plan_renewal(keys, "m1", end_period=True, now=clock.now), os.urandom, now=clock.now))
    assert fetch_new_renewals(m1) == [3]
    clock.now += 3600
    plan = plan_renewal(keys, "m4", now=clock.now)
    assert [n for _, n in plan.catch_up] == ["m4"] and plan.running is not None and plan.running.number == 3
    assert "hold no key of the running period" in plan.question()
    late = renew(keys, plan, os.urandom, now=clock.now)
    assert [p.number for p in keys.periods()] == [1, 2, 3]  # no period made after the running one
    _post(m1, late)
    assert fetch_new_renewals(m4) == [3]
    assert {k.period: k.withdrawn for k in AbeKeys(m4.store).held()}[2]
    sync_all(room, devices)
    _period_two_starts_and_m4_speaks(room, devices, clock, first)
    assert "m4 secret after the withdrawal" in m1.read
    assert "m4 secret after the withdrawal" not in m2.read


def _homes_at_the_command_line(tmp_path, *members: str):
    """`otc device init` for an authority "campus" and ``members``; `otc abe authority`; each member granted STAFF
    on one machine (`otc abe grant-local`, which leaves a renewal pad). The homes, authority first."""
    from tests.conftest import otc

    homes = [tmp_path / name for name in ("campus", *members)]
    for home in homes:
        otc("device", "init", "--home", str(home), "--name", home.name, check=True)
    otc("abe", "authority", "--home", str(homes[0]), check=True)
    for home in homes[1:]:
        otc("abe", "grant-local", "--attributes", "STAFF", str(homes[0]), str(home), check=True)
    return homes


def test_an_early_end_with_the_relay_down_says_it_was_done_and_a_retry_ends_no_other_period(tmp_path):
    """Minor finding: `otc abe renew --end-period --relay URL` with the relay down ended the period but said only
    "relay does not answer", and running it again ended another period. Now the error says the early end was done
    and that --resend delivers it; the retry is refused (--again overrides); --resend posts the kept package."""
    import socket

    from relay.app import create_app
    from relay.config import RelayConfig
    from relay.server import RelayServer
    from tests.conftest import otc
    from tests.test_cli import one_line_error

    auth, alice, _ = _homes_at_the_command_line(tmp_path, "alice", "x")
    otc("abe", "revoke", "--home", str(auth), "x", check=True)
    with socket.socket() as s:  # a loopback port nobody listens on: the relay is down
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    error = one_line_error(otc("abe", "renew", "--home", str(auth), "--end-period", "--relay", down))
    assert "does not answer" in error and "period 2 began now" in error and "otc abe renew --resend" in error
    with PadStore(auth) as store:
        assert [p.number for p in AbeKeys(store).periods()] == [1, 2]
    again = one_line_error(otc("abe", "renew", "--home", str(auth), "--end-period", "--relay", down))
    assert "--resend" in again and "--again" in again
    with PadStore(auth) as store:
        assert [p.number for p in AbeKeys(store).periods()] == [1, 2]  # no other period ended
    server = RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'relay.db'}")), "127.0.0.1", 0,
                         threads=4).start()
    try:
        otc("abe", "renew", "--home", str(auth), "--resend", "--relay", server.url, check=True)
        got = otc("abe", "renewals", "--home", str(alice), "--relay", server.url, check=True).stdout.decode()
        assert "(period 2" in got
    finally:
        server.close()


def test_a_renewed_member_sends_nothing_under_the_old_period_while_its_move_is_on_its_way(four):
    """Finding 4: right after `otc abe renewals`, `otc room send` synced once (posting the device's contribution of
    the new period) and sent under the old period's epoch, still keyed: the revoked member read it and the renewed
    members dropped it as late. Now the device refuses (the client waits, saying for what) until its move is back
    and the new epoch keyed; then the message goes under the new period, out of the revoked member's reach."""
    import pytest

    from device.rooms.errors import MovingPeriod

    room, devices, clock, auth = four
    m1, m2, m4 = devices["m1"], devices["m2"], devices["m4"]
    _ahead_for_everyone(room, devices, clock, auth)
    sync_all(room, devices)
    keys = AbeKeys(auth)
    keys.revoke("m2")
    _post(m1, renew(keys, plan_renewal(keys, end_period=True, now=clock.now), os.urandom, now=clock.now))
    assert fetch_new_renewals(m1) == [3]
    status = m1.rooms.find("ops").status()
    assert status["moving_to"] == 3 and not status["keyed"]  # renewed, not moved yet: the old epoch is not usable
    with pytest.raises(MovingPeriod, match="key period 3"):
        m1.rooms.send("ops", "m1 secret, sent after renewing")
    m1.sync(room)  # its period-3 contribution is posted (not back yet)
    with pytest.raises(MovingPeriod):
        m1.rooms.send("ops", "m1 secret, sent after renewing")
    assert fetch_new_renewals(m4) == [3]
    for _ in range(3):
        sync_all(room, devices)
        clock.now += 31
    assert m1.rooms.find("ops").status()["keyed"]
    said(m1, "m1 secret, sent after renewing")
    for _ in range(3):
        sync_all(room, devices)
        clock.now += 31
    assert "m1 secret, sent after renewing" not in m2.read
    assert "m1 secret, sent after renewing" in m4.read


@pytest.fixture
def authority(tmp_path):
    """An authority with period 1 (30 days from its start), alice and x granted, each with a renewal pad."""
    from device.abe.store import grant_local

    auth = PadStore.init(tmp_path / "auth", "auth")
    keys = AbeKeys(auth)
    keys.become_authority()
    members = {name: PadStore.init(tmp_path / name, name) for name in ("alice", "x")}
    for store in members.values():
        grant_local(auth, store, "STAFF")
    yield keys, members, keys.periods()[0].starts
    for store in (auth, *members.values()):
        store.close()


def test_an_early_end_approved_after_the_withdrawn_period_began_is_refused(authority):
    """Finding 5, case 2: the owner was shown "Period 2 ... is WITHDRAWN: it never begins" (planned before period
    2's start) and approved after it began: period 2 had run, x's key of it was not withdrawn. Now the plan is
    made again at approval; the periods changed, so nothing is renewed and the owner is told."""
    from device.abe.renewal import PlanChanged

    keys, members, t0 = authority
    start_2 = t0 + 30 * DAY_S
    renew(keys, plan_renewal(keys, now=start_2 - DAY_S), os.urandom, now=start_2 - DAY_S)
    keys.revoke("x")
    plan = plan_renewal(keys, end_period=True, now=start_2 - 5)
    assert plan.withdraws is not None and plan.withdraws.number == 2 and "WITHDRAWN" in plan.question()
    before = (keys.periods(), keys.issued())
    with pytest.raises(PlanChanged, match="nothing was renewed"):
        renew(keys, plan, os.urandom, now=start_2 + 5)
    assert (keys.periods(), keys.issued()) == before


def test_an_early_end_approved_after_a_renewal_ahead_is_refused(authority):
    """Finding 5, case 1: an early end planned while nothing was issued ahead, approved after a renewal that
    issued period 2 ahead: it "succeeded" with no early end at all (period 1 ran on, x read on). Refused now."""
    from device.abe.renewal import PlanChanged

    keys, members, t0 = authority
    now = t0 + 25 * DAY_S
    keys.revoke("x")
    plan_end = plan_renewal(keys, end_period=True, now=now)
    assert plan_end.early and plan_end.period.number == 2 and plan_end.withdraws is None
    renew(keys, plan_renewal(keys, now=now), os.urandom, now=now)  # the other request, approved first
    with pytest.raises(PlanChanged):
        renew(keys, plan_end, os.urandom, now=now + 1)
    assert keys.periods()[0].ends > now + 1  # nothing pretended: period 1 was not ended by a refused request
    # Asked again, the early end withdraws period 2 and period 3 starts now.
    done = renew(keys, plan_renewal(keys, end_period=True, now=now + 2), os.urandom, now=now + 2)
    assert [r.member for r in done] == ["alice"] and keys.periods()[0].ends == now + 2


@pytest.mark.parametrize("ahead", [True, False], ids=["renewed-ahead-then-ended-early", "ended-early"])
def test_a_device_clock_behind_the_authority_moves_on_when_its_renewal_opens(four, ahead):
    """Finding 6: the period that replaces the one ended early starts at the authority's "now"; a renewed device
    whose clock is 10 minutes behind (a Pi has no time source on the cable) saw it as future, kept its room in
    the old period for those 10 minutes, and the revoked m2 read what it said. A period that ends a held one
    early counts as begun on the device from the moment its renewal is opened."""
    from device.rooms.service import DeviceRooms

    room, devices, clock, auth = four
    m1, m2 = devices["m1"], devices["m2"]
    _joined(room, devices, ("m1", "m2"))
    keys = AbeKeys(auth)
    clock.now = keys.periods()[0].ends - 6 * DAY_S
    if ahead:
        _post(m1, renew(keys, plan_renewal(keys, now=clock.now), os.urandom, now=clock.now))
        for d in (m1, m2):
            fetch_new_renewals(d)
    keys.revoke("m2")
    _post(m1, renew(keys, plan_renewal(keys, end_period=True, now=clock.now), os.urandom, now=clock.now))
    m1.rooms = DeviceRooms(m1.store, m1.owner, clock=lambda: clock.now - 600.0)  # 10 minutes behind
    clock.now += 5
    assert fetch_new_renewals(m1) == [3 if ahead else 2]
    held = {k.period: k.state(clock.now - 600.0) for k in AbeKeys(m1.store).held()}
    assert held[3 if ahead else 2] != "future"
    for _ in range(2):
        sync_all(room, devices)
    assert m1.rooms.find("ops").period == (3 if ahead else 2)
    said(m1, "m1, renewed 5 s after the early end")
    sync_all(room, devices)
    assert "m1, renewed 5 s after the early end" not in m2.read


BAD_RENEW = [
    {"resend": True, "end_period": True}, {"resend": True, "period": 3600}, {"resend": True, "again": True},
    {"resend": True, "end_period": "x"}, {"again": "yes"}, {"again": 1}, {"end_period": "yes"}, {"period": True},
]


def test_the_renew_rpc_refuses_what_the_command_line_refuses(tmp_path):
    """Minor finding: abe_renew with resend: true silently ignored end_period and period (a laptop asking to end
    the period early was told "re-sent"). Each of these comes back as a one-line coded 4xx error, before the
    owner is asked anything (a declining owner stands by: nothing may reach the screen)."""
    import threading
    import time

    from client.errors import RemoteError
    from device.abe.store import grant_local
    from tests.test_pair_from_laptop import client_of, served

    for auth, bob in served(tmp_path, "auth", "bob"):
        with PadStore(auth.home) as store, PadStore(bob.home) as member:
            AbeKeys(store).become_authority()
            grant_local(store, member, "STAFF")
        asked = []
        stop = threading.Event()

        def decline() -> None:
            while not stop.is_set():
                view = auth.console.snapshot().confirm
                if view is not None:
                    asked.append(view.kind)
                    auth.console.decide(False, view.request_id)
                time.sleep(0.02)

        screen = threading.Thread(target=decline, daemon=True)
        screen.start()
        try:
            client = client_of(auth)
            for params in BAD_RENEW:
                with pytest.raises(RemoteError) as info:
                    client.call("abe_renew", **params)
                assert info.value.code == "bad-request", params
                assert len(str(info.value).splitlines()) == 1
            assert asked == []
        finally:
            stop.set()
            screen.join(5)


def test_members_shows_withdrawn_only_for_a_period_that_never_ran(tmp_path):
    """Minor finding: `otc abe members` decided "withdrawn" on the times' text, to the second: a period ended
    early within its first second was shown withdrawn. Now on the times themselves."""
    import math

    from device.abe.store import grant_local
    from tests.conftest import otc

    auth, alice = tmp_path / "campus", tmp_path / "alice"
    for home in (auth, alice):
        otc("device", "init", "--home", str(home), "--name", home.name, check=True)
    otc("abe", "authority", "--home", str(auth), check=True)
    with PadStore(auth) as store, PadStore(alice) as member:
        grant_local(store, member, "STAFF")
        keys = AbeKeys(store)
        starts = keys.periods()[0].starts
        within = starts + min(0.4, (math.floor(starts) + 1 - starts) / 2)  # the same second as the start
        renew(keys, plan_renewal(keys, end_period=True, now=within), os.urandom, now=within)
        assert keys.periods()[0].ends == within > starts
    listed = otc("abe", "members", "--home", str(auth), check=True).stdout.decode()
    assert "period 1 withdrawn" not in listed and "period 1 until" in listed and "period 2 until" in listed


def _planted(room, public_key: bytes, period: int) -> str:
    """What anyone with the invite and the authority's public key makes (no attribute key at all): a well-formed
    contribution under ``(policy) and PERIOD_<period>``, bound with its own k_j, named like a member."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from device.abe.encoding import decode_public_key
    from device.abe.policy import Policy
    from device.abe.scheme import encapsulate
    from device.rooms import wire

    enc = encapsulate(decode_public_key(public_key), Policy.parse(f"({room.policy.text}) and PERIOD_{period}"))
    return wire.to_text(wire.contribution(room.room_id, enc.ciphertext.encode(), enc.key,
                                          X25519PrivateKey.generate(), Ed25519PrivateKey.generate(), "m1"))


def test_a_contribution_planted_from_the_public_key_does_not_hide_old_period_messages(four):
    """Finding 3 (a): an outsider (m3, whose keys do not satisfy the policy; only the authority's public key and the
    invite) plants a contribution under period 3 on day 2 of period 1. After the renewal ahead and the early end,
    m4, offline meanwhile, must still read the honest period-1 messages written on days 3 to 5."""
    room, devices, clock, auth = four
    m1, m2, m3, m4 = (devices[n] for n in ("m1", "m2", "m3", "m4"))
    _joined(room, devices)
    keys = AbeKeys(auth)
    first = keys.periods()[0]
    m3.post(room, _planted(room, keys.master().public.encode(), 3))  # day 2 of period 1, guessing period 3
    online = {n: d for n, d in devices.items() if n != "m4"}
    for day in (3, 4, 5):
        said(m1, f"period one, day {day}")
        sync_all(room, online)
    clock.now = first.ends - 6 * DAY_S
    _post(m1, renew(keys, plan_renewal(keys, now=clock.now), os.urandom, now=clock.now))
    keys.revoke("m2")
    _post(m1, renew(keys, plan_renewal(keys, end_period=True, now=clock.now), os.urandom, now=clock.now))
    for d in (m1, m2):
        fetch_new_renewals(d)
    sync_all(room, online)
    fetch_new_renewals(m4)  # m4 back online: its renewals first, then the room (as `otc room recv` does)
    sync_all(room, devices)
    assert all(f"period one, day {day}" in m4.read for day in (3, 4, 5))


def test_contributions_planted_from_the_public_key_take_no_roster_slot_of_the_new_period(four):
    """Finding 3 (b): five contributions planted under period 2 during period 1 were the first five entries of
    every roster of period 2, and each re-key waited five leader timeouts. Now they are checked against the
    period's secret at the move and dropped: the renewed members' rooms are keyed without waiting, and again
    after a member leaves and rejoins."""
    room, devices, clock, auth = four
    m1, m3, m4 = devices["m1"], devices["m3"], devices["m4"]
    _joined(room, devices, ("m1", "m4"))
    keys = AbeKeys(auth)
    for _ in range(5):
        m3.post(room, _planted(room, keys.master().public.encode(), 2))
    sync_all(room, devices)
    first = keys.periods()[0]
    _post(m1, renew(keys, plan_renewal(keys, now=first.ends - DAY_S), os.urandom, now=first.ends - DAY_S))
    for d in (m1, m4):
        assert fetch_new_renewals(d) == [2]
    clock.now = first.ends + 1  # period 2 begins
    for _ in range(3):
        sync_all(room, devices)
    r1 = m1.rooms.find("ops")
    assert r1.period == 2 and r1.status()["keyed"] and r1.status()["epoch_members"] == 2
    for item in m4.rooms.leave("ops"):  # every leave item (DeviceRooms.leave answers a list since red team R7 M3)
        m4.post(room, item)
    sync_all(room, devices)
    m4.post(room, m4.rooms.join("ops"))
    sync_all(room, devices)
    sync_all(room, devices)
    assert r1.status()["keyed"] and m4.rooms.find("ops").status()["keyed"]  # no leader timeout passed


def test_the_command_line_says_a_member_left_out_got_the_running_periods_key(tmp_path):
    """Finding 2 at the command line: after `otc abe renew --end-period alice`, `otc abe renew bob` gives bob the
    running period (2), says so, and makes no period after it."""
    from tests.conftest import otc

    auth, _, _ = _homes_at_the_command_line(tmp_path, "alice", "bob")
    ended = otc("abe", "renew", "--home", str(auth), "--end-period", "alice", check=True).stderr.decode()
    assert "Renewed 1 member for period 2" in ended and ": alice" in ended
    caught = otc("abe", "renew", "--home", str(auth), "bob", check=True)
    assert "Gave 1 member the running period 2's key" in caught.stderr.decode() and ": bob" in caught.stderr.decode()
    assert "Renewed" not in caught.stderr.decode() and len(caught.stdout.decode().splitlines()) == 1
    with PadStore(auth) as store:
        assert [p.number for p in AbeKeys(store).periods()] == [1, 2]


def test_an_early_end_queued_behind_a_renewal_ahead_on_the_devices_screen_is_refused(tmp_path):
    """Finding 5 through the device: laptop B asks for an ordinary renewal (it will issue period 2 ahead), and while
    it waits on the screen, laptop A asks to end the period early (planned then: period 2 from now). The owner
    approves B, then A: A is refused with a coded error, and nothing of it is done (before, it "succeeded" with no
    early end at all, the revoked member reading on)."""
    import threading

    from client.errors import RemoteError
    from device.abe.store import grant_local
    from tests.test_pair_from_laptop import client_of, served

    def wait_for(condition) -> None:
        for _ in range(2000):
            if condition():
                return
            threading.Event().wait(0.01)
        raise AssertionError("the device's screen never got there")

    for auth, bob in served(tmp_path, "auth", "bob"):
        with PadStore(auth.home) as store, PadStore(bob.home) as member, \
                PadStore.init(tmp_path / "carol", "carol") as carol:
            AbeKeys(store).become_authority()
            grant_local(store, member, "STAFF")
            grant_local(store, carol, "STAFF")
            AbeKeys(store).revoke("bob")  # whom the early end is for; carol is renewed
        answers: dict[str, object] = {}

        def call(who: str, **params) -> None:
            try:
                answers[who] = client_of(auth).call("abe_renew", **params)
            except RemoteError as exc:
                answers[who] = exc

        b = threading.Thread(target=call, args=("B",), daemon=True)
        b.start()
        wait_for(lambda: auth.console.snapshot().confirm is not None)
        a = threading.Thread(target=call, args=("A",), kwargs={"end_period": True}, daemon=True)
        a.start()
        wait_for(lambda: auth.console.snapshot().confirm.queued == 1)  # A planned, waiting behind B
        shown = auth.console.snapshot().confirm
        auth.console.decide(True, shown.request_id)
        b.join(30)
        wait_for(lambda: (view := auth.console.snapshot().confirm) is not None and view.request_id != shown.request_id)
        auth.console.decide(True, auth.console.snapshot().confirm.request_id)
        a.join(30)
        assert isinstance(answers["A"], RemoteError) and answers["A"].code == "abe-plan-changed", answers
        with PadStore(auth.home) as store:
            periods = AbeKeys(store).periods()
        assert [p.number for p in periods] == [1, 2] and periods[1].starts == periods[0].ends  # no early end


def test_room_send_right_after_a_renewal_waits_for_the_move_through_the_device_and_relay(tmp_path):
    """Finding 4 the way people hit it: `otc abe renewals`, then `otc room send` (RoomClient.send, as the command
    line and the chat do), against served devices and a real relay. The client waits, saying it waits for the
    device's move to the new period, and the message goes out under the new period: the revoked bob, whose device
    holds the old epoch's key, does not read it."""
    from client.relay import RelayClient
    from client.rooms import RoomClient, fetch_renewals
    from client.rpc import DeviceClient, pair
    from client.state import ClientState
    from device.abe.store import grant_local
    from relay.app import create_app
    from relay.config import RelayConfig
    from relay.server import RelayServer
    from tests.chat_fixtures import OwnerSource, Person

    PadStore.init(tmp_path / "auth", "auth").close()
    with PadStore(tmp_path / "auth") as store:
        AbeKeys(store).become_authority()
    relay_server = RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'relay.db'}")), "127.0.0.1", 0,
                               threads=8).start()
    relay = RelayClient(relay_server.url)
    people = {}
    try:
        for name in ("alice", "bob"):
            PadStore.init(tmp_path / name, name).close()
            with PadStore(tmp_path / "auth") as auth, PadStore(tmp_path / name) as member:
                grant_local(auth, member, "STAFF,OPS")
            person = Person(name, tmp_path / name, tmp_path / f"{name}-laptop", OwnerSource())
            person.start()
            state = ClientState(person.laptop)
            pair(person.url, name=f"{name}-laptop", ask_code=lambda p=person: p.source.codes[-1], state=state)
            people[name] = (person, RoomClient(DeviceClient(person.url, state=state), RelayClient(relay_server.url)))
        with PadStore(tmp_path / "auth") as store:
            from device.rooms.service import DeviceRooms
            from tests.test_rooms_e2e import Owner

            invite = DeviceRooms(store, Owner()).create("ops", "STAFF and OPS").invite()
        alice, bob = people["alice"][1], people["bob"][1]
        for client in (alice, bob):
            client.device.call("room_add", invite=invite)
        for client in (alice, bob):
            client.join("ops")
            for c in (alice, bob):
                c.sync("ops")
        alice.send("ops", "before the end")
        assert "before the end" in [e.get("text") for e in bob.sync("ops")]
        with PadStore(tmp_path / "auth") as store:
            keys = AbeKeys(store)
            keys.revoke("bob")
            for r in renew(keys, plan_renewal(keys, end_period=True), os.urandom):
                relay.send(r.mailbox, r.package, r.key_id.hex())
        assert [g["outcome"] for g in fetch_renewals(alice.device, relay)] == ["stored"]
        waited: list[dict] = []
        alice.send("ops", "after renewing", on_wait=waited.append)
        assert waited and waited[0]["moving_to"] == 2 and not waited[0]["keyed"]
        assert alice.room("ops")["period"] == 2
        assert "after renewing" not in [e.get("text") for e in bob.sync("ops")]
    finally:
        for person, _ in people.values():
            person.stop()
        relay_server.close()
