"""The CP-ABE KEM: round trips, collusion, tampering, subgroups, GT decoding, hashing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from py_arkworks_bls12381 import GT, G1Point, G2Point, Scalar

from device.abe import group
from device.abe.encoding import (
    decode_ciphertext,
    decode_master_key,
    decode_member_key,
    decode_public_key,
)
from device.abe.errors import AbeError, DecapsulationFailed, MalformedAbeData, NotSatisfied
from device.abe.policy import ORDER, Policy
from device.abe.scheme import check_member_key, decapsulate, encapsulate, keygen, setup
from tests.abe_helpers import NAMES, evaluate, g1_outside_subgroup, g2_outside_subgroup, policy_trees, render


@pytest.fixture(scope="module")
def authority():
    return setup("campus")


@pytest.fixture(scope="module")
def member_keys(authority):
    """One key per subset size, made once: holders of NAMES[:n]."""
    return {n: keygen(authority, NAMES[:n]) for n in range(1, len(NAMES) + 1)}


@given(policy_trees(max_leaves=6), st.sets(st.sampled_from(NAMES), min_size=1), st.booleans())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_round_trip_succeeds_exactly_when_satisfied(authority, tree, attributes, via_bytes):
    key = keygen(authority, sorted(attributes))
    policy = Policy.parse(render(tree))
    sealed = encapsulate(authority.public, policy)
    ciphertext = decode_ciphertext(sealed.ciphertext.encode()) if via_bytes else sealed.ciphertext
    if evaluate(tree, attributes):
        assert decapsulate(key, ciphertext, authority.public) == sealed.key
    else:
        with pytest.raises(NotSatisfied):
            decapsulate(key, ciphertext, authority.public)


@given(st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_decoders_refuse_junk_cleanly(authority, member_keys, data):
    """Random bytes and random edits of valid encodings: decoded, or refused with MalformedAbeData."""
    valid = [encapsulate(authority.public, "A0 and (A1 or 2 of (A2, A3, A4))").ciphertext.encode(),
             authority.public.encode(), member_keys[3].encode()]
    decoders = [decode_ciphertext, decode_public_key, decode_member_key]
    i = data.draw(st.integers(0, 2))
    blob = bytearray(valid[i])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "random"]))
        pos = data.draw(st.integers(0, max(len(blob) - 1, 0)))
        if kind == "flip" and blob:
            blob[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            del blob[pos:]
        elif kind == "insert":
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            blob = bytearray(data.draw(st.binary(max_size=200)))
    try:
        decoded = decoders[i](bytes(blob))
    except MalformedAbeData:
        return
    if i == 0:  # a ciphertext that still decodes must not decapsulate to a different key unnoticed
        try:
            decapsulate(member_keys[len(NAMES)], decoded, authority.public)
        except AbeError:
            pass


def test_fresh_keys_every_time(authority, member_keys):
    a, b = encapsulate(authority.public, "A0"), encapsulate(authority.public, "A0")
    assert a.key != b.key and a.ciphertext.encode() != b.ciphertext.encode()
    assert decapsulate(member_keys[1], a.ciphertext, authority.public) == a.key
    assert a.fingerprint != b.fingerprint and len(a.fingerprint) == 32


def test_collusion_fails(authority):
    alice, bob = keygen(authority, ["A0"]), keygen(authority, ["A1"])
    sealed = encapsulate(authority.public, "A0 and A1")
    for key in (alice, bob):
        with pytest.raises(NotSatisfied):
            decapsulate(key, sealed.ciphertext, authority.public)
    # Pool their attribute components under either one's K and L: the result is not the key.
    for base in (alice, bob):
        pooled = dataclasses.replace(base, Kx={"A0": alice.Kx["A0"], "A1": bob.Kx["A1"]})
        with pytest.raises(DecapsulationFailed):
            decapsulate(pooled, sealed.ciphertext, authority.public)


def test_other_authority_refused(authority):
    other = setup("elsewhere")
    sealed = encapsulate(other.public, "A0")
    with pytest.raises(NotSatisfied):
        decapsulate(keygen(authority, ["A0"]), sealed.ciphertext, authority.public)
    forged = dataclasses.replace(keygen(other, ["A0"]), authority_id=authority.public.authority_id)
    with pytest.raises(DecapsulationFailed):
        decapsulate(forged, encapsulate(authority.public, "A0").ciphertext, authority.public)


def test_tampered_and_truncated_ciphertexts_are_refused_cleanly(authority, member_keys):
    sealed = encapsulate(authority.public, "(A0 or A5) and 2 of (A1, A2, A3)")
    data = sealed.ciphertext.encode()
    key = member_keys[4]
    assert decapsulate(key, decode_ciphertext(data), authority.public) == sealed.key
    for cut in range(len(data)):
        with pytest.raises(MalformedAbeData):
            decode_ciphertext(data[:cut])
    with pytest.raises(MalformedAbeData):
        decode_ciphertext(data + b"\x00")
    refused = 0
    for i in range(0, len(data), 7):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        try:
            decapsulate(key, decode_ciphertext(bytes(flipped)), authority.public)
        except AbeError:
            refused += 1
        else:
            pytest.fail(f"a flipped bit at byte {i} was accepted")
    assert refused == len(range(0, len(data), 7))


def test_tampering_with_an_unused_row_or_the_policy_is_refused(authority, member_keys):
    sealed = encapsulate(authority.public, "A0 or A6")
    ct = sealed.ciphertext
    # Row 1 (A6) is not used by a key for A0, yet the tag covers it.
    swapped = dataclasses.replace(ct, rows=(ct.rows[0], (ct.rows[1][0] + G1Point(), ct.rows[1][1])))
    with pytest.raises(DecapsulationFailed):
        decapsulate(member_keys[1], decode_ciphertext(swapped.encode()), authority.public)
    loosened = dataclasses.replace(ct, policy=Policy.parse("A0 or A1"))
    with pytest.raises(DecapsulationFailed):
        decapsulate(member_keys[2], decode_ciphertext(loosened.encode()), authority.public)


def test_wrong_subgroup_points_are_refused(authority):
    bad_g1, bad_g2 = g1_outside_subgroup(), g2_outside_subgroup()
    # They are on their curves: only the subgroup check refuses them.
    assert not G1Point.from_compressed_bytes_unchecked(bad_g1).is_in_subgroup()
    assert not G2Point.from_compressed_bytes_unchecked(bad_g2).is_in_subgroup()
    with pytest.raises(MalformedAbeData):
        group.g1_decode(bad_g1)
    with pytest.raises(MalformedAbeData):
        group.g2_decode(bad_g2)
    data = encapsulate(authority.public, "A0").ciphertext.encode()
    head = 4 + 2 + 16 + 2 + len(b"A0")
    for offset, bad in ((head, bad_g1), (head + 48 + 2, bad_g1), (head + 48 + 2 + 48, bad_g2)):
        with pytest.raises(MalformedAbeData):
            decode_ciphertext(data[:offset] + bad + data[offset + len(bad):])
    identity = bytes(G1Point.identity().to_compressed_bytes())
    with pytest.raises(MalformedAbeData):
        decode_ciphertext(data[:head] + identity + data[head + 48:])


def test_non_canonical_policy_text_is_refused(authority):
    data = encapsulate(authority.public, "A0 and A1").ciphertext.encode()
    assert b"A0 and A1" in data
    with pytest.raises(MalformedAbeData):
        decode_ciphertext(data.replace(b"A0 and A1", b"A0 AND A1"))


def test_keys_encode_and_decode(authority, member_keys):
    assert decode_public_key(authority.public.encode()) == authority.public
    master = decode_master_key(authority.encode())
    assert (master.alpha, master.a, master.public) == (authority.alpha, authority.a, authority.public)
    key = decode_member_key(member_keys[3].encode())
    assert key == member_keys[3]
    check_member_key(authority.public, key)
    with pytest.raises(MalformedAbeData):
        check_member_key(setup("other").public, key)
    bent = dataclasses.replace(key, Kx={**key.Kx, "A0": key.Kx["A1"]})
    with pytest.raises(MalformedAbeData):
        check_member_key(authority.public, bent)
    for data in (authority.public.encode(), authority.encode(), member_keys[3].encode()):
        for cut in (0, 5, len(data) // 2, len(data) - 1):
            with pytest.raises(MalformedAbeData):
                (decode_public_key if data[5] == 1 else decode_master_key if data[5] == 2
                 else decode_member_key)(data[:cut])


def test_rfc9380_hash_to_g1_vector():
    # RFC 9380 appendix J.9.1, BLS12381G1_XMD:SHA-256_SSWU_RO_, msg "".
    point = G1Point.hash_to_curve(b"", b"QUUX-V01-CS02-with-BLS12381G1_XMD:SHA-256_SSWU_RO_")
    assert point.to_xy_bytes_be().hex() == (
        "052926add2207b76ca4fa57a8734416c8dc95e24501772c814278700eed6d1e4e8cf62d9c09db0fac349612b759e79a1"
        "08ba738453bfed09cb546dbb0783dbb3a5f1f566ed67bb6be0e8c67e2e81a4cc68ee29813bb7994998f3eae0c9c6a265")
    assert group.hash_attribute("STAFF") == G1Point.hash_to_curve(b"STAFF", group.ATTRIBUTE_DST)
    assert group.hash_attribute("STAFF") != group.hash_attribute("ADMIN")


@given(st.integers(0, ORDER - 1))
@settings(max_examples=10, deadline=None)
def test_gt_powers_and_decoding(exponent):
    base = GT.pairing(G1Point() * Scalar(987654321), G2Point())
    expected = GT.pairing(G1Point() * Scalar(987654321 * exponent % ORDER), G2Point())
    assert group.gt_pow(base, exponent) == expected
    assert group.FixedBase(base).pow(exponent) == expected
    if exponent:
        assert group.gt_decode(group.gt_encode(expected)) == expected


def test_gt_decoding_refuses_what_is_not_in_gt():
    element = GT()
    good = group.gt_encode(element)
    assert group.gt_decode(good) == element
    not_in_gt = group.gt_encode(element + GT.one())  # an Fp12 element outside the subgroup
    above_p = (group.FIELD + 1).to_bytes(48, "little") + good[48:]
    for data in (not_in_gt, group.gt_encode(GT.one()), group.gt_encode(GT.zero()), above_p, good[:-1], b""):
        with pytest.raises(MalformedAbeData):
            group.gt_decode(data)
    public = setup("campus").public
    data = public.encode()
    with pytest.raises(MalformedAbeData):
        decode_public_key(data[:-576] + not_in_gt)
