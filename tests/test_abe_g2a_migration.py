"""Installations from before g2^a (an outside review, issue 22) keep working and get it without meeting.

The authority's public key gained h = g2^a, which binds C0 in the consistency check (tests/test_abe_consistency.py).
Its id and fingerprint do not change (they cover kind 1; h is fixed by g1^a through a pairing equation). Here a
real grant over loopback makes an authority and a member, then their stores are set back to what older
software wrote (kind 1 public keys, no h). The member still opens its rooms' ciphertexts, and its status says
the binding is missing; the authority gets h from its master key; the next renewal over the pad brings h to
the member, which from then on refuses a forgery that splits members (written here from the scheme's
equations: rows sharing s1, C0 = g1^s0, tagged for one key's Z). A grant now carries h; an authority device
that sends another is refused.
"""

from __future__ import annotations

import os
import sqlite3
import struct

import pytest
from py_arkworks_bls12381 import GT

from device.abe.encoding import Ciphertext, decode_public_key
from device.abe.errors import DecapsulationFailed
from device.abe.group import G1_GENERATOR, G2_GENERATOR, hash_attribute, random_scalar, scalar
from device.abe.policy import ORDER, Policy
from device.abe.renewal import RenewalPads, plan_renewal, renew
from device.abe.scheme import _derive
from device.abe.store import AbeKeys
from device.storage.padstore import PadStore
from onetimechat import package as fmt
from provisioning.ceremony import HOST, JOIN
from tests.test_abe_grant import Owners, grant, homes, run_sides  # noqa: F401 - the fixture


def stored_public(home) -> bytes:
    with sqlite3.connect(home / "device.db") as db:
        (row,) = db.execute("SELECT public_key FROM abe_authorities").fetchall()
    db.close()
    return bytes(row[0])


def set_back(home) -> None:
    """The row as software from before g2^a wrote it: kind 1."""
    kind1 = decode_public_key(stored_public(home)).encode()
    with sqlite3.connect(home / "device.db") as db:
        db.execute("UPDATE abe_authorities SET public_key = ?", (kind1,))
    db.close()


def forged_for(public, policy_text: str, l_point) -> bytes:
    """Rows sharing s1, C0 = g1^s0: the key whose L is ``l_point`` gets Z = e(g,g)^(alpha s0) e(g1^(a(s0-s1)), L)
    and accepts; a key with another t computes another Z and refuses."""
    policy = Policy.parse(policy_text)
    s0 = random_scalar(os.urandom)
    s1 = (s0 + random_scalar(os.urandom)) % ORDER
    rows = []
    for attribute, share in zip(policy.rows, policy.shares(s1, lambda: random_scalar(os.urandom))):
        r = random_scalar(os.urandom)
        rows.append((public.g1_a * scalar(share) + hash_attribute(attribute) * scalar(-r), G2_GENERATOR * scalar(r)))
    c0 = G1_GENERATOR * scalar(s0)
    unsealed = Ciphertext(public.authority_id, policy, c0, tuple(rows), b"")
    z = public.powers.pow(s0) * GT.pairing(public.g1_a * scalar(s0 - s1), l_point)
    return Ciphertext(public.authority_id, policy, c0, tuple(rows), _derive(z, unsealed.body())[1]).encode()


