"""The authenticated key agreement every in-person ceremony starts with (``otc ceremony v3``).

The host commits to its hello (X25519 key, nonce, device id and name) before it
sees the joiner's, then reveals it; both derive per-direction keys for the
:class:`~provisioning.wire.Wire` and a short authentication string (SAS) from
the transcript. Pad pairing (``otc-pairing-v4``) and attribute-key grants
(``otc-abe-grant-v3``) run the same agreement under different protocol names,
which are part of the transcript: a grant can never be mistaken for a pairing.
docs/pairing.md has the protocol.

Version 3 binds bytes, not meanings: the commitment is a domain-separated hash
of the exact REVEAL body the host will send; the joiner checks that hash over
the bytes it received, and the very same bytes (never a parse re-serialised)
go into the transcript. Any byte a man in the middle changes in any of the
three messages is caught at the commitment or changes the transcript, so he
gets one guess at the string per ceremony, never a search (version 1 checked a
re-serialised parse and hashed the raw bytes: trailing whitespace gave him
unlimited variants after both hellos were known).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from device.storage.padstore import PadStore, check_name, device_id_for
from onetimechat.crypto import derive_key
from onetimechat.errors import OTCError
from provisioning.errors import CeremonyBroken, CeremonyRefused
from provisioning.link import HOST, JOIN
from provisioning.wire import COMMIT, HELLO, REVEAL, Wire

AGREEMENT = "otc ceremony v3"  # the prefix of every label this agreement hashes or derives under
COMMIT_LABEL = b"otc ceremony v3 commitment\x00"
TRANSCRIPT_LABEL = b"otc ceremony v3 transcript\x00"
SAS_LABEL = b"otc ceremony v3 sas\x00"
IDENTITY_LABEL = b"otc ceremony v4 identity\x00"


@dataclass(frozen=True)
class Agreement:
    """What the key agreement established (the wire's keys are set)."""

    peer_device_id: bytes
    peer_name: str
    sas: str
    transcript: bytes  # a hash of the three agreement messages, as sent and received
    peer_identity: bytes = b""  # the Ed25519 key the peer signed this session's transcript with
    peer_certified: bool = False  # its device id is the hash of that key: nobody else can give that id


def commitment(reveal: bytes) -> bytes:
    """The host's commitment to the exact bytes of the REVEAL body it will send."""
    return hashlib.sha256(COMMIT_LABEL + reveal).digest()


def transcript_of(commit: bytes, hello: bytes, reveal: bytes) -> bytes:
    """The transcript hash over the three agreement bodies, byte for byte as they went over the link."""
    return hashlib.sha256(TRANSCRIPT_LABEL + b"".join(len(p).to_bytes(4, "big") + p
                                                      for p in (commit, hello, reveal))).digest()


def format_sas(transcript: bytes) -> str:
    value = int.from_bytes(hashlib.sha256(SAS_LABEL + transcript).digest()[:8], "big") % 10**9
    digits = f"{value:09d}"
    return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"


def commit_message(protocol: str, reveal: bytes) -> bytes:
    """The COMMIT body: the protocol's name and the commitment to ``reveal``."""
    return _encode({"protocol": protocol, "commit": commitment(reveal).hex()})


def check_commit(commit: bytes, protocol: str) -> bytes:
    """The commitment a COMMIT body carries, once it names ``protocol``; raises otherwise."""
    message = _decode(commit)
    if message.get("protocol") != protocol:
        raise CeremonyRefused("The other device speaks another pairing protocol; update both devices.")
    try:
        value = bytes.fromhex(str(message["commit"]))
    except (KeyError, ValueError):
        raise CeremonyBroken("The other device sent a malformed commitment.") from None
    if len(value) != 32:
        raise CeremonyBroken("The other device sent a malformed commitment.")
    return value


def check_reveal(commit: bytes, reveal: bytes, protocol: str) -> dict:
    """The host's hello from the REVEAL body ``reveal``, once those exact bytes match the commitment.

    The bytes checked are the bytes parsed and the bytes the caller puts in the transcript.
    """
    if not hmac.compare_digest(commitment(reveal), check_commit(commit, protocol)):
        raise CeremonyBroken("The other device did not keep its commitment: the link is not to be trusted.")
    return _decode(reveal)


def joiner_sas(commit: bytes, hello: bytes, reveal: bytes, protocol: str) -> str:
    """The string the joiner shows for these three bodies (raises where the joiner stops first)."""
    check_reveal(commit, reveal, protocol)
    return format_sas(transcript_of(commit, hello, reveal))


def agree(wire: Wire, role: str, store: PadStore, random_bytes: Callable[[int], bytes], protocol: str) -> Agreement:
    """Run the committed X25519 agreement as ``role`` (host or join) and key ``wire``."""
    secret = X25519PrivateKey.from_private_bytes(random_bytes(32))
    mine = _encode({
        "protocol": protocol,
        "role": role,
        "device_id": store.device_id.hex(),
        "name": store.device_name,
        "pk": secret.public_key().public_bytes_raw().hex(),
        "nonce": random_bytes(16).hex(),
        "identity": store.identity_public.hex(),
    })
    if role == HOST:
        commit = commit_message(protocol, mine)
        wire.send_raw(COMMIT, commit)
        hello = wire.recv_raw(HELLO)
        wire.send_raw(REVEAL, mine)
        reveal = mine
        theirs = _decode(hello)
    else:
        commit = wire.recv_raw(COMMIT)
        check_commit(commit, protocol)
        hello = mine
        wire.send_raw(HELLO, hello)
        reveal = wire.recv_raw(REVEAL)
        theirs = check_reveal(commit, reveal, protocol)
    try:
        peer_pk = X25519PublicKey.from_public_bytes(bytes.fromhex(str(theirs["pk"])))
        peer_device_id = bytes.fromhex(str(theirs["device_id"]))
        peer_name = check_name(str(theirs["name"]))
        identity_bytes = bytes.fromhex(str(theirs["identity"]))
        if weak_identity(identity_bytes):
            raise ValueError("a weak identity key")
        peer_identity = Ed25519PublicKey.from_public_bytes(identity_bytes)
    except (KeyError, ValueError, TypeError, OTCError):
        raise CeremonyBroken("The other device sent a malformed hello.") from None
    if theirs.get("protocol") != protocol or theirs.get("role") != (JOIN if role == HOST else HOST):
        raise CeremonyRefused("Both devices must run the same pairing protocol, one hosting and one joining.")
    if len(peer_device_id) != 16 or peer_device_id == store.device_id:
        raise CeremonyRefused("A device cannot pair with itself.")
    transcript = transcript_of(commit, hello, reveal)
    try:
        shared = secret.exchange(peer_pk)
    except ValueError:  # a low-order point: the shared secret would be all zeros
        raise CeremonyBroken("The other device sent a malformed hello.") from None
    master = derive_key(shared + transcript, f"{AGREEMENT} master")
    h2j = derive_key(master, f"{AGREEMENT} host to join")
    j2h = derive_key(master, f"{AGREEMENT} join to host")
    wire.set_keys(*((h2j, j2h) if role == HOST else (j2h, h2j)))
    # Each device signs this session's transcript, its protocol and its own role with its identity key: the
    # peer learns that whoever it agreed keys with holds the identity its hello named (and, for a device id
    # that is the hash of that identity, that it is the device with that id).
    wire.send({"t": "identity", "sig": store.sign_identity(identity_message(protocol, role, transcript)).hex()})
    message, _ = wire.recv()
    peer_role = JOIN if role == HOST else HOST
    try:
        if message.get("t") != "identity":
            raise ValueError
        peer_identity.verify(bytes.fromhex(str(message.get("sig"))), identity_message(protocol, peer_role, transcript))
    except (ValueError, InvalidSignature):
        raise CeremonyBroken("The other device did not prove the identity it gave: the link is not to be "
                             "trusted.") from None
    identity = peer_identity.public_bytes_raw()
    return Agreement(peer_device_id=peer_device_id, peer_name=peer_name, sas=format_sas(transcript),
                     transcript=transcript, peer_identity=identity,
                     peer_certified=hmac.compare_digest(device_id_for(identity), peer_device_id))


ED25519_P = 2**255 - 19
ED25519_D = (-121665 * pow(121666, -1, ED25519_P)) % ED25519_P


def weak_identity(public: bytes) -> bool:
    """Whether an Ed25519 public key is non-canonical, not on the curve, or of small order.

    Verifiers accept signatures under a small-order key (the identity point, with R = identity and S = 0,
    "verifies" every message), so such a key would let two devices pass as one. Checked by decoding the
    point and multiplying it by the cofactor 8: small order is exactly what that sends to the neutral point.
    """
    p, d = ED25519_P, ED25519_D
    if len(public) != 32:
        return True
    y = int.from_bytes(public, "little") & ((1 << 255) - 1)
    sign = public[31] >> 7
    if y >= p:
        return True
    x2 = (y * y - 1) * pow(d * y * y + 1, -1, p) % p
    x = pow(x2, (p + 3) // 8, p)
    if (x * x - x2) % p:
        x = x * pow(2, (p - 1) // 4, p) % p
    if (x * x - x2) % p:
        return True  # not on the curve
    if x == 0 and sign:
        return True  # -0: non-canonical
    if x & 1 != sign:
        x = p - x

    def add(p1: tuple[int, int], p2: tuple[int, int]) -> tuple[int, int]:
        (x1, y1), (x2_, y2) = p1, p2
        t = d * x1 * x2_ * y1 * y2 % p
        return ((x1 * y2 + y1 * x2_) * pow(1 + t, -1, p) % p, (y1 * y2 + x1 * x2_) * pow(1 - t, -1, p) % p)

    point = (x, y)
    for _ in range(3):
        point = add(point, point)
    return point == (0, 1)


def identity_message(protocol: str, role: str, transcript: bytes) -> bytes:
    """What a device signs with its identity key in a ceremony: this session, the protocol and its role."""
    return IDENTITY_LABEL + protocol.encode() + b"\x00" + role.encode() + b"\x00" + transcript


def _encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode()


def _decode(body: bytes) -> dict:
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        raise CeremonyBroken("The other device sent a malformed message.") from None
    if not isinstance(message, dict):
        raise CeremonyBroken("The other device sent a malformed message.")
    return message
