"""The decision about the relay's store identity that Messenger._receive makes after each read (client/messenger.py
read_terms and store_decision), case by case; the end-to-end behaviour is in tests/test_messaging_store_change.py
and tests/test_store_change_review.py (docs/client.md, "Cursors and the relay's store")."""

from __future__ import annotations

import pytest

from client.messenger import ReadTerms, StoreDecision, read_terms, store_decision

S, T = "a" * 32, "b" * 32  # two store identities
SAME = StoreDecision()


@pytest.mark.parametrize(("known", "terms"), [
    (None, ReadTerms(ack=False, store=None)),  # none recorded: read without acknowledging, to learn it
    ("", ReadTerms(ack=False, store=None)),  # a relay that named none: acknowledged after its answer says so
    (S, ReadTerms(ack=True, store=S)),  # recorded: named in the read, which acknowledges
])
def test_read_terms(known, terms):
    assert read_terms(known) == terms


@pytest.mark.parametrize("moved", [False, True])
def test_none_recorded_relay_names_none_records_it_as_such(moved):
    assert store_decision(None, None, cursors_moved=moved) == StoreDecision(record="")


@pytest.mark.parametrize("known", [None, ""])
def test_first_identity_with_cursors_at_zero_is_learnt(known):
    assert store_decision(known, S, cursors_moved=False) == StoreDecision(record=S)


@pytest.mark.parametrize("known", [None, ""])
def test_first_identity_for_cursors_kept_without_one_resets_them(known):
    assert store_decision(known, S, cursors_moved=True) == StoreDecision(reset=S, upgraded=True)


@pytest.mark.parametrize("moved", [False, True])
@pytest.mark.parametrize("known", ["", S])
def test_relay_naming_none_is_acknowledged_after_its_answer(known, moved):
    assert store_decision(known, None, cursors_moved=moved) == StoreDecision(ack_unnamed=True)


@pytest.mark.parametrize("moved", [False, True])
def test_same_store_changes_nothing(moved):
    assert store_decision(S, S, cursors_moved=moved) == SAME


@pytest.mark.parametrize("moved", [False, True])
def test_another_identity_in_an_answer_resets_the_cursors(moved):
    assert store_decision(S, T, cursors_moved=moved) == StoreDecision(reset=T, upgraded=False)


@pytest.mark.parametrize("moved", [False, True])
@pytest.mark.parametrize(("known", "upgraded"), [(S, False), ("", True), (None, True)])
def test_a_refused_read_resets_the_cursors(known, upgraded, moved):
    assert store_decision(known, T, refused=True, cursors_moved=moved) == StoreDecision(reset=T, upgraded=upgraded)


def test_a_refused_read_naming_the_recorded_store_still_resets():
    # Not met from an honest relay (it refuses only another store); the read was refused, so nothing is trusted.
    assert store_decision(S, S, refused=True) == StoreDecision(reset=S, upgraded=False)


@pytest.mark.parametrize("known", [None, "", S])
@pytest.mark.parametrize("seen", [None, S, T])
@pytest.mark.parametrize("moved", [False, True])
def test_at_most_one_action(known, seen, moved):
    decision = store_decision(known, seen, cursors_moved=moved)
    assert sum([decision.record is not None, decision.ack_unnamed, decision.reset is not None]) <= 1
    assert not decision.upgraded or decision.reset is not None
