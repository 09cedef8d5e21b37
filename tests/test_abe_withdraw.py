"""Ending a period early after the next one was issued ahead withdraws that one (issue 22, docs/rooms.md).

The rules, on the authority's side (which period ending early makes, which it withdraws, what its records then
say, what is re-sent) and on a member's device (a withdrawn period's key counts for nothing: no room period,
no decapsulation, no warning), whichever order the renewals arrive in. The room-level attack, end to end with
real devices and a relay: tests/test_rooms_e2e.py::test_ending_early_withdraws_the_period_issued_ahead.
"""

from __future__ import annotations

import os

import pytest

from device.abe.errors import NotSatisfied
from device.abe.periods import DAY_S, Period
from device.abe.policy import Policy
from device.abe.renewal import PlanChanged, RenewalPads, plan_renewal, renew
from device.abe.scheme import encapsulate
from device.abe.store import AbeKeys, HeldKey, grant_local, withdrawn_keys
from device.storage.padstore import PadStore
from onetimechat import package as fmt
from onetimechat.cli import main


@pytest.fixture
def world(tmp_path):
    """An authority with period 1 (30 days from T), and two members with a renewal pad each: alice and x."""
    auth = PadStore.init(tmp_path / "auth", "auth")
    keys = AbeKeys(auth)
    keys.become_authority()
    members = {}
    for name in ("alice", "x"):
        members[name] = PadStore.init(tmp_path / name, name)
        grant_local(auth, members[name], "STAFF")
    first = keys.periods()[0]
    yield keys, members, first.starts
    for store in (auth, *members.values()):
        store.close()


def _open_all(member: PadStore, renewals) -> list[int]:
    """The member's device opens the renewals meant for it, in the order given: the periods stored."""
    pads = RenewalPads(AbeKeys(member))
    mine = set(pads.mailboxes())
    return [pads.open(fmt.decode(r.package)).period for r in renewals if r.mailbox in mine]


def _ahead_then_early(keys: AbeKeys, t0: float, day: float = 25) -> tuple[list, list]:
    """Renew everyone ahead on day ``day - 1`` (period 2 from day 30), revoke x, end early on ``day``."""
    ahead = renew(keys, plan_renewal(keys, now=t0 + (day - 1) * DAY_S), os.urandom, now=t0 + (day - 1) * DAY_S)
    keys.revoke("x")
    plan = plan_renewal(keys, end_period=True, now=t0 + day * DAY_S)
    return ahead, renew(keys, plan, os.urandom, now=t0 + day * DAY_S)


def test_ending_early_with_a_period_issued_ahead_withdraws_it_and_starts_one_after_it_now(world):
    keys, members, t0 = world
    now = t0 + 25 * DAY_S
    ahead = renew(keys, plan_renewal(keys, now=now - DAY_S), os.urandom, now=now - DAY_S)
    assert sorted(r.member for r in ahead) == ["alice", "x"]
    assert keys.issued_ahead(now) == Period(2, t0 + 30 * DAY_S, t0 + 60 * DAY_S)
    keys.revoke("x")
    plan = plan_renewal(keys, end_period=True, now=now)
    # Before, this was refused ("The next period has not begun yet"): now period 3 starts now, after period 2
    # in number, and lasts as long as the newest (as any period made by ending early).
    assert plan.period == Period(3, now, now + 30 * DAY_S) and plan.new_period
    assert plan.withdraws == Period(2, t0 + 30 * DAY_S, t0 + 60 * DAY_S)
    assert [name for _, name in plan.members] == ["alice"] and plan.left == ["x: revoked"]
    question = plan.question()
    assert "ends NOW" in question and "Period 2, whose keys were issued ahead, is WITHDRAWN" in question
    assert keys.periods()[-1].number == 2  # planning writes nothing
    (sent,) = renew(keys, plan, os.urandom, now=now)
    assert sent.member == "alice"
    # The records: period 1 ended now, period 2 withdrawn (began and ended now), period 3 runs.
    assert keys.periods() == [Period(1, t0, now), Period(2, now, now), Period(3, now, now + 30 * DAY_S)]
    for i in keys.issued():
        assert (i.period, i.member, i.starts, i.ends) in {
            (1, "alice", t0, now), (1, "x", t0, now), (2, "alice", now, now), (2, "x", now, now),
            (3, "alice", now, now + 30 * DAY_S)}
    for later in (now + 1, t0 + 30 * DAY_S + 1, now + 30 * DAY_S - 1):  # period 2's own start changes nothing
        assert keys.current_period(later).number == 3 and keys.issued_ahead(later) is None
    assert keys.period_for_grant(now=now + 1).number == 3  # a grant in person now is for period 3
    # The same renewal again changes nothing (its plan is stale: refused, re-planned at approval); the next
    # ordinary renewal is for period 4, from period 3's end.
    with pytest.raises(PlanChanged):
        renew(keys, plan, os.urandom, now=now + 1)
    assert keys.periods()[-1].number == 3
    assert keys.preview_next_period(now=now + 1) == (Period(4, now + 30 * DAY_S, now + 60 * DAY_S), True)