def test_an_installation_from_before_keeps_working_and_a_renewal_brings_g2a(homes):  # noqa: F811
    auth, member = homes
    issued, received = grant(auth, member, "STAFF", Owners({HOST: True, JOIN: True}))
    assert not isinstance(issued, Exception) and not isinstance(received, Exception), (issued, received)
    with PadStore(auth) as store:
        before = AbeKeys(store).master().public
    assert decode_public_key(stored_public(member)).g2_a is not None  # a grant now carries it
    for home in (auth, member):
        set_back(home)
    with PadStore(member) as store:
        keys = AbeKeys(store)
        public = keys.public_key("campus")
        assert public.g2_a is None and public.fingerprint == before.fingerprint
        assert any("no g2^a" in w for w in keys.key_warnings())
        old = keys.encapsulate("campus", "STAFF or ADMIN")  # a room ciphertext from before, say
        assert keys.decapsulate(old.ciphertext.encode()) == old.key
        l_point = keys.member_keys()[0].L
    # The authority's device takes g2^a from its master key: same id, same fingerprint.
    with PadStore(auth) as store:
        keys = AbeKeys(store)
        keys.master()
        upgraded = decode_public_key(stored_public(auth))
        assert upgraded.g2_a is not None and upgraded.encode() == before.encode()
        assert keys.authorities()[0]["fingerprint"] == before.fingerprint
        (renewal,) = renew(keys, plan_renewal(keys, end_period=True), os.urandom)
    with PadStore(member) as store:
        keys = AbeKeys(store)
        RenewalPads(keys).open(fmt.decode(renewal.package))
        public = keys.public_key("campus")
        assert public.g2_a is not None and public.encode() == before.encode()
        assert not any("no g2^a" in w for w in keys.key_warnings())
        assert keys.decapsulate(old.ciphertext.encode()) == old.key  # made before, opens after
        # The forgery that would make this key accept while a key with the same attributes refuses: refused.
        with pytest.raises(DecapsulationFailed):
            keys.decapsulate(forged_for(public, "STAFF or ADMIN", l_point))


def test_an_authority_device_that_sends_another_g2a_at_a_grant_is_refused(homes):  # noqa: F811
    """The authority's device, hostile, alters its own offer's g2^a (the link is sealed: only it can)."""
    from device.abe.grant import grant_host, grant_join

    auth, member = homes
    owners = Owners({HOST: True, JOIN: True})
    wrong = bytes((G2_GENERATOR * scalar(random_scalar(os.urandom))).to_compressed_bytes()).hex()

    def host(wire):
        send = wire.send

        def altered(message, data=b""):
            if message.get("t") == "offer":
                message = {**message, "g2_a": wrong}
            return send(message, data)

        wire.send = altered
        with PadStore(auth) as store:
            return grant_host(store, wire, "STAFF", owners.confirm_for(HOST))

    def join(wire):
        with PadStore(member) as store:
            return grant_join(store, wire, owners.confirm_for(JOIN))

    _, received = run_sides(host, join)
    assert isinstance(received, Exception) and "malformed offer" in str(received)
    with PadStore(member) as store:
        assert AbeKeys(store).held() == []


def test_a_renewal_from_an_authority_before_g2a_still_opens(homes):  # noqa: F811
    """An authority device on older software renews with a version 1 body (no g2^a), written here from the
    layout docs/abe.md gave it: the member opens it and stays on the rows-only check, still warning."""
    from device.storage.abe_tables import AbeTables

    auth, member = homes
    issued, received = grant(auth, member, "STAFF", Owners({HOST: True, JOIN: True}))
    assert not isinstance(issued, Exception) and not isinstance(received, Exception), (issued, received)
    set_back(member)
    with PadStore(auth) as store:
        keys = AbeKeys(store)
        period = keys.next_period(early=True)
        member_id = keys.issued()[0].member_device_id
        key = keys.issue(("STAFF",), member="alice", member_device_id=member_id, how="renewal over the pad",
                         period=period)
        body = struct.pack(">4sBIdd", b"OREN", 1, period.number, period.starts, period.ends) + key.encode()
        tables = AbeTables(store)
        (pad_id,) = tables.pads_to(member_id)
        sealed = tables.seal_on_renewal_pad(pad_id, len(body), lambda offset, segment, auth_key: bytes(
            fmt.seal(fmt.Kind.CONTROL, pad_id, offset, segment, body, auth_key)), detail="older software")
        assert sealed is not None
    with PadStore(member) as store:
        keys = AbeKeys(store)
        held = RenewalPads(keys).open(sealed[0])
        assert held.period == 2 and keys.public_key("campus").g2_a is None
        assert any("no g2^a" in w for w in keys.key_warnings())
