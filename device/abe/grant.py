"""Granting an attribute key in person: ``otc abe grant host`` and ``otc abe grant join``.

The two devices run the same authenticated key agreement as pad pairing
(provisioning/agree.py: a committed X25519 exchange and a short
authentication string), under the protocol name ``otc-abe-grant-v4``. Then,
over the sealed link:

1. the authority sends its public key (with g2^a beside it, which the member
   checks against g1^a), the attributes it offers and the period the key is
   for (number, start, end: the key carries PERIOD_<n>);
2. both devices show the pairing string, the authority's name and
   fingerprint, the member's name and the attributes; each owner confirms on
   his own device (either "no" stops the grant, nothing is issued);
3. both settle what an earlier grant between them left unfinished (below);
   then, for a new grant, they make a small renewal pad, each device's share
   committed before it sees the other's (device/abe/renewal.py), which the
   authority later sends renewed keys on, without meeting;
4. the authority makes the key, records it as issued but pending (never the
   key itself) and sends it; the member checks it against the public key with
   pairings, stores it pending (sealed in a PIN-locked home) and answers with
   the grant's fingerprint; the authority checks it, counts the key as issued
   and says so; the member then uses the key. Both screens end showing the
   grant's fingerprint.

A grant cut short leaves a pending record or key that nothing uses. The next
grant between the same two devices settles it: each lists the grants it holds
with the other, each with a proof that it holds it (an HMAC keyed with the
grant's proof key, which only the member's key and the authority's record
give, over this session); one both provably hold is confirmed on both (and
that grant ends there, showing its fingerprint), one only a side holds is
discarded there once the other has proved who it is. A device that claims
another's id but proves none of its confirmed grants is refused.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from device.abe.encoding import decode_member_key, decode_public_key
from device.abe.errors import AbeError, PolicyError
from device.abe.group import g2_decode
from device.abe.periods import MAX_PERIOD_S, Period, when
from device.abe.policy import check_unreserved, parse_attributes
from device.abe.renewal import RenewalPads, make_pad
from device.abe.scheme import check_member_key, keygen
from device.abe.store import AbeKeys, grant_fingerprint
from device.confirm import terminal_check
from device.storage.padstore import PadStore, device_id_for
from provisioning.agree import agree
from provisioning.errors import CeremonyAborted, CeremonyBroken, CeremonyRefused
from provisioning.link import HOST, JOIN
from provisioning.settle import holding_proof, listing
from provisioning.settle import proven as settled
from provisioning.wire import Wire

AUTHORITY_PROOF = "otc abe grant authority proof"


def _challenge(wire: Wire) -> str:
    """An attribute name only this session gives: a key for it can be made only with the master key
    (a member's key cannot be re-randomised onto a new attribute without g2^a, which is not public)."""
    return "OTCPROOF_" + wire.export(AUTHORITY_PROOF)[:12].hex().upper()


PROTOCOL = "otc-abe-grant-v4"  # v4: a key for a period, and a renewal pad; v3: settled on proofs


@dataclass(frozen=True)
class GrantView:
    """What both screens show before their owners confirm."""

    role: str
    sas: str
    authority: str
    fingerprint: str
    member: str
    attributes: tuple[str, ...]
    period: Period | None = None

    def lines(self) -> list[str]:
        who = (f"Grant a key to {self.member}" if self.role == HOST
               else f"Accept a key from authority {self.authority}")
        valid = (f" (period {self.period.number}, valid until {when(self.period.ends)})"
                 if self.period is not None else "")
        return [
            f"{who} for the attributes: {', '.join(self.attributes)}{valid}",
            f"Authority {self.authority}, fingerprint {self.fingerprint}",
            f"Pairing string: {self.sas} (the other device must show the same string and attributes)",
        ]


Confirm = Callable[[GrantView], bool]




def confirm_grant(mode: str) -> Callable[[GrantView], bool]:
    """How the owner confirms a grant on the device's terminal (tty; auto in tests): both sides' view, then ask."""
    def show(view: GrantView) -> None:
        for line in view.lines():
            print(line, flush=True)

    return terminal_check(mode, what="grant", command="otc abe grant", show=show,
                          question=lambda view: f"Does the other device show {view.sas} and the same attributes? "
                                                "[y/N] ")

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


@dataclass(frozen=True)
class Granted:
    """What a grant left on this device: the key's id and attributes, and the fingerprint both screens show."""

    key_id: bytes
    attributes: tuple[str, ...]
    fingerprint: str
    earlier: bool = False  # an earlier, cut grant finished now rather than a new one


SETTLE_BINDING = "otc abe grant v3 settle"
SETTLE_PROOF_LABEL = b"otc abe grant v3 settle proof\x00"


def _role(as_authority: bool) -> str:
    return "authority" if as_authority else "member"


def _settle(wire: Wire, keys: AbeKeys, peer: bytes, as_authority: bool, trusted: bool) -> Granted | None:
    """Settle the grants an earlier ceremony between these two devices left pending; the one finished, if any.

    Who the peer is is proved by its identity (``trusted``: a member's self-certifying device id, or the
    device an authority's keys came from) or by the grants it proves holding; never by its word. Each lists
    its grants with the other, each with a proof that it holds it (an HMAC keyed with the grant's proof key
    over this session's binding and its role). A grant counts as held by both only when the other's proof
    verifies. An untrusted member that proves none of the grants the authority has confirmed with that id
    is not that device: the grant stops, nothing changed. Both sides see both lists, so both decide alike:
    a pending grant (on either side) that both hold is confirmed on both, and this grant ends with it; one
    only this side holds is discarded there once the peer is trusted or has proved another grant.
    """
    binding = wire.export(SETTLE_BINDING)
    mine = keys.grants_with(peer, as_authority)
    proof_keys = {kid.hex(): pk for kid, pk in keys.grant_proof_keys(peer, as_authority).items() if kid in mine}
    listed = {kid: {"state": "confirmed" if mine[bytes.fromhex(kid)][0] else "pending",
                    "proof": holding_proof(SETTLE_PROOF_LABEL, pk, binding, _role(as_authority), kid)}
              for kid, pk in proof_keys.items()}
    wire.send({"t": "holding", "keys": listed})
    message, _ = _expect(wire, "holding")
    theirs = listing(message, "keys", "grants")
    proven = settled(theirs, proof_keys, SETTLE_PROOF_LABEL, binding, _role(not as_authority))
    confirmed = {kid for kid in proof_keys if mine[bytes.fromhex(kid)][0]}
    if as_authority and confirmed and not proven & confirmed and not trusted:
        wire.send({"t": "refuse", "reason": "the other device did not prove it is the device it says"})
        keys.store.log_event("ceremony-impostor", detail="a grant's peer gave the id of a device this one has "
                                                         "grants with, but proved none of them")
        raise CeremonyRefused("The other device says it is one this device has granted keys with, but proved "
                              "it holds none of them: the grant stopped, nothing changed.")
    finished = None
    for kid, (ok, fp, attrs) in sorted(mine.items()):
        both = kid.hex() in proven
        if both and (not ok or theirs[kid.hex()].get("state") == "pending"):
            keys.confirm_grant(kid, as_authority)
            finished = Granted(key_id=kid, attributes=attrs, fingerprint=fp or "", earlier=True)
        elif not ok and not both and (proven or (trusted and as_authority)):
            # A member's pending key goes only once the authority has proved another grant: an authority
            # that cannot list it (filed before identities under another id) may still count it.
            keys.discard_grant(kid, as_authority)
    return finished


def _finish(wire: Wire, keys: AbeKeys, key_id: bytes, fingerprint: str, as_authority: bool) -> None:
    """Trade the grant's fingerprint: the member says it stored the key, the authority that it counts it."""
    if as_authority:
        message, _ = _expect(wire, "stored")
        if not hmac.compare_digest(str(message.get("fingerprint")).encode(), fingerprint.encode()):
            raise CeremonyBroken("The two devices hold different grants: the link is not to be trusted.")
        keys.confirm_grant(key_id, as_authority=True)
        wire.send({"t": "confirmed", "fingerprint": fingerprint})
        return
    wire.send({"t": "stored", "fingerprint": fingerprint})
    try:
        message, _ = _expect(wire, "confirmed")
    except CeremonyBroken:
        raise CeremonyBroken("The key is stored but not usable yet: the authority did not confirm the grant. "
                             "Run the grant again with it to finish it.") from None
    if not hmac.compare_digest(str(message.get("fingerprint")).encode(), fingerprint.encode()):
        raise CeremonyBroken("The two devices hold different grants: the link is not to be trusted.")
    keys.confirm_grant(key_id, as_authority=False)


def grant_host(store: PadStore, wire: Wire, attributes: str | list[str], confirm: Confirm,
               random_bytes: Callable[[int], bytes] = os.urandom, period: float | None = None) -> Granted:
    """The authority's side: offer ``attributes`` for the running period (or a new one lasting ``period``
    seconds, default a month), and issue the key once both owners confirm."""
    keys = AbeKeys(store)
    public = keys.master().public  # NotAnAuthority before anything is sent
    names = parse_attributes(attributes)
    check_unreserved(names, "a key's attributes")
    agreed = agree(wire, HOST, store, random_bytes, PROTOCOL)
    chosen = keys.period_for_grant(period)
    offer: dict = {"t": "offer", "attributes": list(names), "period": [chosen.number, chosen.starts, chosen.ends]}
    if public.g2_a is not None:  # always, from the master key; a member before it ignores the field
        offer["g2_a"] = bytes(public.g2_a.to_compressed_bytes()).hex()
    wire.send(offer, public.encode())
    view = GrantView(role=HOST, sas=agreed.sas, authority=public.name, fingerprint=public.fingerprint,
                     member=agreed.peer_name, attributes=names, period=chosen)
    _both_confirm(wire, view, confirm)
    wire.send({"t": "authority-proof"}, keygen(keys.master(), [_challenge(wire)], random_bytes).encode())
    # The member is filed under its identity's hash (its device id, for every device made since identities):
    # only the holder of that identity key can speak for the grants filed under it.
    member_id = device_id_for(agreed.peer_identity)
    earlier = _settle(wire, keys, member_id, as_authority=True, trusted=True)
    if earlier is not None:
        return earlier
    pad = make_pad(wire, random_bytes, "authority")
    key = keys.issue(names, member=agreed.peer_name, member_device_id=member_id, how="in person",
                     random_bytes=random_bytes, pending=True, period=chosen)
    RenewalPads(keys).add(pad, key.key_id, public.authority_id, member_id, "authority")
    fingerprint = grant_fingerprint(public.authority_id, key, member_id)
    # With the key (over the ceremony's sealed link), the period's secret of each room of this authority whose
    # policy the key satisfies: the member binds and tags its room contributions of the period with it
    # (docs/rooms.md "Period secrets, per room"). An older member ignores the field.
    rooms = keys.room_secrets_for(chosen.number, key.all_attributes)
    wire.send({"t": "key", "room_secrets": rooms.hex()}, key.encode())
    _finish(wire, keys, key.key_id, fingerprint, as_authority=True)
    return Granted(key_id=key.key_id, attributes=key.attributes, fingerprint=fingerprint)


def grant_join(store: PadStore, wire: Wire, confirm: Confirm,
               random_bytes: Callable[[int], bytes] = os.urandom) -> Granted:
    """The member's side: see what is offered, confirm, check and store the key."""
    keys = AbeKeys(store)
    agreed = agree(wire, JOIN, store, random_bytes, PROTOCOL)
    offer, data = _expect(wire, "offer")
    try:
        public = decode_public_key(data)
        if "g2_a" in offer:  # fixed by g1^a (checked): it needs no trust of its own; absent from older authorities
            public = public.with_g2_a(g2_decode(bytes.fromhex(str(offer["g2_a"]))))
        names = parse_attributes([str(a) for a in offer["attributes"]])
        check_unreserved(names, "a key's attributes")
        number, starts, ends = offer["period"]
        period = Period(int(number), float(starts), float(ends))
    except (AbeError, PolicyError, KeyError, TypeError, ValueError):
        raise CeremonyBroken("The other device sent a malformed offer.") from None
    if (public.name != agreed.peer_name or not names or period.number < 1
            or not 0 < period.ends - period.starts <= MAX_PERIOD_S):
        raise CeremonyBroken("The other device sent a malformed offer.")
    try:
        keys.check_authority(public)
        if not public.certified and not keys.knows(public):
            # Ids are public (every ciphertext carries one): an id that is not its key's hash could be another
            # authority's, taken (an outside review). Only a member that already holds this exact key (an
            # authority from before) accepts one.
            raise AbeError(f"Authority {public.name!r} was set up by older software (its id is not its key's): "
                           "it must become an authority again before granting new members.")
    except AbeError as exc:
        wire.send({"t": "refuse", "reason": "the member cannot take a key from this authority"})
        raise CeremonyRefused(str(exc)) from None
    # The authority's public key is public: what proves the device offering it is the authority's is the
    # identity its earlier grants came from.
    known = keys.authority_identity(public.authority_id)
    if known is not None and not hmac.compare_digest(known, agreed.peer_identity):
        wire.send({"t": "refuse", "reason": "the member knows this authority's device by another identity"})
        store.log_event("ceremony-impostor", detail=f"a device offered authority {public.name}'s key under "
                                                    "another identity")
        raise CeremonyRefused(f"The other device offers authority {public.name}'s key but is not the device its "
                              "keys came from (another identity key): the grant stopped, nothing changed.")
    view = GrantView(role=JOIN, sas=agreed.sas, authority=public.name, fingerprint=public.fingerprint,
                     member=store.device_name, attributes=names, period=period)
    _both_confirm(wire, view, confirm)
    _, proof = _expect(wire, "authority-proof")
    try:
        proof_key = decode_member_key(proof)
        if proof_key.attributes != (_challenge(wire),):
            raise AbeError("wrong challenge")
        check_member_key(public, proof_key)
    except AbeError:
        wire.send({"t": "refuse", "reason": "the other device did not prove it holds the authority's master key"})
        raise CeremonyRefused(f"The other device offers authority {public.name}'s key but did not prove it holds "
                              "that authority's master key: the grant stopped, nothing changed.") from None
    earlier = _settle(wire, keys, public.authority_id, as_authority=False, trusted=known is not None)
    if earlier is not None:
        keys.bind_authority_identity(public.authority_id, agreed.peer_identity)
        return earlier
    pad = make_pad(wire, random_bytes, "member")
    message, data = _expect(wire, "key")
    # Room secrets; from an older authority, the period's secret (then any room's is derived from it); or none.
    secret = message.get("room_secrets", message.get("period_secret"))
    if secret is not None and (not isinstance(secret, str) or len(secret) % 2
                               or any(c not in "0123456789abcdef" for c in secret)):
        raise CeremonyBroken("The other device broke the grant protocol.")
    try:
        key = decode_member_key(data)
        if key.attributes != names or key.period != period.number:
            raise CeremonyBroken("The key does not carry the attributes and period both owners confirmed.")
        fingerprint = keys.add_member_key(public, key, pending=True, window=(period.starts, period.ends),
                                          period_secret=bytes.fromhex(secret) if secret is not None else None)
    except AbeError:
        raise CeremonyBroken("The other device sent a key that does not match its authority.") from None
    # Only the authority's own device can make a key that checks against its public key: its identity is
    # the one this authority's keys come from, from now on.
    keys.bind_authority_identity(public.authority_id, agreed.peer_identity)
    RenewalPads(keys).add(pad, key.key_id, public.authority_id, None, "member")
    _finish(wire, keys, key.key_id, fingerprint, as_authority=False)
    return Granted(key_id=key.key_id, attributes=key.attributes, fingerprint=fingerprint)
