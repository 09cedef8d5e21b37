"""A ciphertext whose rows are not shares of one secret is refused by every member alike (outside review, #22).

The attacker, written here from the scheme's equations (device/abe/scheme.py's docstring), knows only the
authority's public key, as an invite holder or the relay does. It encapsulates honestly but adds 1 to the share
of one row (C_i times g1^a) and seals the result with the key it knows: members who decapsulate through the
other rows would recover the key and accept, members who need the spoiled row would not -- a split by
attribute that no one sees. With the consistency check every member refuses it, whatever it holds.
"""

from __future__ import annotations

import os

import pytest
from py_arkworks_bls12381 import G1Point

from device.abe.encoding import Ciphertext
from device.abe.errors import DecapsulationFailed, NotSatisfied
from device.abe.group import G1_GENERATOR, G2_GENERATOR, hash_attribute, random_scalar, scalar
from device.abe.policy import Policy
from device.abe.scheme import _derive, decapsulate, encapsulate, keygen, setup


def spoiled(public, policy: Policy, row: int) -> tuple[Ciphertext, bytes]:
    """The attacker's ciphertext: honest but for one share, tagged with the key it knows."""
    s = random_scalar(os.urandom)
    shares = policy.shares(s, lambda: random_scalar(os.urandom))
    shares[row] = (shares[row] + 1)
    rows = []
    for attribute, share in zip(policy.rows, shares):
        r = random_scalar(os.urandom)
        c = G1Point.multiexp_unchecked([public.g1_a, hash_attribute(attribute)], [scalar(share), scalar(-r)])
        rows.append((c, G2_GENERATOR * scalar(r)))
    unsealed = Ciphertext(authority_id=public.authority_id, policy=policy, c0=G1_GENERATOR * scalar(s),
                          rows=tuple(rows), tag=b"")
    key, tag = _derive(public.powers.pow(s), unsealed.body())
    return Ciphertext(authority_id=public.authority_id, policy=policy, c0=unsealed.c0, rows=unsealed.rows,
                      tag=tag), key


MEMBERS = {"admin": ["STAFF", "ADMIN"], "ops": ["STAFF", "OPS"], "both": ["STAFF", "ADMIN", "OPS"],
           "abc": ["A", "B", "C"], "ab": ["A", "B"], "bc": ["B", "C"], "cd": ["C", "D"], "x": ["A", "B", "C", "D"]}


@pytest.fixture(scope="module")
def authority():
    master = setup("campus")
    return master, {name: keygen(master, attrs) for name, attrs in MEMBERS.items()}


@pytest.mark.parametrize("text", ["STAFF and (ADMIN or OPS)", "2 of (A, B, C)", "(A and B) or (C and D)",
                                  "A or B"])
def test_a_spoiled_row_is_refused_by_every_member(authority, text):
    master, members = authority
    public = master.public
    policy = Policy.parse(text)
    for row in range(len(policy.rows)):
        ciphertext, _ = spoiled(public, policy, row)
        for name, member in members.items():
            if not policy.satisfied_by(MEMBERS[name]):
                continue
            with pytest.raises(DecapsulationFailed):
                decapsulate(member, ciphertext)


def test_honest_ciphertexts_still_open_for_every_satisfying_member(authority):
    master, members = authority
    for text in ("STAFF and (ADMIN or OPS)", "2 of (A, B, C)", "(A and B) or (C and D)", "A and B", "A or B"):
        encapsulation = encapsulate(master.public, text)
        for name, member in members.items():
            if Policy.parse(text).satisfied_by(MEMBERS[name]):
                assert decapsulate(member, encapsulation.ciphertext) == encapsulation.key
            else:
                with pytest.raises(NotSatisfied):
                    decapsulate(member, encapsulation.ciphertext)
