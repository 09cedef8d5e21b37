"""`otc send`, `otc recv` and `otc chat`: messages through a paired device and a relay."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from client.errors import ClientError, RelayUnavailable
from client.limits import MAX_WAIT as MAX_WAIT_S
from client.state import home_help
from onetimechat.cli.common import device_and_relay
from onetimechat.errors import UsageError
from onetimechat.progress import Progress, human_bytes
from onetimechat.text import visible

if TYPE_CHECKING:  # the network, the mail store and the messenger load when a command runs, not for --help
    from client.messenger import Event, Messenger


FILE_WAIT_S = 30  # mid-file, how long a receive waits for the next part before it stops


def register(parts: argparse._SubParsersAction) -> None:
    p = parts.add_parser("send", help="send a message or a file (the device asks its owner to confirm it)",
                         description="Send MESSAGE to CONTACT: the device packages it after its owner confirms "
                         "it; the package goes to the relay (or waits in the local outbox if the relay is down). "
                         "With --file PATH, send a file instead: the device asks its owner to confirm the file's "
                         "name, size and fingerprint, encrypts it in parts and the parts stream through the relay; "
                         "a send cut anywhere resumes when the same command runs again (docs/attachments.md).")
    _common(p)
    p.add_argument("--file", metavar="PATH", help="send the file at PATH instead of a message")
    p.add_argument("--otp", action="store_true",
                   help="with --file: send the whole file under the pad (information-theoretic; it costs the "
                   "file's size and 37 bytes per 1 MiB part in pad, and is refused if the pad left is too small)")
    p.add_argument("contact", metavar="CONTACT", help="the contact's name on the device")
    p.add_argument("message", metavar="MESSAGE", nargs="?", help="the text to send; - reads it from stdin")
    p.set_defaults(func=cmd_send)

    p = parts.add_parser("recv", help="receive waiting messages",
                         description="Fetch new packages from the relay, have the device open them, print them. "
                         "A message leaves the relay only once the device has opened or refused it.")
    _common(p)
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                   help=f"wait up to SECONDS for a first message (at most {MAX_WAIT_S} per request; default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object per message")
    p.add_argument("--part-wait", type=float, default=FILE_WAIT_S, metavar="SECONDS",
                   help="while a file is arriving, how long to wait for its next part before stopping "
                   f"(default {FILE_WAIT_S}; run otc recv again to go on)")
    p.set_defaults(func=cmd_recv)

    p = parts.add_parser("outbox", help="what waits for the relay: list it, retry it, or drop an item",
                         description="Packages the relay has not taken yet wait in this laptop's outbox (each "
                         "already made on the device: its pad is spent). `otc outbox` lists them; `retry` sends "
                         "them to the relay given now; `drop ID` gives one up.", epilog=home_help())
    p.add_argument("--device", metavar="NAME|URL",
                   help="the paired device's name or URL (default: the one remembered)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_outbox, action="list")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    q = sub.add_parser("list", help="list what waits (the default)", description="List what waits for the relay.")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = sub.add_parser("retry", help="send what waits to the relay now",
                       description="Send every waiting package, oldest first, to the relay given now "
                       "(--relay, or the one remembered).")
    q.add_argument("--relay", metavar="URL", help="the relay (remembered; default: the last one given)")
    q = sub.add_parser("drop", help="give up one waiting package",
                       description="Remove one package from the outbox. Its pad is already spent: the "
                       "contact's device will report a gap where it would have been.")
    q.add_argument("id", metavar="ID", help="the item's id (or a unique prefix) from `otc outbox`")

    p = parts.add_parser("who", help="which contacts are online now (opt-in presence)",
                         description="List the contacts whose laptops say they are online now (only those who "
                         "share their presence with you). --share tells a contact when you are online (while "
                         "otc chat runs); --stop ends it. Off by default; docs/client.md says what the relay "
                         "learns.", epilog=home_help())
    _common(p)
    p.add_argument("--share", metavar="CONTACT", action="append", default=[],
                   help="share your presence with CONTACT (repeatable)")
    p.add_argument("--stop", metavar="CONTACT", action="append", default=[],
                   help="stop sharing your presence with CONTACT (repeatable)")
    p.set_defaults(func=cmd_who)

    p = parts.add_parser("chat", help="interactive chat",
                         description="An interactive chat: messages appear as they arrive while you type. "
                         "Type `help` in the chat for its commands.")
    _common(p)
    p.set_defaults(func=cmd_chat)


def _common(p: argparse.ArgumentParser) -> None:
    p.epilog = home_help()
    device_and_relay(p)
    p.add_argument("--no-receipts", action="store_true",
                   help="do not have the device answer received messages with delivery receipts (saves pad)")
    p.add_argument("--downloads", metavar="DIR",
                   help="where files received are saved (default: $OTC_DOWNLOADS, else ~/Downloads)")


def messenger_for(args: argparse.Namespace, device_timeout: float | None = None) -> Messenger:
    from client.mailstore import MailStore
    from client.messenger import Messenger
    from client.relay import RelayClient
    from client.rpc import DeviceClient

    device = DeviceClient(args.device) if device_timeout is None else DeviceClient(args.device,
                                                                                   timeout=device_timeout)
    relay = RelayClient(device.state.resolve_relay(args.relay), on_answer=device.state.relay_answered)
    downloads = Path(args.downloads).expanduser() if getattr(args, "downloads", None) else None
    messenger = Messenger(device, relay, MailStore(device.url), downloads=downloads)
    if args.no_receipts:
        messenger.receipts = False
    return messenger


def clock(at: float) -> str:
    return time.strftime("%H:%M", time.localtime(at))


def describe(event: Event) -> list[str]:
    """The plain-text lines of one received event (warnings on their own lines)."""
    lines = []
    if event.kind == "text":
        lines.append(f"{event.contact}: {visible(event.text or '')}")
    elif event.kind == "receipt":
        when = f" (sent {clock(event.sent.created)})" if event.sent else ""
        lines.append(f"{event.contact}: ✓✓ delivered{when}")
    elif event.kind == "file" and event.file is not None:
        f = event.file
        if f.saved:
            lines.append(f"{event.contact}: file {visible(f.name)} ({f.size:,} bytes, SHA-256 {f.sha256[:16]}…) "
                         f"saved as {f.saved}")
        elif f.done == 0:
            lines.append(f"{event.contact}: sending you the file {visible(f.name)} ({human_bytes(f.size)})")
    elif event.kind == "other":
        lines.append(f"{event.contact}: (a message this client cannot show)")
    elif event.kind == "notice":  # the relay's news, not a message
        return [f"WARNING: {w}" for w in event.warnings]
    lines.extend(f"  WARNING {event.contact}: {w}" if event.kind in ("refused", "reopened") else f"  WARNING: {w}"
                 for w in event.warnings)
    return lines


def message_text(given: str) -> str:
    """MESSAGE as given, or stdin for ``-``; an empty message is refused before anything is asked."""
    text = given
    if given == "-":
        try:
            text = sys.stdin.read()
        except UnicodeDecodeError:
            raise UsageError("The message on stdin is not UTF-8 text.") from None
        text = text[:-1] if text.endswith("\n") else text
    if not text.strip():
        raise UsageError("An empty message is not sent: give some text (or - to read it from stdin).")
    return text


def cmd_send(args: argparse.Namespace) -> int:
    if args.file is not None:
        if args.message is not None:
            raise UsageError("Give either a MESSAGE or --file PATH, not both.")
        return send_file(args)
    if args.otp:
        raise UsageError("--otp is for files: otc send --file PATH --otp CONTACT (a message always goes under "
                         "the pad).")
    if args.message is None:
        raise UsageError("A MESSAGE is required: otc send CONTACT 'text' (quoted if it has spaces), - to read it "
                         "from stdin, or --file PATH to send a file.")
    args.message = message_text(args.message)
    messenger = messenger_for(args)
    messenger.flush()
    if sys.stderr.isatty():
        print("otc: confirm on your device…", file=sys.stderr, flush=True)
    out = messenger.send(args.contact, args.message)
    for warning in out.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    if out.state == "sent":
        print(f"sent to {out.contact}")
    else:
        print(f"queued for {out.contact}: the relay does not answer; the package waits in this laptop's outbox "
              "and goes out with the next otc send, recv or chat")
    return 0


class Bars:
    """A progress bar with rate and time left per file (on stderr), made when its first figure comes."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.bars: dict[str, Progress] = {}

    def update(self, key: str, name: str, done: int, total: int) -> None:
        bar = self.bars.get(key)
        if bar is None:
            bar = self.bars[key] = Progress(total, f"{self.verb} {visible(name)[:40]}")
        bar.update(done)
        if done >= total:
            self.bars.pop(key).finish()


