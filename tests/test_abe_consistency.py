"""A room ciphertext gives every member the same key or the same refusal, whoever made it (outside reviews, #22).

The attackers are written here from the scheme's equations (device/abe/scheme.py's docstring), not from its
code:

* **A spoiled row.** Knowing only the authority's public key (as an invite holder or the relay does), it
  encapsulates honestly but adds 1 to the share of one row and seals the result with the key it knows: members
  decapsulating through the other rows would accept, those needing the spoiled row would not.
* **An unbound C0** (the second review). It shares a secret s1 in the rows but puts C0 = g1^s0, s0 != s1: the
  rows are consistent shares, of the wrong secret, so a member key with randomiser t computes
  Z_t = e(g,g)^(alpha s0) e(g1^a, L)^(s0 - s1), L = g2^t: its own Z per key. Knowing one key's L (its own, as
  a member; or a victim's, as a dishonest authority that kept it at keygen, or a thief of that G2 point), it
  tags the ciphertext with that key's Z: that key would accept and every other would refuse, two honest
  members with the same attributes split.

With C0 bound in the check (the authority's g2^a) every member refuses both alike, before any pairing with its
key; honest ciphertexts still open for every satisfying key.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from py_arkworks_bls12381 import GT, G1Point, G2Point

from device.abe import scheme
from device.abe.encoding import Ciphertext, PublicKey, decode_ciphertext, decode_public_key
from device.abe.errors import DecapsulationFailed, MalformedAbeData, NotSatisfied
from device.abe.group import G1_GENERATOR, G2_GENERATOR, hash_attribute, random_scalar, scalar
from device.abe.policy import ORDER, Policy, relations
from device.abe.scheme import _derive, check_consistent, decapsulate, encapsulate, keygen, setup
from tests.abe_helpers import NAMES, policy_trees, render


def rows_for(public: PublicKey, policy: Policy, shares: list[int]) -> tuple[tuple[G1Point, G2Point], ...]:
    """C_i = g1^(a lambda_i) H(rho(i))^(-r_i), D_i = g2^(r_i), from the public key alone."""
    out = []
    for attribute, share in zip(policy.rows, shares):
        r = random_scalar(os.urandom)
        out.append((public.g1_a * scalar(share) + hash_attribute(attribute) * scalar(-r), G2_GENERATOR * scalar(r)))
    return tuple(out)


def sealed(public: PublicKey, policy: Policy, c0: G1Point, rows, z: GT) -> tuple[Ciphertext, bytes]:
    """The ciphertext tagged for the Z the attacker chose, through the strict decoder (as from the relay)."""
    unsealed = Ciphertext(authority_id=public.authority_id, policy=policy, c0=c0, rows=rows, tag=b"")
    key, tag = _derive(z, unsealed.body())
    forged = Ciphertext(authority_id=public.authority_id, policy=policy, c0=c0, rows=rows, tag=tag)
    return decode_ciphertext(forged.encode()), key


def spoiled(public: PublicKey, policy: Policy, row: int) -> tuple[Ciphertext, bytes]:
    """Honest but for one share, tagged with the key e(g,g)^(alpha s) the attacker knows."""
    s = random_scalar(os.urandom)
    shares = policy.shares(s, lambda: random_scalar(os.urandom))
    shares[row] = (shares[row] + 1) % ORDER
    return sealed(public, policy, G1_GENERATOR * scalar(s), rows_for(public, policy, shares), public.powers.pow(s))


def unbound(public: PublicKey, policy: Policy, l_point: G2Point) -> tuple[Ciphertext, bytes]:
    """Rows sharing s1, C0 = g1^s0, tagged with the Z of the key whose L = g2^t is ``l_point``:
    Z_t = e(g,g)^(alpha s0) * e(g1^(a (s0 - s1)), L)."""
    s0 = random_scalar(os.urandom)
    s1 = (s0 + random_scalar(os.urandom)) % ORDER
    rows = rows_for(public, policy, policy.shares(s1, lambda: random_scalar(os.urandom)))
    z = public.powers.pow(s0) * GT.pairing(public.g1_a * scalar(s0 - s1), l_point)
    return sealed(public, policy, G1_GENERATOR * scalar(s0), rows, z)


MEMBERS = {"admin": ["STAFF", "ADMIN"], "ops": ["STAFF", "OPS"], "both": ["STAFF", "ADMIN", "OPS"],
           "abc": ["A", "B", "C"], "ab": ["A", "B"], "bc": ["B", "C"], "cd": ["C", "D"], "x": ["A", "B", "C", "D"],
           "ab2": ["A", "B"], "ac": ["A", "C", "STAFF"]}
POLICIES = ["STAFF and (ADMIN or OPS)", "2 of (A, B, C)", "(A and B) or (C and D)", "A or B", "A and B",
            "STAFF and (A or C)"]


@pytest.fixture(scope="module")
def authority():
    master = setup("campus")
    return master, {name: keygen(master, attrs) for name, attrs in MEMBERS.items()}


@pytest.fixture
def no_member_pairing(monkeypatch):
    """Fails the test if a member key's multi-pairing runs (the check uses GT.pairing_check, not this)."""

    class Guarded:
        pairing = staticmethod(GT.pairing)
        pairing_check = staticmethod(GT.pairing_check)

        @staticmethod
        def multi_pairing(*_):
            raise AssertionError("a pairing with a member's key ran before the ciphertext was refused")

    monkeypatch.setattr(scheme, "GT", Guarded)


