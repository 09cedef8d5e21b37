"""The versioned binary encodings of attribute-based keys and ciphertexts.

Every encoding starts ``"OABE" | version (1) | kind (1)``; integers are
big-endian; points are compressed (G1 48 bytes, G2 96), GT elements their 576
canonical bytes, scalars 32 bytes big-endian in [1, r). Decoding is strict:
exact lengths, nothing trailing, canonical policy text, every point checked to
lie in its prime-order subgroup and not be the identity. docs/abe.md has the
tables; tests/vectors/abe_encoding.json holds known answers (made by
tests/vectors/make_abe_vectors.py).

| kind | what | body |
|---|---|---|
| 1 | public key | authority_id 16, name_len 1, name, g1^a (G1), e(g,g)^alpha (GT) |
| 2 | master key | public_len 2, public key, alpha 32, a 32 |
| 3 | member key | authority_id 16, key_id 16, K (G2), L (G2), n 2, n x (len 1, attribute, K_x (G1)) |
| 4 | ciphertext | authority_id 16, policy_len 2, policy, C0 (G1), n 2, n x (C_i (G1), D_i (G2)), tag 16 |
| 5 | public key with g2^a | kind 1's body, then g2^a (G2), checked: e(g1^a, g2) = e(g1, g2^a) |

Kind 1 stays what an authority's id and fingerprint cover and what grants send; g2^a (an outside review,
issue 22: it binds C0 in the consistency check) is fixed by g1^a through the pairing equation, so it needs no
certifying of its own and may come from anywhere. Devices store kind 5 once they have g2^a.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache

from py_arkworks_bls12381 import GT, G1Point, G2Point, Scalar

from device.abe.errors import MalformedAbeData, PolicyError
from device.abe.group import (
    G1_BYTES,
    G2_BYTES,
    GT_BYTES,
    SCALAR_BYTES,
    FixedBase,
    g1_decode,
    g2_decode,
    gt_decode,
    gt_encode,
)
from device.abe.policy import MAX_ATTRIBUTES, ORDER, Policy, attribute_period, normalise_attribute
from device.errors import InvalidName
from device.storage.padstore import check_name

MAGIC = b"OABE"
VERSION = 1
PUBLIC_KEY, MASTER_KEY, MEMBER_KEY, CIPHERTEXT, PUBLIC_KEY_FULL = 1, 2, 3, 4, 5
ID_BYTES = 16
TAG_BYTES = 16
MAX_CIPHERTEXT_BYTES = 1 << 20


@dataclass(frozen=True)
class PublicKey:
    """An authority's public parameters: what anyone needs to encapsulate."""

    authority_id: bytes
    name: str
    g1_a: G1Point
    egg_alpha: GT
    #: g2^a, h in docs/abe.md: binds C0 in scheme.check_consistent. None in a public key a device received before
    #: an outside review of issue 22 added it, until a grant or renewal brings it.
    g2_a: G2Point | None = field(default=None, repr=False, compare=False)

    def with_g2_a(self, g2_a: G2Point) -> PublicKey:
        """This key with ``g2_a``, checked against g1^a: e(g1^a, g2) = e(g1, g2_a). MalformedAbeData otherwise."""
        if not GT.pairing_check([self.g1_a, -G1Point()], [G2Point(), g2_a]):
            raise MalformedAbeData("The authority's g2^a does not match its public key.")
        return replace(self, g2_a=g2_a)

    def encode_full(self) -> bytes:
        """Kind 5 (with g2^a) when this key has it, else kind 1: what a device stores."""
        if self.g2_a is None:
            return self.encode()
        return _header(PUBLIC_KEY_FULL) + self.encode()[len(_header(PUBLIC_KEY)):] + bytes(
            self.g2_a.to_compressed_bytes())

    @cached_property
    def powers(self) -> FixedBase:
        """The fixed-base table for e(g,g)^alpha, built on first use."""
        return FixedBase(self.egg_alpha)

    def encode(self) -> bytes:
        """Kind 1: the key's identity (its id and fingerprint cover these bytes), without g2^a."""
        name = self.name.encode()
        return (_header(PUBLIC_KEY) + self.authority_id + bytes([len(name)]) + name
                + bytes(self.g1_a.to_compressed_bytes()) + gt_encode(self.egg_alpha))

    @property
    def certified(self) -> bool:
        """Whether its id is its key's hash (every authority made since issue 17): nobody can give that id to
        another key."""
        return self.authority_id == certified_authority_id(self.name, self.g1_a, self.egg_alpha)

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the public key, for owners to compare."""
        digest = hashlib.sha256(b"otc abe authority fingerprint v1" + self.encode()).hexdigest()
        return " ".join(digest[i : i + 4] for i in range(0, 20, 4))


AUTHORITY_ID_LABEL = b"otc abe authority id v1\x00"


def certified_authority_id(name: str, g1_a: G1Point, egg_alpha: GT) -> bytes:
    """An authority's id as a hash of its name and public key: self-certifying, so a device cannot take
    another authority's id (ids are public: every ciphertext carries its authority's)."""
    encoded = name.encode()
    return hashlib.sha256(AUTHORITY_ID_LABEL + bytes([len(encoded)]) + encoded + bytes(g1_a.to_compressed_bytes())
                          + gt_encode(egg_alpha)).digest()[:ID_BYTES]


@dataclass(frozen=True)
class MasterKey:
    """The authority's secret: alpha and a. It never leaves the authority's device."""

    public: PublicKey
    alpha: int = field(repr=False)
    a: int = field(repr=False)

    def encode(self) -> bytes:
        public = self.public.encode()
        return (_header(MASTER_KEY) + struct.pack(">H", len(public)) + public
                + self.alpha.to_bytes(SCALAR_BYTES, "big") + self.a.to_bytes(SCALAR_BYTES, "big"))


@dataclass(frozen=True)
class MemberKey:
    """A member's key for a set of attributes. It never leaves the member's device."""

    authority_id: bytes
    key_id: bytes
    K: G2Point = field(repr=False)
    L: G2Point = field(repr=False)
    Kx: dict[str, G1Point] = field(repr=False)

    @property
    def all_attributes(self) -> tuple[str, ...]:
        """Every attribute the key carries, its period's included (sorted: the encoding's order)."""
        return tuple(sorted(self.Kx))

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attributes granted (without the period's)."""
        return tuple(a for a in self.all_attributes if attribute_period(a) is None)

    @property
    def period(self) -> int | None:
        """The authority's period this key is issued for (None: a key from before periods)."""
        periods = [p for p in map(attribute_period, self.Kx) if p is not None]
        return periods[0] if len(periods) == 1 else None

    @staticmethod
    def encoded_length(all_attributes: tuple[str, ...] | list[str]) -> int:
        """The length of :meth:`encode` for a key with ``all_attributes`` (its period's included), without the
        key: what a renewal of it takes of a pad."""
        return (len(_header(MEMBER_KEY)) + 2 * ID_BYTES + 2 * G2_BYTES + 2
                + sum(1 + len(name.encode("ascii")) + G1_BYTES for name in all_attributes))

    def encode(self) -> bytes:
        out = [_header(MEMBER_KEY), self.authority_id, self.key_id,
               bytes(self.K.to_compressed_bytes()), bytes(self.L.to_compressed_bytes()),
               struct.pack(">H", len(self.Kx))]
        for name in self.all_attributes:
            raw = name.encode("ascii")
            out += [bytes([len(raw)]), raw, bytes(self.Kx[name].to_compressed_bytes())]
        return b"".join(out)