def send_file(args: argparse.Namespace) -> int:
    """`otc send --file PATH CONTACT`: the file in parts through the device and the relay (or its resume)."""
    messenger = messenger_for(args)
    messenger.flush()
    name = Path(args.file).name
    bars = Bars("sending")
    hashing = Bars("hashing")
    if sys.stderr.isatty():
        print("otc: confirm the file on your device…", file=sys.stderr, flush=True)
    sent = messenger.send_file(args.contact, args.file, otp=args.otp,
                               progress=lambda done, total: bars.update("send", name, done, total),
                               hashing=lambda done, total: hashing.update("hash", name, done, total))
    how = "resumed and sent" if sent.resumed else "sent"
    print(f"{how} {visible(sent.name)} to {sent.contact}: {sent.size:,} bytes in {sent.parts} part(s), "
          f"SHA-256 {sent.sha256}")
    return 0


def cmd_recv(args: argparse.Namespace) -> int:
    messenger = messenger_for(args)
    messenger.flush()
    messenger.refresh_contacts()

    bars = Bars("receiving")
    moving: set[str] = set()  # files whose parts came in this run and that are not complete yet

    def show(event: Event) -> None:
        if event.kind == "notice":  # the relay's news (a new store), not a message: no JSON line of its own
            print("\n".join(describe(event)), file=sys.stderr, flush=True)
            return
        if event.kind == "file" and event.file is not None:
            f = event.file
            bars.update(f.file_id, f.name, f.done, f.size)
            (moving.discard if f.saved else moving.add)(f.file_id)
            if not f.saved and (f.done or args.json):
                return  # a part: the bar shows it
        if args.json:
            print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)
        else:
            print("\n".join(describe(event)), flush=True)

    deadline = time.monotonic() + max(args.wait, 0)
    total = 0
    busy = 0.0  # since when the relay has been busy, mid-file
    while True:
        left = deadline - time.monotonic()
        # A file on its way: keep receiving while its parts come (each poll waits for the next one).
        files = bool(moving)
        wait = max(0, min(args.part_wait, MAX_WAIT_S)) if files else max(0, min(left, MAX_WAIT_S))
        try:
            result = messenger.poll(show, wait=wait)
        except RelayUnavailable:
            if not files or (busy and time.monotonic() - busy > args.part_wait):
                raise
            busy = busy or time.monotonic()
            time.sleep(0.2)  # busy (rate limits) mid-file: try again shortly
            continue
        busy = 0.0
        total += result.handled
        if result.waiting:
            messenger.acknowledge()
            raise ClientError(f"{result.waiting} message(s) wait on the relay: {result.device_error}")
        if moving and result.handled:
            continue
        names = ", ".join(visible(f["name"]) for f in messenger.files.pending() if f["id"] in moving)
        if names:
            messenger.acknowledge()
            raise ClientError(f"Incomplete: {names}; the rest has not reached the relay yet (run otc recv again "
                              "to go on).")
        if total or deadline - time.monotonic() <= 0:
            break
    messenger.acknowledge()
    try:
        messenger.flush()  # the receipts just made
    except RelayUnavailable:
        pass
    return 0


