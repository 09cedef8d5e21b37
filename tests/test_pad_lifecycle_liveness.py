"""Moving the split after crossing grants (docs/pad-lifecycle.md, "attacks"): what each device believes of the
other's half, and what a grant given back in part leaves given. The second outside review's liveness findings
(C3, C5), each written as the fixed behaviour; the byte check is the independent one in lifecycle_checker."""
from __future__ import annotations

import pytest

from device.engine import Device
from onetimechat import package as fmt
from tests import lifecycle_checker as checker
from tests.conftest import make_pair, pad_bytes
from tests.test_pad_lifecycle_attacks import alice_talks_and_asks

SIZE = 4096


@pytest.fixture
def pair(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=SIZE)
    a, b = Device.open(home_a), Device.open(home_b)
    yield a, b, pad_id
    a.close()
    b.close()


def crossing(a: Device, b: Device, pad_id: bytes, amount: int) -> list[bytes]:
    """Both owners grant at once: each grant is refused by the other device (out of date)."""
    h, _ = a.grant(pad_id, amount)
    g, _ = b.grant(pad_id, amount)
    assert a.unpackage(bytes(g.package)).control == "refused"
    assert b.unpackage(bytes(h.package)).control == "refused"
    return [bytes(h.package), bytes(g.package)]


def test_after_crossing_grants_auto_mode_gives_again(pair):
    """C3: after crossing, neither device counts its own dead grant as the peer's unused half, so when alice
    has used what she can, bob's device (auto, with 1400+ bytes unused) gives her some again; no byte twice."""
    a, b, pad_id = pair
    sent = crossing(a, b, pad_id, 500)
    assert b.store.lost_grant(pad_id) == 500 and a.store.lost_grant(pad_id) == 500
    outcomes: list[str | None] = []
    sent += alice_talks_and_asks(a, b, lambda grant: outcomes.append(a.unpackage(grant).control), size=40)
    checker.assert_no_byte_twice(sent, SIZE)
    assert "applied" in outcomes, "bob's device never gave alice's device pad again after the crossing"
    assert b.store.lost_grant(pad_id) == 0  # the grant that moved the split over those bytes ends the loss


def test_a_partial_hand_back_counts_only_the_bytes_given_back(pair):
    """C5: alice gives 500; bob takes them and gives 100 back: alice's log says 100 came back, and the 400 bob
    still holds unused stay counted as given and unseen."""
    a, b, pad_id = pair
    h, _ = a.grant(pad_id, 500)
    assert b.unpackage(bytes(h.package)).control == "applied"
    g, _ = b.grant(pad_id, 100)
    assert a.unpackage(bytes(g.package)).control == "applied"
    events = [e for e in a.store.events(20) if e.get("event") == "grant-returned"]
    assert events and events[0]["detail"].startswith("100 bytes")
    assert a.granted_unseen() == {pad_id: 400}
    assert b.store.pad(pad_id).split == SIZE // 2 - 400
    assert a.store.lost_grant(pad_id) == 0  # bob took it: not lost


def test_after_crossing_status_reports_the_dead_grant_as_lost_not_as_to_be_sent_again(pair):
    """C2: after crossing, status does not promise a copy of the dead grant (none is ever sent: a request gets
    no copy of it); it reports those bytes as lost, nobody's until the next grant."""
    a, b, pad_id = pair
    crossing(a, b, pad_id, 500)
    status = a.status()
    assert not any(w.startswith("grant-unseen") for w in status["warnings"])
    lost = [w for w in status["warnings"] if w.startswith("grant-lost")]
    assert lost and lost[0].startswith("grant-lost: 500 bytes") and "nobody's until the next grant" in lost[0]
    contact = status["contacts"][0]
    assert (contact["granted_unseen"], contact["granted_lost"]) == (0, 500)
    request = b.ask("alice", 1000)
    answer = a.answer_request(a.unpackage(bytes(request.package)))
    # whatever the answer is, it is no copy of the dead grant (a copy gives nothing and would be refused)
    assert answer is None or (answer.gives > 0 and b.unpackage(bytes(answer.package)).control == "applied")


BIG = 65536


def test_a_peer_asking_without_using_its_grant_burns_at_most_three_copies(tmp_path):
    """C4: a lying peer device (the attacker: it asks again and again, from its own old half, never touching
    the bytes granted, so the grant stays unseen) gets the grant said again for at most 3 requests; after that
    the auto policy gives nothing while the grant is pending: the granter's half costs at most 3 segments."""
    home_a, home_b, pad_id = make_pair(tmp_path, size=BIG)
    pad = pad_bytes(home_a, pad_id)
    with Device.open(home_a) as a, Device.open(home_b) as b:
        while b.store.pad(pad_id).send_left > 6000:  # bob's device talks, alice's sees it use its half
            a.unpackage(bytes(b.package("alice", b"b" * 1000).package))
        bob_next = b.store.pad(pad_id).send_next  # bob's unused old half lies below his pointer
        control = fmt.segment_length(fmt.CONTROL.size)

        def lie(offset: int):  # a request "0 left", sealed by the attacker on bob's side of the pad
            request = checker.forge_request(pad, False, pad_id, offset, 10**9, 0)
            return a.answer_request(a.unpackage(request))

        first = lie(BIG // 2)
        assert first is not None and first.gives > 0
        before = a.store.pad(pad_id).send_left
        answers = []
        offset = BIG // 2 + control
        while offset + control <= bob_next and len(answers) < 60:
            answers.append(lie(offset))
            offset += control
        after = a.store.pad(pad_id).send_left
    copies = [x for x in answers if x is not None]
    assert len(answers) == 60 and len(copies) == 3 and all(x.gives == 0 for x in copies)
    assert answers[3:] == [None] * 57
    assert before - after == 3 * control


def test_a_lying_peers_far_epoch_does_not_make_a_pending_grant_count_as_lost(tmp_path):
    """A lying peer device (the attacker forges, with its own side of the pad, a grant at epoch 2^62 - 1 naming
    a split against alice) is refused; it pushes alice's peer epoch, yet alice's pending grant does not count as
    lost, so auto still judges bob by what he was seen to use and gives him nothing more."""
    home_a, home_b, pad_id = make_pair(tmp_path, size=BIG)
    pad = pad_bytes(home_a, pad_id)
    with Device.open(home_a) as a, Device.open(home_b) as b:
        while b.store.pad(pad_id).send_left > 6000:
            a.unpackage(bytes(b.package("alice", b"b" * 1000).package))
    control = fmt.segment_length(fmt.CONTROL.size)
    with Device.open(home_a) as a:
        first = a.answer_request(a.unpackage(checker.forge_request(pad, False, pad_id, BIG // 2, 10**9, 0)))
        assert first is not None and first.gives > 0
        bad = checker.forge_grant(pad, False, pad_id, BIG // 2 + control, (1 << 62) - 1, BIG // 2 + 10)
        assert a.unpackage(bad).control == "refused"
        assert a.store.lost_grant(pad_id) == 0
        given = [a.answer_request(a.unpackage(checker.forge_request(pad, False, pad_id, BIG // 2 + control * i,
                                                                    10**9, 0))) for i in range(2, 12)]
        assert all(x is None or x.gives == 0 for x in given)
