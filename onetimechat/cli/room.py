"""`otc room ...`: attribute-based rooms (DESIGN.md "Attribute-based rooms").

``create`` runs on the authority's device (like `otc abe`); the others go
through a paired device and a relay, moving only room items.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

from client.errors import RelayUnavailable
from client.relay import MAX_WAIT_S, RelayClient
from client.rooms import KEY_WAIT_S, RoomClient, find_room, store_notice
from client.rpc import DeviceClient
from onetimechat.cli.common import command_group, device_and_relay, home_or_device
from onetimechat.errors import UsageError
from onetimechat.text import plural, visible


def register(parts: argparse._SubParsersAction) -> None:
    sub = command_group(parts, "room", "attribute-based rooms",
                        "Group rooms whose members are defined by attributes. Keys and epoch secrets stay on the "
                        "device; the laptop moves room items through the relay.")

    p = sub.add_parser("create", help="create a room on this authority's device",
                       description="Create a room of this device's attribute authority; prints its invite "
                       "(public: it lets a device with matching keys join, and opens nothing by itself). With "
                       "--device, on the authority device this laptop is paired with.")
    home_or_device(p, device="the authority device")
    p.add_argument("--name", required=True, help="the room's name")
    p.add_argument("--policy", required=True, help="who may read, e.g. 'STAFF and (ADMIN or OPS)'")
    p.set_defaults(func=cmd_create)

    for name, help_text, extra in (
            ("add", "add a room to the device from its invite", "invite"),
            ("join", "post this device's contribution to a room", "room"),
            ("leave", "leave a room (the device deletes its membership keys)", "room"),
            ("list", "the device's rooms: members, epoch, whether it holds the epoch key", None),
            ("invite", "print a room's invite again, to add the room on another device (invites are public)",
             "room")):
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        device_and_relay(p)
        if extra:
            p.add_argument(extra, metavar=extra.upper(),
                           help="the invite string `otc room create` printed" if extra == "invite"
                           else "the room's name (or its id)")
        if name == "add":
            p.add_argument("--own", action="store_true",
                           help="on the authority's device: record this re-added room as one it created (its "
                           "state lost before an upgrade), so keys issued from now on carry its secret; the "
                           "device shows the policy and asks")
        if name == "join":
            p.add_argument("--name", metavar="NAME", dest="display",
                           help="the name the room shows for you (letters, digits, . _ -; default: the "
                           "device's name); bound to this membership's keys, so no other member can use it "
                           "unnoticed")
        p.set_defaults(func=globals()[f"cmd_{name}"])

    p = sub.add_parser("send", help="send a message to a room (confirmed on the device)",
                       description="Send MESSAGE to ROOM under its current epoch key, after the device's owner "
                       "confirms it (the screen shows the room, its policy and the member count).")
    device_and_relay(p)
    p.add_argument("room", metavar="ROOM", help="the room's name (or its id)")
    p.add_argument("message", metavar="MESSAGE", help="the text to send; - reads it from stdin")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("recv", help="receive room messages",
                       description="Read every room's new items through the device; print the messages it opened.")
    device_and_relay(p)
    p.add_argument("--wait", type=float, default=0, metavar="S",
                   help=f"wait up to S seconds for something new (at most {MAX_WAIT_S})")
    p.add_argument("--json", action="store_true", help="one JSON object per message")
    p.set_defaults(func=cmd_recv)


def _client(args: argparse.Namespace) -> RoomClient:
    device = DeviceClient(args.device)
    relay = RelayClient(device.state.resolve_relay(args.relay), on_answer=device.state.relay_answered)
    return RoomClient(device, relay)


def cmd_create(args: argparse.Namespace) -> int:
    if args.device:
        if args.pin_file:
            raise UsageError("With --device, the device uses its own PIN; --pin-file is for --home.")
        status = DeviceClient(args.device).call("room_create", name=args.name, policy=args.policy)
        name, policy, authority, invite = status["room"], status["policy"], status["authority"], status["invite"]
    else:
        from device.confirm import AutoConfirm
        from device.home import open_home
        from device.rooms.service import DeviceRooms

        with open_home(args.home, args.pin_file) as store:
            room = DeviceRooms(store, AutoConfirm()).create(args.name, args.policy)  # creating encrypts nothing
        name, policy, authority, invite = room.name, room.policy.text, room.authority, room.invite()
    print(f"Room {name} ({policy}) of authority {authority}. Invite:")
    print(invite)
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    params = {"own": True} if args.own else {}
    client = _client(args)
    status = client.device.call("room_add", invite=args.invite, **params)
    print(f"Added room {status['room']} ({status['policy']})" + (", recorded as this authority's own." if args.own
                                                                 else "."))
    if status.get("warning"):
        print(f"otc: warning: {status['warning']}", file=sys.stderr)
    if args.relay:
        # As --relay's help says: remembered, once it has answered (adding needs nothing from it).
        try:
            client.relay.online()
        except RelayUnavailable as exc:
            print(f"otc: warning: {exc} Not remembered.", file=sys.stderr)
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    client = _client(args)
    client.sync(args.room, on_events=lambda events: show_events(args.room, events))
    client.join(args.room, args.display)
    client.sync(args.room, on_events=lambda events: show_events(args.room, events))
    shown = client.room(args.room).get("display_name") or args.display
    print(f"Joined {args.room} as {shown}: the room's key comes with its leader's next distribution.")
    return 0


def cmd_leave(args: argparse.Namespace) -> int:
    client = _client(args)
    client.leave(args.room)
    print(f"Left {args.room}; this device deleted its keys for it.")
    return 0


def _device_rooms(args: argparse.Namespace) -> list[dict]:
    """The device's rooms, as it holds them: no relay needed (a `--relay` given is not used)."""
    return DeviceClient(args.device).call("rooms")


