"""`otc device ...` and `otc pad ...`: the device's own commands (DESIGN.md)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from device.clients import ClientRegistry
from device.confirm import DEFAULT_TIMEOUT_S, MODES, ConfirmBroker, ConfirmSource, make_source
from device.engine import ASK_MODE, ASK_MODES, GRANT_MODE, GRANT_MODES, GRANT_SHARE, Device
from device.errors import InvalidMessage, NothingToGrant, UnknownContact
from device.home import WrongPin, open_home
from device.localpair import pair_local
from device.padsize import check_size
from device.storage.lock import StoreLock, read_pin_file
from device.storage.padstore import PadStore
from hrng.errors import HRNGError
from hrng.mixer import pad_random
from onetimechat import package as fmt
from onetimechat.cli.common import command_group
from onetimechat.errors import UsageError
from onetimechat.progress import Progress
from onetimechat.text import format_event, parse_size

if TYPE_CHECKING:  # the screen and buttons load only where they run (`otc device serve`)
    from device.gpio import GpioPanel
    from device.touchscreen.app import TouchscreenApp
    from device.ui import Console


def register(parts: argparse._SubParsersAction) -> None:
    sub = command_group(parts, "device", "the pad device's own commands",
                        "Commands that run on the pad device (or an emulated one).")

    p = sub.add_parser("init", help="create a device in a home directory",
                       description="Create a new pad device in --home, PIN-locked with --pin-file. Without it "
                       "the home is not locked (anyone who copies it reads it): the command says so, unless "
                       "--no-pin says that is meant.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--name", required=True, help="this device's name, which its contacts see")
    lock = p.add_mutually_exclusive_group()
    lock.add_argument("--pin-file", type=Path, help="lock the device with the PIN (6+ digits) or passphrase "
                      "(8+ characters) on this file's first line")
    lock.add_argument("--no-pin", action="store_true", help="make a device that is not PIN-locked, on purpose "
                      "(development, the demo): no warning")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("package", help="encrypt stdin for a contact",
                       description="Read a message on stdin and print its base64 package on stdout. "
                       "Run on the device itself, the command is its owner's own act; --confirm "
                       "asks again through a confirmation source.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--confirm", choices=MODES, help="ask for confirmation this way first")
    p.add_argument("contact", metavar="CONTACT", help="who the message is for")
    p.add_argument("--pin-file", type=Path, help="the PIN of a PIN-locked device")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("unpackage", help="verify and decrypt a package from stdin",
                       description='Read a base64 package on stdin and print '
                       '{"contact", "kind", "text", "warnings"} as JSON. A refused package '
                       "exits non-zero with one line on stderr and prints no plaintext.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--pin-file", type=Path, help="the PIN of a PIN-locked device")
    p.set_defaults(func=cmd_unpackage)

    def contact_command(name: str, help: str, description: str, contact: str) -> argparse.ArgumentParser:
        """A device-shell command about one contact: --home, CONTACT, --pin-file."""
        p = sub.add_parser(name, help=help, description=description)
        p.add_argument("--home", required=True, type=Path, help="the device's state directory")
        p.add_argument("contact", metavar="CONTACT", help=contact)
        p.add_argument("--pin-file", type=Path, help="the PIN of a PIN-locked device")
        return p

    p = contact_command("ask", "ask a contact's device for more pad to send with",
                        "Print a request (a control package, base64) asking CONTACT's device for more of its "
                        "unused pad to send with (docs/pad-lifecycle.md). It costs 34 bytes of pad. The device "
                        "also asks by itself when what is left for a contact falls under 10%% and 1%%.",
                        "whose device to ask")
    p.add_argument("--bytes", type=parse_size, help="how much to ask for (default: as much as this device's half)")
    p.set_defaults(func=cmd_ask)
    p = contact_command("grant", "give a contact some of this device's unused pad",
                        "Move this device's own limit to give CONTACT up to BYTES of its unused half of their "
                        "pad, then print the grant (a control package, base64) for the contact's device, which "
                        "takes the bytes when it opens it. Bytes given are never used by this device again, even "
                        "if the grant is lost on the way (docs/pad-lifecycle.md).", "whom to give pad")
    p.add_argument("bytes", metavar="BYTES", type=parse_size, help="how much to give at most (e.g. 64K)")
    p.set_defaults(func=cmd_grant)

    p = sub.add_parser("grants", help="how this device answers requests for pad",
                       description="Show, or set, how this device answers a contact's request for more pad: "
                       "auto (by itself, only when it has more than twice what the asker has left), ask (on its "
                       "screen), or off; the share of its unused pad one grant may give; and whether it asks by "
                       "itself when it runs low.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--mode", choices=GRANT_MODES, help="auto (the default), ask or off")
    p.add_argument("--share", type=int, metavar="PERCENT", help="percent of unused pad one grant gives (1-100; 50)")
    p.add_argument("--ask", choices=ASK_MODES, help="ask contacts for more by itself when low: auto or off")
    p.add_argument("--pin-file", type=Path, help="the PIN of a PIN-locked device")
    p.set_defaults(func=cmd_grants)

    p = sub.add_parser("status", help="contacts, pad left per direction, warnings",
                       description="Show contacts, pad left per direction, warnings and recent events.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--pin-file", type=Path, help="the PIN of a PIN-locked device")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("log", help="the device's event log",
                       description="Show the device-local event log (never pad bytes or plaintext).")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--limit", type=int, default=50, help="how many recent events (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON, one object per line")
    p.add_argument("--pin-file", type=Path, help="the PIN of a PIN-locked device")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("serve", help="serve the device RPC to paired laptops",
                       description="Serve the device RPC on exactly one address (the cable-side one). "
                       "Every package call waits for the owner's confirmation.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="the address to serve on (a literal IP)")
    p.add_argument("--confirm", required=True, choices=MODES, help="where confirmations come from")
    p.add_argument("--confirm-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"decline when the owner does not answer in time (default {DEFAULT_TIMEOUT_S:.0f})")
    p.add_argument("--pin-file", type=Path, help="unlock a PIN-locked device at start with this PIN "
                   "(otherwise it stays locked until its owner unlocks it)")
    p.add_argument("--hrng", action="append", default=[], metavar="URL",
                   help="a hardware random source for pads made in person (repeatable; see `otc hrng test`)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("pin", help="change the device's PIN",
                       description="Change the PIN of a PIN-locked device.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--pin-file", required=True, type=Path, help="the current PIN")
    p.add_argument("--new-pin-file", required=True, type=Path, help="the new PIN")
    p.set_defaults(func=cmd_pin)

    p = sub.add_parser("clients", help="list the laptops paired with this device",
                       description="List paired laptops (never their keys).")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--pin-file", type=Path, help="the PIN of a PIN-locked device")
    p.set_defaults(func=cmd_clients)

    p = sub.add_parser("revoke", help="revoke a paired laptop",
                       description="Revoke a paired laptop: its calls are refused from now on.")
    p.add_argument("--home", required=True, type=Path, help="the device's state directory")
    p.add_argument("client_id", metavar="CLIENT_ID", help="the client's id, or a unique prefix of it")
    p.add_argument("--pin-file", type=Path, help="the PIN of a PIN-locked device")
    p.set_defaults(func=cmd_revoke)

    psub = command_group(parts, "pad", "pads between devices", "Make pads between devices.")
    p = psub.add_parser("pair-local", help="a pad between two devices on one machine (development, demo)",
                        description="Make a pad shared by two device homes on this machine; "
                        "HOME_A becomes the initiator. For development and demos: the pad never "
                        "leaves this machine's disk, but this machine saw it.")
    p.add_argument("--size", required=True, type=parse_size, help="pad size in bytes (e.g. 1M)")
    p.add_argument("--hrng", action="append", default=[], metavar="URL",
                   help="take pad bytes from this hardware random source XOR the OS CSPRNG (repeatable; "
                   "e.g. serial:///dev/ttyACM0, see `otc hrng test --help`); without it, the OS CSPRNG alone")
    p.add_argument("home_a", metavar="HOME_A", type=Path, help="the initiator's home (a device made with init)")
    p.add_argument("home_b", metavar="HOME_B", type=Path, help="the responder's home")
    p.add_argument("--pin-file-a", type=Path, help="the PIN of HOME_A, if it is PIN-locked")
    p.add_argument("--pin-file-b", type=Path, help="the PIN of HOME_B, if it is PIN-locked")
    p.set_defaults(func=cmd_pair_local)


def cmd_serve(args: argparse.Namespace) -> int:
    from device.server import Server, ServerConfig, parse_listen
    from device.ui import LOCKED_NAME, Console, PanelSource

    host, port = parse_listen(args.listen)
    if args.confirm_timeout <= 0:
        raise UsageError("--confirm-timeout must be positive.")
    name = PadStore.peek_name(args.home)  # a clear error now if the home holds no device; None if PIN-locked
    pin = read_pin_file(args.pin_file) if args.pin_file else None
    console: Console | None = None
    if args.confirm in ("touchscreen", "gpio"):
        console = Console(name or LOCKED_NAME, args.confirm)
        source: ConfirmSource = PanelSource(console, name=args.confirm)
        panel = _start_panel(args.confirm, console)  # fails early if the hardware is missing
    else:
        source = make_source(args.confirm, args.home)
        panel = None
    config = ServerConfig(home=args.home, source=source, confirm_timeout=args.confirm_timeout, pin=pin,
                          console=console, hrng=tuple(args.hrng))
    server = Server(config, host, port)
    service = server.app.extensions["otc"]
    if console is not None:
        console.attach(service.lock, service.panel_status, service.panel_laptops, service.revoke_from_panel,
                       service.lock_device)
    try:
        signal.signal(signal.SIGTERM, _raise_interrupt)
        # Not the name of a PIN-locked device: this line goes to the system journal, on the same SD card.
        print(f"otc: device {name + ' ' if name else ''}serving on {server.url} (confirm mode: {args.confirm}, "
              f"timeout {args.confirm_timeout:g} s)", flush=True)
        if service.store is None:
            print("otc: the device is PIN-locked: it answers only health until its owner unlocks it",
                  file=sys.stderr, flush=True)
            if args.confirm == "tty":
                _unlock_on_tty(service.lock)
        if panel is not None:
            server.start()
            panel.run()  # the screen owns the main thread
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if panel is not None:
            panel.stop()
        server.close()
        print("otc: device server stopped", file=sys.stderr)
    return 0


def _start_panel(mode: str, console: Console) -> Panel:
    """The screen (touchscreen), or the screen and the buttons (gpio: a press answers only what the screen shows;
    without a screen, gpio is refused rather than approving blind)."""
    from device.touchscreen.app import TouchscreenApp

    # OTC_PANEL picks the panel: the framebuffer on the image (set by its service), SDL's dummy in tests.
    screen = TouchscreenApp(console, fullscreen=True)
    if mode != "gpio":
        return Panel(screen)
    from device.gpio import GpioPanel, make_pins

    try:
        return Panel(screen, GpioPanel(console, make_pins()))
    except BaseException:
        screen.close()
        raise


class Panel:
    """The device's own screen, and in ``gpio`` mode its buttons: the screen shows each request (it owns the
    main thread), the buttons answer it (their own thread)."""

    def __init__(self, screen: TouchscreenApp, buttons: GpioPanel | None = None) -> None:
        self.screen, self.buttons = screen, buttons

    def run(self) -> None:
        if self.buttons is not None:
            self.buttons.start()
        self.screen.run()

    def stop(self) -> None:
        if self.buttons is not None:
            self.buttons.stop()
        self.screen.close()


def _unlock_on_tty(lock: StoreLock) -> None:
    """Ask for the PIN on the device's terminal until it unlocks (or the device wipes itself)."""
    import getpass

    from device.ui import LockState

    while (status := lock.status()).state == LockState.LOCKED:
        wait = status.retry_at - lock.clock()
        if wait > 0:  # after a wrong PIN: ask again once a try is allowed, not before
            time.sleep(wait)
        try:
            pin = getpass.getpass("Device PIN: ")
        except (EOFError, OSError):
            return
        result = lock.unlock(pin)
        print(result.message, file=sys.stderr, flush=True)


