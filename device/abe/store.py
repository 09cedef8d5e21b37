"""Attribute-based keys in the device store, and the device-side KEM calls.

Master and member keys live in the device's SQLite store (schema step 3),
sealed under the storage key when the home is PIN-locked, exactly like paired
laptops' keys (:class:`~device.storage.atrest.SecretBox`, bound to their row).
They never leave the device: :meth:`AbeKeys.encapsulate` and
:meth:`AbeKeys.decapsulate` return keys to callers inside the device (the CLI
prints only fingerprints; the room protocol keeps them in memory).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from device.abe.encoding import (
    Ciphertext,
    MasterKey,
    MemberKey,
    PublicKey,
    decode_ciphertext,
    decode_master_key,
    decode_member_key,
    decode_public_key,
)
from device.abe.errors import (
    AbeError,
    AlreadyAuthority,
    DecapsulationFailed,
    NotAnAuthority,
    NotSatisfied,
    UnknownAuthority,
)
from device.abe.group import RandomBytes
from device.abe.policy import Policy, parse_attributes
from device.abe.scheme import Encapsulation, check_member_key, decapsulate, encapsulate, keygen, setup
from device.storage.padstore import PadStore, device_id_for
from onetimechat.crypto import equal


def grant_fingerprint(authority_id: bytes, key: MemberKey, member_device_id: bytes) -> str:
    """What both screens show at the end of a grant: a hash of the key granted, who by and to whom."""
    digest = hashlib.sha256(b"otc grant fingerprint v1\x00" + authority_id + member_device_id + key.key_id
                            + ",".join(key.attributes).encode() + b"\x00"
                            + hashlib.sha256(key.encode()).digest()).hexdigest()
    return " ".join(digest[i : i + 4] for i in range(0, 20, 4))


def grant_proof_key(key: MemberKey) -> bytes:
    """A grant's proof key: derived from the member key, so only the member (from its key) and the authority
    (which keeps this, never the key) hold it. The next grant between the two proves possession with it."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"otc grant proof key v1").derive(key.encode())


@dataclass(frozen=True)
class Issued:
    """A key an authority issued (what may be shown: never the key)."""

    key_id: bytes
    member: str
    member_device_id: bytes | None
    attributes: tuple[str, ...]
    how: str
    issued: float

    def to_dict(self) -> dict:
        return {
            "key_id": self.key_id.hex(),
            "member": self.member,
            "member_device_id": self.member_device_id.hex() if self.member_device_id else None,
            "attributes": list(self.attributes),
            "how": self.how,
            "issued": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.issued)),
        }


