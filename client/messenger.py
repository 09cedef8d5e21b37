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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from client.errors import (
    ClientError,
    DeviceInternalError,
    DeviceRefused,
    FileSaveError,
    RelayRefused,
    RelayUnavailable,
    RemoteError,
    StoreChanged,
)
from client.files import FileCorrupt, IncomingFiles, Progress, Received, Sent, default_downloads, send_file
from client.mailstore import MailStore, Queued, SentRecord
from client.relay import RelayClient, RelayMessage
from client.rpc import DeviceClient
from onetimechat import attachment as att
from onetimechat import package as fmt

# The device's refusals of a package that will never change: the message is finished with.
FINAL_REFUSALS = {
    "replay": "replay: a copy of an earlier message was refused; someone may be replaying traffic",
    "invalid": "tamper: a message failed its authentication check and was discarded; it may have been altered",
    "malformed": "tamper: a message that is not a valid package was discarded",
    "out-of-range": "tamper: a message outside this contact's half of the pad was discarded",
    "unknown-pad": "tamper: a message for a pad this device does not have was discarded",
    # Files (docs/attachments.md): a part refused for good; the file it belongs to never completes.
    "file-tampered": "tamper: a part of a file failed its authentication check and was discarded",
    "file-order": "tamper: a part of a file came out of order (one before it is missing) and was discarded",
    "file-duplicate": "replay: a part of a file that was already received came again and was discarded",
    "file-unknown": "tamper: a part of a file whose header never came (or that is finished) was discarded",
    "file-size": "tamper: a part of a file disagrees with the size its header announced; it was discarded",
    "file-name": "tamper: a file whose name holds a path separator or a control character was refused",
    "file-id": "tamper: a file header reused the id of a file this device already has; it was refused",
    "file-corrupt": "tamper: a file received does not match its SHA-256 fingerprint; it was discarded",
}
# A message the device failed to open with an internal error this many times is set aside as refused: one package
# that breaks the device must not hold its mailbox (and every message after it) for good.
INTERNAL_TRIES = 3
# Refusals of a part after which its file can never complete.
FATAL_TO_FILE = frozenset({"file-tampered", "file-order", "file-size"})
# The base64 of a streamed file part's magic "OTCF" (onetimechat/attachment.py): such a message goes to the
# device's file_open, not to unpackage.
STREAM_PART_B64 = "T1RDRg"


@dataclass
class Event:
    """Something to show: a message, a receipt, a refusal, or a state change."""

    kind: str  # text | receipt | file | refused | other | reopened | notice (the relay's, not a message)
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
    file: Received | None = None  # a file's header or part: where the file stands (saved, once complete)
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
        if self.kind == "file" and self.file is not None:
            result["kind"] = "file"
            result["file"] = {"id": self.file.file_id, "name": self.file.name, "size": self.file.size,
                              "received": self.file.done, "saved": self.file.saved or None,
                              "sha256": self.file.sha256 or None}
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


def _streamed(message: RelayMessage) -> bool:
    """Whether a relay message is a streamed file part (opened by the device's file_open)."""
    return message.contents.startswith(STREAM_PART_B64) or (message.data is not None
                                                            and att.is_stream_part(message.data))


class ReadTerms(NamedTuple):
    """How a read of the relay is asked (read_terms)."""

    ack: bool  # the read itself acknowledges the cursors
    store: str | None  # the store identity the read names (the relay refuses it if its store is another)


def read_terms(known: str | None) -> ReadTerms:
    """How ``Messenger._receive`` asks for the batch after its cursors, given the identity recorded for the relay's
    store (``known``: None if none is recorded, '' for a relay that named none). An identity recorded: the read
    names it and acknowledges the cursors. None recorded (the first read there, the first since this laptop kept
    identities, or a relay from before them, which may have been upgraded onto a new store since): read without
    acknowledging, to learn which store the cursors are refs of. A relay that names none ('') is acknowledged after
    its answer says so (store_decision), as before."""
    return ReadTerms(ack=bool(known), store=known or None)


@dataclass(frozen=True)
class StoreDecision:
    """What a read's answer about the relay's store means for the cursors this laptop keeps there
    (store_decision). At most one of ``record``, ``ack_unnamed`` and ``reset`` is set; none: the same store."""

    record: str | None = None  # the cursors stand: record this identity for the relay ('': a relay naming none)
    ack_unnamed: bool = False  # the cursors stand: acknowledge them now, naming no store (a relay from before)
    reset: str | None = None  # another store: every cursor back to 0, this identity recorded, the read made again
    upgraded: bool = False  # with ``reset``: no identity was recorded, the relay names its store for the first time