def _raise_interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough
    raise KeyboardInterrupt


def cmd_clients(args: argparse.Namespace) -> int:
    with open_home(args.home, args.pin_file) as store:
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
    with open_home(args.home, args.pin_file) as store:
        registry = ClientRegistry(store)
        client = registry.find(args.client_id)
        if client is None:
            raise UsageError("No single paired laptop matches that id; see `otc device clients`.")
        if not registry.revoke(client.client_id):
            print(f"Laptop {client.name} ({client.client_id.hex()}) was already revoked.")
        else:
            print(f"Revoked laptop {client.name} ({client.client_id.hex()}).")
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    lock = StoreLock(args.home)
    if not lock.locked_home:
        raise UsageError("This device has no PIN (it was made without --pin-file).")
    result = lock.change_pin(read_pin_file(args.pin_file), read_pin_file(args.new_pin_file, new=True))
    if not result.ok:
        raise WrongPin(result.message)
    print("PIN changed.")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    pin = read_pin_file(args.pin_file, new=True) if args.pin_file else None
    with PadStore.init(args.home, args.name, pin=pin) as store:
        locked = "PIN-locked" if pin else "not PIN-locked"
        print(f"Device {store.device_name} created in {args.home} ({locked}).")
    if pin is None and not args.no_pin:
        # A real device keeps pads and keys: an unlocked home should never be made by accident.
        print(f"otc: warning: {args.home} is not PIN-locked: whoever copies it reads its pads, keys and contacts; "
              "to lock a device, create it with --pin-file FILE (a PIN of 6+ digits or a passphrase), or pass "
              "--no-pin to make an unlocked one on purpose.", file=sys.stderr)
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    confirm = ConfirmBroker(make_source(args.confirm, args.home)) if args.confirm else None
    plaintext = sys.stdin.buffer.read()
    try:
        plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("The message is not valid UTF-8 text.") from None
    with Device(open_home(args.home, args.pin_file), confirm) as device:
        result = device.package(args.contact, plaintext)
    sys.stdout.write(fmt.encode(result.package) + "\n")
    sys.stdout.flush()
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_unpackage(args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read()
    with Device(open_home(args.home, args.pin_file)) as device:
        result = device.unpackage_base64(data)
        answer = result.to_json()
        grant = device.answer_request(result)  # a request for pad: the device's policy answers it
        if grant is not None:
            answer["grant"] = {"package": fmt.encode(grant.package), "mailbox": grant.mailbox.hex(),
                               "gives": grant.gives}
    print(json.dumps(answer, ensure_ascii=False))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    with Device(open_home(args.home, args.pin_file)) as device:
        pads = [p for p in device.store.pads(args.contact) if not p.retired]
        wanted = args.bytes if args.bytes is not None else max((p.send_total for p in pads), default=0)
        if wanted < 1:
            raise UsageError("Ask for at least one byte (--bytes).")
        result = device.ask(args.contact, wanted)
    print(fmt.encode(result.package))
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    with Device(open_home(args.home, args.pin_file)) as device:
        if args.contact not in device.store.contacts():
            raise UnknownContact(f"No contact named {args.contact!r} on this device.")
        # The contact's oldest usable pad with the most to give (the one it sends on first).
        pads = sorted((p for p in device.store.pads(args.contact) if not p.retired), key=lambda p: -p.send_left)
        if not pads:
            raise NothingToGrant(f"This device has no unused pad to give {args.contact}.")
        result, given = device.grant(pads[0].pad_id, args.bytes)
    print(fmt.encode(result.package))
    print(f"Gave {args.contact} {given} bytes of pad: send them this grant; until their device opens it, nobody "
          "uses those bytes.", file=sys.stderr)
    return 0


def cmd_grants(args: argparse.Namespace) -> int:
    values: dict[str, str] = {}
    if args.mode is not None:
        values[GRANT_MODE] = args.mode
    if args.share is not None:
        if not 1 <= args.share <= 100:
            raise UsageError("--share is a percent from 1 to 100.")
        values[GRANT_SHARE] = str(args.share)
    if args.ask is not None:
        values[ASK_MODE] = args.ask
    with Device(open_home(args.home, args.pin_file)) as device:
        if values:
            device.store.save_settings(values, event="settings",
                                       detail="grants: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        mode, share = device.grant_policy()
        ask = device.store.setting(ASK_MODE, "auto")
    print(f"grants: {mode}, up to {share}% of unused pad a grant; asks by itself when low: {ask}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with Device(open_home(args.home, args.pin_file)) as device:
        status = device.status()
        status["device"]["pin_locked"] = StoreLock(args.home).locked_home
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    dev = status["device"]
    locked = "PIN-locked" if dev["pin_locked"] else "not PIN-locked"
    print(f"Device {dev['name']} (id {dev['device_id'][:16]}, {locked})")
    if not status["contacts"]:
        print("No contacts yet: pair with `otc pad pair-local` or `otc pair`.")
    for contact in status["contacts"]:
        print(f"Contact {contact['name']} ({len(contact['pads'])} pad(s))")
        for label, key in (("  send to", "send"), ("  receive from", "receive")):
            d = contact[key]
            pct = 100.0 * d["left"] / d["total"] if d["total"] else 0.0
            print(f"{label:<15} {d['used']} of {d['total']} pad bytes used, {d['left']} left ({pct:.1f}%)")
        if contact["granted_unseen"]:
            print(f"  {contact['granted_unseen']} bytes given to {contact['name']} are not in use yet")
        if contact.get("granted_lost"):
            print(f"  {contact['granted_lost']} bytes given to {contact['name']} crossed a grant of theirs:"
                  " nobody's until the next grant")
        if contact["must_pair_again"]:
            print("  pad retired: it was made before package format v2; pair with this contact again")
        if contact["forgery_alarm"]:
            print(f"  FORGERY ALARM: {contact['tag_failures']} packages failed authentication")
    print("Warnings:" if status["warnings"] else "Warnings: none")
    for warning in status["warnings"]:
        print(f"  {warning}")
    if status["events"]:
        print("Recent events:")
        for event in status["events"]:
            print("  " + format_event(event))
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    with Device(open_home(args.home, args.pin_file)) as device:
        events = device.store.events(max(args.limit, 0))
    for event in events:
        print(json.dumps(event) if args.json else format_event(event))
    return 0


def cmd_pair_local(args: argparse.Namespace) -> int:
    if args.home_a.resolve() == args.home_b.resolve():
        raise UsageError("HOME_A and HOME_B must be two different devices.")
    check_size(args.size)
    with open_home(args.home_a, args.pin_file_a, "--pin-file-a") as a, \
            open_home(args.home_b, args.pin_file_b, "--pin-file-b") as b:
        def log_alarm(alarm: HRNGError) -> None:  # the HRNG stopped: both devices log why
            for store in (a, b):
                store.log_event(alarm.code, detail=str(alarm))

        with pad_random(args.hrng, on_alarm=log_alarm) as random_bytes:
            progress = Progress(args.size, "pad")
            pad_id = pair_local(a, b, args.size, random_bytes=random_bytes, progress=progress.update)
        progress.finish()
        half = args.size // 2
        print(f"Paired {a.device_name} (initiator) and {b.device_name} (responder): "
              f"pad {pad_id.hex()[:16]} of {args.size} bytes, {half} for {a.device_name} to send "
              f"and {args.size - half} for {b.device_name}.")
    return 0
