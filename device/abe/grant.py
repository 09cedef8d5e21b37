"""Granting an attribute key in person: ``otc abe grant host`` and ``otc abe grant join``.

The two devices run the same authenticated key agreement as pad pairing
(provisioning/agree.py: a committed X25519 exchange and a short
authentication string), under the protocol name ``otc-abe-grant-v2``. Then,
over the sealed link:

1. the authority sends its public key and the attributes it offers;
2. both devices show the pairing string, the authority's name and
   fingerprint, the member's name and the attributes; each owner confirms on
   his own device (either "no" stops the grant, nothing is issued);
3. the authority makes the key, records it as issued (never the key itself)
   and sends it; the member checks it against the public key with pairings,
   stores it (sealed in a PIN-locked home) and says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from device.abe.encoding import MemberKey, decode_member_key, decode_public_key
from device.abe.errors import AbeError, PolicyError
from device.abe.policy import parse_attributes
from device.abe.store import AbeKeys
from device.storage.padstore import PadStore
from provisioning.agree import HOST, JOIN, agree
from provisioning.errors import CeremonyAborted, CeremonyBroken, CeremonyRefused
from provisioning.wire import Wire

PROTOCOL = "otc-abe-grant-v2"


@dataclass(frozen=True)
class GrantView:
    """What both screens show before their owners confirm."""

    role: str
    sas: str
    authority: str
    fingerprint: str
    member: str
    attributes: tuple[str, ...]

    def lines(self) -> list[str]:
        who = (f"Grant a key to {self.member}" if self.role == HOST
               else f"Accept a key from authority {self.authority}")
        return [
            f"{who} for the attributes: {', '.join(self.attributes)}",
            f"Authority {self.authority}, fingerprint {self.fingerprint}",
            f"Pairing string: {self.sas} (the other device must show the same string and attributes)",
        ]


Confirm = Callable[[GrantView], bool]


def _expect(wire: Wire, kind: str) -> tuple[dict, bytes]:
    message, data = wire.recv()
    if message.get("t") == "refuse":
        raise CeremonyRefused(f"The other device refused the grant ({str(message.get('reason'))[:80]}).")
    if message.get("t") != kind:
        raise CeremonyBroken("The other device broke the grant protocol.")
    return message, data


def _both_confirm(wire: Wire, view: GrantView, confirm: Confirm) -> None:
    approved = bool(confirm(view))
    wire.send({"t": "confirm", "ok": approved})
    message, _ = _expect(wire, "confirm")
    if not approved:
        raise CeremonyAborted("Grant stopped: it was not confirmed on this device; nothing was issued.")
    if message.get("ok") is not True:
        raise CeremonyAborted("Grant stopped: the other device's owner did not confirm; nothing was issued.")


def grant_host(store: PadStore, wire: Wire, attributes: str | list[str], confirm: Confirm,
               random_bytes: Callable[[int], bytes] = os.urandom) -> MemberKey:
    """The authority's side: offer ``attributes``, and issue the key once both owners confirm."""
    keys = AbeKeys(store)
    public = keys.master().public  # NotAnAuthority before anything is sent
    names = parse_attributes(attributes)
    agreed = agree(wire, HOST, store, random_bytes, PROTOCOL)
    wire.send({"t": "offer", "attributes": list(names)}, public.encode())
    view = GrantView(role=HOST, sas=agreed.sas, authority=public.name, fingerprint=public.fingerprint,
                     member=agreed.peer_name, attributes=names)
    _both_confirm(wire, view, confirm)
    key = keys.issue(names, member=agreed.peer_name, member_device_id=agreed.peer_device_id, how="in person",
                     random_bytes=random_bytes)
    wire.send({"t": "key"}, key.encode())
    _expect(wire, "stored")
    return key


def grant_join(store: PadStore, wire: Wire, confirm: Confirm,
               random_bytes: Callable[[int], bytes] = os.urandom) -> MemberKey:
    """The member's side: see what is offered, confirm, check and store the key."""
    keys = AbeKeys(store)
    agreed = agree(wire, JOIN, store, random_bytes, PROTOCOL)
    offer, data = _expect(wire, "offer")
    try:
        public = decode_public_key(data)
        names = parse_attributes([str(a) for a in offer["attributes"]])
    except (AbeError, PolicyError, KeyError, TypeError):
        raise CeremonyBroken("The other device sent a malformed offer.") from None
    if public.name != agreed.peer_name or not names:
        raise CeremonyBroken("The other device sent a malformed offer.")
    try:
        keys.check_authority(public)
    except AbeError as exc:
        wire.send({"t": "refuse", "reason": "the member already knows another authority by that name"})
        raise CeremonyRefused(str(exc)) from None
    view = GrantView(role=JOIN, sas=agreed.sas, authority=public.name, fingerprint=public.fingerprint,
                     member=store.device_name, attributes=names)
    _both_confirm(wire, view, confirm)
    _, data = _expect(wire, "key")
    try:
        key = decode_member_key(data)
        if key.attributes != names:
            raise CeremonyBroken("The key does not carry the attributes both owners confirmed.")
        keys.add_member_key(public, key)
    except AbeError:
        raise CeremonyBroken("The other device sent a key that does not match its authority.") from None
    wire.send({"t": "stored"})
    return key