def cmd_list(args: argparse.Namespace) -> int:
    for room in _device_rooms(args):
        state = "member" if room["joined"] else "joining" if room["joining"] else "not joined"
        # After a leave the device keeps old epoch keys for the grace period, but holds no membership: no key.
        epoch = ("no epoch yet" if room["epoch"] is None else
                 f"epoch {room['epoch']} ({_members(room['epoch_members'])}, "
                 f"{'key held' if room['keyed'] and room['joined'] else 'no key'})")
        print(f"{room['room']}: {room['policy']} -- {state}, {room['members']} on the roster, {epoch}")
        if room.get("unrecorded"):
            print(f"  warning: this authority has no record of creating {room['room']}: members get no secret "
                  "for its tagged periods (`otc room add --own INVITE` records it, confirmed on the device)")
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    room = find_room(_device_rooms(args), args.room)
    print(f"Room {room['room']} ({room['policy']}). Invite:")
    print(room["invite"])
    return 0


def _members(n: int | None) -> str:
    return plural(n or 0, "member")


def later_period_hint(room: dict) -> str | None:
    """A line for a joined member whose room holds contributions under a later key period this device cannot
    judge (it holds no begun key of it, and is not moving there): if the members moved, they refuse what it sends
    as late, and it was not told (a cold run: a revoked member's `room send` said "sent" and nothing else)."""
    later = [p for p in room.get("later_periods") or () if p > room["period"] and p != room.get("moving_to")]
    if not room.get("joined") or not later:
        return None
    return (f"otc: #{room['room']}: contributions under key period {later[0]} are on the relay, and this device "
            f"holds no begun key of that period: if the members moved there, what it sends under period "
            f"{room['period']} is refused as late and it reads nothing new. Its renewal comes with `otc room recv` "
            "(`otc abe status` shows its keys); a member the authority revoked gets none.")


