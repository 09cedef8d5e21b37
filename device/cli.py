"""`otc device ...` and `otc pad ...`: the device's own commands (DESIGN.md)."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from pathlib import Path

from device import package as fmt
from device.clients import ClientRegistry
from device.confirm import DEFAULT_TIMEOUT_S, MODES, ConfirmBroker, make_source
from device.engine import Device
from device.errors import InvalidMessage
from device.localpair import check_size, pair_local
from device.storage.padstore import PadStore
from onetimechat.errors import UsageError
from onetimechat.progress import Progress
from onetimechat.text import format_event

_SIZE_RE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``1048576``, ``1M``, ``64KiB``, ``2g`` -> bytes (powers of 1024)."""
    m = _SIZE_RE.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1048576, 64K or 1M)")
    return int(m.group(1)) * 1024 ** "_kmgt".index(m.group(2).lower() or "_")


def register(parts: argparse._SubParsersAction) -> None:
    dev = parts.add_parser("device", help="the pad device's own commands",
                           description="Commands that run on the pad device (or an emulated one).")
    sub = dev.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("init", help="create a device in a home directory",
                       description="Create a new pad device in --home (not PIN-locked).")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--name", required=True, help="this device's name, which its contacts see")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("package", help="encrypt stdin for a contact",
                       description="Read a message on stdin and print its base64 package on stdout. "
                       "Run on the device itself, the command is its owner's own act; --confirm "
                       "asks again through a confirmation source.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--confirm", choices=MODES, help="ask for confirmation this way first")
    p.add_argument("contact", metavar="CONTACT", help="who the message is for")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("unpackage", help="verify and decrypt a package from stdin",
                       description='Read a base64 package on stdin and print '
                       '{"contact", "kind", "text", "warnings"} as JSON. A refused package '
                       "exits non-zero with one line on stderr and prints no plaintext.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.set_defaults(func=cmd_unpackage)

    p = sub.add_parser("status", help="contacts, pad left per direction, warnings",
                       description="Show contacts, pad left per direction, warnings and recent events.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("log", help="the device's event log",
                       description="Show the device-local event log (never pad bytes or plaintext).")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--limit", type=int, default=50, help="how many recent events (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON, one object per line")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("serve", help="serve the device RPC to paired laptops",
                       description="Serve the device RPC on exactly one address (the cable-side one). "
                       "Every package call waits for the owner's confirmation.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="the address to serve on (a literal IP)")
    p.add_argument("--confirm", required=True, choices=MODES, help="where confirmations come from")
    p.add_argument("--confirm-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"decline when the owner does not answer in time (default {DEFAULT_TIMEOUT_S:.0f})")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("clients", help="list the laptops paired with this device",
                       description="List paired laptops (never their keys).")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_clients)

    p = sub.add_parser("revoke", help="revoke a paired laptop",
                       description="Revoke a paired laptop: its calls are refused from now on.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("client_id", metavar="CLIENT_ID", help="the client's id, or a unique prefix of it")
    p.set_defaults(func=cmd_revoke)

    pad = parts.add_parser("pad", help="pads between devices",
                           description="Make pads between devices.")
    psub = pad.add_subparsers(dest="command", metavar="COMMAND")
    psub.required = True
    p = psub.add_parser("pair-local", help="a pad between two devices on one machine (development, demo)",
                        description="Make a pad shared by two device homes on this machine; "
                        "HOME_A becomes the initiator. For development and demos: the pad never "
                        "leaves this machine's disk, but this machine saw it.")
    p.add_argument("--size", required=True, type=parse_size, help="pad size in bytes (e.g. 1M)")
    p.add_argument("home_a", metavar="HOME_A", type=Path)
    p.add_argument("home_b", metavar="HOME_B", type=Path)
    p.set_defaults(func=cmd_pair_local)


def cmd_serve(args: argparse.Namespace) -> int:
    from device.server import Server, ServerConfig, parse_listen

    host, port = parse_listen(args.listen)
    if args.confirm_timeout <= 0:
        raise UsageError("--confirm-timeout must be positive.")
    with PadStore(args.home):
        pass  # a clear error now if the home holds no device
    source = make_source(args.confirm, args.home)
    server = Server(ServerConfig(home=args.home, source=source, confirm_timeout=args.confirm_timeout), host, port)
    name = server.app.extensions["otc"].store.device_name
    try:
        signal.signal(signal.SIGTERM, _raise_interrupt)
        print(f"otc: device {name} serving on {server.url} (confirm mode: {args.confirm}, "
              f"timeout {args.confirm_timeout:g} s)", flush=True)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        print("otc: device server stopped", file=sys.stderr)
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough
    raise KeyboardInterrupt


def cmd_clients(args: argparse.Namespace) -> int:
    with PadStore(args.home) as store:
        clients = [c.to_dict() for c in ClientRegistry(store).list()]
    if args.json:
        print(json.dumps(clients, indent=2))
        return 0
    if not clients:
        print("No paired laptops.")
    for c in clients:
        state = f"revoked {c['revoked']}" if c["revoked"] else f"last used {c['last_used'] or 'never'}"
        print(f"{c['client_id']}  {c['name']:<20} paired {c['created']}, {state}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with PadStore(args.home) as store:
        registry = ClientRegistry(store)
        client = registry.find(args.client_id)
        if client is None:
            raise UsageError("No single paired laptop matches that id; see `otc device clients`.")
        if not registry.revoke(client.client_id):
            print(f"Laptop {client.name} ({client.client_id.hex()}) was already revoked.")
        else:
            print(f"Revoked laptop {client.name} ({client.client_id.hex()}).")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    with PadStore.init(args.home, args.name) as store:
        print(f"Device {store.device_name} created in {args.home} (not PIN-locked).")
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    confirm = ConfirmBroker(make_source(args.confirm, args.home)) if args.confirm else None
    plaintext = sys.stdin.buffer.read()
    try:
        plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("The message is not valid UTF-8 text.") from None
    with Device.open(args.home, confirm) as device:
        result = device.package(args.contact, plaintext)
    sys.stdout.write(fmt.encode(result.package) + "\n")
    sys.stdout.flush()
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_unpackage(args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read()
    with Device.open(args.home) as device:
        result = device.unpackage_base64(data)
    print(json.dumps(result.to_json(), ensure_ascii=False))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with Device.open(args.home) as device:
        status = device.status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    dev = status["device"]
    print(f"Device {dev['name']} (id {dev['device_id'][:16]}, not PIN-locked)")
    if not status["contacts"]:
        print("No contacts yet: pair with `otc pad pair-local` or `otc pair`.")
    for contact in status["contacts"]:
        print(f"Contact {contact['name']} ({len(contact['pads'])} pad(s))")
        for label, key in (("  send to", "send"), ("  receive from", "receive")):
            d = contact[key]
            pct = 100.0 * d["left"] / d["total"] if d["total"] else 0.0
            print(f"{label:<15} {d['used']} of {d['total']} pad bytes used, {d['left']} left ({pct:.1f}%)")
    print("Warnings:" if status["warnings"] else "Warnings: none")
    for warning in status["warnings"]:
        print(f"  {warning}")
    if status["events"]:
        print("Recent events:")
        for event in status["events"]:
            print("  " + format_event(event))
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    with Device.open(args.home) as device:
        events = device.store.events(max(args.limit, 0))
    for event in events:
        print(json.dumps(event) if args.json else format_event(event))
    return 0


def cmd_pair_local(args: argparse.Namespace) -> int:
    if args.home_a.resolve() == args.home_b.resolve():
        raise UsageError("HOME_A and HOME_B must be two different devices.")
    check_size(args.size)
    with PadStore(args.home_a) as a, PadStore(args.home_b) as b:
        print("otc: pad bytes come from the operating system's CSPRNG, not a hardware RNG: "
              "development and demo use only", file=sys.stderr)
        progress = Progress(args.size, "pad")
        pad_id = pair_local(a, b, args.size, progress=progress.update)
        progress.finish()
        half = args.size // 2
        print(f"Paired {a.device_name} (initiator) and {b.device_name} (responder): "
              f"pad {pad_id.hex()[:16]} of {args.size} bytes, {half} for {a.device_name} to send "
              f"and {args.size - half} for {b.device_name}.")
    return 0
