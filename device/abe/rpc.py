"""The device RPC's attribute-authority methods (added to DeviceService.methods by device/server.py).

    abe_status      {}                    -> {"authorities": [...], "held": [...], "warnings": [...], "issued": [...]}
    abe_members     {}                    -> {"issued": [...]}   (member, attributes, period, revoked; never a key)
    abe_revoke      {"member"}            -> {"revoked": [...]}  (the owner confirms first)
    abe_renew       {"member"?, "end_period"?, "period"?} -> {"period", "renewals": [{"member", "mailbox",
                                             "package"}], "left": [...]}   (the owner confirms first)
    abe_renew       {"resend": true, "member"?} -> {"renewals": [...]}   (those already sent, byte for byte, for
                                             periods not over: nothing issued, no pad used, nothing asked)
    abe_renewal_mailboxes {}              -> {"mailboxes": [hex]}   (a member's renewal pads' relay mailboxes)
    abe_open_renewal {"package"}          -> {"key": {...}}   (a renewal package from the relay; never the key)
    abe_authority   {"name"?}             -> {"name", "fingerprint"}   (the owner confirms first)
    room_create     {"name", "policy"}    -> the room's status, with its invite

and grants carried by laptops: ``ceremony_start`` with ``{"kind": "grant",
"role": "host"|"join", "attributes": "A,B"}`` (attributes on the authority's
side only) runs :func:`~device.abe.grant.grant_host` or
:func:`~device.abe.grant.grant_join` over the connection the laptop carries,
like a pad ceremony (device/ceremonies.py). The owner confirms on the
device's own screen, which shows the pairing string, the authority and its
fingerprint, the member and the attributes.

A Pi has no shell: these are how its owner, through the paired laptop, makes
it an authority, issues keys and creates rooms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from device.abe.errors import AlreadyAuthority, Revoked
from device.abe.grant import GrantView, confirm_grant, grant_host, grant_join
from device.abe.periods import check_period
from device.abe.policy import Policy, check_unreserved, parse_attributes
from device.abe.store import AbeKeys
from device.confirm import ConfirmRequest, ConfirmSource
from device.errors import Declined, DeviceError
from device.rooms.rpc import rooms_for
from device.storage.padstore import PadStore, check_name
from provisioning.link import HOST, JOIN
from provisioning.view import CeremonyView
from provisioning.wire import Wire


class BadAbeRequest(DeviceError):
    """The attribute-authority request is not well formed."""

    code = "bad-request"


def _text(params: dict, name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise BadAbeRequest(f"The parameter {name!r} must be a non-empty string.")
    return value


def abe_status(store: PadStore) -> dict:
    """What `otc abe status --json` prints: authorities (an own one with its running period), the keys held
    with their periods, warnings (renewal due, expired), keys issued."""
    keys = AbeKeys(store)
    now = time.time()
    authorities = keys.authorities()
    for a in authorities:
        if a["own"]:
            period = keys.current_period(now)
            a["period"] = period.to_dict() if period is not None else None
    return {"authorities": authorities, "held": [k.to_dict(now) for k in keys.held()],
            "warnings": keys.key_warnings(now), "issued": [i.to_dict() for i in keys.issued()]}


def abe_members(store: PadStore) -> dict:
    """What `otc abe members --json` prints: every key this authority issued (never a key)."""
    keys = AbeKeys(store)
    keys.master()  # abe-not-authority
    cut = keys.cut_counter()
    return {"issued": [dict(i.to_dict(), rooms_cut=cut(i.attributes)) for i in keys.issued()],
            "periods": [p.to_dict() for p in keys.periods()]}


def abe_methods(service: Any) -> dict[str, Callable[[Any, dict], Any]]:
    def status(client: Any, params: dict) -> dict:
        return abe_status(service.ready())

    def authority(client: Any, params: dict) -> dict:
        store = service.ready()
        name = params.get("name")
        if name is not None and name != store.device_name:
            raise BadAbeRequest(f"An authority is named after its device: this one is {store.device_name!r}.")
        keys = AbeKeys(store)
        if any(a["own"] for a in keys.authorities()):
            raise AlreadyAuthority()
        request = ConfirmRequest(
            contact="attribute authority", kind="authority",
            plaintext=(f"Make {store.device_name} an attribute authority?\n\n"
                       "It makes a master key that never leaves this device. With it, this device issues "
                       "attribute keys in person and creates rooms.\n\n"
                       f"Asked by the laptop {client.name}.").encode(),
            consumes=0, left_after=0)
        if not service.broker.ask(request):
            store.log_event("declined", detail=f"becoming an attribute authority, asked by laptop {client.name}")
            raise Declined("The owner did not approve: this device is not an attribute authority.")
        public = keys.become_authority(random_bytes=service.session_random)
        return {"name": public.name, "fingerprint": public.fingerprint}

    def room_create(client: Any, params: dict) -> dict:
        name, policy = _text(params, "name"), _text(params, "policy")
        store = service.ready()
        check_name(name)
        parsed = Policy.parse(policy)  # its error, with the position, before the owner is asked
        check_unreserved(parsed.rows, "a room's policy")
        AbeKeys(store).master()  # abe-not-authority, likewise
        rooms = rooms_for(service)
        request = ConfirmRequest(
            contact=name, kind="room-create",
            plaintext=(f"Create the room {name}?\n\nPolicy: {parsed.text}\n\nAnyone whose attribute keys from "
                       f"this authority satisfy the policy can join it. Asked by the laptop {client.name}.").encode(),
            consumes=0, left_after=0)
        if not service.broker.ask(request):
            store.log_event("declined", detail=f"creating room {name}, asked by laptop {client.name}")
            raise Declined("The owner did not approve: no room was created.")
        room = rooms.create(name, policy)
        return rooms.describe(room.room_id.hex())

    def members(client: Any, params: dict) -> dict:
        return abe_members(service.ready())

    def revoke(client: Any, params: dict) -> dict:
        store = service.ready()
        who = _text(params, "member")
        keys = AbeKeys(store)
        keys.master()
        found = [i for i in keys.find_issued(who) if i.revoked is None]  # unknown-member before asking
        if not found:
            raise Revoked(f"The keys of {who[:40]!r} are already revoked.")
        request = ConfirmRequest(
            contact="attribute authority", kind="abe-revoke",
            plaintext=(f"Revoke the keys of {found[0].member}?\n\n"
                       + "\n".join(f"{', '.join(i.attributes)} (period {i.period}, key {i.key_id.hex()[:16]})"
                                   for i in found)
                       + "\n\nThis authority will renew them no more: once their period ends, or you end it "
                         f"early, the member reads no room's new epochs.\n\nAsked by the laptop {client.name}."
                       ).encode(),
            consumes=0, left_after=0)
        if not service.broker.ask(request):
            store.log_event("declined", detail=f"revoking keys, asked by laptop {client.name}")
            raise Declined("The owner did not approve: nothing was revoked.")
        return {"revoked": [i.to_dict() for i in keys.revoke(who)]}

    def renew_keys(client: Any, params: dict) -> dict:
        from device.abe.renewal import check_again, plan_renewal, renew

        store = service.ready()
        who = params.get("member")
        if who is not None:
            who = _text(params, "member")
        resend = params.get("resend", False)
        if not isinstance(resend, bool):
            raise BadAbeRequest("'resend' is true or false.")
        if resend and any(params.get(k) not in (None, False) for k in ("end_period", "period", "again")):
            # As the command line: ignoring them, a laptop asking to end the period early would be told "ok"
            # (an outside review).
            raise BadAbeRequest("'resend' sends what was sent: it takes no end_period, period or again.")
        if resend:  # the packages already sent, byte for byte: nothing issued, no pad used, so nothing to ask
            from device.abe.renewal import RenewalPads

            keys = AbeKeys(store)
            keys.master()
            return {"renewals": [r.to_dict() for r in RenewalPads(keys).resend(who)]}
        early = params.get("end_period", False)
        length = params.get("period")
        if not isinstance(early, bool) or (length is not None and (isinstance(length, bool)
                                                                   or not isinstance(length, (int, float)))):
            raise BadAbeRequest("'end_period' is true or false, 'period' a number of seconds.")
        if length is not None:
            length = check_period(length)
        keys = AbeKeys(store)
        keys.master()
        again = params.get("again", False)
        if not isinstance(again, bool):
            raise BadAbeRequest("'again' is true or false.")
        plan = plan_renewal(keys, who, early, length)  # who gets nothing, and why, before the owner is asked
        check_again(plan, again)
        if not (plan.members or plan.early or plan.catch_up):
            # Nothing to issue (each one asked for already renewed, or revoked): the owner is not asked to approve
            # "nobody" (a cold run: the screen asked for a renewal of 0 members).
            return {"period": plan.period.to_dict(), "renewals": [], "left": plan.left, "cut": plan.cut,
                    "failed": [], "running": None, "withdrawn": None}
        request = ConfirmRequest(contact="attribute authority", kind="abe-renew",
                                 plaintext=(plan.question() + f"\n\nAsked by the laptop {client.name}.").encode(),
                                 consumes=0, left_after=0)
        if not service.broker.ask(request):
            store.log_event("declined", detail=f"renewing keys, asked by laptop {client.name}")
            raise Declined("The owner did not approve: nothing was renewed.")
        renewals = renew(keys, plan, service.session_random)
        return {"period": plan.period.to_dict(), "renewals": [r.to_dict() for r in renewals], "left": plan.left,
                "cut": plan.cut, "failed": renewals.failed,
                "running": plan.running.to_dict() if plan.catch_up and plan.running is not None else None,
                "withdrawn": plan.withdraws.to_dict() if plan.withdraws is not None else None}

    def renewal_mailboxes(client: Any, params: dict) -> dict:
        from device.abe.renewal import RenewalPads

        return {"mailboxes": RenewalPads(AbeKeys(service.ready())).mailboxes()}

    def open_renewal(client: Any, params: dict) -> dict:
        from device.abe.renewal import RenewalPads, RenewalRefused
        from onetimechat import package as fmt
        from onetimechat.errors import MalformedPackage

        try:
            data = fmt.decode(_text(params, "package"))
        except MalformedPackage:
            raise RenewalRefused("That is not a renewal package.") from None
        store = service.ready()
        # Refused renewals are package refusals: logged within the device's budget, as unpackage's are.
        held = RenewalPads(AbeKeys(store), refusals=service.device.refusals).open(data)
        return {"key": held.to_dict(time.time())}

    return {"abe_status": status, "abe_authority": authority, "room_create": room_create,
            "abe_members": members, "abe_revoke": revoke, "abe_renew": renew_keys,
            "abe_renewal_mailboxes": renewal_mailboxes, "abe_open_renewal": open_renewal}


# -- grants carried by laptops -------------------------------------------------------------


def start_grant(service: Any, client: Any, params: dict) -> dict:
    """``ceremony_start`` for ``{"kind": "grant"}``: check, then arm the runner with a grant."""
    role = params.get("role")
    if role not in (HOST, JOIN):
        raise BadAbeRequest("A grant's role is host (the authority) or join (the member).")
    if params.get("size") is not None or params.get("name") is not None:
        raise BadAbeRequest("A grant takes no size or name.")
    period = params.get("period")
    if period is not None:
        if role != HOST or isinstance(period, bool) or not isinstance(period, (int, float)):
            raise BadAbeRequest("Only the authority's side (host) gives a period, in seconds.")
        period = check_period(period)
    store = service.ready()
    attributes: tuple[str, ...] = ()
    if role == HOST:
        attributes = parse_attributes(_text(params, "attributes"))  # abe-policy, with its position
        AbeKeys(store).master()  # abe-not-authority before anyone connects
    elif params.get("attributes") is not None:
        raise BadAbeRequest("Only the authority's side (host) offers attributes.")
    fallback = _fallback(service.config.source)
    runner = service.ceremonies

    def confirm(view: GrantView) -> bool:
        shown = CeremonyView(peer=view.member if view.role == HOST else view.authority, stage="compare",
                             sas=view.sas, kind="grant", role=view.role, authority=view.authority,
                             authority_fingerprint=view.fingerprint, member=view.member,
                             attributes=view.attributes)
        return runner.ask_owner(shown, (lambda: fallback(view)) if fallback is not None else None)

    def grant(store: PadStore, wire: Wire, random_bytes: Callable[[int], bytes]) -> dict:
        if role == HOST:
            key = grant_host(store, wire, list(attributes), confirm, random_bytes, period)
        else:
            key = grant_join(store, wire, confirm, random_bytes)
        state = runner.status()
        outcome = "issued" if role == HOST else "stored"
        if runner.console is not None:
            runner.console.show_ceremony(CeremonyView(
                peer=str(state.get("peer", "")), stage="done", kind="grant", role=role,
                authority=state.get("authority"), authority_fingerprint=state.get("authority_fingerprint"),
                member=state.get("member"), attributes=key.attributes, fingerprint=key.fingerprint))
        return {"outcome": outcome, "attributes": list(key.attributes), "key_id": key.key_id.hex(),
                "fingerprint": key.fingerprint, "earlier": key.earlier}

    what = f"attributes {', '.join(attributes)}" if role == HOST else "a key"
    store.log_event("grant-started", detail=f"{role}, {what}, carried by laptop {client.name}")
    return runner.arm("grant", role, grant, owner=client.client_id.hex())


def _fallback(source: ConfirmSource) -> Callable[[GrantView], bool] | None:
    """How the owner confirms a grant when the device has no screen of its own (tty; auto in tests)."""
    if source.name in ("auto", "tty"):
        return confirm_grant(source.name)
    return None