def test_a_length_given_at_the_early_end_counts_from_now(world):
    keys, members, t0 = world
    renew(keys, plan_renewal(keys, now=t0 + 24 * DAY_S), os.urandom, now=t0 + 24 * DAY_S)
    now = t0 + 25 * DAY_S
    assert keys.preview_next_period(10 * DAY_S, now=now, early=True) == (Period(3, now, now + 10 * DAY_S), True)
    plan = plan_renewal(keys, end_period=True, length=10 * DAY_S, now=now)
    renew(keys, plan, os.urandom, now=now)
    assert keys.periods()[-1] == Period(3, now, now + 10 * DAY_S)


def test_an_early_end_without_a_period_issued_ahead_is_as_before(world):
    keys, members, t0 = world
    now = t0 + 10 * DAY_S
    plan = plan_renewal(keys, end_period=True, now=now)
    assert plan.withdraws is None and "WITHDRAWN" not in plan.question()
    assert plan.period == Period(2, now, now + 30 * DAY_S)
    renew(keys, plan, os.urandom, now=now)
    assert keys.periods() == [Period(1, t0, now), Period(2, now, now + 30 * DAY_S)]


def test_a_members_device_never_uses_a_withdrawn_periods_key(world):
    keys, members, t0 = world
    ahead, early = _ahead_then_early(keys, t0)
    alice = AbeKeys(members["alice"])
    aid = keys.master().public.authority_id
    assert _open_all(members["alice"], ahead) == [2]
    assert set(alice.periods_held(aid)) == {1, 2}  # issued ahead, not withdrawn yet on this device
    assert _open_all(members["alice"], early) == [3]
    held = {k.period: k for k in alice.held()}
    assert held[2].withdrawn and held[2].state(t0 + 31 * DAY_S) == "withdrawn"
    assert not held[1].withdrawn and not held[3].withdrawn
    assert set(alice.periods_held(aid)) == {1, 3}  # what rooms go by: period 2 is not there...
    assert held[3].ends < held[2].ends  # ...not even after period 3 ends, before period 2 would have
    # What the device shows (a cold run: `otc abe status` still gave period 1's end of 30 days): ended early,
    # at period 3's start; period 3 itself as issued.
    shown = {k.period: k.to_dict(t0 + 26 * DAY_S) for k in alice.held()}
    assert shown[1]["state"] == "ended" and shown[1]["ends"] == shown[3]["starts"]
    assert shown[3]["state"] == "valid" and shown[2]["state"] == "withdrawn"
    assert held[1].ended_early == held[3].starts and held[3].ended_early is None
    assert [k.period for k in alice.member_keys(aid)] == [1, 3]
    # A contribution under period 2 (the revoked member's, after period 2's start) is undecidable here: the
    # withdrawn key decapsulates nothing, so the room neither moves to period 2 nor admits it.
    enc = encapsulate(keys.master().public, Policy.parse("STAFF and PERIOD_2"))
    with pytest.raises(NotSatisfied):
        alice.decapsulate(enc.ciphertext)
    ours = encapsulate(keys.master().public, Policy.parse("STAFF and PERIOD_3"))
    assert alice.decapsulate(ours.ciphertext) == ours.key
    # No warning for a withdrawn key, even once it would have been due or expired.
    for later in (t0 + 54 * DAY_S, t0 + 61 * DAY_S):  # due, then expired, had it not been withdrawn
        assert not any("period 2" in w for w in alice.key_warnings(later))
    # The revoked member's device has no renewal: its period-2 key is not withdrawn there (it cannot know),
    # which is why rooms also order periods by number (docs/rooms.md).
    assert _open_all(members["x"], ahead + early) == [2]
    x = AbeKeys(members["x"])
    assert set(x.periods_held(aid)) == {1, 2}
    with pytest.raises(NotSatisfied):
        x.decapsulate(ours.ciphertext)