def store_decision(known: str | None, seen: str | None, refused: bool = False,
                   cursors_moved: bool = False) -> StoreDecision:
    """What ``Messenger._receive`` does with the store identity: ``known``, the one recorded for the relay (None:
    none recorded; '': a relay that named none); ``seen``, the one its answer named (None: a relay from before
    store identities); ``refused``, the read was refused (409 ``store-changed``, ``seen`` the relay's store);
    ``cursors_moved``, a cursor there is past 0 (docs/client.md, "Cursors and the relay's store")."""
    if not refused:
        if seen is None or seen == known:  # the same store, or a relay from before store identities
            if known is None:
                return StoreDecision(record="")
            if seen is None:  # still a relay from before: acknowledged as before, once it said so
                return StoreDecision(ack_unnamed=True)
            return StoreDecision()
        if not known and not cursors_moved:  # learnt at the first read there: nothing to be refs of
            return StoreDecision(record=seen)
        # Another identity in an answer to cursors that named ours (a relay that did not check them), or a first
        # identity for cursors kept without one: they may be refs of an older store (R1, R5 of the review), so they
        # are not trusted.
    assert seen is not None
    return StoreDecision(reset=seen, upgraded=not known)


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

    def __init__(self, device: DeviceClient, relay: RelayClient, store: MailStore,
                 downloads: Path | None = None) -> None:
        self.device = device
        self.relay = relay
        self.store = store
        self.files = IncomingFiles(store, device, downloads or default_downloads())
        # The next batch of a file's parts, fetched while the current one is opened: (cursors, thread, result).
        self._ahead: tuple[dict[str, int], threading.Thread, dict[str, Any]] | None = None
        self._ahead_relay: RelayClient | None = None
        # Per mailbox, the cursor last acknowledged to a relay from before store identities (read without
        # acknowledging: _receive acknowledges after its answer, only what moved since).
        self._acked_unnamed: dict[str, int] = {}
        # The next part of a file, opened by the device while this laptop saves the current one: (the message,
        # thread, result). At most one: the device gives its last two parts again (device/files.py GIVEN_AGAIN).
        self._opening: tuple[RelayMessage, threading.Thread, dict[str, Any]] | None = None
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

    def send_file(self, contact: str, path: str | Path, otp: bool = False, progress: Progress | None = None,
                  hashing: Progress | None = None) -> Sent:
        """Send a file (the device asks its owner to confirm its name, size and fingerprint), or resume it."""
        return send_file(self.device, self.relay, self.store, contact, path, otp=otp, progress=progress,
                         hashing=hashing)

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
        messages = self._prefetched(cursors)
        ahead = messages is not None
        if messages is None:
            cursors, messages = self._receive(cursors, wait, deliver)
        self._drop_opening(keep=messages[0] if messages else None)  # opened ahead of this batch, or never taken
        if any(m.data is not None or m.contents.startswith(STREAM_PART_B64) for m in messages):
            self._fetch_ahead(cursors, messages)  # a file's parts: the next batch comes while these are opened
        result = PollResult()
        stuck: set[str] = set()
        try:
            unsaved = self._deliver(messages, deliver, result, stuck)
        finally:
            self._drop_opening(keep=self._first_fetched())
        if ahead:
            self.acknowledge()  # fetched without acknowledging: the relay may now delete what is done
        if unsaved is not None:
            raise unsaved
        return result

    def _receive(self, cursors: dict[str, int], wait: float,
                 deliver: Callable[[Event], None]) -> tuple[dict[str, int], list[RelayMessage]]:
        """The batch after ``cursors``, the relay told to delete what they say is finished if its store is the
        one they are refs of; (the cursors it was read after, the batch). A relay whose store is another (it
        refuses them, 409 ``store-changed``, or answers with another identity) is read from the start: its
        messages are all new to this laptop (docs/client.md, "Cursors and the relay's store")."""
        url = self.relay.url
        known = self.store.relay_store(url)
        terms = read_terms(known)
        try:
            messages, _ = self.relay.receive_raw(cursors, wait=wait, ack=terms.ack, store=terms.store)
        except StoreChanged as exc:
            decision = store_decision(known, exc.store, refused=True)
        else:
            decision = store_decision(known, self.relay.store_seen, cursors_moved=any(cursors.values()))
            if decision.reset is None:
                if decision.record is not None:
                    self.store.learn_store(url, decision.record)
                if decision.ack_unnamed:
                    self._acknowledge_unnamed(cursors)
                return cursors, messages
        seen, upgraded = decision.reset, decision.upgraded
        assert seen is not None
        self.store.store_changed(url, seen)
        self._ahead = None
        # A relay that names its store for the first time may be the same store upgraded in place: read from the
        # start, what this laptop finished with and the relay did not delete yet comes again, and the device
        # refuses each as a replay (shown as such, once per message left unacknowledged).
        deliver(Event("notice", contact="", code="store-changed", warnings=[
            f"the relay at {url} names its store for the first time: reading it from the start (messages read"
            " already may be refused as replays)" if upgraded else
            f"the relay at {url} has a new store: reading it from the start"]))
        cursors = self.store.cursors(url, sorted(self.inbound))
        flapping = RelayUnavailable(f"The relay at {url} answers from another store at each request.")
        try:
            messages, _ = self.relay.receive_raw(cursors, wait=0, ack=False, store=seen)
        except StoreChanged:
            raise flapping from None
        if self.relay.store_seen not in (None, seen):
            raise flapping
        return cursors, messages

    def _acknowledge_unnamed(self, cursors: dict[str, int]) -> None:
        """Acknowledge ``cursors`` to a relay from before store identities that just answered a read naming none
        (what the read's ``ack: true`` did before: it cannot be sent with the read, which may meet a relay
        upgraded onto a new store). Best effort; only the mailboxes whose cursor moved since the last time."""
        self._ack_cursors(cursors, None, unnamed=True)

    def _ack_cursors(self, cursors: dict[str, int], store: str | None, unnamed: bool = False) -> None:
        """Acknowledge each mailbox's cursor (none at 0) to the relay, naming ``store`` if given; best effort: the
        first refusal or unavailable relay ends it (StoreChanged too: the next read finds out). ``unnamed`` (a relay
        from before store identities): only the cursors moved since recorded in ``_acked_unnamed``, each recorded
        once acknowledged; a relay that names a store in its answer ends it, that cursor not recorded."""
        for mailbox, after in cursors.items():
            if not after or (unnamed and self._acked_unnamed.get(mailbox) == after):
                continue
            try:
                self.relay.ack(mailbox, after, store=store)
            except (RelayUnavailable, RelayRefused):
                return
            if unnamed:
                if self.relay.store_seen is not None:  # upgraded meanwhile: the next read finds out
                    return
                self._acked_unnamed[mailbox] = after

    def _deliver(self, messages: list[RelayMessage], deliver: Callable[[Event], None], result: PollResult,
                 stuck: set[str]) -> ClientError | None:
        """Open and deliver each message of a batch in order (poll); the first file that could not be saved now
        (its error, for poll to raise once the other mailboxes are done)."""
        unsaved: ClientError | None = None
        for at, message in enumerate(messages):
            if message.mailbox in stuck:
                result.waiting += 1
                continue
            try:
                event, receipt_answer = self._open(message, messages[at + 1] if at + 1 < len(messages)
                                                   else self._first_fetched())
            except (DeviceRefused, FileSaveError) as exc:
                # A file that cannot be saved now: its part waits on the relay, and so does the rest of its
                # mailbox (in order); other mailboxes go on. Raised once they are done.
                stuck.add(message.mailbox)
                unsaved = unsaved or exc
                continue
            except DeviceDown as exc:
                # Keep this mailbox's order: nothing after a message still waiting is opened.
                stuck.add(message.mailbox)
                result.waiting += 1
                result.device_error = str(exc)
                continue
            if event.code != "file-again":  # a part saved before a cut, given again: nothing new to show
                deliver(event)
            # A streamed part's cursor is not synced: its part is saved durably already (IncomingFiles), so a power
            # cut that loses the cursor only has the part come again, known as saved ("file-again").
            self.store.finish(self.relay.url, message.mailbox, message.ref, self._receipt_item(event, receipt_answer),
                              durable=not _streamed(message))
            if event.kind == "control" and event.reply is not None:
                # The device's grant for a request it just opened: sent like a receipt, through the outbox.
                grant = self._control_item(event.contact, event.reply)
                if grant is not None:
                    self.store.queue(grant)
                    self._try_send(grant)
            result.handled += 1
        return unsaved

    def _fetch_ahead(self, cursors: dict[str, int], batch: list[RelayMessage]) -> None:
        """Start fetching the batch after ``batch`` on a relay connection of its own, acknowledging nothing
        (nothing of ``batch`` is finished yet)."""
        after = dict(cursors)
        for message in batch:
            after[message.mailbox] = max(after[message.mailbox], message.ref)
        if self._ahead_relay is None:
            self._ahead_relay = RelayClient(self.relay.url, timeout=self.relay.timeout)
        relay = self._ahead_relay
        known = self.store.relay_store(self.relay.url) or None
        box: dict[str, Any] = {}

        def fetch() -> None:
            try:
                messages = relay.receive_raw(after, wait=0, ack=False, store=known)[0]
            except ClientError:
                return  # the next poll fetches as usual (and finds out about a store changed meanwhile)
            if relay.store_seen in (None, known):  # refs of the store the cursors are refs of
                box["messages"] = messages

        thread = threading.Thread(target=fetch, name="otc-fetch-ahead", daemon=True)
        thread.start()
        self._ahead = (after, thread, box)

    def _first_fetched(self) -> RelayMessage | None:
        """The first message of the batch fetched ahead, if it has come (never waited for)."""
        ahead = self._ahead
        if ahead is None or ahead[1].is_alive():
            return None
        fetched = ahead[2].get("messages")
        return fetched[0] if fetched else None

    def _prefetched(self, cursors: dict[str, int]) -> list[RelayMessage] | None:
        """The batch fetched ahead, if it is the one that follows where the cursors stand now."""
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead[0] != cursors:
            return None
        ahead[1].join(timeout=self.relay.timeout + 5)
        messages = ahead[2].get("messages")
        return messages or None

    def acknowledge(self) -> None:
        """Tell the relay to delete what this laptop has finished with (best effort), if its store is the one the
        cursors are refs of: never before a read has said which store that is."""
        known = self.store.relay_store(self.relay.url)
        if known is None:
            return
        # Stops at the first failure (StoreChanged too: the next poll reads the new store); the next receive
        # (ack=True) does it.
        self._ack_cursors(self.store.cursors(self.relay.url, sorted(self.inbound)), known or None)

    def _open(self, message: RelayMessage, following: RelayMessage | None = None) -> tuple[Event, dict | None]:
        """Open one message on the device: what to show, and the receipt the device made (if any). ``following``:
        the message after it in the batch (a file's next part is opened while this one is saved)."""
        contact = self.inbound.get(message.mailbox, "?")
        streamed = _streamed(message)
        # Not synced for a streamed part: what ``again`` decides for one (a part saved, a file completed, before a
        # cut) is known only after a synced commit of its own (the part's record), which makes this durable too.
        again = self.store.begin_open(self.relay.url, message.mailbox, message.ref, durable=not streamed)
        base: dict[str, Any] = {"contact": contact, "ref": message.ref, "mailbox": message.mailbox}
        try:
            if streamed:
                return self._open_part(message, again, base, following), None
            answer = self.device.unpackage(message.text(), receipt=self.receipts)
            if answer.get("kind") in ("file", "file-part"):
                return self._file_event(answer, base), None
        except DeviceInternalError as exc:
            if self.store.open_failed(self.relay.url, message.mailbox, message.ref) < INTERNAL_TRIES:
                raise DeviceDown(f"{exc} Messages wait on the relay.") from None
            return Event("refused", warnings=[
                f"device-error: the device failed {INTERNAL_TRIES} times to open a message (an internal error);"
                " it was set aside so that the messages after it can be read"], code="device-error", **base), None
        except FileCorrupt as exc:
            return Event("refused", warnings=[f"{FINAL_REFUSALS['file-corrupt']} ({exc})"], code=exc.code,
                         **base), None
        except RemoteError as exc:
            if exc.code not in FINAL_REFUSALS:
                raise DeviceDown(f"The device could not open messages now ({exc}); they wait on the relay.") \
                    from None
            if exc.code == "replay" and again:
                return Event("reopened", warnings=[
                    "lost: this message was opened by the device when this client stopped before showing it;"
                    " the device never releases a message twice"], code="reopened", **base), None
            warning = FINAL_REFUSALS[exc.code]
            if exc.code in FATAL_TO_FILE and str(exc).endswith(" discarded"):
                warning += f"; the file {str(exc)[: -len(' discarded')]} cannot be completed and was discarded"
            return Event("refused", warnings=[warning], code=exc.code, **base), None
        except (DeviceRefused, FileSaveError):  # a file that cannot be saved now: its part waits on the relay
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

    def _open_part(self, message: RelayMessage, again: bool, base: dict[str, Any],
                   following: RelayMessage | None = None) -> Event:
        """A streamed file part: opened by the device in order, its bytes saved by :class:`IncomingFiles` while
        the device opens the next (``following``, if it is this file's next part)."""
        import base64
        import binascii

        try:
            raw = message.data if message.data is not None else base64.b64decode(message.contents, validate=True)
            file_id, index, _ = att.part_address(raw)
        except (binascii.Error, ValueError, fmt.MalformedPackage):
            raise RemoteError("malformed", "a file part that is not one") from None
        new = self.files.expects(file_id.hex(), index)
        if new is False:  # saved already: given again after a cut (ours), or repeated by the relay
            if again:
                return Event("other", code="file-again", warnings=[], **base)
            raise RemoteError("file-duplicate", "a part given twice")
        try:
            answer = self._opened(message)
            if answer is None:
                answer = self.device.call("file_open", part=raw)
        except RemoteError as exc:
            if again and exc.code == "file-unknown":
                # This run's or an earlier one's: the file was completed (and ended) before the relay cursor
                # moved past its last part.
                return Event("other", code="file-again", warnings=[], **base)
            if exc.code in FATAL_TO_FILE:
                # The file can never complete (a part is missing, altered or of the wrong size): it is
                # discarded on this laptop and its key on the device, rather than waited for.
                name = self.files.fail(file_id.hex())
                if name:
                    raise RemoteError(exc.code, f"{name} discarded") from None
            raise
        self._open_ahead(following, message.mailbox, file_id, index)
        received = self.files.part(base["contact"], answer["file"], answer["data"])
        return Event("file", file=received, **base)

    def _open_ahead(self, following: RelayMessage | None, mailbox: str, file_id: bytes, index: int) -> None:
        """Have the device open ``following`` (the next message of the batch, or the first of the next batch when
        it has been fetched) on a thread if it is part ``index + 1`` of the same file, while this laptop saves part
        ``index``: a pipeline of two. A cut loses neither: the device gives its last two parts
        again (device/files.py), and this laptop asks for the one after only once part ``index`` is saved."""
        if following is None or following.mailbox != mailbox or following.data is None \
                or not att.is_stream_part(following.data):
            return
        try:
            next_id, next_index, _ = att.part_address(following.data)
        except (ValueError, fmt.MalformedPackage):
            return  # refused when its turn comes, as before
        if next_id != file_id or next_index != index + 1:
            return
        part, box = following.data, {}

        def open_part() -> None:
            try:
                box["answer"] = self.device.call("file_open", part=part)
            except ClientError as exc:
                box["error"] = exc  # raised when its turn comes, as if it had been asked then

        thread = threading.Thread(target=open_part, name="otc-open-ahead", daemon=True)
        thread.start()
        self._opening = (following, thread, box)

    def _opened(self, message: RelayMessage) -> dict | None:
        """The device's answer for ``message`` if it was opened ahead (None if it was not): raises its error."""
        opening = self._opening
        if opening is None or opening[0] is not message:
            return None
        self._opening = None
        opening[1].join()
        if "error" in opening[2]:
            raise opening[2]["error"]
        return opening[2].get("answer")

    def _drop_opening(self, keep: RelayMessage | None = None) -> None:
        """Forget a part opened ahead and never saved (its turn did not come: the device gives it again), unless
        it is ``keep`` (the first of the next batch, fetched ahead: the next poll takes it up)."""
        opening = self._opening
        if opening is not None and opening[0] is not keep:
            self._opening = None
            opening[1].join()

    def _file_event(self, answer: dict, base: dict[str, Any]) -> Event:
        """A file's header (or an --otp part) the device opened under the pad."""
        info = answer.get("file") or {}
        base["contact"] = str(answer.get("contact", base["contact"]))
        warnings = [str(w) for w in answer.get("warnings", [])]
        if answer.get("kind") == "file":
            return Event("file", file=self.files.header(base["contact"], info), warnings=warnings, **base)
        data = answer.get("data")
        if not isinstance(data, bytes):
            import base64

            data = base64.b64decode(str(data))
        return Event("file", file=self.files.part(base["contact"], info, data), warnings=warnings, **base)

    def _receipt_item(self, event: Event, receipt: dict | None) -> Queued | None:
        if not receipt:
            return None
        package = str(receipt["package"])
        header = fmt.parse(fmt.decode(package))
        return Queued(id=secrets.token_hex(16), relay=self.relay.url, mailbox=str(receipt["mailbox"]),
                      contents=package, contact=event.contact, kind="receipt",
                      pad_id=header.pad_id.hex(), offset=header.offset, created=time.time(), attempts=0)
