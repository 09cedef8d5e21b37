"""Policies: strict parsing with positioned errors, canonical text, the LSSS and the prune step."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.abe.errors import PolicyError
from device.abe.policy import MAX_DEPTH, MAX_LEAVES, ORDER, Gate, Leaf, Policy, parse_attributes
from tests.abe_helpers import NAMES, evaluate, policy_trees, render


@pytest.mark.parametrize(("text", "tree"), [
    ("A", Leaf("A")),
    ("a and B", Gate(2, (Leaf("A"), Leaf("B")))),
    ("A OR b Or c", Gate(1, (Leaf("A"), Leaf("B"), Leaf("C")))),
    ("(A or B) and C", Gate(2, (Gate(1, (Leaf("A"), Leaf("B"))), Leaf("C")))),
    ("2 of (A, B, C)", Gate(2, (Leaf("A"), Leaf("B"), Leaf("C")))),
    ("2 OF (A, B)", Gate(2, (Leaf("A"), Leaf("B")))),
    ("1 of (A)", Leaf("A")),
    ("A and (2 of (B, C or D, E))", Gate(2, (Leaf("A"), Gate(2, (Leaf("B"), Gate(1, (Leaf("C"), Leaf("D"))),
                                                              Leaf("E")))))),
    ("A and A", Gate(2, (Leaf("A"), Leaf("A")))),
    ("((((x))))", Leaf("X")),
    ("7 and of", Gate(2, (Leaf("7"), Leaf("OF")))),
    ("\tstaff_2024\n and  Admin ", Gate(2, (Leaf("STAFF_2024"), Leaf("ADMIN")))),
])
def test_parses(text, tree):
    policy = Policy.parse(text)
    assert policy.root == tree
    assert Policy.parse(policy.text) == policy


# Every malformed policy, with the 0-based position its error must name.
MALFORMED = [
    ("", 0, "empty"),
    ("   ", 0, "empty"),
    ("A and B or C", 8, "mixing"),
    ("A or B and C", 7, "mixing"),
    ("(A and B", 8, "expected ')'"),
    ("A and B)", 7, "unbalanced"),
    ("A and", 5, "expected an attribute"),
    ("and A", 0, "operator"),
    ("A B", 2, "expected 'and', 'or'"),
    ("A - B", 2, "unexpected character '-'"),
    ("A and é", 6, "unexpected character"),
    ("()", 1, "expected an attribute"),
    ("(A, B)", 2, "','"),
    ("A,B", 1, "expected 'and', 'or'"),
    ("3 of (A, B)", 0, "never be met"),
    ("0 of (A, B)", 0, "at least 1"),
    ("2 of A, B", 5, "expected '('"),
    ("2 of (A, B", 10, "expected ')'"),
    ("2 of ()", 6, "expected an attribute"),
    ("A and (B or C) and", 18, "expected an attribute"),
    ("A and " + "x" * 70, 6, "longer than 64"),
    ("A & B", 2, "unexpected character '&'"),
    ("!A", 0, "unexpected character '!'"),
    ("A < 5", 2, "unexpected character '<'"),
    ("(" * (MAX_DEPTH + 2) + "A" + ")" * (MAX_DEPTH + 2), MAX_DEPTH + 1, "nested"),
    (" or ".join(["A"] * (MAX_LEAVES + 1)), 5 * MAX_LEAVES, f"more than {MAX_LEAVES}"),
]


@pytest.mark.parametrize(("text", "position", "words"), MALFORMED)
def test_malformed_policies_name_their_position(text, position, words):
    with pytest.raises(PolicyError) as info:
        Policy.parse(text)
    assert info.value.position == position
    assert f"at character {position + 1}:" in str(info.value)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


@given(st.text(alphabet="AB01 _(),&-andorf\t", max_size=40))
@settings(max_examples=400, deadline=None)
def test_any_text_parses_or_fails_with_a_position(text):
    try:
        policy = Policy.parse(text)
    except PolicyError as exc:
        assert 0 <= exc.position <= len(text)
        assert "\n" not in str(exc)
    else:
        assert Policy.parse(policy.text) == policy


@given(policy_trees(), st.sets(st.sampled_from(NAMES)), st.booleans(), st.sampled_from(["lower", "upper"]))
@settings(max_examples=300, deadline=None)
def test_satisfaction_and_reconstruction(tree, attributes, top_parens, case):
    policy = Policy.parse(render(tree, case, top_parens))
    assert Policy.parse(policy.text) == policy
    coefficients = policy.prune(attributes)
    assert (coefficients is not None) == evaluate(tree, attributes) == policy.satisfied_by(attributes)
    if coefficients is None:
        return
    rows, width = policy.matrix
    assert all(policy.rows[i] in attributes for i in coefficients)
    # sum of w_i M_i over the chosen rows is (1, 0, ..., 0): the secret and nothing else.
    total = [0] * width
    for i, w in coefficients.items():
        for col, v in rows[i].items():
            total[col] = (total[col] + w * v) % ORDER
    assert total == [1] + [0] * (width - 1)


@given(policy_trees(max_leaves=6), st.integers(1, ORDER - 1), st.sets(st.sampled_from(NAMES)))
@settings(max_examples=100, deadline=None)
def test_shares_reconstruct_the_secret(tree, secret, attributes):
    policy = Policy.parse(render(tree))
    counter = iter(range(1, 10**6))
    shares = policy.shares(secret, lambda: next(counter) * 7919 % ORDER)
    coefficients = policy.prune(attributes)
    if coefficients is not None:
        assert sum(w * shares[i] for i, w in coefficients.items()) % ORDER == secret


def test_prune_picks_the_fewest_rows():
    policy = Policy.parse("(A and B and C) or D or (E and F)")
    assert policy.prune({"A", "B", "C", "D", "E", "F"}) == {3: 1}
    assert set(policy.prune({"A", "B", "C", "E", "F"})) == {4, 5}
    threshold = Policy.parse("2 of ((A and B and C), D, E)")
    assert set(threshold.prune({"A", "B", "C", "D", "E"})) == {3, 4}
    assert threshold.prune({"A", "B", "D"}) is None


def test_and_or_trees_need_no_coefficients():
    policy = Policy.parse("(A or B) and (C or (D and E)) and F")
    assert set(policy.prune({"B", "D", "E", "F"}).values()) == {1}


def test_attribute_lists():
    assert parse_attributes("staff, Admin,STAFF") == ("ADMIN", "STAFF")
    with pytest.raises(PolicyError) as info:
        parse_attributes("A,B-C")
    assert info.value.position == 3
    with pytest.raises(PolicyError):
        parse_attributes("A,or")
    with pytest.raises(PolicyError):
        parse_attributes("A,,B")