def satisfying(text: str) -> list[str]:
    return [name for name, attrs in MEMBERS.items() if Policy.parse(text).satisfied_by(attrs)]


@pytest.mark.parametrize("text", POLICIES)
def test_a_spoiled_row_is_refused_by_every_member(authority, text, no_member_pairing):
    master, members = authority
    policy = Policy.parse(text)
    for row in range(len(policy.rows)):
        ciphertext, _ = spoiled(master.public, policy, row)
        with pytest.raises(DecapsulationFailed):
            check_consistent(ciphertext, master.public.g2_a)  # from public data: no key involved
        for name in satisfying(text):
            with pytest.raises(DecapsulationFailed):
                decapsulate(members[name], ciphertext, master.public)


@pytest.mark.parametrize("text", POLICIES)
def test_a_member_cannot_forge_a_ciphertext_only_its_own_key_accepts(authority, text, no_member_pairing):
    """The review's first case: the attacker is a member, tagging with its own key's Z."""
    master, members = authority
    for attacker in satisfying(text):
        ciphertext, _ = unbound(master.public, Policy.parse(text), members[attacker].L)
        with pytest.raises(DecapsulationFailed):
            check_consistent(ciphertext, master.public.g2_a)
        for name in satisfying(text):  # the attacker's own key included: no key gets its own Z any more
            with pytest.raises(DecapsulationFailed):
                decapsulate(members[name], ciphertext, master.public)


def test_whoever_knows_one_members_l_cannot_split_honest_members(authority, no_member_pairing):
    """The review's second case: B and C hold the same attributes; the forger keeps only B's L (a G2 point
    that opens nothing: the authority computed it at keygen) and the public key."""
    master, members = authority
    b, c = members["ab"], members["ab2"]
    for text in ("A or B", "A and B", "2 of (A, B, C)"):
        ciphertext, _ = unbound(master.public, Policy.parse(text), b.L)
        for victim in (b, c):
            with pytest.raises(DecapsulationFailed):
                decapsulate(victim, ciphertext, master.public)


def test_honest_ciphertexts_still_open_for_every_satisfying_member(authority):
    master, members = authority
    # Through the encoding, as a device stores the public key: kind 5, with g2^a.
    public = decode_public_key(master.public.encode_full())
    assert public.g2_a is not None
    for text in POLICIES + ["3 of (A, B, C, D)", "2 of (A, B and C, D)", "A and (A or B)"]:
        encapsulation = encapsulate(master.public, text)
        ciphertext = decode_ciphertext(encapsulation.ciphertext.encode())
        check_consistent(ciphertext, public.g2_a)
        for name, member in members.items():
            if Policy.parse(text).satisfied_by(MEMBERS[name]):
                assert decapsulate(member, ciphertext, public) == encapsulation.key
            else:
                with pytest.raises(NotSatisfied):
                    decapsulate(member, ciphertext, public)


def test_a_ciphertext_built_with_too_few_rows_is_refused_not_a_crash(authority):
    """A hand-built Ciphertext (the decoder refuses one) with fewer rows than its policy's leaves."""
    master, members = authority
    honest = encapsulate(master.public, "A or B").ciphertext
    short = Ciphertext(authority_id=honest.authority_id, policy=honest.policy, c0=honest.c0, rows=honest.rows[:1],
                       tag=honest.tag)
    for g2_a in (master.public.g2_a, None):
        with pytest.raises(DecapsulationFailed):
            check_consistent(short, g2_a)
    with pytest.raises(DecapsulationFailed):
        decapsulate(members["ab"], short, master.public)


def test_a_g2a_that_is_not_the_authoritys_is_refused(authority):
    """g2^a needs no certifying of its own: it is fixed by g1^a, and anything else is refused."""
    master, _ = authority
    legacy = decode_public_key(master.public.encode())
    assert legacy.g2_a is None and legacy.fingerprint == master.public.fingerprint
    wrong = G2_GENERATOR * scalar(random_scalar(os.urandom))
    with pytest.raises(MalformedAbeData):
        legacy.with_g2_a(wrong)
    full = bytearray(master.public.encode_full())
    full[-96:] = bytes(wrong.to_compressed_bytes())
    with pytest.raises(MalformedAbeData):
        decode_public_key(bytes(full))
    assert legacy.with_g2_a(master.public.g2_a).encode_full() == master.public.encode_full()