@dataclass(frozen=True)
class Ciphertext:
    """An encapsulation under a policy; the key confirmation tag closes it."""

    authority_id: bytes
    policy: Policy
    c0: G1Point
    rows: tuple[tuple[G1Point, G2Point], ...]
    tag: bytes

    def body(self) -> bytes:
        """Everything but the tag: what the KEM key is bound to."""
        policy = self.policy.text.encode("ascii")
        out = [_header(CIPHERTEXT), self.authority_id, struct.pack(">H", len(policy)), policy,
               bytes(self.c0.to_compressed_bytes()), struct.pack(">H", len(self.rows))]
        for c, d in self.rows:
            out += [bytes(c.to_compressed_bytes()), bytes(d.to_compressed_bytes())]
        return b"".join(out)

    def encode(self) -> bytes:
        return self.body() + self.tag


# -- decoding ------------------------------------------------------------------------------


def _header(kind: int) -> bytes:
    return MAGIC + bytes([VERSION, kind])


class _Reader:
    def __init__(self, data: bytes, *kinds: int) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedAbeData()
        self.data = bytes(data)
        self.pos = 0
        if self.take(4) != MAGIC:
            raise MalformedAbeData()
        version, got = self.take(1)[0], self.take(1)[0]
        if version != VERSION:
            raise MalformedAbeData(f"Unsupported attribute-based encoding version {version}.")
        if got not in kinds:
            raise MalformedAbeData()
        self.kind = got

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MalformedAbeData()
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def scalar(self) -> int:
        value = int.from_bytes(self.take(SCALAR_BYTES), "big")
        if not 0 < value < ORDER:
            raise MalformedAbeData()
        return value

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedAbeData()