def test_the_withdrawal_rule_does_not_depend_on_the_order_keys_arrive_in():
    aid = b"a" * 16

    def key(n: int, period: int | None, starts: float | None, ends: float | None, authority: bytes = aid) -> HeldKey:
        return HeldKey(bytes([n]) * 16, "auth", authority, ("STAFF",), period, starts, ends)

    t = 1_000_000.0
    withdrawn = [key(1, 1, t, t + 25), key(2, 2, t + 30, t + 60), key(3, 3, t + 25, t + 60)]
    for keys in (withdrawn, withdrawn[::-1], [withdrawn[2], withdrawn[0], withdrawn[1]]):
        assert withdrawn_keys(keys) == {bytes([2]) * 16}
    # Periods that follow each other, or a period ended early (the next begins later than it did): none.
    assert withdrawn_keys([key(1, 1, t, t + 30), key(2, 2, t + 30, t + 60), key(3, 3, t + 40, t + 70)]) == set()
    # Another authority's periods, and keys from before periods, do not count.
    assert withdrawn_keys([key(2, 2, t + 30, t + 60), key(3, 3, t + 25, t + 60, b"b" * 16),
                           key(4, None, None, None)]) == set()


def test_renewals_of_a_withdrawn_period_are_not_sent_again(world):
    keys, members, t0 = world
    ahead, early = _ahead_then_early(keys, t0)
    pads = RenewalPads(keys)
    assert [r.package for r in pads.resend(now=t0 + 25 * DAY_S)] == [early[0].package]
    assert pads.resend(now=t0 + 61 * DAY_S) == []


def test_otc_abe_renew_end_period_withdraws_the_period_issued_ahead(world, capsys):
    keys, members, t0 = world
    home = str(keys.store.home)
    capsys.readouterr()
    assert main(["abe", "renew", "--home", home]) == 0  # ahead: period 1 runs 30 days from now
    assert "Renewed 2 members for period 2" in capsys.readouterr().err
    assert main(["abe", "revoke", "--home", home, "x"]) == 0
    capsys.readouterr()
    assert main(["abe", "renew", "--home", home, "--end-period"]) == 0
    out = capsys.readouterr()
    assert len(out.out.strip().splitlines()) == 1  # alice's package (no relay given: printed)
    assert "Renewed 1 member for period 3" in out.err
    assert "Period 2, issued ahead, is withdrawn" in out.err and "Not renewed: x: revoked" in out.err
    assert main(["abe", "members", "--home", home]) == 0
    listed = capsys.readouterr().out
    assert listed.count("period 2 withdrawn") == 2 and "period 3 until" in listed
    # Only each member's newest key is the one a renewal renews; the older ones say what replaced them.
    alice = [line for line in listed.splitlines() if line.startswith("alice ")]
    shown = [("renewable" in line, "renewed (period 3)" in line) for line in alice]
    assert shown == [(False, True), (False, True), (True, False)]  # periods 1 and 2 (withdrawn), then 3