def test_without_g2a_rows_are_still_checked_but_c0_is_not(authority):
    """A member that holds a public key from before g2^a (until its next renewal or grant, which warns it):
    every member still refuses a spoiled row alike, but an unbound C0 still gives each key its own Z. This is
    the limit docs/abe.md states, and why renewals and grants now carry g2^a."""
    master, members = authority
    legacy = decode_public_key(master.public.encode())
    policy = Policy.parse("2 of (A, B, C)")
    ciphertext, _ = spoiled(master.public, policy, 1)
    for name in satisfying(policy.text):
        with pytest.raises(DecapsulationFailed):
            decapsulate(members[name], ciphertext, legacy)
    b, c = members["ab"], members["ab2"]
    ciphertext, key = unbound(master.public, policy, b.L)
    assert decapsulate(b, ciphertext, legacy) == key
    with pytest.raises(DecapsulationFailed):
        decapsulate(c, ciphertext, legacy)


def test_junk_contributions_do_not_repeat_the_policys_elimination(authority, monkeypatch):
    """The review's flood: an outsider posts junk contributions under a large legal room policy; each decoded
    ciphertext is a new Policy, and the kernel used to be computed per object (2.4 s for 255 of 256 on the
    shared machine, bench/bench_abe.py). It is computed once per canonical policy text."""
    master, _ = authority
    names = [f"A{i}" for i in range(24)]
    room = Policy.parse(f"23 of ({', '.join(names)})")
    member = keygen(master, names[:23])
    runs = []
    original = Policy._kernel

    def counted(self):
        runs.append(self.text)
        return original(self)

    monkeypatch.setattr(Policy, "_kernel", counted)
    relations.cache_clear()

    def junk() -> bytes:
        def point(generator):
            return generator * scalar(random_scalar(os.urandom))

        rows = tuple((point(G1_GENERATOR), point(G2_GENERATOR)) for _ in room.rows)
        return Ciphertext(master.public.authority_id, room, point(G1_GENERATOR), rows, os.urandom(16)).encode()

    for _ in range(3):
        with pytest.raises(DecapsulationFailed):
            decapsulate(member, decode_ciphertext(junk()), master.public)
    assert runs == [room.text]
    honest = encapsulate(master.public, room)
    assert decapsulate(member, decode_ciphertext(honest.ciphertext.encode()), master.public) == honest.key
    assert runs == [room.text]


# -- every policy: the relations hold, and no forgery tells two keys apart ----------------------------------------

KEYS_FOR = [list(NAMES), list(NAMES), NAMES[:6], NAMES[2:9], NAMES[::2], NAMES[1::2]]


@pytest.fixture(scope="module")
def many(authority):
    master, _ = authority
    return master, [keygen(master, attrs) for attrs in KEYS_FOR]


@given(policy_trees(max_leaves=6), st.sampled_from(["honest", "spoiled", "unbound", "both"]), st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_on_any_policy_every_satisfying_key_gets_the_same_key_or_the_same_refusal(many, tree, attack, data):
    master, keys = many
    policy = Policy.parse(render(tree))
    rows, width = policy.matrix
    # The relations, by plain arithmetic: w*^T M = (1, 0, ..., 0) and u^T M = 0 for each kernel vector.
    for vector, target in [(policy.reconstruction, 1)] + [(u, 0) for u in policy.kernel]:
        for col in range(width):
            assert sum(x * rows[i].get(col, 0) for i, x in vector) % ORDER == (target if col == 0 else 0)
    public = master.public
    s0 = random_scalar(os.urandom)
    s1 = (s0 + random_scalar(os.urandom)) % ORDER if attack in ("unbound", "both") else s0
    shares = policy.shares(s1, lambda: random_scalar(os.urandom))
    if attack in ("spoiled", "both"):
        row = data.draw(st.integers(0, len(shares) - 1))
        shares[row] = (shares[row] + random_scalar(os.urandom)) % ORDER
    # Tagged for the Z of the first key (all attributes; the forger knows its L): with that key's coefficients w,
    # Z = e(g,g)^(alpha s0) e(g1^a, L)^(s0 - sum w_i share_i), which is e(g,g)^(alpha s0) when honest.
    w = policy.prune(keys[0].Kx)
    assert w is not None
    recovered = sum(c * shares[i] for i, c in w.items()) % ORDER
    z = public.powers.pow(s0) * GT.pairing(public.g1_a * scalar(s0 - recovered), keys[0].L)
    ciphertext, key = sealed(public, policy, G1_GENERATOR * scalar(s0), rows_for(public, policy, shares), z)
    outcomes = set()
    for member in keys:
        if not policy.satisfied_by(member.Kx):
            continue
        try:
            outcomes.add(decapsulate(member, ciphertext, public))
        except DecapsulationFailed:
            outcomes.add(b"refused")
    assert len(outcomes) <= 1, (policy.text, attack)
    if attack == "honest":
        assert outcomes == {key}
