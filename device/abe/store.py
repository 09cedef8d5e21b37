"""Attribute-based keys in the device store, and the device-side KEM calls.

Master and member keys live in the device's SQLite store (schema step 3),
sealed under the storage key when the home is PIN-locked, exactly like paired
laptops' keys (:class:`~device.storage.atrest.SecretBox`, bound to their row).
They never leave the device: :meth:`AbeKeys.encapsulate` and
:meth:`AbeKeys.decapsulate` return keys to callers inside the device (the CLI
prints only fingerprints; the room protocol keeps them in memory).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

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
    MalformedAbeData,
    NotAnAuthority,
    NotSatisfied,
    Revoked,
    UnknownAuthority,
    UnknownMember,
)
from device.abe.group import RandomBytes
from device.abe.periods import DEFAULT_PERIOD_S, Period, warn_at, when
from device.abe.policy import Policy, check_unreserved, parse_attributes
from device.abe.scheme import Encapsulation, check_member_key, decapsulate, encapsulate, keygen, setup
from device.storage.abe_tables import AbeTables
from device.storage.padstore import PadStore, device_id_for
from onetimechat.crypto import derive_key, equal

ROOM_ID_BYTES = 16
ROOM_SECRET_BYTES = 32
ROOM_SECRETS_MAGIC = b"R"  # before it, 32 bytes: the authority's period secret itself (older software)
#: Room secrets sent with one key, at most (the authority's own rooms; a renewal carries 48 bytes each), and the
#: rooms an authority may create (so no key's rooms are ever cut: docs/rooms.md "Period secrets, per room").
MAX_ROOM_SECRETS = 256
#: Settings rows of the rooms this authority created (room id, policy, tagged_from), sealed as its keys are: the
#: only rooms it issues secrets for. Never written from an invite (an outside review, issue 22).
OWN_ROOM_PREFIX = "abe-own-room:"
#: Set once the rooms an authority knew before those records were counted as its own (or at its creation).
OWN_ROOMS_COUNTED = "abe-own-rooms-counted"


def room_secret(period_secret: bytes, room_id: bytes) -> bytes:
    """A room's secret of a key period, from the authority's secret of that period (docs/rooms.md "Period
    secrets, per room"): what a contribution of the period to that room is bound and tagged with."""
    return derive_key(period_secret, f"otc room period secret v2 {room_id.hex()}")


def encode_room_secrets(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """Room secrets as sent with a key and kept sealed with it: ``"R" | n x (room_id 16 | secret 32)``."""
    return ROOM_SECRETS_MAGIC + b"".join(room_id + secret for room_id, secret in pairs)


def check_room_secrets(data: bytes) -> bytes:
    """``data`` if it is encoded room secrets (or, from older software, a period secret), else MalformedAbeData."""
    pair = ROOM_ID_BYTES + ROOM_SECRET_BYTES
    if len(data) == ROOM_SECRET_BYTES:
        return data
    if (data[:1] != ROOM_SECRETS_MAGIC or (len(data) - 1) % pair
            or (len(data) - 1) // pair > MAX_ROOM_SECRETS):
        raise MalformedAbeData("The room secrets sent with a key are malformed.")
    return data


def decode_room_secrets(data: bytes, room_id: bytes) -> bytes | None:
    """The secret of ``room_id`` in what came with a key: an entry for it, or (32 bytes: a period secret from
    older software) derived from that."""
    if len(data) == ROOM_SECRET_BYTES:
        return room_secret(data, room_id)
    pair = ROOM_ID_BYTES + ROOM_SECRET_BYTES
    for at in range(1, len(data) - pair + 1, pair):
        if equal(data[at:at + ROOM_ID_BYTES], room_id):
            return data[at + ROOM_ID_BYTES:at + pair]
    return None


def grant_fingerprint(authority_id: bytes, key: MemberKey, member_device_id: bytes) -> str:
    """What both screens show at the end of a grant: a hash of the key granted, who by and to whom."""
    digest = hashlib.sha256(b"otc grant fingerprint v1\x00" + authority_id + member_device_id + key.key_id
                            + ",".join(key.all_attributes).encode() + b"\x00"
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
    period: int | None = None
    starts: float | None = None
    ends: float | None = None
    revoked: float | None = None

    def to_dict(self) -> dict:
        return {
            "key_id": self.key_id.hex(),
            "member": self.member,
            "member_device_id": self.member_device_id.hex() if self.member_device_id else None,
            "attributes": list(self.attributes),
            "how": self.how,
            "issued": when(self.issued),
            "period": self.period,
            "starts": when(self.starts),
            "ends": when(self.ends),
            "revoked": when(self.revoked),
            # Withdrawn (issued ahead, then replaced by ending early): it starts and ends at the same instant.
            # Decided on the times themselves, not on their text to the second (a period ended early in its
            # first second was shown withdrawn: an outside review).
            "withdrawn": self.starts is not None and self.starts == self.ends,
        }


@dataclass(frozen=True)
class HeldKey:
    """A key this device holds, as shown (never the key): its authority, attributes and period."""

    key_id: bytes
    authority: str
    authority_id: bytes
    attributes: tuple[str, ...]
    period: int | None
    starts: float | None
    ends: float | None
    #: A later period of its authority begins no later than this key's: the authority withdrew this period
    #: (it ended the running one early after issuing this one ahead, see :func:`withdrawn_keys`).
    withdrawn: bool = False
    #: Its period begins before an earlier-numbered held key's ends: the authority ended that one early (and
    #: withdrew the one issued ahead, if any). It counts as begun on this device from the moment it is held,
    #: whatever the device's clock says (see :func:`early_keys`).
    early: bool = False
    #: When a later period of its authority began before this key's period ended: the authority ended this
    #: one early (what the device shows; its rules go by ``early`` and ``withdrawn``).
    ended_early: float | None = None

    def state(self, now: float) -> str:
        """valid, expiring (renewal due), expired, future (a renewal whose period has not begun), withdrawn
        (its period was replaced before it began: never used), or ended (the authority ended it early)."""
        if self.withdrawn:
            return "withdrawn"
        if self.ended_early is not None and now >= self.ended_early:
            return "ended"
        if self.ends is None or self.starts is None:
            return "valid"
        if now >= self.ends:
            return "expired"
        if now < self.starts and not self.early:
            return "future"
        return "expiring" if now >= warn_at(self.starts, self.ends) else "valid"

    def to_dict(self, now: float) -> dict:
        return {"key_id": self.key_id.hex(), "authority": self.authority, "attributes": list(self.attributes),
                "period": self.period, "starts": when(self.starts),
                "ends": when(self.ends if self.ended_early is None else self.ended_early), "state": self.state(now)}


def withdrawn_keys(keys: list[HeldKey]) -> set[bytes]:
    """The ids of the keys whose period a later period of the same authority withdrew: one numbered after it
    that begins no later than it does. Periods otherwise follow each other (each begins when the one before
    ends, or later), so that happens only when the authority ended its running period early after issuing the
    next one ahead (:meth:`AbeKeys.next_period`): the period that replaces it begins now, before the one issued
    ahead would have. Whichever order the renewals arrive in, the withdrawn key is never used on this device."""
    out = set()
    for key in keys:
        if key.period is None or key.starts is None:
            continue
        if any(equal(other.authority_id, key.authority_id) and other.period is not None and other.period > key.period
               and other.starts is not None and other.starts <= key.starts for other in keys):
            out.add(key.key_id)
    return out


def early_keys(keys: list[HeldKey]) -> set[bytes]:
    """The ids of the keys whose period begins before an earlier-numbered held key of the same authority ends:
    the authority ended that period early (``otc abe renew --end-period``; the one it issued ahead, if any, is
    withdrawn), and the new period starts at the *authority's* now. Such a key counts as begun on this device
    from the moment it is held (its renewal opened), whatever this device's clock says: a Pi has no clock of its
    own worth the name, and one ten minutes behind kept its rooms in the old period for those ten minutes, its
    messages readable by the revoked member (an outside review, finding 6). Only the authority can make such a
    key (a renewal opens only under the tag of its pad, a grant only in person), so nobody else can move a
    device's rooms early with it."""
    out = set()
    for key in keys:
        if key.period is None or key.starts is None:
            continue
        if any(equal(other.authority_id, key.authority_id) and other.period is not None and other.period < key.period
               and other.ends is not None and key.starts < other.ends for other in keys):
            out.add(key.key_id)
    return out


def _ended_early(key: HeldKey, keys: list[HeldKey]) -> float | None:
    """When the earliest later period of ``key``'s authority held here, not withdrawn, began before ``key``'s
    ended (the authority ended it early); None if none did."""
    if key.period is None or key.ends is None or key.withdrawn:
        return None
    cuts = [other.starts for other in keys
            if equal(other.authority_id, key.authority_id) and other.period is not None and other.period > key.period
            and not other.withdrawn and other.starts is not None and other.starts < key.ends]
    return min(cuts) if cuts else None


class AbeKeys:
    """The attribute-based keys of one device."""

    def __init__(self, store: PadStore) -> None:
        self.store = store
        self.tables = AbeTables(store)

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
        if self.tables.authority_named(self.store.device_name):
            raise AbeError(f"This device already holds keys from another authority named "
                           f"{self.store.device_name!r}; an authority needs a unique name.")
        master = setup(self.store.device_name, random_bytes)
        aid = master.public.authority_id
        self.tables.add_own_authority(aid, master.public.name, master.public.encode_full(),
                                      self._seal(master.encode(), b"abe master " + aid), master.public.fingerprint)
        self.store.save_settings({OWN_ROOMS_COUNTED: "1"})  # a new authority: only rooms it creates count
        return master.public

    def _own_row(self) -> tuple[bytes, bytes] | None:
        return self.tables.own_authority()

    def master(self) -> MasterKey:
        row = self._own_row()
        if row is None:
            raise NotAnAuthority()
        aid = bytes(row[0])
        master = decode_master_key(self._open(row[1], b"abe master " + aid))
        stored = self.tables.public_key_of(aid)
        if stored is not None and decode_public_key(stored).g2_a is None:
            # An authority set up before g2^a was public (an outside review, issue 22): its own row gets it from
            # the master key, the first time the master key is opened (grants and renewals then send it).
            self.tables.upgrade_public_key(aid, master.public.encode_full())
        return master

    def public_key(self, name: str) -> PublicKey:
        stored = self.tables.public_key_named(name)
        if stored is None:
            raise UnknownAuthority(f"This device knows no attribute authority named {name!r}.")
        return decode_public_key(stored)

    def public_key_of(self, authority_id: bytes) -> PublicKey | None:
        """The public key of the authority ``authority_id`` as this device holds it (with g2^a, if it has it)."""
        stored = self.tables.public_key_of(authority_id)
        return None if stored is None else decode_public_key(stored)

    def check_authority(self, public: PublicKey) -> None:
        """Refuse a public key whose name belongs to another authority here."""
        for aid, stored in self.tables.authorities_like(public.name, public.authority_id):
            # The same key with or without g2^a (fixed by g1^a: decode_public_key checks it) is the same key.
            if equal(bytes(aid), public.authority_id) and equal(decode_public_key(bytes(stored)).encode(),
                                                                 public.encode()):
                continue
            if equal(bytes(aid), public.authority_id):
                raise AbeError(f"This device already knows another attribute authority by the id that "
                               f"{public.name!r} gives: its key is not that authority's.")
            raise AbeError(f"This device already knows another attribute authority named {public.name!r}.")

    def knows(self, public: PublicKey) -> bool:
        """Whether this device holds exactly this public key already."""
        held = self.public_key_of(public.authority_id)
        return held is not None and equal(held.encode(), public.encode())

    def authorities(self) -> list[dict]:
        out = []
        for aid, name, pk, master in self.tables.authority_rows():
            public = decode_public_key(bytes(pk))
            keys = [k.attributes for k in self.member_keys(bytes(aid))]
            out.append({"name": name, "authority_id": bytes(aid).hex(), "fingerprint": public.fingerprint,
                        "own": master is not None, "keys": [list(a) for a in keys]})
        return out

    # -- member keys ------------------------------------------------------------------------

    def add_member_key(self, public: PublicKey, key: MemberKey, pending: bool = False,
                       window: tuple[float, float] | None = None, period_secret: bytes | None = None) -> str:
        """Store a key received from its authority, after checking it against the public key; its grant
        fingerprint. A ``pending`` key is not used until :meth:`confirm_grant` (the authority holds the
        grant too). ``window`` is (starts, ends) of the key's period, which a key with a period needs."""
        row = self.member_key_row(public, key, pending, window, period_secret)
        self.tables.add_member_key(**row)
        return str(row["fingerprint"])

    def member_key_row(self, public: PublicKey, key: MemberKey, pending: bool = False,
                       window: tuple[float, float] | None = None, period_secret: bytes | None = None) -> dict:
        """A key received from its authority, checked against the public key and sealed, as the tables keep it
        (:meth:`AbeTables.add_member_key`'s arguments); a renewal's is stored with the use of its renewal pad,
        in one commit (device/abe/renewal.py)."""
        self.check_authority(public)
        check_member_key(public, key)
        if self.tables.member_key_known(key.key_id):
            raise AbeError("The authority sent a key whose id this device already holds.")
        if (key.period is None) != (window is None) or (window is not None and not window[0] < window[1]):
            raise MalformedAbeData("The key's period does not match what its authority says of it.")
        # The authority files this device under its identity's hash (its id, unless made before identities).
        fingerprint = grant_fingerprint(public.authority_id, key, device_id_for(self.store.identity_public))
        return dict(
            authority_id=public.authority_id, authority_name=public.name, public_key=public.encode_full(),
            key_id=key.key_id, attributes=",".join(key.attributes),
            sealed_key=self._seal(key.encode(), b"abe key " + key.key_id), pending=pending, fingerprint=fingerprint,
            period=key.period, window=window,
            # The room secrets sent with the key (or a period secret, from older software), sealed as the key is.
            sealed_period_secret=(self._seal(check_room_secrets(period_secret), b"abe period secret " + key.key_id)
                                  if period_secret is not None and key.period is not None else None),
            detail=f"key for {', '.join(key.attributes)} from authority {public.name}")

    # -- period secrets, per room (docs/rooms.md "Period secrets, per room") ----------------------

    def period_secret_for(self, period: int) -> bytes:
        """The authority's secret of its period ``period``: derived from its master key (nothing stored). It
        stays on the authority's device (before per-room secrets it was sent with every key of the period): each
        room's secret of the period is derived from it (:func:`room_secret`)."""
        master = self.master()
        return derive_key(master.encode(), f"otc room period secret v1 {master.public.authority_id.hex()} {period}")

    # -- the rooms this authority created (docs/rooms.md "Period secrets, per room") -------------

    def _own_room_context(self, room_id: bytes) -> bytes:
        return b"abe own room " + room_id

    def record_own_room(self, room_id: bytes, policy: Policy, tagged_from: int | None, *,
                        late: bool = False) -> None:
        """Record a room this authority creates (before its descriptor leaves): its secrets are issued from this
        record, never from a room state or an invite (anyone can write an invite naming this authority, with any
        room id and policy). At most MAX_ROOM_SECRETS rooms, so no key's secrets are ever cut.

        ``late``: a room recorded after it was made (`otc room add --own`, its state lost before an upgrade): its
        secrets go with keys of the period after the newest issued so far and later (``secrets_from``), never with
        a key of a period some of whose keys went out before the record: recorded in the middle of a renewal
        cycle, it would leave some members of that period holding its secret and some not, and in a room without
        ``tagged_from`` they would refuse each other's moves (red team 22c F3). A room recorded at create goes with
        every key issued from then on (``secrets_from`` 0): its periods before ``tagged_from`` bind alike whatever
        a device holds (rule 4), so a key of the running period issued after the create may carry it."""
        self.master()  # an authority's only
        rooms = self.own_rooms()
        if len(rooms) >= MAX_ROOM_SECRETS:
            raise AbeError(f"This authority has created {len(rooms)} rooms, the most it can issue secrets for "
                           f"({MAX_ROOM_SECRETS}); no more rooms can be created.")
        secrets_from = max((p.number for p in self.periods()), default=0) + 1 if late else 0
        raw = json.dumps({"policy": policy.text, "tagged_from": tagged_from, "secrets_from": secrets_from},
                         sort_keys=True).encode()
        sealed = base64.b64encode(self._seal(raw, self._own_room_context(room_id))).decode()
        self.store.save_settings({OWN_ROOM_PREFIX + room_id.hex(): sealed}, event="abe-room",
                                 detail=f"room created, policy {policy.text}")

    def _count_rooms_known_before(self) -> None:
        """Once, on an authority from before the records: the rooms of it this device keeps a state of count as
        its own (they are what it issued secrets for until then). From then on only rooms it creates count."""
        from device.storage.room_states import room_descriptors

        if self.store.setting(OWN_ROOMS_COUNTED) is not None:
            return
        own = self.master().public.authority_id
        values = {OWN_ROOMS_COUNTED: "1"}
        for room in room_descriptors(self.store):
            try:
                room_id, authority_id = bytes.fromhex(room["room_id"]), bytes.fromhex(room["authority_id"])
                policy = Policy.parse(room["policy"])
            except (KeyError, TypeError, ValueError, AbeError):
                continue  # a state this software cannot read is no room to issue for
            tagged_from = room.get("tagged_from")
            if equal(authority_id, own) and len(room_id) == ROOM_ID_BYTES:
                raw = json.dumps({"policy": policy.text, "tagged_from": tagged_from}, sort_keys=True).encode()
                values[OWN_ROOM_PREFIX + room_id.hex()] = base64.b64encode(
                    self._seal(raw, self._own_room_context(room_id))).decode()
        self.store.save_settings(values, event="abe-room", detail=f"{len(values) - 1} rooms known before counted")

    def own_rooms(self) -> dict[bytes, tuple[Policy, int | None]]:
        """The rooms this authority created: room id -> (policy, tagged_from)."""
        return {room_id: (policy, tagged_from) for room_id, (policy, tagged_from, _) in self._own_records().items()}

    def _own_records(self) -> dict[bytes, tuple[Policy, int | None, int]]:
        """room id -> (policy, tagged_from, secrets_from): the first period whose keys carry the room's secret
        (0: every period, for a record from before secrets_from: the rooms known before the records, whose
        secrets went with every key)."""
        self._count_rooms_known_before()
        out = {}
        for name, value in self.store.settings_with_prefix(OWN_ROOM_PREFIX).items():
            room_id = bytes.fromhex(name[len(OWN_ROOM_PREFIX):])
            record = json.loads(self._open(base64.b64decode(value), self._own_room_context(room_id)))
            out[room_id] = (Policy.parse(record["policy"]), record["tagged_from"], int(record.get("secrets_from", 0)))
        return out

    def own_authority_id(self) -> bytes | None:
        """This device's authority id, if it is one (nothing unsealed)."""
        row = self._own_row()
        return bytes(row[0]) if row is not None else None

    def own_room_ids(self) -> set[bytes]:
        """The ids of the rooms this authority created: the names of its records, nothing unsealed."""
        self._count_rooms_known_before()
        return {bytes.fromhex(name[len(OWN_ROOM_PREFIX):]) for name in self.store.settings_with_prefix(OWN_ROOM_PREFIX)}

    def unrecorded_rooms(self) -> list[dict]:
        """On an authority's device, the descriptors of the rooms naming it that this device keeps a state of but
        has no record of creating: an authority upgraded from software before the records, whose room's state was
        lost before the one-time count, and re-added from its invite (an outside review, red team 22b F4). Their
        members get no secret of the room, so cannot contribute in its tagged periods; the owner is told
        (`otc room add`, `otc room list`, the renewal plan) and may record it (`otc room add --own`)."""
        from device.storage.room_states import room_descriptors

        own = self.own_authority_id()
        if own is None:
            return []
        recorded = self.own_room_ids()
        out = []
        for room in room_descriptors(self.store):
            try:
                room_id, authority_id = bytes.fromhex(room["room_id"]), bytes.fromhex(room["authority_id"])
            except (KeyError, TypeError, ValueError):
                continue
            if equal(authority_id, own) and room_id not in recorded:
                out.append(room)
        return out

    def _rooms_satisfied(self, attributes: tuple[str, ...] | list[str],
                         rooms: dict[bytes, tuple[Policy, int | None]] | None = None) -> list[bytes]:
        rooms = self.own_rooms() if rooms is None else rooms
        return sorted(rid for rid, (policy, _) in rooms.items() if policy.satisfied_by(attributes))

    def room_secrets_for(self, period: int, attributes: tuple[str, ...] | list[str]) -> bytes:
        """What goes with a key of ``period`` and ``attributes`` (renewal, grant): the secret of the period of
        every room this authority created whose policy those attributes satisfy, encoded
        (:func:`encode_room_secrets`). A member holds a room's secret only if it could read the room. Past
        MAX_ROOM_SECRETS (only an authority from before the cap at create), the rest are cut:
        :meth:`rooms_cut` says how many."""
        secret = self.period_secret_for(period)
        records = self._own_records()
        rooms = {rid: (policy, tagged_from) for rid, (policy, tagged_from, since) in records.items() if period >= since}
        pairs = [(room_id, room_secret(secret, room_id)) for room_id in self._rooms_satisfied(attributes, rooms)]
        return encode_room_secrets(pairs[:MAX_ROOM_SECRETS])

    def rooms_cut(self, attributes: tuple[str, ...] | list[str],
                  rooms: dict[bytes, tuple[Policy, int | None]] | None = None) -> int:
        """How many rooms a key of ``attributes`` satisfies beyond the MAX_ROOM_SECRETS it can carry secrets of.
        ``rooms``: own_rooms() read once by a caller asking for many keys (each read unseals every record)."""
        return max(0, len(self._rooms_satisfied(attributes, rooms)) - MAX_ROOM_SECRETS)

    def cut_counter(self) -> Callable[[tuple[str, ...] | list[str]], int]:
        """rooms_cut for many keys in one call: the own-room records read once, each attribute set counted once
        (`otc abe members` read every record once per key ever issued: an outside review)."""
        rooms = self.own_rooms()
        counted: dict[frozenset[str], int] = {}

        def cut(attributes: tuple[str, ...] | list[str]) -> int:
            at = frozenset(attributes)
            if at not in counted:
                counted[at] = self.rooms_cut(attributes, rooms)
            return counted[at]
        return cut

    def room_period_secret(self, authority_id: bytes, room_id: bytes, period: int) -> bytes | None:
        """The secret of room ``room_id`` for ``authority_id``'s period ``period`` this device holds: issued with
        a key of that period (not withdrawn) whose attributes satisfy the room's policy; derived from the
        period's secret a renewal or grant of older software sent (any room: the weakness per-room secrets
        close, until the member's next renewal); or derived, on the authority's own device. None otherwise."""
        own = self._own_row()
        if own is not None and equal(own[0], authority_id):
            record = self._own_records().get(room_id)
            if record is not None and period < record[2]:
                return None  # as its members: no key of that period carries the room's secret (red team 22c F3)
            return room_secret(self.period_secret_for(period), room_id)
        for key in self.held():
            if equal(key.authority_id, authority_id) and key.period == period and not key.withdrawn:
                sealed = self.tables.sealed_period_secret(key.key_id)
                if sealed is None:
                    continue
                found = decode_room_secrets(self._open(sealed, b"abe period secret " + key.key_id), room_id)
                if found is not None:
                    return found
        return None

    def member_keys(self, authority_id: bytes | None = None) -> list[MemberKey]:
        """This device's keys (those whose grant both devices are known to hold), but those of a withdrawn
        period: they decapsulate nothing (a room contribution under that period is undecidable here)."""
        gone = {k.key_id for k in self.held() if k.withdrawn}
        rows = self.tables.member_key_rows(authority_id)
        return [decode_member_key(self._open(secret, b"abe key " + kid)) for kid, secret in rows if kid not in gone]

    def held(self) -> list[HeldKey]:
        """The keys this device holds (confirmed), as shown: attributes and periods, never a key. A key of a
        withdrawn period is listed, marked so (:func:`withdrawn_keys`)."""
        rows = self.tables.held_rows()
        keys = [HeldKey(bytes(r[0]), r[1], bytes(r[2]), tuple(r[3].split(",")), r[4], r[5], r[6]) for r in rows]
        gone, early = withdrawn_keys(keys), early_keys(keys)
        marked = [replace(k, withdrawn=k.key_id in gone, early=k.key_id in early) for k in keys]
        return [replace(k, ended_early=_ended_early(k, marked)) for k in marked]

    def periods_held(self, authority_id: bytes) -> dict[int, tuple[float, float]]:
        """The periods of ``authority_id`` this device holds a key for: number -> (starts, ends). A key from
        before periods counts as period 0, without end; a withdrawn period does not count."""
        out: dict[int, tuple[float, float]] = {}
        for key in self.held():
            if equal(key.authority_id, authority_id) and not key.withdrawn:
                if key.period is None or key.starts is None or key.ends is None:
                    out.setdefault(0, (0.0, float("inf")))
                else:  # a period that ended an earlier one early has begun here since its key is held
                    out[key.period] = (0.0 if key.early else key.starts, key.ends)
        return out

    def key_warnings(self, now: float | None = None) -> list[str]:
        """What the device's status says of its keys' periods: renewal due, expired (never a key)."""
        now = time.time() if now is None else now
        held = self.held()
        out = []
        for key in held:
            newer = any(equal(k.authority_id, key.authority_id) and (k.period or 0) > (key.period or 0)
                        for k in held)
            state = key.state(now)
            if newer or key.withdrawn or state not in ("expiring", "expired"):
                continue
            what = f"the key from {key.authority} for {', '.join(key.attributes)} (period {key.period})"
            if state == "expired":
                out.append(f"{what} expired at {when(key.ends)}: ask the authority to renew it")
            else:
                out.append(f"{what} expires at {when(key.ends)}: ask the authority to renew it")
        for authority_id, name in sorted({(k.authority_id, k.authority) for k in held}):
            public = self.public_key_of(authority_id)
            if public is not None and public.g2_a is None:
                out.append(f"authority {name}'s public key here has no g2^a (received before it was sent): room "
                           "ciphertexts are checked for consistent rows but not bound to their C0 until its next "
                           "renewal or grant brings it (docs/abe.md \"The consistency check\")")
        return out
    # -- issuing (the authority) -------------------------------------------------------------

    # -- periods (the authority) ---------------------------------------------------------------

    def periods(self) -> list[Period]:
        aid = self.master().public.authority_id
        return [Period(r[0], r[1], r[2]) for r in self.tables.period_rows(aid)]

    def current_period(self, now: float | None = None) -> Period | None:
        """The authority's running period (the newest that has begun and not ended), if any."""
        now = time.time() if now is None else now
        running = [p for p in self.periods() if p.running(now)]
        return running[-1] if running else None

    def next_period(self, length: float | None = None, now: float | None = None, early: bool = False) -> Period:
        """The period after the newest (made if need be): it begins when the newest ends, or at once when
        there is none, it has ended or ``early`` ("end the period early"). Its length is ``length``, or the
        newest one's. Ending early ends every period not over yet now, in the same commit: the running one, and
        the one issued ahead if any (a renewal in the running period's last week), which is *withdrawn* (it
        starts and ends now, and so do its keys in the records): the new period, numbered after it, starts
        now and replaces it (see :meth:`preview_next_period`)."""
        now = time.time() if now is None else now
        aid = self.master().public.authority_id
        made, new = self.preview_next_period(length, now, early)
        if not new:
            return made
        ahead = self.issued_ahead(now) if early else None
        note = " (the last one ended early)" if early else ""
        if ahead is not None:
            note = f" (the running one ended early; period {ahead.number}, issued ahead, withdrawn)"
        self.tables.add_period(aid, made.number, made.starts, made.ends,
                               detail=f"period {made.number} from {when(made.starts)} to {when(made.ends)}{note}",
                               end_at=now if early else None)
        return made

    def issued_ahead(self, now: float | None = None) -> Period | None:
        """The period issued ahead, if any: the newest, when it has not begun yet (renewed in the running
        period's last week)."""
        now = time.time() if now is None else now
        known = self.periods()
        return known[-1] if known and known[-1].starts > now else None

    def preview_next_period(self, length: float | None = None, now: float | None = None, early: bool = False
                            ) -> tuple[Period, bool]:
        """What :meth:`next_period` would give, and whether it would make it (nothing is written).

        Ending early while a period is issued ahead (not begun) withdraws that one: the new period is numbered
        after it (rooms follow the highest period, so the withdrawn one is behind them for good: docs/rooms.md
        "Periods") and, like any period made by ending early, starts now and lasts ``length`` or as long as the
        newest (here the withdrawn one)."""
        now = time.time() if now is None else now
        known = self.periods()
        last = known[-1] if known else None
        if last is not None and last.starts > now and not early:
            return last, False  # the next period is already made (a renewal before it begins)
        length = length if length is not None else (last.ends - last.starts if last else DEFAULT_PERIOD_S)
        starts = now if last is None or early or last.ends <= now else last.ends
        return Period((last.number if last else 0) + 1, starts, starts + length), True

    def period_for_grant(self, length: float | None = None, now: float | None = None) -> Period:
        """The period a grant issues for: the running one, else a new one of ``length`` (default a month)."""
        return self.current_period(now) or self.next_period(length if length is not None else DEFAULT_PERIOD_S,
                                                            now)

    # -- issuing (the authority) -------------------------------------------------------------

    def issue(self, attributes: str | list[str] | tuple[str, ...], member: str, member_device_id: bytes | None,
              how: str, random_bytes: RandomBytes = os.urandom, pending: bool = False,
              period: Period | None = None) -> MemberKey:
        """A new member key for ``period`` (the running one, or a new one, when None), recorded as issued before
        it leaves (the authority keeps no copy). A ``pending`` record counts once :meth:`confirm_grant` says
        the member holds the key."""
        key, record = self.make_key(attributes, member, member_device_id, how, random_bytes, pending, period)
        self.tables.add_issued(**record)
        return key

    def make_key(self, attributes: str | list[str] | tuple[str, ...], member: str, member_device_id: bytes | None,
                 how: str, random_bytes: RandomBytes = os.urandom, pending: bool = False,
                 period: Period | None = None) -> tuple[MemberKey, dict]:
        """A new member key, as :meth:`issue` makes it, and the record of it to write (nothing is written): the
        caller writes the record in the same commit as whatever carries the key (a renewal on its pad)."""
        master = self.master()
        names = parse_attributes(attributes)
        check_unreserved(names, "a key's attributes")
        period = period if period is not None else self.period_for_grant()
        key = keygen(master, names, random_bytes, period=period.number)
        fingerprint = grant_fingerprint(key.authority_id, key, member_device_id) if member_device_id else None
        proof = self._seal(grant_proof_key(key), b"abe proof " + key.key_id)
        return key, dict(
            key_id=key.key_id, authority_id=key.authority_id, member=member, member_device_id=member_device_id,
            attributes=",".join(key.attributes), how=how, pending=pending, fingerprint=fingerprint,
            sealed_proof=proof, period=period.number, starts=period.starts, ends=period.ends,
            detail=f"key for {', '.join(key.attributes)} to {member} ({how}, period {period.number})")

    def find_issued(self, who: str) -> list[Issued]:
        """The confirmed keys issued to the member named ``who``, or the one whose key id starts with ``who``
        (at least 8 hex digits)."""
        issued = self.issued()
        found = [i for i in issued if i.member == who]
        if not found and len(who) >= 8 and all(c in "0123456789abcdef" for c in who.lower()):
            found = [i for i in issued if i.key_id.hex().startswith(who.lower())]
        if not found:
            raise UnknownMember(f"This authority issued no key to a member or with a key id {who[:40]!r}.")
        return found

    def revoke(self, who: str) -> list[Issued]:
        """Mark the keys of member ``who`` (or the key ``who``) revoked: none is renewed again. The keys
        revoked now (those already revoked are left as they were)."""
        found = [i for i in self.find_issued(who) if i.revoked is None]
        if not found:
            raise Revoked(f"The keys of {who[:40]!r} are already revoked.")
        now = time.time()
        self.tables.revoke_issued([i.key_id for i in found], now,
                                  detail=f"{len(found)} key(s) of {found[0].member} revoked: no renewal")
        return [Issued(**{**i.__dict__, "revoked": now}) for i in found]

    # -- grants both devices hold (in person, v2) -------------------------------------------------

    def grants_with(self, peer: bytes, as_authority: bool) -> dict[bytes, tuple[bool, str | None, tuple[str, ...]]]:
        """The grants between this device and another: as the authority, the keys issued to the device
        ``peer``; as a member, the keys held from the authority ``peer`` (an authority id). Each key id
        maps to (confirmed, fingerprint, attributes)."""
        rows = self.tables.grant_rows(peer, as_authority)
        return {bytes(r[0]): (bool(r[1]), r[2], tuple(r[3].split(","))) for r in rows}

    def grant_proof_keys(self, peer: bytes, as_authority: bool) -> dict[bytes, bytes]:
        """The proof key of each grant with ``peer`` (as in :meth:`grants_with`) that has one: a member derives
        it from its key, an authority keeps it (records from before schema step 6 have none)."""
        if as_authority:
            return {kid: self._open(proof, b"abe proof " + kid) for kid, proof in self.tables.issued_proof_keys(peer)}
        return {kid: grant_proof_key(decode_member_key(self._open(secret, b"abe key " + kid)))
                for kid, secret in self.tables.held_key_rows(peer)}

    def authority_identity(self, authority_id: bytes) -> bytes | None:
        """The identity of the device an authority's keys came from, once known (see schema step 7)."""
        return self.tables.authority_identity(authority_id)

    def bind_authority_identity(self, authority_id: bytes, identity: bytes) -> None:
        """Remember which device an authority's keys come from (only where none is known)."""
        self.tables.bind_authority_identity(authority_id, identity)

    def confirm_grant(self, key_id: bytes, as_authority: bool) -> None:
        """The other device holds this grant too: the key may be used (member), the issue counts (authority)."""
        self.tables.confirm_grant(key_id, as_authority)  # its renewal pad with it, in one commit

    def discard_grant(self, key_id: bytes, as_authority: bool) -> None:
        """Forget a grant the other device does not hold (never one both were known to hold)."""
        self.tables.discard_grant(key_id, as_authority)

    def issued(self) -> list[Issued]:
        rows = self.tables.issued_rows()
        return [Issued(key_id=bytes(r[0]), member=r[1], member_device_id=bytes(r[2]) if r[2] else None,
                       attributes=tuple(r[3].split(",")), how=r[4], issued=r[5], period=r[6], starts=r[7],
                       ends=r[8], revoked=r[9]) for r in rows]

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
        public = self.public_key_of(ct.authority_id)
        if not keys or public is None:
            raise NotSatisfied()
        failure: AbeError = DecapsulationFailed()
        for key in keys:
            try:
                return decapsulate(key, ct, public)
            except DecapsulationFailed as exc:
                failure = exc
        raise failure


def renewal_for(auth: AbeKeys, member_device_id: bytes, issued: list[Issued] | None = None) -> Issued:
    """The key a renewal re-issues for the device ``member_device_id``: its newest confirmed one, unless revoked
    (Revoked) or none (UnknownMember). ``issued``: ``auth.issued()``, if the caller has read it already."""
    mine = [i for i in (auth.issued() if issued is None else issued)
            if i.member_device_id is not None and equal(i.member_device_id, member_device_id)]
    if not mine:
        raise UnknownMember("This authority issued no key to that device.")
    newest = mine[-1]
    if any(i.revoked is not None for i in mine):
        raise Revoked(f"The keys of {newest.member} are revoked: it gets no renewal.")
    return newest


def renew_local(authority: PadStore, member: PadStore, period: Period) -> MemberKey:
    """Renew a member's key for ``period`` on one machine (development, tests: in person, in effect): the same
    attributes as its newest key, refused for a revoked member."""
    auth = AbeKeys(authority)
    public = auth.master().public
    prior = renewal_for(auth, member.device_id)
    key = auth.issue(prior.attributes, member=prior.member, member_device_id=member.device_id, how="renewal, local",
                     period=period)
    AbeKeys(member).add_member_key(public, key, window=(period.starts, period.ends),
                                   period_secret=auth.room_secrets_for(period.number, key.all_attributes))
    return key


def grant_local(authority: PadStore, member: PadStore, attributes: str | list[str],
                period: Period | float | None = None) -> MemberKey:
    """Issue a key on one machine (development, tests): the key goes straight into the member's store. It is
    for ``period`` (a Period), or the running period, or a new one lasting ``period`` seconds (default a
    month)."""
    auth = AbeKeys(authority)
    public = auth.master().public
    if authority.device_id == member.device_id:
        raise AbeError("The authority and the member must be two different devices.")
    AbeKeys(member).check_authority(public)
    chosen = period if isinstance(period, Period) else auth.period_for_grant(period)
    member_id = device_id_for(member.identity_public)
    key = auth.issue(attributes, member=member.device_name, member_device_id=member_id, how="local", period=chosen)
    AbeKeys(member).add_member_key(public, key, window=(chosen.starts, chosen.ends),
                                   period_secret=auth.room_secrets_for(chosen.number, key.all_attributes))
    from device.abe.renewal import PAD_BYTES, RenewalPads

    pad = os.urandom(PAD_BYTES)  # one machine sees it anyway (development, tests)
    for store, role, peer in ((authority, "authority", member_id), (member, "member", None)):
        RenewalPads(AbeKeys(store)).add(pad, key.key_id, public.authority_id, peer, role)
        AbeKeys(store).confirm_grant(key.key_id, as_authority=role == "authority")
    return key