def cmd_send(args: argparse.Namespace) -> int:
    from onetimechat.cli.messages import message_text

    text = message_text(args.message)
    client = _client(args)

    def waiting(room: dict) -> None:
        what = (f"this device's move to key period {room['moving_to']} (its renewed key) and the new epoch's key"
                if room.get("moving_to") else "the epoch key the membership change calls for")
        print(f"otc: {room['room']}: waiting for {what} (up to {KEY_WAIT_S:.0f} s)…", file=sys.stderr, flush=True)

    # What the send's syncs fetch (messages not read yet among them) is shown at once: before the device asks
    # its owner, and whether or not the owner declines.
    client.send(args.room, text, on_wait=waiting, on_events=lambda events: show_events(args.room, events))
    print(f"sent to #{args.room}")
    after = client.sync(args.room)
    mine = next((i for i, e in enumerate(after) if e.get("kind") == "message" and e.get("own")
                 and e.get("text") == text), None)
    show_events(args.room, [e for i, e in enumerate(after) if i != mine])  # all but the message just sent
    hint = later_period_hint(client.room(args.room))
    if hint:
        print(hint, file=sys.stderr)
    return 0


def cmd_recv(args: argparse.Namespace) -> int:
    from client.rooms import fetch_renewals

    client = _client(args)
    # Renewed attribute keys first (sent on the renewal pads): the device moves its rooms to the new period.
    for got in fetch_renewals(client.device, client.relay):
        if got["outcome"] == "stored":
            k = got["key"]
            line = (f"renewed key stored: {', '.join(k['attributes'])} from {k['authority']}, period {k['period']} "
                    f"until {k['ends']}")
            print(json.dumps({"renewal": k}) if args.json else f"[{k['authority']}] {line}")
    for room in client.rooms():
        # Each batch's events are printed as soon as the device has read it (its cursor is past them then).
        client.sync(room["room_id"], wait=args.wait, on_events=functools.partial(show_events, room["room"],
                                                                                 as_json=args.json))
    sys.stdout.flush()
    for room in client.rooms():
        hint = later_period_hint(room)
        if hint:
            print(hint, file=sys.stderr)
    return 0


def show_events(room: str, events: list[dict], as_json: bool = False) -> None:
    """Print a sync's events as `room recv` does: the device has moved its cursor past them, so whatever
    fetched them (a recv, a send, a join) shows them, or nothing ever will."""
    unreadable = 0  # in a row: one line for them (a newcomer's first read meets the room's whole history)

    def flush() -> None:
        nonlocal unreadable
        if unreadable:
            print(f"[{room}] {'a message' if unreadable == 1 else f'{unreadable} messages'} this device cannot "
                  "open (sent under an epoch this device holds no key for: before it joined, while it was away, "
                  "or before its key came)")
        unreadable = 0

    for event in events:
        if event.get("kind") == "store":
            flush()
            print(json.dumps({"room": room, **event}) if as_json else f"[{room}] {store_notice(event)}")
            continue
        if event.get("kind") == "message" and event.get("outcome") == "unreadable" and not as_json:
            unreadable += 1
            continue
        flush()
        if event.get("kind") == "message" and event.get("outcome") in ("unreadable", "refused", "late"):
            why = {"unreadable": "sent under an epoch this device holds no key for",
                   "late": f"from {event.get('sender')}, under a key period that had ended: sent after the "
                           "room moved on, not shown"}.get(event["outcome"], "refused: forged or altered")
            if as_json:
                print(json.dumps({"room": room, **event}))
            else:
                print(f"[{room}] a message this device cannot open ({why})")
            continue
        if event.get("kind") == "distribution" and event.get("outcome") == "mismatch":
            line = (f"[{room}] alarm: {event.get('sender')} sealed this device another key than the one "
                    "its distribution commits to; refused, objection posted (the room re-keys)")
            print(json.dumps({"room": room, **event}) if as_json else visible(line))
            continue
        if event.get("kind") == "contribution" and event.get("outcome") == "copied":
            line = (f"[{room}] warning: another membership posted a copy of this device's contribution before it "
                    "(only a member can); the device contributes again")
            print(json.dumps({"room": room, **event}) if as_json else line)
            continue
        if event.get("text") is None:
            continue
        if as_json:
            print(json.dumps({"room": room, **event}))
        else:
            # A member's text as it came could drive the terminal: every hidden character shown visibly.
            print(visible(f"[{room}] {event['sender']}{' (me)' if event.get('own') else ''}: "
                          f"{event['text']}"))
    flush()
