"""`otc send`, `otc recv` and `otc chat`: messages through a paired device and a relay."""

from __future__ import annotations

import argparse
import json
import sys
import time

from client.errors import ClientError, RelayUnavailable
from client.mailstore import MailStore
from client.messenger import Event, Messenger
from client.relay import MAX_WAIT_S, RelayClient
from client.rpc import DeviceClient
from client.state import home_help
from onetimechat.errors import UsageError


def register(parts: argparse._SubParsersAction) -> None:
    p = parts.add_parser("send", help="send a message (the device asks its owner to confirm it)",
                         description="Send MESSAGE to CONTACT: the device packages it after its owner confirms "
                         "it; the package goes to the relay (or waits in the local outbox if the relay is down).")
    _common(p)
    p.add_argument("contact", metavar="CONTACT", help="the contact's name on the device")
    p.add_argument("message", metavar="MESSAGE", help="the text to send")
    p.set_defaults(func=cmd_send)

    p = parts.add_parser("recv", help="receive waiting messages",
                         description="Fetch new packages from the relay, have the device open them, print them. "
                         "A message leaves the relay only once the device has opened or refused it.")
    _common(p)
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                   help=f"wait up to SECONDS for a first message (at most {MAX_WAIT_S} per request; default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object per message")
    p.set_defaults(func=cmd_recv)

    p = parts.add_parser("chat", help="interactive chat",
                         description="An interactive chat: messages appear as they arrive while you type. "
                         "Type `help` in the chat for its commands.")
    _common(p)
    p.set_defaults(func=cmd_chat)


def _common(p: argparse.ArgumentParser) -> None:
    p.epilog = home_help()
    p.add_argument("--device", metavar="NAME|URL",
                   help="the paired device's name or URL, e.g. http://10.77.0.1:8470 (default: the one remembered)")
    p.add_argument("--relay", metavar="URL",
                   help="the relay, e.g. https://relay.example:8080 (remembered; default: the last one given)")
    p.add_argument("--no-receipts", action="store_true",
                   help="do not have the device answer received messages with delivery receipts (saves pad)")


def messenger_for(args: argparse.Namespace, device_timeout: float | None = None) -> Messenger:
    device = DeviceClient(args.device) if device_timeout is None else DeviceClient(args.device,
                                                                                   timeout=device_timeout)
    messenger = Messenger(device, RelayClient(device.state.resolve_relay(args.relay)), MailStore(device.url))
    if args.no_receipts:
        messenger.receipts = False
    return messenger


def clock(at: float) -> str:
    return time.strftime("%H:%M", time.localtime(at))


def describe(event: Event) -> list[str]:
    """The plain-text lines of one received event (warnings on their own lines)."""
    lines = []
    if event.kind == "text":
        lines.append(f"{event.contact}: {event.text}")
    elif event.kind == "receipt":
        when = f" (sent {clock(event.sent.created)})" if event.sent else ""
        lines.append(f"{event.contact}: ✓✓ delivered{when}")
    elif event.kind == "other":
        lines.append(f"{event.contact}: (a message this client cannot show)")
    lines.extend(f"  WARNING {event.contact}: {w}" if event.kind in ("refused", "reopened") else f"  WARNING: {w}"
                 for w in event.warnings)
    return lines


def cmd_send(args: argparse.Namespace) -> int:
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


def cmd_recv(args: argparse.Namespace) -> int:
    messenger = messenger_for(args)
    messenger.flush()
    messenger.refresh_contacts()

    def show(event: Event) -> None:
        if args.json:
            print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)
        else:
            print("\n".join(describe(event)), flush=True)

    deadline = time.monotonic() + max(args.wait, 0)
    total = 0
    while True:
        left = deadline - time.monotonic()
        result = messenger.poll(show, wait=max(0, min(left, MAX_WAIT_S)))
        total += result.handled
        if result.waiting:
            messenger.acknowledge()
            raise ClientError(f"{result.waiting} message(s) wait on the relay: {result.device_error}")
        if total or deadline - time.monotonic() <= 0:
            break
    messenger.acknowledge()
    try:
        messenger.flush()  # the receipts just made
    except RelayUnavailable:
        pass
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from client.chat import run_chat

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("otc chat needs a terminal to type in; in scripts use otc send and otc recv.")
    return run_chat(messenger_for(args))