def decode_public_key(data: bytes) -> PublicKey:
    """A public key of kind 1, or of kind 5 with its g2^a checked (a pairing check, once per key and process)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedAbeData()
    return _decode_public_key(bytes(data))


@lru_cache(maxsize=16)  # a device knows a few authorities; each entry may hold its FixedBase table (about 0.6 MB)
def _decode_public_key(data: bytes) -> PublicKey:
    r = _Reader(data, PUBLIC_KEY, PUBLIC_KEY_FULL)
    authority_id = r.take(ID_BYTES)
    try:
        name = check_name(r.take(r.u8()).decode("ascii"))
    except (UnicodeDecodeError, InvalidName):
        raise MalformedAbeData() from None
    g1_a = g1_decode(r.take(G1_BYTES))
    egg_alpha = gt_decode(r.take(GT_BYTES))
    g2_a = g2_decode(r.take(G2_BYTES)) if r.kind == PUBLIC_KEY_FULL else None
    r.end()
    public = PublicKey(authority_id=authority_id, name=name, g1_a=g1_a, egg_alpha=egg_alpha)
    return public if g2_a is None else public.with_g2_a(g2_a)


def decode_master_key(data: bytes) -> MasterKey:
    r = _Reader(data, MASTER_KEY)
    public = decode_public_key(r.take(r.u16()))
    alpha, a = r.scalar(), r.scalar()
    r.end()
    # g2^a from a itself (the master key's public key is kind 1: an authority from before has it at once).
    return MasterKey(public=replace(public, g2_a=G2Point() * Scalar(a)), alpha=alpha, a=a)


def decode_member_key(data: bytes) -> MemberKey:
    r = _Reader(data, MEMBER_KEY)
    authority_id, key_id = r.take(ID_BYTES), r.take(ID_BYTES)
    K, L = g2_decode(r.take(G2_BYTES)), g2_decode(r.take(G2_BYTES))
    count = r.u16()
    if not 0 < count <= MAX_ATTRIBUTES:
        raise MalformedAbeData()
    kx: dict[str, G1Point] = {}
    previous = ""
    for _ in range(count):
        name = _attribute(r.take(r.u8()))
        if name <= previous:  # sorted and unique: one encoding per key
            raise MalformedAbeData()
        previous = name
        kx[name] = g1_decode(r.take(G1_BYTES))
    r.end()
    if sum(attribute_period(name) is not None for name in kx) > 1:
        raise MalformedAbeData()  # a key is for one period
    if all(attribute_period(name) is not None for name in kx):
        raise MalformedAbeData()  # and carries at least one granted attribute
    return MemberKey(authority_id=authority_id, key_id=key_id, K=K, L=L, Kx=kx)


def decode_ciphertext(data: bytes) -> Ciphertext:
    """A ciphertext from outside: strict, canonical, every point subgroup-checked."""
    if len(data) > MAX_CIPHERTEXT_BYTES:
        raise MalformedAbeData()
    r = _Reader(data, CIPHERTEXT)
    authority_id = r.take(ID_BYTES)
    raw = r.take(r.u16())
    try:
        text = raw.decode("ascii")
        policy = Policy.parse(text)
    except (UnicodeDecodeError, PolicyError):
        raise MalformedAbeData() from None
    if policy.text != text:
        raise MalformedAbeData()
    c0 = g1_decode(r.take(G1_BYTES))
    count = r.u16()
    if count != len(policy.rows):
        raise MalformedAbeData()
    rows = tuple((g1_decode(r.take(G1_BYTES)), g2_decode(r.take(G2_BYTES))) for _ in range(count))
    tag = r.take(TAG_BYTES)
    r.end()
    return Ciphertext(authority_id=authority_id, policy=policy, c0=c0, rows=rows, tag=tag)


def _attribute(raw: bytes) -> str:
    try:
        text = raw.decode("ascii")
        name = normalise_attribute(text)
    except (UnicodeDecodeError, PolicyError):
        raise MalformedAbeData() from None
    if name != text:
        raise MalformedAbeData()
    return name
