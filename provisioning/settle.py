"""Proofs of holding what an earlier ceremony left, for pad pairing and attribute-key grants alike.

After a cut, each device lists what it holds with the other (pads, or grants), each with an HMAC keyed with
that item's own secret (a pad's authentication keys, a grant's proof key) over this session's binding and
the sender's role; an item counts as held by both only where the other's proof verifies. docs/pairing.md
step 6 and docs/abe.md ("Granting in person") give the rules each ceremony builds on these.
"""

from __future__ import annotations

import hashlib
import hmac

from provisioning.errors import CeremonyBroken

MAX_LISTED = 65536  # items a device may list when settling (far above any real device's count)


def holding_proof(label: bytes, key: bytes, binding: bytes, role: str, item_id: str) -> str:
    """A device's proof, in this session (``binding``) and ``role``, that it holds the item ``item_id`` (hex)
    keyed ``key``; ``label`` names the ceremony."""
    return hmac.new(key, label + binding + role.encode() + b"\x00" + bytes.fromhex(item_id),
                    hashlib.sha256).hexdigest()


def listing(message: dict, field: str, what: str) -> dict:
    """The other device's list in ``message[field]``: a bounded object of objects, or the ceremony breaks."""
    theirs = message.get(field)
    if not isinstance(theirs, dict) or len(theirs) > MAX_LISTED or \
            not all(isinstance(v, dict) for v in theirs.values()):
        raise CeremonyBroken(f"The other device sent a malformed list of {what}.")
    return theirs


def proven(theirs: dict, keys: dict[str, bytes], label: bytes, binding: bytes, peer_role: str) -> set[str]:
    """The items of ``keys`` (id -> key) whose proof in ``theirs`` verifies for the other device's role."""
    return {item for item, key in keys.items() if isinstance(theirs.get(item), dict)
            and hmac.compare_digest(str(theirs[item].get("proof")).encode(),
                                    holding_proof(label, key, binding, peer_role, item).encode())}
