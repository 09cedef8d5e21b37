"""Sending and receiving through a paired device and a relay, losing nothing.

The laptop holds no key: the device packages each message (after its owner
confirms it) and opens each package. This module moves packages between the
two and keeps the promises of issue 6:

- A message's relay cursor moves (and the relay is told to delete it) only
  after the device has opened it, or refused it for good (replay, forgery,
  malformed). If the device is unplugged or locked, the message stays on the
  relay and is opened once the device is back.
- A package the relay did not take stays in the local outbox (ciphertext
  only) and is sent again, with the same idempotency key, until it does.
- Delivery receipts: when asked, the device answers an opened text message
  with a receipt package (kind 3), which goes out through the same outbox.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from client.errors import ClientError, DeviceInternalError, DeviceRefused, RelayRefused, RelayUnavailable, RemoteError
from client.mailstore import MailStore, Queued, SentRecord
from client.relay import RelayClient, RelayMessage
from client.rpc import DeviceClient
from onetimechat import package as fmt

# The device's refusals of a package that will never change: the message is finished with.
FINAL_REFUSALS = {
    "replay": "replay: a copy of an earlier message was refused; someone may be replaying traffic",
    "invalid": "tamper: a message failed its authentication check and was discarded; it may have been altered",
    "malformed": "tamper: a message that is not a valid package was discarded",
    "out-of-range": "tamper: a message outside this contact's half of the pad was discarded",
    "unknown-pad": "tamper: a message for a pad this device does not have was discarded",
}
# A message the device failed to open with an internal error this many times is set aside as refused: one package
# that breaks the device must not hold its mailbox (and every message after it) for good.
INTERNAL_TRIES = 3


@dataclass
class Event:
    """Something to show: a message, a receipt, a refusal, or a state change."""

    kind: str  # text | receipt | refused | other | reopened
    contact: str
    ref: int = 0
    mailbox: str = ""
    text: str | None = None
    warnings: list[str] = field(default_factory=list)
    code: str = ""
    sent: SentRecord | None = None
    receipt_for: dict | None = None
    control: dict | None = None  # a control package (kind 4): what it said and what the device did
    reply: dict | None = None  # the grant the device made for a request it opened, to send back
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """The JSON line of `otc recv --json` (DESIGN.md), plus a few fields of ours."""
        result: dict[str, Any] = {"contact": self.contact,
                                  "kind": self.kind if self.kind in ("text", "receipt") else None,
                                  "text": self.text, "ref": self.ref, "warnings": self.warnings}
        if self.code:
            result["error"] = self.code
        if self.control:
            result["control"] = self.control
        if self.receipt_for is not None:
            result["receipt_for"] = self.receipt_for
            result["delivered"] = self.sent is not None
        return result


@dataclass
class Outgoing:
    """A message this laptop sent: where it stands."""

    contact: str
    text: str
    state: str = "confirming"  # confirming | sent | queued | declined | failed
    pad_id: str = ""
    offset: int = -1
    warnings: list[str] = field(default_factory=list)
    error: str = ""
    delivered: bool = False
    asked: bool = False  # the device asked the contact for more pad with this message
    at: float = field(default_factory=time.time)


class DeviceDown(ClientError):
    """The device did not open the waiting messages (unplugged, locked or busy); they stay on the relay."""

    code = "device-unavailable"


@dataclass
class PollResult:
    handled: int = 0
    waiting: int = 0  # messages left on the relay because the device could not open them now
    device_error: str = ""


class Messenger:
    """One laptop's link between its device and a relay."""

    def __init__(self, device: DeviceClient, relay: RelayClient, store: MailStore) -> None:
        self.device = device
        self.relay = relay
        self.store = store
        self.contacts: list[dict] = []
        self.inbound: dict[str, str] = {}  # mailbox -> contact

    @property
    def receipts(self) -> bool:
        return self.store.setting("receipts", "on") == "on"

    @receipts.setter
    def receipts(self, on: bool) -> None:
        self.store.set_setting("receipts", "on" if on else "off")

    def refresh_contacts(self) -> list[dict]:
        self.contacts = self.device.contacts()
        self.inbound = {mailbox: c["name"] for c in self.contacts for mailbox in c.get("mailboxes_in", [])}
        return self.contacts

    # -- sending --------------------------------------------------------------------

    def send(self, contact: str, text: str) -> Outgoing:
        """Package ``text`` on the device (the owner confirms it there) and hand it to the relay.

        Raises the device's refusal (declined, unknown contact, pad exhausted) as
        :class:`RemoteError`; if the relay does not take the package now, it waits
        in the outbox and the result's state is ``queued``.
        """
        out = Outgoing(contact, text)
        answer = self.device.package(contact, text)
        package = str(answer["package"])
        header = fmt.parse(fmt.decode(package))
        out.pad_id, out.offset = header.pad_id.hex(), header.offset
        out.warnings = [str(w) for w in answer.get("warnings", [])]
        item = Queued(id=secrets.token_hex(16), relay=self.relay.url, mailbox=str(answer["mailbox"]),
                      contents=package, contact=contact, kind="text", pad_id=out.pad_id, offset=out.offset,
                      created=time.time(), attempts=0)
        self.store.queue(item)
        out.state = "sent" if self._try_send(item) else "queued"
        control = answer.get("control")
        for made in control if isinstance(control, list) else []:
            # The device asked the contact for more pad with this message (docs/pad-lifecycle.md).
            request = self._control_item(contact, made)
            if request is not None:
                self.store.queue(request)
                self._try_send(request)
                out.asked = True
        return out

    def flush(self) -> tuple[list[Queued], int]:
        """Send what waits in the outbox, oldest first; (what went, how many still wait)."""
        sent: list[Queued] = []
        waiting = 0
        # Every waiting package goes to the relay in use now, whichever one it was first meant for:
        # one queued for a relay that was wrong or gone must not leave the reader a gap for good.
        for item in self.store.queued():
            if waiting:  # the relay is down: keep the order, try again later
                waiting += 1
            elif self._try_send(item):
                sent.append(item)
            else:
                waiting += 1
        return sent, waiting

    def _try_send(self, item: Queued) -> bool:
        try:
            ref = self.relay.send(item.mailbox, item.contents, item.id)
        except RelayUnavailable:
            self.store.attempted(item, self.relay.url)
            return False
        except RelayRefused:
            # The relay will never take this package (too large for it, say): keeping it would
            # block the outbox for good. Its pad is spent either way.
            self.store.drop(item)
            raise
        self.store.sent(item, ref)
        return True

    # -- receiving ------------------------------------------------------------------

    def poll(self, deliver: Callable[[Event], None], wait: float = 0) -> PollResult:
        """Fetch new packages (waiting up to ``wait`` s for one), open them on the device, deliver each.

        ``deliver`` is called for every message before its cursor moves, so a
        run stopped in between finds it again. Raises RelayUnavailable if the
        relay does not answer; a device that cannot open messages now leaves
        them waiting (``PollResult.waiting``).
        """
        if not self.inbound:
            self.refresh_contacts()
        cursors = self.store.cursors(self.relay.url, sorted(self.inbound))
        messages, _ = self.relay.receive(cursors, wait=wait, ack=True)
        result = PollResult()
        stuck: set[str] = set()
        for message in messages:
            if message.mailbox in stuck:
                result.waiting += 1
                continue
            try:
                event, receipt_answer = self._open(message)
            except DeviceDown as exc:
                # Keep this mailbox's order: nothing after a message still waiting is opened.
                stuck.add(message.mailbox)
                result.waiting += 1
                result.device_error = str(exc)
                continue
            deliver(event)
            self.store.finish(self.relay.url, message.mailbox, message.ref,
                              self._receipt_item(event, receipt_answer))
            if event.kind == "control" and event.reply is not None:
                # The device's grant for a request it just opened: sent like a receipt, through the outbox.
                grant = self._control_item(event.contact, event.reply)
                if grant is not None:
                    self.store.queue(grant)
                    self._try_send(grant)
            result.handled += 1
        return result

    def acknowledge(self) -> None:
        """Tell the relay to delete what this laptop has finished with (best effort)."""
        for mailbox, after in self.store.cursors(self.relay.url, sorted(self.inbound)).items():
            if after:
                try:
                    self.relay.ack(mailbox, after)
                except (RelayUnavailable, RelayRefused):
                    return  # the next receive (ack=True) does it

    def _open(self, message: RelayMessage) -> tuple[Event, dict | None]:
        """Open one message on the device: what to show, and the receipt the device made (if any)."""
        contact = self.inbound.get(message.mailbox, "?")
        again = self.store.begin_open(self.relay.url, message.mailbox, message.ref)
        base: dict[str, Any] = {"contact": contact, "ref": message.ref, "mailbox": message.mailbox}
        try:
            answer = self.device.unpackage(message.contents, receipt=self.receipts)
        except DeviceInternalError as exc:
            if self.store.open_failed(self.relay.url, message.mailbox, message.ref) < INTERNAL_TRIES:
                raise DeviceDown(f"{exc} Messages wait on the relay.") from None
            return Event("refused", warnings=[
                f"device-error: the device failed {INTERNAL_TRIES} times to open a message (an internal error);"
                " it was set aside so that the messages after it can be read"], code="device-error", **base), None
        except RemoteError as exc:
            if exc.code not in FINAL_REFUSALS:
                raise DeviceDown(f"The device could not open messages now ({exc}); they wait on the relay.") \
                    from None
            if exc.code == "replay" and again:
                return Event("reopened", warnings=[
                    "lost: this message was opened by the device when this client stopped before showing it;"
                    " the device never releases a message twice"], code="reopened", **base), None
            return Event("refused", warnings=[FINAL_REFUSALS[exc.code]], code=exc.code, **base), None
        except DeviceRefused:
            raise
        except ClientError as exc:
            raise DeviceDown(f"{exc} Messages wait on the relay.") from None
        kind = str(answer.get("kind"))
        warnings = [str(w) for w in answer.get("warnings", [])]
        base["contact"] = str(answer.get("contact", contact))
        if kind == "text":
            event = Event("text", text=str(answer.get("text", "")), warnings=warnings, **base)
        elif kind == "receipt":
            target = answer.get("receipt_for")
            sent = None
            if isinstance(target, dict):
                sent = self.store.delivered(str(target.get("pad_id")), int(target.get("offset", -1)))
            event = Event("receipt", warnings=warnings, receipt_for=target, sent=sent, **base)
        elif kind == "control":
            control = answer.get("control")
            grant = answer.get("grant")
            event = Event("control", warnings=warnings, control=control if isinstance(control, dict) else {},
                          reply=grant if isinstance(grant, dict) else None, **base)
        else:
            event = Event("other", warnings=[*warnings, f"unsupported: a {kind} message (not shown)"], **base)
        receipt = answer.get("receipt")
        return event, receipt if isinstance(receipt, dict) else None

    def _control_item(self, contact: str, made: dict) -> Queued | None:
        """A control package the device made (a request, or a grant), ready for the outbox."""
        package = made.get("package")
        if not isinstance(package, str) or not isinstance(made.get("mailbox"), str):
            return None
        header = fmt.parse(fmt.decode(package))
        return Queued(id=secrets.token_hex(16), relay=self.relay.url, mailbox=str(made["mailbox"]),
                      contents=package, contact=contact, kind="control", pad_id=header.pad_id.hex(),
                      offset=header.offset, created=time.time(), attempts=0)

    def _receipt_item(self, event: Event, receipt: dict | None) -> Queued | None:
        if not receipt:
            return None
        package = str(receipt["package"])
        header = fmt.parse(fmt.decode(package))
        return Queued(id=secrets.token_hex(16), relay=self.relay.url, mailbox=str(receipt["mailbox"]),
                      contents=package, contact=event.contact, kind="receipt",
                      pad_id=header.pad_id.hex(), offset=header.offset, created=time.time(), attempts=0)
