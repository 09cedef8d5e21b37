"""`otc pair host` and `otc pair join`: the pairing ceremony, one on each device."""

from __future__ import annotations

import argparse
import socket

from device.confirm import MODES, compare_pairing_string
from device.padsize import check_size
from hrng.errors import HRNGError
from onetimechat.cli.common import command_group, home_or_device
from onetimechat.errors import UsageError
from onetimechat.progress import Progress
from onetimechat.text import parse_size
from provisioning.link import CONNECT_WAIT_S, HOST, JOIN, accept_one, connect
from provisioning.view import CeremonyView
from provisioning.wire import Wire

# The laptop carrying its device's ceremony (--device) needs only the modules above, which a plain install (the
# laptop client) can import; the ceremony run on the device itself (--home) imports the device's stack when run.

IDLE_TIMEOUT_S = 600.0  # an owner may take a while to compare the pairing string


def register(parts: argparse._SubParsersAction) -> None:
    sub = command_group(parts, "pair", "pair two devices in person and make a pad",
                        "Pair two devices in person: run `otc pair host` on one and `otc pair join` on the "
                        "other, compare the pairing string both show, and they make a pad from both HRNGs. "
                        "With --home, on the device itself; with --device, from the laptop paired with it: the "
                        "laptops carry the ceremony and each owner compares and confirms on the device's own "
                        "screen.")
    for name, helptext in (("host", "host the ceremony (this device becomes the initiator)"),
                           ("join", "join a ceremony hosted by the other device")):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        home_or_device(p, on_device="(it runs the ceremony and asks its owner)")
        if name == "host":
            p.add_argument("--listen", required=True, metavar="HOST:PORT", help="where to wait for the other device")
            p.add_argument("--size", required=True, type=parse_size, help="pad size in bytes (e.g. 64M)")
        else:
            p.add_argument("--connect", required=True, metavar="HOST:PORT", help="the hosting device")
            p.add_argument("--wait", type=float, default=CONNECT_WAIT_S, metavar="SECONDS",
                           help=f"keep trying to reach the host this long (default {CONNECT_WAIT_S:.0f})")
        p.add_argument("--name", help="the contact's name here (default: the other device's name)")
        p.add_argument("--confirm", choices=MODES, default="tty",
                       help="who confirms the pairing string (default: tty)")
        p.add_argument("--hrng", action="append", default=[], metavar="URL",
                       help="a hardware random source to mix in (repeatable); without it, the OS CSPRNG alone")
        p.set_defaults(func=cmd_host if name == "host" else cmd_join)


def _run(args: argparse.Namespace, role: str, sock: socket.socket) -> int:
    from device.home import open_home
    from hrng.mixer import pad_random
    from provisioning.ceremony import Ceremony

    sock.settimeout(IDLE_TIMEOUT_S)
    wire = Wire(sock)
    bar: Progress | None = None

    def on_progress(view: CeremonyView) -> None:
        nonlocal bar
        if view.stage == "transfer":
            if bar is None:
                bar = Progress(view.total, "pad")
            bar.update(view.done)

    with open_home(args.home, args.pin_file) as store:
        def log_alarm(alarm: HRNGError) -> None:
            store.log_event(alarm.code, detail=str(alarm))

        with pad_random(args.hrng, on_alarm=log_alarm) as random_bytes:
            ceremony = Ceremony(
                store, role, random_bytes=random_bytes, compare=compare_pairing_string(args.confirm),
                size=getattr(args, "size", None), name=args.name, on_progress=on_progress,
                on_sas=lambda sas: print(f"Pairing string: {sas} (the other device must show the same)",
                                         flush=True),
            )
            try:
                record = ceremony.run(wire)
            finally:
                wire.close()
        if bar is not None:
            bar.finish()
        print(f"Paired with {record.contact}: pad {record.pad_id.hex()[:16]} of {record.size} bytes, "
              f"{'initiator' if role == HOST else 'responder'}.")
        print(f"Pad fingerprint: {ceremony.fingerprint} (the other device must show the same)", flush=True)
    return 0


def _run_from_laptop(args: argparse.Namespace, role: str, sock: socket.socket) -> int:
    from client.ceremony import carry
    from client.rpc import DeviceClient

    bar: Progress | None = None
    shown = ""

    def on_status(status: dict) -> None:
        nonlocal bar, shown
        if status.get("sas") and not shown:
            shown = str(status["sas"])
            print(f"Pairing string: {shown}: compare it on both devices' screens and confirm there", flush=True)
        if status.get("stage") == "transfer" and status.get("total"):
            if bar is None:
                bar = Progress(int(status["total"]), "pad")
            bar.update(int(status.get("done", 0)))

    status = carry(DeviceClient(args.device), role, sock, size=getattr(args, "size", None), name=args.name,
                   on_status=on_status)
    if bar is not None:
        bar.finish()
    print(f"Paired with {status.get('contact')}: pad {str(status.get('pad_id'))[:16]} of {status.get('size')} "
          f"bytes, {'initiator' if role == HOST else 'responder'}.")
    print(f"Pad fingerprint: {status.get('fingerprint')} (the other device must show the same)", flush=True)
    return 0


def _runner(args: argparse.Namespace):
    from client.ceremony import from_laptop

    if from_laptop(args):
        return _run_from_laptop
    # An install without the device's stack (a laptop's plain install) is refused first: `otc` names the extra.
    import provisioning.ceremony  # noqa: F401

    compare_pairing_string(args.confirm)  # a mode that cannot work is refused before anything listens or connects
    return _run


def cmd_host(args: argparse.Namespace) -> int:
    check_size(args.size)  # before anything listens: a joiner never waits for a refusal
    run = _runner(args)
    return run(args, HOST, accept_one(args.listen))


def cmd_join(args: argparse.Namespace) -> int:
    run = _runner(args)
    if not 0 < args.wait <= 3600:
        raise UsageError("--wait is a number of seconds above 0, at most 3600.")
    return run(args, JOIN, connect(args.connect, "a pairing", wait=args.wait))
