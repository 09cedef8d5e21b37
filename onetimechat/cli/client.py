"""`otc client ...`: pair this laptop with a device and look at it."""

from __future__ import annotations

import argparse
import json
import socket

from client.errors import ClientError
from client.rpc import DeviceClient, pair
from client.state import ClientState, home_help
from onetimechat import terminal
from onetimechat.text import format_event


def register(parts: argparse._SubParsersAction) -> None:
    cli = parts.add_parser("client", help="this laptop's link to its device",
                           description="Pair this laptop with a pad device and look at the device. "
                           "`otc client` alone shows what this laptop remembers.", epilog=home_help())
    cli.set_defaults(func=cmd_show)
    sub = cli.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("pair", help="pair this laptop with a device",
                       description="Pair this laptop with a device: the device shows a one-time code, "
                       "which you type here (or pass with --code). The device is remembered: later "
                       "commands need no --device (or take the device's name).", epilog=home_help())
    p.add_argument("--device", required=True, metavar="URL", help="the device, e.g. http://10.77.0.1:8470")
    p.add_argument("--code", help="the code the device shows (asked for if left out)")
    p.add_argument("--name", default=_default_name(), help="this laptop's name on the device (default: hostname)")
    p.set_defaults(func=cmd_pair)

    for name, helptext, func in (
        ("status", "the device's contacts, pad left and warnings", cmd_status),
        ("log", "the device's event log", cmd_log),
        ("clients", "the laptops paired with the device", cmd_clients),
    ):
        p = sub.add_parser(name, help=helptext, description=f"Show {helptext}.")
        p.add_argument("--device", metavar="NAME|URL", help=DEVICE_HELP)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)

    p = sub.add_parser("revoke", help="revoke a laptop paired with the device",
                       description="Revoke a paired laptop (this one too, if you name it).")
    p.add_argument("--device", metavar="NAME|URL", help=DEVICE_HELP)
    p.add_argument("client_id", metavar="CLIENT_ID", help="the client's id, or a unique prefix of it")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("show", help="what this laptop remembers: paired devices, the one in use, the relay",
                       description="Show the devices this laptop is paired with, the one used when --device "
                       "is left out, and the remembered relay.", epilog=home_help())
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("use", help="choose the device used when --device is left out",
                       description="Choose which paired device commands use when --device is left out.")
    p.add_argument("device", metavar="NAME|URL", help="a paired device's name or URL")
    p.set_defaults(func=cmd_use)


DEVICE_HELP = "the paired device's name or URL (default: the one remembered; see `otc client`)"


def _default_name() -> str:
    name = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in socket.gethostname())[:32]
    return name if name and name[0].isalnum() else "laptop"


def _ask_code() -> str:
    return terminal.ask("Type the pairing code the device shows: ",
                        no_terminal="No terminal to type the code on; pass it with --code.").strip()


def cmd_pair(args: argparse.Namespace) -> int:
    creds = pair(args.device, name=args.name, code=args.code, ask_code=_ask_code)
    print(f"Paired this laptop ({creds.name}) with device {creds.device_name} at {creds.url}.")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    state = ClientState()
    config = state.config()
    paired = state.paired()
    try:
        current = state.resolve_device(None) if paired else None
    except ClientError:
        current = None
    if getattr(args, "json", False):
        print(json.dumps({
            "home": str(state.home),
            "devices": [{"name": c.device_name, "url": c.url, "this_laptop": c.name, "in_use": c.url == current}
                        for c in paired],
            "relay": config.get("relay"),
        }, indent=2))
        return 0
    print(f"Client home: {state.home} (set OTC_CLIENT_HOME to use another)")
    if not paired:
        print("Paired devices: none yet; run `otc client pair --device URL`.")
    else:
        print("Paired devices:")
        for c in paired:
            mark = "  (in use when --device is left out)" if c.url == current else ""
            print(f"  {c.device_name:<16} {c.url}  as {c.name}{mark}")
        if current is None:
            print("  (several: name one with --device NAME, or `otc client use NAME`)")
    print(f"Relay: {config.get('relay') or 'none remembered yet (give --relay URL once)'}")
    return 0


def cmd_use(args: argparse.Namespace) -> int:
    state = ClientState()
    url = state.resolve_device(args.device)
    creds = state.load(url)
    state.remember(device=url)
    print(f"Using device {creds.device_name} at {url} when --device is left out.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = DeviceClient(args.device).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    confirm = status.get("confirm", {})
    print(f"Device {status['device']['name']} (confirm mode: {confirm.get('mode')})")
    for contact in status["contacts"]:
        print(f"  {contact['name']:<16} send: {contact['send']['left']} bytes left, "
              f"receive: {contact['receive']['left']} bytes left")
    for warning in status["warnings"]:
        print(f"  warning: {warning}")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    events = DeviceClient(args.device).events()
    for event in events:
        print(json.dumps(event) if args.json else format_event(event))
    return 0


def cmd_clients(args: argparse.Namespace) -> int:
    clients = DeviceClient(args.device).clients()
    if args.json:
        print(json.dumps(clients, indent=2))
        return 0
    for c in clients:
        mark = " (this laptop)" if c.get("this") else ""
        state = f"revoked {c['revoked']}" if c["revoked"] else f"last used {c['last_used'] or 'never'}"
        print(f"{c['client_id']}  {c['name']:<20} paired {c['created']}, {state}{mark}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    result = DeviceClient(args.device).revoke(args.client_id)
    print(f"Revoked {result['client_id']}." if result["revoked"] else f"{result['client_id']} was already revoked.")
    return 0
