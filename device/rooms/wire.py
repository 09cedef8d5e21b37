"""Rooms on the wire: the descriptor, invite strings and the relay items.

Every item starts ``"ORM1" | type (1) | room_id (16)``; integers are
big-endian; on the relay an item is standard base64 with padding. Decoding is
strict: exact lengths, nothing trailing, the right room.

| type | item | after the header |
|---|---|---|
| 1 | contribution | ct_len 4, ABE ciphertext of k_j, X25519 pub 32, Ed25519 pub 32, bind 32, sig 64 |
| 2 | distribution (withdrawn: it had no commitment to its key; now refused as malformed) | |
| 3 | message | epoch 8, sender id 32, counter 8, ciphertext (ChaCha20-Poly1305), sig 64 |
| 4 | leave | member id 32, sig 64 |
| 5 | named contribution | as 1, with name_len 1, name between the Ed25519 pub and bind |
| 6 | distribution | epoch 8, sid 32, leader 32, ephemeral X25519 32, n 2, n x (member 32, sealed 48), |
|   |              | commit 32, mac 32, sig 64 |
| 7 | objection (withdrawn: anyone could post one; now refused as malformed) | |
| 8 | objection | epoch 8, leader 32, objector 32, mac 32, sig 64 |
| 9 | tagged contribution | as 5, with tag 32 between bind and sig |

A member's *id* is the hash of its contribution's bytes. ``bind`` is a MAC
under k_j over the room and the two public keys (and, in a named
contribution, the member's display name), so a contribution's ciphertext
cannot be reposted with someone else's keys or name (whoever decapsulates
checks it); ``sig`` is by the contribution's own Ed25519 key over everything
before it. Devices post named contributions (type 5); type 1 is still read
(its member has no name and is shown by id). A device that holds the room's
secret of its key's period (device/abe/store.py ``room_secret``, which the authority
issues per room, with the period's keys, to members whose attributes satisfy
the room's policy) posts a *tagged* contribution (type 9): ``tag`` is a MAC
under that secret over everything before it, so a device holding the secret
checks it on arrival, without decapsulating, and never holds aside a
contribution of a later period made from the public key alone.
A distribution carries ``commit``, a hash of the epoch key
bound to the room, the epoch and the distributor, so each member checks that the key it unsealed is the one
every other member will check against (a distributor cannot seal different keys to different members
unseen); an *objection* is a member's signed statement that the distribution of an epoch did not open to
the committed key for it, MACed under a key derived from that epoch's K_abe (so only a member that could
derive K_abe can object; the withdrawn type 7 had no MAC). The crypto helpers below (sid, K_abe, sealing G_e,
the epoch key and message nonces) are the only place these secrets are combined.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from device.abe.encoding import Ciphertext, decode_ciphertext
from device.abe.errors import AbeError
from device.abe.policy import Policy
from device.errors import InvalidName
from device.rooms.errors import MalformedRoomData, RoomItemRefused
from device.storage.padstore import check_name
from onetimechat import boundedjson
from onetimechat.crypto import derive_key, equal, mac

MAGIC = b"ORM1"
CONTRIBUTION, OLD_DISTRIBUTION, MESSAGE, LEAVE, NAMED_CONTRIBUTION = 1, 2, 3, 4, 5
DISTRIBUTION, OLD_OBJECTION, OBJECTION, TAGGED_CONTRIBUTION = 6, 7, 8, 9
ROOM_ID_BYTES = 16
ID_BYTES = 32
KEY_BYTES = 32
SIG_BYTES = 64
SEALED_BYTES = KEY_BYTES + 16
HEADER_BYTES = len(MAGIC) + 1 + ROOM_ID_BYTES
MAX_ITEM_BYTES = 1 << 20
MAX_ROSTER = 1000
INVITE_PREFIX = "otcroom1."


# -- the room ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Room:
    """A room: public, made on an authority's device, handed to members or as an invite."""

    room_id: bytes
    name: str
    policy: Policy
    authority: str
    authority_id: bytes
    #: The first key period whose contributions must be tagged with the room's period secret (type 9): the
    #: period after the newest its authority had issued keys of when it made the room, so every key of it came
    #: with the room's secret (docs/rooms.md "Period secrets, per room"). None: a room from before tags.
    tagged_from: int | None = None

    def to_dict(self) -> dict:
        out: dict = {"room_id": self.room_id.hex(), "name": self.name, "policy": self.policy.text,
                     "authority": self.authority, "authority_id": self.authority_id.hex()}
        if self.tagged_from is not None:
            out["tagged_from"] = self.tagged_from
        return out

    def tagged(self, period: int) -> bool:
        """Whether contributions of key ``period`` to this room must carry the room's period tag."""
        return self.tagged_from is not None and period >= self.tagged_from

    @classmethod
    def from_dict(cls, data: object) -> Room:
        fields = {"room_id", "name", "policy", "authority", "authority_id"}
        if not isinstance(data, dict) or set(data) not in (fields, fields | {"tagged_from"}):
            raise MalformedRoomData("A room descriptor has room_id, name, policy, authority and authority_id (and "
                                    "tagged_from).")
        tagged_from = data.get("tagged_from")
        if tagged_from is not None and (type(tagged_from) is not int or not 1 <= tagged_from < 1 << 31):
            raise MalformedRoomData("The room descriptor is malformed.")
        try:
            room_id, authority_id = bytes.fromhex(data["room_id"]), bytes.fromhex(data["authority_id"])
            name, authority = check_name(data["name"]), check_name(data["authority"])
            policy = Policy.parse(data["policy"])
        except (TypeError, ValueError, AbeError):
            raise MalformedRoomData("The room descriptor is malformed.") from None
        if len(room_id) != ROOM_ID_BYTES or len(authority_id) != 16:
            raise MalformedRoomData("The room descriptor is malformed.")
        return cls(room_id, name, policy, authority, authority_id, tagged_from)

    @property
    def mailbox(self) -> str:
        """The relay mailbox of the room's traffic."""
        return self.room_id.hex()

    def invite(self) -> str:
        """The descriptor as one line to paste (it is public: it opens nothing by itself)."""
        raw = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return INVITE_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def from_invite(cls, text: str) -> Room:
        text = text.strip() if isinstance(text, str) else ""
        if not text.startswith(INVITE_PREFIX) or len(text) > 8192:
            raise MalformedRoomData(f"A room invite starts with {INVITE_PREFIX!r}.")
        body = text[len(INVITE_PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            data = boundedjson.loads(raw)
        except (binascii.Error, ValueError):
            raise MalformedRoomData("The room invite is malformed.") from None
        return cls.from_dict(data)


# -- items -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contribution:
    room_id: bytes
    ciphertext: Ciphertext
    ciphertext_bytes: bytes
    x_pub: bytes
    sig_pub: bytes
    bind: bytes
    raw: bytes
    name: str = ""  # the display name a member chose (a named contribution); "" in a type-1 one
    tag: bytes | None = None  # a tagged contribution's (type 9) MAC under the room's period secret

    @property
    def member_id(self) -> bytes:
        return member_id(self.raw)

    @property
    def tagged(self) -> bytes:
        """What a tagged contribution's tag covers: everything before it."""
        return self.raw[:-SIG_BYTES - KEY_BYTES]


@dataclass(frozen=True)
class Distribution:
    room_id: bytes
    epoch: int
    sid: bytes
    leader: bytes
    eph_pub: bytes
    sealed: tuple[tuple[bytes, bytes], ...]
    commit: bytes
    mac: bytes
    raw: bytes

    @property
    def signed(self) -> bytes:
        return self.raw[:-SIG_BYTES]

    @property
    def maced(self) -> bytes:
        return self.raw[:-SIG_BYTES - KEY_BYTES]

    @property
    def signature(self) -> bytes:
        return self.raw[-SIG_BYTES:]


@dataclass(frozen=True)
class Message:
    room_id: bytes
    epoch: int
    sender: bytes
    counter: int
    ciphertext: bytes
    raw: bytes

    @property
    def header(self) -> bytes:
        return self.raw[:HEADER_BYTES + 8 + ID_BYTES + 8]

    @property
    def signature(self) -> bytes:
        return self.raw[-SIG_BYTES:]


@dataclass(frozen=True)
class Objection:
    """A member's signed word that the epoch's distribution, by ``leader``, did not open to its committed key."""

    room_id: bytes
    epoch: int
    leader: bytes
    objector: bytes
    mac: bytes
    raw: bytes

    @property
    def maced(self) -> bytes:
        return self.raw[:-SIG_BYTES - KEY_BYTES]

    @property
    def signature(self) -> bytes:
        return self.raw[-SIG_BYTES:]


@dataclass(frozen=True)
class Leave:
    room_id: bytes
    member: bytes
    raw: bytes

    @property
    def signature(self) -> bytes:
        return self.raw[-SIG_BYTES:]


Item = Contribution | Distribution | Message | Leave | Objection


def member_id(contribution: bytes) -> bytes:
    return hashlib.sha256(b"otc room member v1" + contribution).digest()


def _header(kind: int, room_id: bytes) -> bytes:
    return MAGIC + bytes([kind]) + room_id


def to_text(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def from_text(text: str) -> bytes:
    if not isinstance(text, str) or len(text) > MAX_ITEM_BYTES * 4 // 3 + 4:
        raise MalformedRoomData("The room item is malformed.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRoomData("The room item is malformed.") from None


class _Reader:
    def __init__(self, raw: bytes) -> None:
        self.raw, self.at = raw, HEADER_BYTES

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.raw):
            raise MalformedRoomData("The room item is malformed.")
        out = self.raw[self.at:self.at + n]
        self.at += n
        return out

    def int(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def end(self) -> None:
        if self.at != len(self.raw):
            raise MalformedRoomData("The room item is malformed.")


def decode(raw: bytes, room_id: bytes) -> Item:
    """One relay item of ``room_id``; MalformedRoomData for anything else."""
    if len(raw) < HEADER_BYTES or raw[:4] != MAGIC or len(raw) > MAX_ITEM_BYTES:
        raise MalformedRoomData("The room item is malformed.")
    if not equal(raw[5:HEADER_BYTES], room_id):
        raise MalformedRoomData("The item is for another room.")
    kind, r = raw[4], _Reader(raw)
    if kind in (CONTRIBUTION, NAMED_CONTRIBUTION, TAGGED_CONTRIBUTION):
        ct_bytes = r.take(r.int(4))
        x_pub, sig_pub = r.take(32), r.take(32)
        name = ""
        if kind != CONTRIBUTION:
            try:
                name = check_name(r.take(r.int(1)).decode("ascii"))
            except (UnicodeDecodeError, InvalidName):
                raise MalformedRoomData("The room item is malformed.") from None
        bind = r.take(KEY_BYTES)
        tag = r.take(KEY_BYTES) if kind == TAGGED_CONTRIBUTION else None
        r.take(SIG_BYTES)
        r.end()
        try:
            ct = decode_ciphertext(ct_bytes)
        except AbeError:
            raise MalformedRoomData("The room item is malformed.") from None
        return Contribution(room_id, ct, ct_bytes, x_pub, sig_pub, bind, raw, name, tag)
    if kind == DISTRIBUTION:
        epoch, sid, leader, eph = r.int(8), r.take(32), r.take(ID_BYTES), r.take(32)
        n = r.int(2)
        if not 1 <= n <= MAX_ROSTER:
            raise MalformedRoomData("The room item is malformed.")
        sealed = tuple((r.take(ID_BYTES), r.take(SEALED_BYTES)) for _ in range(n))
        commit, tag = r.take(KEY_BYTES), r.take(KEY_BYTES)
        r.take(SIG_BYTES)
        r.end()
        return Distribution(room_id, epoch, sid, leader, eph, sealed, commit, tag, raw)
    if kind == OBJECTION:
        epoch, leader, objector, tag = r.int(8), r.take(ID_BYTES), r.take(ID_BYTES), r.take(KEY_BYTES)
        r.take(SIG_BYTES)
        r.end()
        return Objection(room_id, epoch, leader, objector, tag, raw)
    if kind == MESSAGE:
        epoch, sender, counter = r.int(8), r.take(ID_BYTES), r.int(8)
        body = r.take(len(raw) - r.at - SIG_BYTES)
        r.take(SIG_BYTES)
        if len(body) < 16:
            raise MalformedRoomData("The room item is malformed.")
        return Message(room_id, epoch, sender, counter, body, raw)
    if kind == LEAVE:
        member = r.take(ID_BYTES)
        r.take(SIG_BYTES)
        r.end()
        return Leave(room_id, member, raw)
    raise MalformedRoomData("The room item is malformed.")


def verify(sig_pub: bytes, signature: bytes, data: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(sig_pub).verify(signature, data)
    except (InvalidSignature, ValueError):
        raise RoomItemRefused() from None


# -- building items (the secrets stay with the caller) ------------------------------------------


def bind_tag(k: bytes, room_id: bytes, x_pub: bytes, sig_pub: bytes, name: str | None = None) -> bytes:
    """A contribution's bind: type 1 (``name`` None) over the room and keys, type 5 over the name too."""
    if name is None:
        return mac(derive_key(k, "otc room bind v1"), room_id, x_pub, sig_pub)
    return mac(derive_key(k, "otc room bind v2"), room_id, x_pub, sig_pub, name.encode("ascii"))


def period_bind_key(k: bytes, secret: bytes) -> bytes:
    """What a contribution of a key period is bound with when its maker holds the room's secret of the period
    (device/abe/store.py ``room_secret``): k_j under that secret, so the bind proves both (docs/rooms.md "Period
    secrets"). Pass it as ``k`` to :func:`contribution` and :func:`bind_tag`; K_abe still uses k_j."""
    return mac(derive_key(secret, "otc room period bind v1"), k)


def contribution_tag(secret: bytes, tagged: bytes) -> bytes:
    """A tagged contribution's tag: a MAC under the room's period secret over everything before it (checked
    on arrival by a device that holds the secret, before anything is held aside or decapsulated)."""
    return mac(derive_key(secret, "otc room period tag v1"), tagged)


def check_contribution_tag(item: Contribution, secret: bytes) -> None:
    """RoomItemRefused unless ``item`` is a tagged contribution whose tag is right under ``secret``."""
    if item.tag is None or not equal(contribution_tag(secret, item.tagged), item.tag):
        raise RoomItemRefused()


def contribution(room_id: bytes, ciphertext: bytes, k: bytes, x_key: X25519PrivateKey,
                 sig_key: Ed25519PrivateKey, name: str | None = None, tag_secret: bytes | None = None) -> bytes:
    """A contribution; with ``name`` (a display name), a named one (type 5), whose bind covers the name; with
    ``tag_secret`` too (the room's secret of the contribution's period), a tagged one (type 9)."""
    x_pub, sig_pub = _raw_public(x_key), _raw_public(sig_key)
    head = struct.pack(">I", len(ciphertext)) + ciphertext + x_pub + sig_pub
    if name is None:
        if tag_secret is not None:
            raise ValueError("a tagged contribution is a named one")
        body = _header(CONTRIBUTION, room_id) + head
    else:
        raw_name = check_name(name).encode("ascii")
        kind = NAMED_CONTRIBUTION if tag_secret is None else TAGGED_CONTRIBUTION
        body = _header(kind, room_id) + head + bytes([len(raw_name)]) + raw_name
    body += bind_tag(k, room_id, x_pub, sig_pub, name)
    if tag_secret is not None:
        body += contribution_tag(tag_secret, body)
    return body + sig_key.sign(body)


def leave(room_id: bytes, member: bytes, sig_key: Ed25519PrivateKey) -> bytes:
    body = _header(LEAVE, room_id) + member
    return body + sig_key.sign(body)


def objection_key(kabe: bytes) -> bytes:
    """The key an epoch's objections are MACed under: only a member that derived the epoch's K_abe holds it."""
    return derive_key(kabe, "otc room objection v1")


def objection(room_id: bytes, epoch: int, leader: bytes, objector: bytes, okey: bytes,
              sig_key: Ed25519PrivateKey) -> bytes:
    """An objection (type 8): MACed under ``okey`` (:func:`objection_key` of the epoch's K_abe), then signed."""
    body = _header(OBJECTION, room_id) + struct.pack(">Q", epoch) + leader + objector
    body += mac(okey, body)
    return body + sig_key.sign(body)


def check_objection_mac(item: Objection, okey: bytes) -> None:
    if not equal(mac(okey, item.maced), item.mac):
        raise RoomItemRefused()


def _raw_public(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sid(room_id: bytes, epoch: int, roster: list[bytes]) -> bytes:
    """The session id of an epoch: the room, the epoch and its roster's member ids, in order."""
    h = hashlib.sha256(b"otc room sid v1" + room_id + struct.pack(">QH", epoch, len(roster)))
    for m in roster:
        h.update(m)
    return h.digest()


def k_abe(ks: list[bytes], session: bytes) -> bytes:
    """XOR over the roster of HMAC(k_j, sid): the 2014 design's combination."""
    out = bytearray(KEY_BYTES)
    for k in ks:
        for i, b in enumerate(mac(k, session)):
            out[i] ^= b
    return bytes(out)


def epoch_key(kabe: bytes, g: bytes, room_id: bytes, epoch: int) -> bytes:
    """HKDF(K_abe || G_e) for (room_id, e)."""
    return derive_key(kabe + g, f"otc room epoch key v1 {room_id.hex()} {epoch}")


def key_commitment(key: bytes, room_id: bytes, epoch: int, leader: bytes) -> bytes:
    """A distribution's commitment to its epoch key: a hash bound to the room, the epoch and the distributor."""
    return hashlib.sha256(b"otc room epoch commit v1" + room_id + struct.pack(">Q", epoch) + leader + key).digest()


def _seal_key(shared: bytes, eph_pub: bytes, member_pub: bytes, session: bytes) -> bytes:
    return derive_key(shared + eph_pub + member_pub + session, "otc room seal v1")


def distribution(room_id: bytes, epoch: int, session: bytes, leader: bytes, roster: list[tuple[bytes, bytes]],
                 g: bytes, kabe: bytes, sig_key: Ed25519PrivateKey, eph: X25519PrivateKey) -> bytes:
    """G_e sealed to each (member id, X25519 pub) of the roster, a commitment to the epoch key, MACed under K_abe,
    signed by the leader."""
    eph_pub = _raw_public(eph)
    head = _header(DISTRIBUTION, room_id) + struct.pack(">Q", epoch) + session + leader + eph_pub
    parts = [head, struct.pack(">H", len(roster))]
    for mid, x_pub in roster:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(x_pub))
        aead = ChaCha20Poly1305(_seal_key(shared, eph_pub, x_pub, session))
        parts += [mid, aead.encrypt(bytes(12), g, head + mid)]
    parts.append(key_commitment(epoch_key(kabe, g, room_id, epoch), room_id, epoch, leader))
    body = b"".join(parts)
    body += mac(derive_key(kabe, "otc room distribution mac v1"), body)
    return body + sig_key.sign(body)


def check_distribution_mac(item: Distribution, kabe: bytes) -> None:
    want = mac(derive_key(kabe, "otc room distribution mac v1"), item.maced)
    if not equal(want, item.mac):
        raise RoomItemRefused()


def open_sealed(item: Distribution, me: bytes, x_key: X25519PrivateKey) -> bytes:
    """G_e from my entry of a distribution."""
    for mid, sealed in item.sealed:
        if equal(mid, me):
            x_pub = _raw_public(x_key)
            try:
                shared = x_key.exchange(X25519PublicKey.from_public_bytes(item.eph_pub))
                aead = ChaCha20Poly1305(_seal_key(shared, item.eph_pub, x_pub, item.sid))
                head = item.raw[:HEADER_BYTES + 8 + 32 + ID_BYTES + 32]
                return aead.decrypt(bytes(12), sealed, head + mid)
            except (InvalidTag, ValueError):
                raise RoomItemRefused() from None
    raise RoomItemRefused()


def _nonce(slot: int, counter: int) -> bytes:
    return struct.pack(">IQ", slot, counter)


def message(room_id: bytes, epoch: int, sender: bytes, slot: int, counter: int, key: bytes, plaintext: bytes,
            sig_key: Ed25519PrivateKey) -> bytes:
    """ChaCha20-Poly1305 under the epoch's message key, nonce = roster slot || counter; signed by the sender."""
    head = _header(MESSAGE, room_id) + struct.pack(">Q", epoch) + sender + struct.pack(">Q", counter)
    body = head + ChaCha20Poly1305(derive_key(key, "otc room message v1")).encrypt(_nonce(slot, counter),
                                                                                  plaintext, head)
    return body + sig_key.sign(body)


def open_message(item: Message, slot: int, key: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(derive_key(key, "otc room message v1")).decrypt(
            _nonce(slot, item.counter), item.ciphertext, item.header)
    except InvalidTag:
        raise RoomItemRefused() from None
