"""CP-ABE as a KEM: Waters 2011 (large universe) over BLS12-381, in Charm's CPabe09 layout.

    setup:   alpha, a random; public (g1^a, e(g1,g2)^alpha, h = g2^a); master (alpha, a)
    keygen:  t random; K = g2^(alpha + a t), L = g2^t, K_x = H(x)^t for each attribute x (H into G1)
    encaps:  s random, shares lambda_i of s by the policy's LSSS, r_i random per row;
             C0 = g1^s, C_i = g1^(a lambda_i) H(rho(i))^(-r_i), D_i = g2^(r_i);
             Z = e(g1,g2)^(alpha s) (fixed-base table), the key and tag from Z and the ciphertext
    decaps:  with the pruned rows' coefficients w_i (sum w_i lambda_i = s),
             Z = e(C0, K) * e(-sum w_i C_i, L) * prod_i e(-w_i K_rho(i), D_i)
             -- one multi-pairing of k+2 pairs, the coefficients as exponents in G1.

Correctness: e(C0, K) = e(g,g)^(alpha s + a s t) and the other k+1 pairs give
e(g,g)^(-a t sum w_i lambda_i) = e(g,g)^(-a s t).

Before any pairing with a member's key, :func:`check_consistent` checks from public data that the rows are
shares of C0's secret (an outside review, issue 22; the algebra is in its docstring), so every key that
satisfies the policy computes the same Z, whoever made the ciphertext.

The key and a 16-byte confirmation tag are HKDF (``derive_key``) of the
canonical encoding of Z together with a hash of the ciphertext body, so a
ciphertext altered anywhere yields another key and is refused by its tag;
decapsulation compares tags in constant time. Waters' scheme is secure
against chosen-plaintext attacks (selectively, under the decisional parallel
BDHE assumption); the room protocol authenticates what it carries.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from py_arkworks_bls12381 import GT, G1Point, G2Point

from device.abe.encoding import (
    ID_BYTES,
    TAG_BYTES,
    Ciphertext,
    MasterKey,
    MemberKey,
    PublicKey,
    certified_authority_id,
)
from device.abe.errors import DecapsulationFailed, MalformedAbeData, NotSatisfied
from device.abe.group import (
    G1_GENERATOR,
    G2_GENERATOR,
    RandomBytes,
    gt_encode,
    hash_attribute,
    random_scalar,
    scalar,
)
from device.abe.policy import ORDER, Policy, check_unreserved, parse_attributes, period_attribute
from device.storage.padstore import check_name
from onetimechat.crypto import derive_key, equal

KEY_BYTES = 32


@dataclass(frozen=True)
class Encapsulation:
    """A fresh key and the ciphertext that carries it (the key stays on the device)."""

    ciphertext: Ciphertext
    key: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key)


def key_fingerprint(key: bytes) -> str:
    """A hash of a derived key that reveals nothing about it (hex)."""
    return derive_key(key, "otc abe key fingerprint v1", 16).hex()


def setup(name: str, random_bytes: RandomBytes = os.urandom) -> MasterKey:
    """A new authority called ``name`` (its device's name)."""
    check_name(name)
    alpha, a = random_scalar(random_bytes), random_scalar(random_bytes)
    g1_a, egg_alpha = G1_GENERATOR * scalar(a), GT.pairing(G1_GENERATOR * scalar(alpha), G2_GENERATOR)
    public = PublicKey(authority_id=certified_authority_id(name, g1_a, egg_alpha), name=name, g1_a=g1_a,
                       egg_alpha=egg_alpha, g2_a=G2_GENERATOR * scalar(a))
    return MasterKey(public=public, alpha=alpha, a=a)


def keygen(master: MasterKey, attributes: str | list[str] | tuple[str, ...],
           random_bytes: RandomBytes = os.urandom, period: int | None = None) -> MemberKey:
    """A member key for ``attributes`` (normalised, at least one), bound to the authority's period ``period``
    (its attribute PERIOD_<n> added) when given."""
    names = parse_attributes(attributes)
    if not names:
        raise MalformedAbeData("A key needs at least one attribute.")
    check_unreserved(names, "a key's attributes")
    if period is not None:
        names = tuple(sorted(names + (period_attribute(period),)))
    t = random_scalar(random_bytes)
    st = scalar(t)
    return MemberKey(
        authority_id=master.public.authority_id,
        key_id=random_bytes(ID_BYTES),
        K=G2_GENERATOR * scalar(master.alpha + master.a * t),
        L=G2_GENERATOR * st,
        Kx={x: hash_attribute(x) * st for x in names},
    )


def _derive(z: GT, body: bytes) -> tuple[bytes, bytes]:
    secret = gt_encode(z) + hashlib.sha256(b"otc abe ciphertext v1" + body).digest()
    return derive_key(secret, "otc abe kem v1 key", KEY_BYTES), derive_key(secret, "otc abe kem v1 confirm",
                                                                            TAG_BYTES)


def encapsulate(public: PublicKey, policy: Policy | str, random_bytes: RandomBytes = os.urandom) -> Encapsulation:
    """A fresh key under ``policy`` for the holders of ``public``'s member keys."""
    if isinstance(policy, str):
        policy = Policy.parse(policy)
    s = random_scalar(random_bytes)
    shares = policy.shares(s, lambda: random_scalar(random_bytes))
    rows = []
    for attribute, share in zip(policy.rows, shares):
        r = random_scalar(random_bytes)
        c = G1Point.multiexp_unchecked([public.g1_a, hash_attribute(attribute)], [scalar(share), scalar(-r)])
        rows.append((c, G2_GENERATOR * scalar(r)))
    unsealed = Ciphertext(authority_id=public.authority_id, policy=policy, c0=G1_GENERATOR * scalar(s),
                          rows=tuple(rows), tag=b"")
    body = unsealed.body()
    key, tag = _derive(public.powers.pow(s), body)
    ciphertext = Ciphertext(authority_id=unsealed.authority_id, policy=policy, c0=unsealed.c0,
                            rows=unsealed.rows, tag=tag)
    return Encapsulation(ciphertext=ciphertext, key=key)


def pairing_inputs(member: MemberKey, ciphertext: Ciphertext) -> tuple[list[G1Point], list[G2Point]]:
    """The k+2 pairs whose product is e(g,g)^(alpha s); NotSatisfied if the key's attributes fall short."""
    if not equal(member.authority_id, ciphertext.authority_id):
        raise NotSatisfied("This key is from another attribute authority than the ciphertext.")
    coefficients = ciphertext.policy.prune(member.Kx)
    if coefficients is None:
        raise NotSatisfied()
    used = sorted(coefficients)
    cs = [ciphertext.rows[i][0] for i in used]
    ws = [coefficients[i] for i in used]
    if all(w == 1 for w in ws):
        aggregate = cs[0]
        for c in cs[1:]:
            aggregate = aggregate + c
    else:
        aggregate = G1Point.multiexp_unchecked(cs, [scalar(w) for w in ws])
    g1s = [ciphertext.c0, -aggregate]
    g2s = [member.K, member.L]
    for i, w in zip(used, ws):
        kx = member.Kx[ciphertext.policy.rows[i]]
        g1s.append(-kx if w == 1 else kx * scalar(ORDER - w))
        g2s.append(ciphertext.rows[i][1])
    return g1s, g2s


def check_consistent(ciphertext: Ciphertext, g2_a: G2Point | None, random_bytes: RandomBytes = os.urandom) -> None:
    """DecapsulationFailed unless the ciphertext's rows are shares of the secret of its C0 (an outside review,
    issue 22), checked from public data alone: ``g2_a`` is the authority's h = g2^a.

    For any row pair let X_i = e(C_i, g2) e(H(rho(i)), D_i); honest rows give X_i = e(g,g)^(a lambda_i), and a
    member key (K = g2^(alpha + a t), L = g2^t, K_x = H(x)^t) decapsulates to
    Z = e(C0, K) prod X_i^(-w_i t) = e(g,g)^(alpha s0 + t (a s0 - sum w_i x_i)) with C0 = g1^s0, x_i = log X_i.
    Every satisfying key computes the same Z = e(g,g)^(alpha s0) exactly when x = M y (then every reconstruction
    vector w gives sum w_i x_i = y_1) and y_1 = a s0. The check takes v = w* + sum_j omega_j b_j, with w* the
    policy's fixed reconstruction vector (sum w*_i M_i = (1, 0, ..., 0)), b_j the basis of u^T M = 0 and the
    omega_j random, and tests, in one multi-pairing of (rows where v is not 0) + 2 pairs,

        e(sum v_i C_i, g2) * prod_i e(v_i H(rho(i)), D_i) * e(-C0, h) = e(g,g)^(sum v_i x_i - a s0) = 1.

    Its exponent is sum_j omega_j (b_j . x) + (w* . x - a s0): if some b_j . x is non-zero it vanishes for one
    omega in r, else it is w* . x - a s0, zero only when y_1 = a s0. So a ciphertext passes (but with
    probability 1/r) only if every satisfying key gets the same Z, and so the same key and tag: a forger holding
    anything short of the master key (another member's L included) can no longer make one member accept and
    another refuse. Without ``g2_a`` (a public key from before the review) only the rows are checked (the C0
    pair left out, and nothing when the rows are independent): every member refuses a spoiled row alike, but
    Z may still depend on t.
    """
    policy = ciphertext.policy
    if len(ciphertext.rows) != len(policy.rows):
        raise DecapsulationFailed()
    basis = policy.kernel
    if g2_a is None and not basis:
        return
    v: dict[int, int] = dict(policy.reconstruction) if g2_a is not None else {}
    for b in basis:
        omega = random_scalar(random_bytes)
        for i, x in b:
            v[i] = (v.get(i, 0) + omega * x) % ORDER
    used = sorted(i for i, x in v.items() if x)
    if not used:  # cannot happen: w* is not zero, the basis is independent and every omega non-zero
        raise DecapsulationFailed()
    cs = [ciphertext.rows[i][0] for i in used]
    if all(v[i] == 1 for i in used):
        aggregate = cs[0]
        for c in cs[1:]:
            aggregate = aggregate + c
    else:
        aggregate = G1Point.multiexp_unchecked(cs, [scalar(v[i]) for i in used])
    g1s, g2s = [aggregate], [G2_GENERATOR]
    if g2_a is not None:
        g1s.append(-ciphertext.c0)
        g2s.append(g2_a)
    for i in used:
        hx = hash_attribute(policy.rows[i])
        g1s.append(hx if v[i] == 1 else hx * scalar(v[i]))
        g2s.append(ciphertext.rows[i][1])
    if not GT.pairing_check(g1s, g2s):
        raise DecapsulationFailed()


def decapsulate(member: MemberKey, ciphertext: Ciphertext, public: PublicKey) -> bytes:
    """The key in ``ciphertext``, with ``member`` (a key of ``public``'s authority); NotSatisfied or
    DecapsulationFailed (rows that are not shares of C0's secret, or a wrong tag) otherwise. The ciphertext is
    checked (:func:`check_consistent`) after the prune step and before any pairing with the member's key."""
    if not equal(public.authority_id, ciphertext.authority_id):
        raise NotSatisfied("This key is from another attribute authority than the ciphertext.")
    if len(ciphertext.rows) != len(ciphertext.policy.rows):
        raise DecapsulationFailed()  # a Ciphertext built by hand (the decoder refuses it)
    g1s, g2s = pairing_inputs(member, ciphertext)  # NotSatisfied: no pairing at all
    check_consistent(ciphertext, public.g2_a)
    key, tag = _derive(GT.multi_pairing(g1s, g2s), ciphertext.body())
    if not equal(tag, ciphertext.tag):
        raise DecapsulationFailed()
    return key


def check_member_key(public: PublicKey, member: MemberKey) -> None:
    """Verify a key from its authority: e(g1, K) = e(g,g)^alpha e(g1^a, L) and e(K_x, g2) = e(H(x), L)."""
    if not equal(member.authority_id, public.authority_id):
        raise MalformedAbeData("The key is not from this authority.")
    if GT.multi_pairing([G1_GENERATOR, -public.g1_a], [member.K, member.L]) != public.egg_alpha:
        raise MalformedAbeData("The key does not match its authority's public key.")
    for name, kx in member.Kx.items():
        if not GT.pairing_check([kx, -hash_attribute(name)], [G2_GENERATOR, member.L]):
            raise MalformedAbeData("The key does not match its authority's public key.")