class AbeKeys:
    """The attribute-based keys of one device."""

    def __init__(self, store: PadStore) -> None:
        self.store = store

    # -- sealing ------------------------------------------------------------------------

    def _seal(self, secret: bytes, context: bytes) -> bytes:
        return self.store.secrets.seal(secret, context) if self.store.secrets else secret

    def _open(self, stored: bytes, context: bytes) -> bytes:
        return self.store.secrets.open(bytes(stored), context) if self.store.secrets else bytes(stored)

    # -- authorities ----------------------------------------------------------------------

    def become_authority(self, random_bytes: RandomBytes = os.urandom) -> PublicKey:
        """Make this device an attribute authority named after it (once)."""
        if self._own_row() is not None:
            raise AlreadyAuthority()
        if self.store.read("SELECT 1 FROM abe_authorities WHERE name = ?", (self.store.device_name,)):
            raise AbeError(f"This device already holds keys from another authority named "
                           f"{self.store.device_name!r}; an authority needs a unique name.")
        master = setup(self.store.device_name, random_bytes)
        aid = master.public.authority_id
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO abe_authorities (authority_id, name, public_key, master_key, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (aid, master.public.name, master.public.encode(), self._seal(master.encode(), b"abe master " + aid),
                 time.time()),
            )
            self.store.log(conn, "abe-authority", detail=f"attribute authority {master.public.fingerprint}")
        return master.public

    def _own_row(self) -> tuple | None:
        rows = self.store.read("SELECT authority_id, master_key FROM abe_authorities WHERE master_key IS NOT NULL")
        return rows[0] if rows else None

    def master(self) -> MasterKey:
        row = self._own_row()
        if row is None:
            raise NotAnAuthority()
        aid = bytes(row[0])
        return decode_master_key(self._open(row[1], b"abe master " + aid))

    def public_key(self, name: str) -> PublicKey:
        rows = self.store.read("SELECT public_key FROM abe_authorities WHERE name = ?", (name,))
        if not rows:
            raise UnknownAuthority(f"This device knows no attribute authority named {name!r}.")
        return decode_public_key(bytes(rows[0][0]))

    def check_authority(self, public: PublicKey) -> None:
        """Refuse a public key whose name belongs to another authority here."""
        rows = self.store.read(
            "SELECT authority_id, public_key FROM abe_authorities WHERE name = ? OR authority_id = ?",
            (public.name, public.authority_id))
        for aid, stored in rows:
            if equal(bytes(aid), public.authority_id) and equal(bytes(stored), public.encode()):
                continue
            if equal(bytes(aid), public.authority_id):
                raise AbeError(f"This device already knows another attribute authority by the id that "
                               f"{public.name!r} gives: its key is not that authority's.")
            raise AbeError(f"This device already knows another attribute authority named {public.name!r}.")

    def knows(self, public: PublicKey) -> bool:
        """Whether this device holds exactly this public key already."""
        rows = self.store.read("SELECT public_key FROM abe_authorities WHERE authority_id = ?",
                               (public.authority_id,))
        return bool(rows) and equal(bytes(rows[0][0]), public.encode())

    def authorities(self) -> list[dict]:
        out = []
        for aid, name, pk, master in self.store.read(
                "SELECT authority_id, name, public_key, master_key FROM abe_authorities ORDER BY created"):
            public = decode_public_key(bytes(pk))
            keys = [k.attributes for k in self.member_keys(bytes(aid))]
            out.append({"name": name, "authority_id": bytes(aid).hex(), "fingerprint": public.fingerprint,
                        "own": master is not None, "keys": [list(a) for a in keys]})
        return out

    # -- member keys ------------------------------------------------------------------------

    def add_member_key(self, public: PublicKey, key: MemberKey, pending: bool = False) -> str:
        """Store a key received from its authority, after checking it against the public key; its grant
        fingerprint. A ``pending`` key is not used until :meth:`confirm_grant` (the authority holds the
        grant too)."""
        self.check_authority(public)
        check_member_key(public, key)
        if self.store.read("SELECT 1 FROM abe_keys WHERE key_id = ?", (key.key_id,)):
            raise AbeError("The authority sent a key whose id this device already holds.")
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO abe_authorities (authority_id, name, public_key, master_key, created)"
                " VALUES (?, ?, ?, NULL, ?)",
                (public.authority_id, public.name, public.encode(), time.time()),
            )
            # The authority files this device under its identity's hash (its id, unless made before identities).
            fingerprint = grant_fingerprint(public.authority_id, key, device_id_for(self.store.identity_public))
            conn.execute(
                "INSERT INTO abe_keys (key_id, authority_id, attributes, secret, created, confirmed, fingerprint)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key.key_id, key.authority_id, ",".join(key.attributes),
                 self._seal(key.encode(), b"abe key " + key.key_id), time.time(), int(not pending), fingerprint),
            )
            self.store.log(conn, "abe-key-received",
                           detail=f"key for {', '.join(key.attributes)} from authority {public.name}")
        return fingerprint

    def member_keys(self, authority_id: bytes | None = None) -> list[MemberKey]:
        """This device's keys (those whose grant both devices are known to hold)."""
        sql = "SELECT key_id, secret FROM abe_keys WHERE confirmed = 1"
        params: tuple = ()
        if authority_id is not None:
            sql += " AND authority_id = ?"
            params = (authority_id,)
        rows = self.store.read(sql + " ORDER BY created", params)
        return [decode_member_key(self._open(secret, b"abe key " + bytes(kid))) for kid, secret in rows]

    # -- issuing (the authority) -------------------------------------------------------------

    def issue(self, attributes: str | list[str] | tuple[str, ...], member: str, member_device_id: bytes | None,
              how: str, random_bytes: RandomBytes = os.urandom, pending: bool = False) -> MemberKey:
        """A new member key, recorded as issued before it leaves (the authority keeps no copy). A
        ``pending`` record counts once :meth:`confirm_grant` says the member holds the key."""
        master = self.master()
        key = keygen(master, parse_attributes(attributes), random_bytes)
        fingerprint = grant_fingerprint(key.authority_id, key, member_device_id) if member_device_id else None
        proof = self._seal(grant_proof_key(key), b"abe proof " + key.key_id)
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO abe_issued (key_id, authority_id, member, member_device_id, attributes, how, issued,"
                " confirmed, fingerprint, proof_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key.key_id, key.authority_id, member, member_device_id, ",".join(key.attributes), how, time.time(),
                 int(not pending), fingerprint, proof),
            )
            self.store.log(conn, "abe-key-issued",
                           detail=f"key for {', '.join(key.attributes)} to {member} ({how})")
        return key

    # -- grants both devices hold (in person, v2) -------------------------------------------------

    def grants_with(self, peer: bytes, as_authority: bool) -> dict[bytes, tuple[bool, str | None, tuple[str, ...]]]:
        """The grants between this device and another: as the authority, the keys issued to the device
        ``peer``; as a member, the keys held from the authority ``peer`` (an authority id). Each key id
        maps to (confirmed, fingerprint, attributes)."""
        if as_authority:
            rows = self.store.read("SELECT key_id, confirmed, fingerprint, attributes FROM abe_issued"
                                   " WHERE member_device_id = ?", (peer,))
        else:
            rows = self.store.read("SELECT key_id, confirmed, fingerprint, attributes FROM abe_keys"
                                   " WHERE authority_id = ?", (peer,))
        return {bytes(r[0]): (bool(r[1]), r[2], tuple(r[3].split(","))) for r in rows}

    def grant_proof_keys(self, peer: bytes, as_authority: bool) -> dict[bytes, bytes]:
        """The proof key of each grant with ``peer`` (as in :meth:`grants_with`) that has one: a member derives
        it from its key, an authority keeps it (records from before schema step 6 have none)."""
        if as_authority:
            rows = self.store.read("SELECT key_id, proof_key FROM abe_issued WHERE member_device_id = ?"
                                   " AND proof_key IS NOT NULL", (peer,))
            return {bytes(kid): self._open(proof, b"abe proof " + bytes(kid)) for kid, proof in rows}
        rows = self.store.read("SELECT key_id, secret FROM abe_keys WHERE authority_id = ?", (peer,))
        return {bytes(kid): grant_proof_key(decode_member_key(self._open(secret, b"abe key " + bytes(kid))))
                for kid, secret in rows}

    def authority_identity(self, authority_id: bytes) -> bytes | None:
        """The identity of the device an authority's keys came from, once known (see schema step 7)."""
        rows = self.store.read("SELECT device_identity FROM abe_authorities WHERE authority_id = ?",
                               (authority_id,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def bind_authority_identity(self, authority_id: bytes, identity: bytes) -> None:
        """Remember which device an authority's keys come from (only where none is known)."""
        with self.store.transaction() as conn:
            conn.execute("UPDATE abe_authorities SET device_identity = ? WHERE authority_id = ?"
                         " AND device_identity IS NULL AND master_key IS NULL", (identity, authority_id))

    def confirm_grant(self, key_id: bytes, as_authority: bool) -> None:
        """The other device holds this grant too: the key may be used (member), the issue counts (authority)."""
        table = "abe_issued" if as_authority else "abe_keys"
        with self.store.transaction() as conn:
            if conn.execute(f"UPDATE {table} SET confirmed = 1 WHERE key_id = ? AND confirmed = 0",
                            (key_id,)).rowcount:
                self.store.log(conn, "abe-grant-confirmed", detail=f"key {key_id.hex()[:16]}")

    def discard_grant(self, key_id: bytes, as_authority: bool) -> None:
        """Forget a grant the other device does not hold (never one both were known to hold)."""
        table = "abe_issued" if as_authority else "abe_keys"
        with self.store.transaction() as conn:
            if conn.execute(f"DELETE FROM {table} WHERE key_id = ? AND confirmed = 0", (key_id,)).rowcount:
                self.store.log(conn, "abe-grant-discarded",
                               detail=f"key {key_id.hex()[:16]}: the other device does not hold it")

    def issued(self) -> list[Issued]:
        rows = self.store.read("SELECT key_id, member, member_device_id, attributes, how, issued FROM abe_issued"
                               " WHERE confirmed = 1 ORDER BY issued")
        return [Issued(key_id=bytes(r[0]), member=r[1], member_device_id=bytes(r[2]) if r[2] else None,
                       attributes=tuple(r[3].split(",")), how=r[4], issued=r[5]) for r in rows]

    # -- the KEM, inside the device ------------------------------------------------------------

    def encapsulate(self, authority: str, policy: str | Policy, random_bytes: RandomBytes = os.urandom
                    ) -> Encapsulation:
        """A fresh key under ``policy`` for ``authority``'s members; the key stays with the caller."""
        parsed = Policy.parse(policy) if isinstance(policy, str) else policy
        return encapsulate(self.public_key(authority), parsed, random_bytes)

    def decapsulate(self, ciphertext: bytes | Ciphertext) -> bytes:
        """The key a ciphertext carries, with a key of this device that satisfies its policy."""
        ct = decode_ciphertext(ciphertext) if isinstance(ciphertext, (bytes, bytearray)) else ciphertext
        keys = [k for k in self.member_keys(ct.authority_id) if ct.policy.prune(k.Kx) is not None]
        if not keys:
            raise NotSatisfied()
        failure: AbeError = DecapsulationFailed()
        for key in keys:
            try:
                return decapsulate(key, ct)
            except DecapsulationFailed as exc:
                failure = exc
        raise failure


def grant_local(authority: PadStore, member: PadStore, attributes: str | list[str]) -> MemberKey:
    """Issue a key on one machine (development, tests): the key goes straight into the member's store."""
    auth = AbeKeys(authority)
    public = auth.master().public
    if authority.device_id == member.device_id:
        raise AbeError("The authority and the member must be two different devices.")
    AbeKeys(member).check_authority(public)
    key = auth.issue(attributes, member=member.device_name, member_device_id=device_id_for(member.identity_public),
                     how="local")
    AbeKeys(member).add_member_key(public, key)
    return key
