"""`otc abe ...`: attribute-based keys on the device (DESIGN.md "Attribute-based rooms")."""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device.abe.errors import AbeError, MalformedAbeData, NotAnAuthority
from device.abe.periods import when
from device.confirm import MODES
from onetimechat.cli.common import command_group, home, home_or_device
from onetimechat.errors import UsageError
from onetimechat.text import plural
from provisioning.link import accept_one, connect
from provisioning.wire import Wire

# From the laptop (--device) these commands need only the modules above, which a plain install (the laptop
# client) can import; on the device itself (--home) they import the device's stack (BLS12-381, its store) when
# run.

if TYPE_CHECKING:
    from client.rpc import DeviceClient

IDLE_TIMEOUT_S = 600.0  # an owner may take a while to compare the screens
CONFIRM_HINT_S = 0.5  # a device answers a refusal sooner; one it asks its owner about takes longer
MAX_STDIN = 1 << 20


def register(parts: argparse._SubParsersAction) -> None:
    sub = command_group(parts, "abe", "attribute-based keys on this device",
                        "Attribute-based keys: this device as an authority, keys issued in person, and "
                        "encapsulation under policies. Keys never leave the device.")

    p = sub.add_parser("authority", help="make this device an attribute authority",
                       description="Make this device an attribute authority, named after the device. "
                       "Its master key never leaves it. With --device, from the laptop paired with it: the "
                       "owner confirms on the device's screen.")
    home_or_device(p)
    p.set_defaults(func=cmd_authority)

    p = sub.add_parser("grant-local", help="issue a key on one machine (development, tests)",
                       description="Issue a key for --attributes from the authority in AUTH_HOME to the "
                       "device in MEMBER_HOME, both on this machine (development and tests: this machine "
                       "sees the key).")
    p.add_argument("--attributes", required=True, help="comma-separated attributes, e.g. STAFF,ADMIN")
    p.add_argument("auth_home", metavar="AUTH_HOME", type=Path, help="the attribute authority's home")
    p.add_argument("member_home", metavar="MEMBER_HOME", type=Path, help="the member device's home")
    p.add_argument("--auth-pin-file", type=Path, help="the PIN of AUTH_HOME, if it is PIN-locked")
    p.add_argument("--member-pin-file", type=Path, help="the PIN of MEMBER_HOME, if it is PIN-locked")
    _period(p)
    p.set_defaults(func=cmd_grant_local)

    grant = sub.add_parser("grant", help="issue a key in person",
                           description="Issue a key in person: `otc abe grant host` on the authority, "
                           "`otc abe grant join` on the member's device; both show the pairing string and "
                           "the attributes, and both owners confirm. With --home, on the device itself; with "
                           "--device, from the laptop paired with it: the laptops carry the grant and each "
                           "owner compares and confirms on the device's own screen.")
    gsub = grant.add_subparsers(dest="role", metavar="ROLE")
    gsub.required = True
    for role, helptext in (("host", "on the authority: offer a key for --attributes"),
                           ("join", "on the member's device: receive the key")):
        p = gsub.add_parser(role, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        home_or_device(p)
        if role == "host":
            p.add_argument("--listen", required=True, metavar="HOST:PORT", help="where to wait for the member")
            p.add_argument("--attributes", required=True, help="comma-separated attributes, e.g. STAFF,ADMIN")
            _period(p)
        else:
            p.add_argument("--connect", required=True, metavar="HOST:PORT", help="the authority's device")
        p.add_argument("--confirm", choices=MODES, default="tty",
                       help="who confirms the pairing string and attributes (default: tty)")
        p.add_argument("--hrng", action="append", default=[], metavar="URL",
                       help="a hardware random source to mix in (repeatable); without it, the OS CSPRNG alone")
        p.set_defaults(func=cmd_grant_host if role == "host" else cmd_grant_join)

    p = sub.add_parser("encaps", help="a fresh key under a policy",
                       description='Make a fresh key under --policy for --authority\'s members and print '
                       '{"ciphertext": base64, "key_fingerprint": hex}. The key stays on the device.')
    home(p)
    p.add_argument("--authority", required=True, metavar="NAME", help="the attribute authority")
    p.add_argument("--policy", required=True, help="e.g. 'STAFF and (ADMIN or 2 of (A, B, C))'")
    p.set_defaults(func=cmd_encaps)

    p = sub.add_parser("decaps", help="recover the key of a ciphertext from stdin",
                       description='Read a base64 ciphertext (or the JSON `otc abe encaps` prints) on stdin '
                       'and print {"key_fingerprint": hex}. A refusal exits non-zero with one line on stderr.')
    home(p)
    p.set_defaults(func=cmd_decaps)

    p = sub.add_parser("status", help="authorities, keys held and keys issued",
                       description="Show the authorities this device knows, the keys it holds (attributes, "
                       "period, when it ends, renewal due) and, for an authority, what it issued (never a key).")
    home_or_device(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("members", help="the keys this authority issued: member, attributes, period, revocation",
                       description="List the keys this authority issued: member, attributes, the period each is "
                       "for and when it ends, and whether it is revoked (never a key).")
    home_or_device(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_members)

    p = sub.add_parser("revoke", help="revoke a member's keys: no renewal for it",
                       description="Mark the keys issued to MEMBER (a member's name, or a key id of at least 8 "
                       "hex digits) revoked: the authority renews them no more, so once the period ends (or "
                       "is ended early) the member reads no room's new "
                       "epochs. With --device, the owner confirms on the device's screen.")
    home_or_device(p)
    p.add_argument("member", metavar="MEMBER|KEY_ID", help="the member's name or a key id")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("renew", help="renew members' keys for the next period, over their renewal pads",
                       description="Issue the next period's keys to every member not revoked (or to MEMBER), "
                       "each sent on the renewal pad its grant left, through the relay: no meeting. The next "
                       "period begins when the running one ends; --end-period ends it now (everyone but the "
                       "revoked is renewed, and rooms move on as the renewed devices sync). With --device, the "
                       "owner confirms on the device's screen.")
    home_or_device(p)
    p.add_argument("member", nargs="?", metavar="MEMBER|KEY_ID", help="only this member (default: all)")
    p.add_argument("--end-period", action="store_true",
                   help="end the running period now (a next period already issued ahead is withdrawn: a new one "
                   "replaces it)")
    p.add_argument("--again", action="store_true",
                   help="with --end-period: end the running period early even though it began less than an hour "
                   "ago after another (by default refused: a retried early end would end another period; the first "
                   "period, begun at the grant, is never refused)")
    p.add_argument("--resend", action="store_true",
                   help="send again, byte for byte, the renewals already sent for periods not over yet (one the "
                   "relay lost): nothing new is issued, no pad byte is used, the device is not asked")
    p.add_argument("--period", metavar="DURATION", type=_duration,
                   help="how long the next period lasts (default: as long as the last one)")
    p.add_argument("--relay", metavar="URL", help="the relay to post the renewals to (with --device, default the "
                   "last one given; with --home and no relay, they are printed as JSON lines)")
    p.set_defaults(func=cmd_renew)

    p = sub.add_parser("renewals", help="receive renewed keys the authority sent",
                       description="Read this device's renewal mailboxes on the relay and have the device open "
                       "each renewal on its pad and store the key (`otc room recv` does it too).")
    home_or_device(p)
    p.add_argument("--relay", metavar="URL", help="the relay (with --device, default the last one given)")
    p.set_defaults(func=cmd_renewals)


def _period(p: argparse.ArgumentParser) -> None:
    p.add_argument("--period", metavar="DURATION", type=_duration,
                   help="how long a new period lasts, e.g. 30d, 2w, 12h (default 30d); a key is issued for the "
                   "authority's running period, or a new one of this length when none is running")


def _duration(text: str) -> float:
    from device.abe.periods import parse_duration

    try:
        return parse_duration(text)
    except AbeError as exc:  # argparse shows the message as one line
        raise argparse.ArgumentTypeError(str(exc)) from None


def _device(args: argparse.Namespace) -> DeviceClient:
    """The paired device of ``--device`` (a PIN is entered on the device itself, never sent)."""
    from client.rpc import DeviceClient

    if args.pin_file:
        raise UsageError("With --device, the device uses its own PIN; --pin-file is for --home.")
    return DeviceClient(args.device)


def _asking(device: Any, method: str, **params: Any) -> Any:
    """``device.call(method, ...)``, saying "Confirm on the device's screen." once the answer takes longer than a
    refusal would (a cold run saw the hint before refusals the device gave at once, without asking)."""
    import threading

    hint = threading.Timer(CONFIRM_HINT_S, lambda: print("Confirm on the device's screen.", flush=True))
    hint.daemon = True
    hint.start()
    try:
        return device.call(method, **params)
    finally:
        hint.cancel()
        hint.join()


def cmd_authority(args: argparse.Namespace) -> int:
    if args.device:
        made = _asking(_device(args), "abe_authority")
        name, fingerprint = made["name"], made["fingerprint"]
    else:
        from device.abe.store import AbeKeys
        from device.home import open_home

        with open_home(args.home, args.pin_file) as store:
            public = AbeKeys(store).become_authority()
        name, fingerprint = public.name, public.fingerprint
    print(f"Device {name} is now an attribute authority (fingerprint {fingerprint}).")
    return 0


def cmd_grant_local(args: argparse.Namespace) -> int:
    from device.abe.store import AbeKeys, grant_local
    from device.home import open_home

    if args.auth_home.resolve() == args.member_home.resolve():
        raise UsageError("AUTH_HOME and MEMBER_HOME must be two different devices.")
    with open_home(args.auth_home, args.auth_pin_file) as auth, \
            open_home(args.member_home, args.member_pin_file) as member:
        key = grant_local(auth, member, args.attributes, args.period)
        period = AbeKeys(auth).current_period()
        until = f", period {key.period} until {when(period.ends)}" if period is not None else ""
        print(f"Issued a key for {', '.join(key.attributes)} from authority {auth.device_name} "
              f"to {member.device_name} (key {key.key_id.hex()[:16]}{until}).")
    return 0


def cmd_encaps(args: argparse.Namespace) -> int:
    from device.abe.store import AbeKeys
    from device.home import open_home

    with open_home(args.home, args.pin_file) as store:
        sealed = AbeKeys(store).encapsulate(args.authority, args.policy)
    ciphertext = base64.b64encode(sealed.ciphertext.encode()).decode()
    print(json.dumps({"ciphertext": ciphertext, "key_fingerprint": sealed.fingerprint}))
    return 0


def read_ciphertext(raw: bytes) -> bytes:
    """A ciphertext from stdin: base64, or the JSON object `otc abe encaps` prints."""
    if len(raw) > MAX_STDIN:
        raise MalformedAbeData("The ciphertext is too large.")
    text = raw.strip()
    try:
        if text.startswith(b"{"):
            text = str(json.loads(text)["ciphertext"]).encode()
        return base64.b64decode(text, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise MalformedAbeData("The ciphertext is not base64 (nor the JSON of `otc abe encaps`).") from None


def cmd_decaps(args: argparse.Namespace) -> int:
    from device.abe.scheme import key_fingerprint
    from device.abe.store import AbeKeys
    from device.home import open_home

    data = read_ciphertext(sys.stdin.buffer.read(MAX_STDIN + 1))
    with open_home(args.home, args.pin_file) as store:
        key = AbeKeys(store).decapsulate(data)
    print(json.dumps({"key_fingerprint": key_fingerprint(key)}))
    return 0


def _shown(args: argparse.Namespace, method: str) -> dict | None:
    """What the read-only RPC ``method`` answers (from the device, or the home's store with --home); printed
    and None with --json."""
    if args.device:
        answer = _device(args).call(method)
    else:
        from device.abe import rpc
        from device.home import open_home

        with open_home(args.home, args.pin_file) as store:
            answer = getattr(rpc, method)(store)
    if args.json:
        print(json.dumps(answer, indent=2))
        return None
    return answer  # type: ignore[no-any-return]


def cmd_status(args: argparse.Namespace) -> int:
    status = _shown(args, "abe_status")
    if status is None:
        return 0
    if not status["authorities"]:
        print("No attribute authorities: run `otc abe authority` or receive a key with `otc abe grant join`.")
    held = status.get("held", [])
    for a in status["authorities"]:
        own = " (this device)" if a["own"] else ""
        print(f"Authority {a['name']}{own}, fingerprint {a['fingerprint']}")
        if a["own"] and a.get("period"):
            p = a["period"]
            print(f"  period {p['period']} running, until {p['ends']}")
        for k in held:
            if k["authority"] == a["name"]:
                print(f"  key held for {', '.join(k['attributes'])}{_validity(k)}")
    for warning in status.get("warnings", []):
        print(f"WARNING: {warning}")
    if status["issued"]:
        print("Issued:")
    for i in status["issued"]:
        print(f"  {i['issued']}  {i['member']:<20} {', '.join(i['attributes'])} ({i['how']}, key {i['key_id'][:16]})")
    return 0


def _validity(k: dict) -> str:
    if k.get("period") is None:
        return " (no period: from before periods)"
    state = {"expiring": ", renewal due", "expired": ", EXPIRED", "future": ", not yet begun",
             "withdrawn": ", WITHDRAWN: replaced by a later period, never used",
             "ended": ", ENDED EARLY by the authority"}.get(k["state"], "")
    return f" (period {k['period']}, {k['starts']} to {k['ends']}{state})"


def cmd_members(args: argparse.Namespace) -> int:
    members = _shown(args, "abe_members")
    if members is None:
        return 0
    if not members["issued"]:
        print("This authority has issued no key yet.")
    # A member's keys of earlier periods are not what a renewal renews (a cold run read them as "renewable").
    newest: dict[str, int] = {}
    for i in members["issued"]:
        if i["period"] is not None:
            newest[i["member"]] = max(newest.get(i["member"], i["period"]), i["period"])
    for i in members["issued"]:
        period = f"period {i['period']} until {i['ends']}" if i["period"] is not None else "no period"
        if i["period"] is not None and i.get("withdrawn", i["starts"] == i["ends"]):  # (older devices: text)
            period = f"period {i['period']} withdrawn {i['ends']}"
        later = newest.get(i["member"])
        revoked = (f"REVOKED {i['revoked']}" if i["revoked"] else
                   f"renewed (period {later})" if later is not None and (i["period"] or 0) < later else "renewable")
        cut = (f"  {plural(i['rooms_cut'], 'room')} CUT (more rooms than a key carries secrets of)"
               if i.get("rooms_cut") else "")
        print(f"{i['member']:<20} {', '.join(i['attributes']):<24} {period}  {revoked}  key {i['key_id'][:16]}{cut}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    if args.device:
        revoked = _asking(_device(args), "abe_revoke", member=args.member)["revoked"]
    else:
        from device.abe.store import AbeKeys
        from device.home import open_home

        with open_home(args.home, args.pin_file) as store:
            revoked = [i.to_dict() for i in AbeKeys(store).revoke(args.member)]
    print(f"Revoked {plural(len(revoked), 'key')} of {revoked[0]['member']}: no renewal from now on. Its last "
          f"period ends {max(str(i['ends']) for i in revoked)}.")
    return 0


def cmd_renew(args: argparse.Namespace) -> int:
    from client.errors import RelayUnavailable
    from client.relay import RelayClient

    if args.resend:
        return _resend(args)
    relay: RelayClient | None
    if args.device:
        device = _device(args)
        relay_url = device.state.resolve_relay(args.relay)
        answer = _asking(device, "abe_renew", **({"member": args.member} if args.member else {}),
                         end_period=args.end_period, **({"period": args.period} if args.period else {}),
                         **({"again": True} if args.again else {}))
        period, renewals, left = answer["period"], answer["renewals"], answer["left"]
        cut = answer.get("cut", [])
        failed, running = answer.get("failed", []), answer.get("running")
        withdrawn = answer.get("withdrawn")
        relay = RelayClient(relay_url, on_answer=device.state.relay_answered)
    else:
        from device.abe.renewal import check_again, plan_renewal, renew
        from device.abe.store import AbeKeys
        from device.home import open_home

        with open_home(args.home, args.pin_file) as store:
            keys = AbeKeys(store)
            plan = plan_renewal(keys, args.member, args.end_period, args.period)
            check_again(plan, args.again)
            with _randomness([]) as random_bytes:
                done = renew(keys, plan, random_bytes)
            renewals, failed = [r.to_dict() for r in done], done.failed
            period, left, cut = plan.period.to_dict(), plan.left, plan.cut
            withdrawn = plan.withdraws.to_dict() if plan.withdraws is not None else None
            running = plan.running.to_dict() if plan.catch_up and plan.running is not None else None
        relay = RelayClient(args.relay) if args.relay else None
    if relay is None:
        for r in renewals:
            print(json.dumps({"mailbox": r["mailbox"], "package": r["package"], "member": r["member"]}))
    else:
        try:
            for r in renewals:
                relay.send(r["mailbox"], r["package"], r["key_id"])
        except RelayUnavailable as exc:
            done_text = (f"period {period['period']} began now (the running one ended early)" if args.end_period
                         else f"renewals for period {period['period']} were issued")
            raise RelayUnavailable(f"{str(exc).rstrip('.')}: but the renewal was done ({done_text}; "
                              f"{plural(len(renewals), 'package')} kept): `otc abe renew --resend` delivers them once "
                              "the relay answers. Do not end the period early again.") from None
    out = sys.stderr if relay is None else sys.stdout
    sent = "; sent through the relay" if relay is not None else ""
    if running is not None:  # members that held no key of the running period got it (not the next one's)
        caught = [r["member"] for r in renewals if r.get("period") == running["period"]]
        renewals_next = [r for r in renewals if r.get("period") != running["period"]]
        print(f"Gave {plural(len(caught), 'member')} the running period {running['period']}'s key ({running['starts']} "
              f"to {running['ends']}), holding none of it{': ' + ', '.join(caught) if caught else ''}"
              f"{sent if caught else ''}.", file=out)
    else:
        renewals_next = renewals
    if renewals_next or running is None:
        print(f"Renewed {plural(len(renewals_next), 'member')} for period {period['period']} ({period['starts']} to "
              f"{period['ends']}){': ' + ', '.join(r['member'] for r in renewals_next) if renewals_next else ''}"
              f"{sent if renewals_next else ''}.", file=out)
    if withdrawn is not None:
        print(f"Period {withdrawn['period']}, issued ahead, is withdrawn: its keys open no room's epochs once the "
              f"rooms move to period {period['period']}.", file=sys.stderr if relay is None else sys.stdout)
    for why in left:
        print(f"Not renewed: {why}", file=sys.stderr if relay is None else sys.stdout)
    for why in cut:
        print(f"Renewed without some rooms' secrets (more rooms than a key carries): {why}",
              file=sys.stderr if relay is None else sys.stdout)
    for why in failed:
        print(f"Not renewed (failed; the others were): {why}", file=sys.stderr)
    if not renewals:
        print("A member renewed for this period already has its package: if the relay lost it, "
              "otc abe renew --resend sends it again.", file=sys.stderr if relay is None else sys.stdout)
    return 1 if failed else 0


def _resend(args: argparse.Namespace) -> int:
    """``otc abe renew --resend``: the kept packages, posted again as they were."""
    import secrets

    from client.relay import RelayClient

    if args.end_period or args.period:
        raise UsageError("--resend sends what was sent: it takes no --end-period or --period.")
    relay: RelayClient | None
    if args.device:
        device = _device(args)
        renewals = device.call("abe_renew", resend=True, **({"member": args.member} if args.member else {}))[
            "renewals"]
        relay = RelayClient(device.state.resolve_relay(args.relay), on_answer=device.state.relay_answered)
    else:
        from device.abe.renewal import RenewalPads
        from device.abe.store import AbeKeys
        from device.home import open_home

        with open_home(args.home, args.pin_file) as store:
            renewals = [r.to_dict() for r in RenewalPads(AbeKeys(store)).resend(args.member)]
        relay = RelayClient(args.relay) if args.relay else None
    for r in renewals:
        if relay is None:
            print(json.dumps({"mailbox": r["mailbox"], "package": r["package"], "member": r["member"]}))
        else:  # a new message id: a relay that lost the package may still remember the first one's
            relay.send(r["mailbox"], r["package"], f"{r['key_id']}-{secrets.token_hex(4)}")
    print(f"Re-sent {plural(len(renewals), 'renewal')}"
          f"{': ' + ', '.join(r['member'] for r in renewals) if renewals else ''} (the same packages: no pad "
          "used, nothing issued).", file=sys.stderr if relay is None else sys.stdout)
    return 0


def cmd_renewals(args: argparse.Namespace) -> int:
    from client.relay import RelayClient

    if args.device:
        from client.rooms import fetch_renewals

        device = _device(args)
        got = fetch_renewals(device, RelayClient(device.state.resolve_relay(args.relay),
                                                 on_answer=device.state.relay_answered))
    else:
        if not args.relay:
            raise UsageError("With --home, give --relay URL.")
        got = _renewals_here(args, RelayClient(args.relay))
    for g in got:
        if g["outcome"] == "stored":
            k = g["key"]
            print(f"Stored a renewed key for {', '.join(k['attributes'])} from authority {k['authority']} "
                  f"(period {k['period']}, {k['starts']} to {k['ends']}).")
        elif g["outcome"] == "refused":
            print(f"otc: a renewal was refused: {g['reason']}", file=sys.stderr)
    if not any(g["outcome"] == "stored" for g in got):
        print("No new renewal.")
    return 0


def _renewals_here(args: argparse.Namespace, relay) -> list[dict]:  # type: ignore[no-untyped-def]
    import time

    from client.errors import RelayRefused, RelayUnavailable
    from device.abe.renewal import RenewalPads, RenewalRefused
    from device.abe.store import AbeKeys
    from device.errors import DeviceError
    from device.home import open_home
    from onetimechat import package as fmt

    out: list[dict] = []
    with open_home(args.home, args.pin_file) as store:
        pads = RenewalPads(AbeKeys(store))
        cursors = {m: 0 for m in pads.mailboxes()}
        messages, _ = relay.receive(cursors, limit=500) if cursors else ([], True)
        read_from = relay.store_seen  # named in the acknowledgement: a store swapped meanwhile refuses it
        done: dict[str, int] = {}  # per mailbox, the last ref through which every package is finished with
        try:
            for m in messages:
                final = True
                try:
                    held = pads.open(fmt.decode(m.contents))
                except (RenewalRefused, DeviceError) as exc:
                    final = isinstance(exc, RenewalRefused)
                    out.append({"outcome": "used" if "opened already" in str(exc) else "refused",
                                "reason": str(exc)})
                else:
                    out.append({"outcome": "stored", "key": held.to_dict(time.time())})
                if final and done.get(m.mailbox, 0) >= 0:
                    done[m.mailbox] = m.ref
                else:
                    done[m.mailbox] = -1  # read again next time from here
        finally:
            pads.flush_refusals()  # those beyond the log budget, as one row
    # The relay may delete them: the next read does not hand the device its opened renewals again (replays).
    for mailbox, through in done.items():
        if through > 0:
            try:
                relay.ack(mailbox, through, store=read_from)
            except (RelayUnavailable, RelayRefused):  # StoreChanged too: nothing deleted, the next run reads again
                break
    return out


# -- in person ---------------------------------------------------------------------------


def _timed(sock: socket.socket) -> socket.socket:
    sock.settimeout(IDLE_TIMEOUT_S)
    return sock


def _randomness(urls: list[str]):  # type: ignore[no-untyped-def]
    """The key material's randomness: the HRNG mixer when given sources, else the OS CSPRNG."""
    from hrng.mixer import pad_random

    return pad_random(urls) if urls else contextlib.nullcontext(os.urandom)


def _grant_from_laptop(args: argparse.Namespace, role: str, device: DeviceClient, sock: socket.socket) -> int:
    """The laptop carries the grant between its device and the other laptop; the owners confirm on the devices."""
    from client.ceremony import carry

    shown = False

    def on_status(status: dict) -> None:
        nonlocal shown
        if status.get("sas") and not shown:
            shown = True
            print(f"Pairing string: {status.get('sas')}; attributes {', '.join(status.get('attributes', []))} "
                  f"from authority {status.get('authority')} (fingerprint {status.get('authority_fingerprint')}) "
                  f"to {status.get('member')}: compare them on both devices' screens and confirm there", flush=True)

    params: dict = {"attributes": args.attributes} if role == "host" else {}
    if role == "host" and args.period is not None:
        params["period"] = args.period
    status = carry(device, role, sock, on_status=on_status, kind="grant", **params)
    attributes = ", ".join(status.get("attributes", []))
    if role == "host":
        print(f"Issued a key for {attributes} to {status.get('member')} (key {str(status.get('key_id'))[:16]}).")
    else:
        print(f"Stored a key for {attributes} from authority {status.get('authority')} "
              f"(key {str(status.get('key_id'))[:16]}).")
    print(f"Grant fingerprint {status.get('fingerprint')}: both devices' screens show it; compare them.")
    return 0


def cmd_grant_host(args: argparse.Namespace) -> int:
    from client.ceremony import from_laptop

    if from_laptop(args):
        device = _device(args)
        if not any(a["own"] for a in device.call("abe_status")["authorities"]):
            raise NotAnAuthority()  # a clear error before waiting for the member
        return _grant_from_laptop(args, "host", device, accept_one(args.listen))
    from device.abe.grant import confirm_grant, grant_host
    from device.abe.store import AbeKeys
    from device.home import open_home

    confirm = confirm_grant(args.confirm)
    with open_home(args.home, args.pin_file) as store:
        AbeKeys(store).master()  # a clear error before waiting if this device is no authority
        with _randomness(args.hrng) as random_bytes:
            wire = Wire(_timed(accept_one(args.listen)))
            try:
                key = grant_host(store, wire, args.attributes, confirm, random_bytes, args.period)
            finally:
                wire.close()
    print(f"Issued a key for {', '.join(key.attributes)} (key {key.key_id.hex()[:16]}); grant fingerprint "
          f"{key.fingerprint}: the other screen must show the same.")
    return 0


def cmd_grant_join(args: argparse.Namespace) -> int:
    from client.ceremony import from_laptop

    if from_laptop(args):
        return _grant_from_laptop(args, "join", _device(args), connect(args.connect, "a grant"))
    from device.abe.grant import confirm_grant, grant_join
    from device.home import open_home

    confirm = confirm_grant(args.confirm)
    with open_home(args.home, args.pin_file) as store:
        with _randomness(args.hrng) as random_bytes:
            wire = Wire(_timed(connect(args.connect, "a grant")))
            try:
                key = grant_join(store, wire, confirm, random_bytes)
            finally:
                wire.close()
    print(f"Stored a key for {', '.join(key.attributes)} (key {key.key_id.hex()[:16]}); grant fingerprint "
          f"{key.fingerprint}: the other screen must show the same.")
    return 0