def _size(b64: str) -> int:
    """Bytes of a package from its base64 form."""
    return len(b64) * 3 // 4 - (len(b64) - len(b64.rstrip("=")))


def _age(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def cmd_outbox(args: argparse.Namespace) -> int:
    from client.mailstore import MailStore
    from client.messenger import Messenger
    from client.relay import RelayClient
    from client.rpc import DeviceClient

    device = DeviceClient(args.device)
    store = MailStore(device.url)
    if args.action == "retry":
        relay = RelayClient(device.state.resolve_relay(args.relay), on_answer=device.state.relay_answered)
        messenger = Messenger(device, relay, store)
        sent, waiting = messenger.flush()
        print(f"{len(sent)} sent to {messenger.relay.url}; {waiting} still waiting"
              + ("" if not waiting else " (the relay does not answer)"))
        return 0 if not waiting else 1
    if args.action == "drop":
        item = store.find_queued(args.id)
        if item is None:
            raise UsageError(f"No single outbox item has an id starting with {args.id!r}; see `otc outbox`.")
        store.drop(item)
        print(f"Dropped the {item.kind} for {item.contact} ({_size(item.contents)} bytes). Its pad was "
              f"already spent: {item.contact}'s device will report a gap where it would have been.")
        return 0
    items = store.queued()
    now = time.time()
    if args.json:
        for item in items:
            print(json.dumps({"id": item.id, "contact": item.contact, "kind": item.kind,
                              "bytes": _size(item.contents), "age_s": round(now - item.created, 1),
                              "relay": item.relay, "attempts": item.attempts}))
        return 0
    if not items:
        print("The outbox is empty: the relay has everything sent.")
        return 0
    print(f"{len(items)} waiting for the relay (oldest first):")
    for item in items:
        print(f"  {item.id[:8]}  {item.kind:<7} to {item.contact:<16} {_size(item.contents):>8} bytes  "
              f"{_age(now - item.created):>6} old  {item.attempts} attempt(s) at {item.relay}")
    print("`otc outbox retry [--relay URL]` sends them now; `otc outbox drop ID` gives one up.")
    return 0


def cmd_who(args: argparse.Namespace) -> int:
    from client import presence

    messenger = messenger_for(args)
    contacts = messenger.refresh_contacts()
    names = {str(c["name"]) for c in contacts}
    for name in args.share + args.stop:
        if name not in names:
            raise UsageError(f"No contact named {name!r} on the device.")
    for name in args.share:
        presence.share(messenger.store, name, True)
    for name in args.stop:
        presence.share(messenger.store, name, False)
    if args.share or args.stop:
        presence.announce(messenger.relay, messenger.store, contacts)
    shared = sorted(presence.sharing(messenger.store))
    print(f"Sharing your presence with: {', '.join(shared) if shared else 'nobody (otc who --share CONTACT)'}")
    here = presence.online(messenger.relay, contacts)
    print(f"Online now: {', '.join(here) if here else 'none of your contacts'}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from client.chat import run_chat

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("otc chat needs a terminal to type in; in scripts use otc send and otc recv.")
    return run_chat(messenger_for(args))
