"""The pad engine: packages made and opened over the pad store.

DESIGN.md's seven rules of pad use hold in the pad store
(:mod:`device.storage.padstore`, "the rules of pad use"): it reserves and
consumes segments, refuses replays before reading a pad byte, moves receive
state only for verified packages, reports gaps, destroys used bytes and logs.
This module keeps the cryptography (sealing and opening packages with the
bytes the store hands it), the owner's confirmation, and the status report.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from device.confirm import Confirmer, ConfirmRequest, FileSummary
from device.errors import (
    Declined,
    DeviceError,
    InvalidMessage,
    NothingToGrant,
    UnknownContact,
)
from device.storage.abe_tables import AbeTables
from device.storage.padstore import (
    FORGERY_ALARM_AT,
    MIN_GRANT,
    REFUSAL_ROWS,
    PadRecord,
    PadStore,
    RefusalBudget,
    Reservation,
    forgery_text,
    low_level,
    low_warning,
    retired_text,
)
from onetimechat import package as fmt
from onetimechat.errors import PackageRefused
from onetimechat.package import Kind

# Re-exported: the refusal budget and the alarm threshold are the store's (the rules of pad use), named here too.
__all__ = ["FORGERY_ALARM_AT", "REFUSAL_ROWS", "Device", "Packaged", "RefusalBudget", "Unpackaged", "forgery_text",
           "kind_name", "low_level", "low_warning", "retired_text"]
# Refusals status warns of. A renewal pad's too (device/abe/renewal.py), but not a renewal's replay: a laptop
# reading renewals hands the device the ones it opened again (kept as evidence all the same).
SECURITY_EVENTS = ("invalid", "replay", "out-of-range", "unknown-pad", "malformed", "abe-renewal-forged",
                   "abe-renewal-out-of-range")


@dataclass(frozen=True)
class Packaged:
    """A package made for a contact, with any warnings about the pad."""

    package: bytes | bytearray
    contact: str
    pad_id: bytes
    offset: int
    length: int
    mailbox: bytes
    warnings: list[str] = field(default_factory=list)
    #: Control packages made with this one (a request for more pad when the half runs low), to send after it.
    control: tuple[Packaged, ...] = ()
    #: For a grant: the bytes of pad it gives.
    gives: int = 0

    @property
    def consumed(self) -> int:
        return fmt.segment_length(self.length)

    def to_json(self) -> dict:
        """How the device RPC answers a package (raw bytes: they travel as a blob, onetimechat/rpc.py)."""
        return {"contact": self.contact, "package": bytes(self.package), "mailbox": self.mailbox.hex(),
                "length": self.length, "consumed": self.consumed, "warnings": self.warnings}


@dataclass(frozen=True)
class Unpackaged:
    """A verified, decrypted package."""

    contact: str
    kind: Kind
    plaintext: bytes
    pad_id: bytes
    offset: int
    warnings: list[str] = field(default_factory=list)
    #: For a control package: "request", "applied" (the split moved), "repeated" (a copy of the grant taken last:
    #: nothing changes), "refused" or "malformed".
    control: str | None = None
    # A file's header or --otp part (kind 2, device/files.py): what the laptop may know of it. The header's
    # plaintext (which holds the file's key) is never returned.
    file: dict | None = None

    def to_json(self) -> dict:
        """The JSON object of `otc device unpackage` (DESIGN.md)."""
        warnings = list(self.warnings)
        text: str | None = None
        if self.kind == Kind.TEXT:
            try:
                text = self.plaintext.decode("utf-8")
            except UnicodeDecodeError:
                text = self.plaintext.decode("utf-8", errors="replace")
                warnings.append("not-utf8: the message is not valid UTF-8; undecodable bytes were replaced")
        result: dict = {"contact": self.contact, "kind": kind_name(self.kind), "text": text, "warnings": warnings}
        if self.kind == Kind.RECEIPT:
            try:
                pad_id, offset = fmt.parse_receipt(self.plaintext)
            except PackageRefused:
                warnings.append("bad-receipt: a receipt from this contact could not be read")
            else:
                result["receipt_for"] = {"pad_id": pad_id.hex(), "offset": offset}
        if self.kind == Kind.CONTROL:
            result["control"] = control_json(self.plaintext, self.control)
        if self.file is not None:
            result["kind"] = "file-part" if "index" in self.file else "file"
            result["file"] = self.file
            if "index" in self.file:
                result["data"] = fmt.encode(self.plaintext)
        elif self.kind != Kind.TEXT:
            result["data"] = fmt.encode(self.plaintext)
        return result


def kind_name(kind: Kind) -> str:
    return kind.name.lower().replace("_", "-")


def control_json(body: bytes, outcome: str | None) -> dict:
    """What a control package said, and what this device did with it (no secrets: numbers about the split)."""
    try:
        control = fmt.parse_control(body)
    except PackageRefused:
        return {"type": None, "outcome": outcome}
    if isinstance(control, fmt.PadRequest):
        return {"type": "request", "wanted": control.wanted, "left": control.left, "outcome": outcome}
    return {"type": "grant", "epoch": control.epoch, "split": control.split, "outcome": outcome}


# Moving the split (docs/pad-lifecycle.md): the owner's settings, in the device store.
GRANT_MODE = "pad-grant"  # auto: grant by itself within the rule below; ask: ask the owner on the screen; off
GRANT_SHARE = "pad-grant-share"  # percent of this device's unused half one grant may give (default 50)
ASK_MODE = "pad-ask"  # auto: ask the contact for more when the half falls under 10% and under 1%; off
GRANT_MODES = ("auto", "ask", "off")
ASK_MODES = ("auto", "off")
DEFAULT_SHARE = 50


def spare_of(pad: PadRecord) -> int:
    """The unused bytes of ``pad``'s half a grant could give (after the grant package's own segment)."""
    return pad.send_left - fmt.segment_length(fmt.CONTROL.size)


def seen_left(pad: PadRecord, lost: int = 0) -> int:
    """What the peer may still have of its half of ``pad``, as far as this device has seen it use it: its half
    (as far as this device's split bounds it) less what verified packages from it have used, and less ``lost``,
    the bytes of this device's last grant if it died crossing the peer's (:meth:`PadStore.lost_grant`: the peer
    never took them). A peer that says it has nothing left has to spend real packages before this device
    believes it."""
    return max(0, pad.recv_total - pad.recv_bytes - lost)


def grant_amount(mode: str, share: int, spare: int, request: fmt.PadRequest, seen_left: int = 0) -> int:
    """How many bytes to give for ``request`` with ``spare`` unused bytes (after the grant package's own), before
    the owner is asked (mode ask) or by itself (mode auto: only when it has more than twice what the asker has:
    what it says it has, or, if more, what this device has not yet seen it use, ``seen_left``). 0: none."""
    if mode == "off" or (mode == "auto" and spare <= 2 * max(request.left, seen_left)):
        return 0
    amount = min(request.wanted, spare * share // 100)
    return amount if amount >= MIN_GRANT else 0


class Device:
    """A pad device over its home directory."""

    def __init__(self, store: PadStore, confirm: Confirmer | None = None,
                 refusals: RefusalBudget | None = None) -> None:
        self.store = store
        self.confirm = confirm
        self.refusals = refusals or RefusalBudget()
        self._answer_locks: dict[bytes, threading.Lock] = {}
        self._answer_locks_lock = threading.Lock()
        #: Where file keys come from: the server sets its HRNG mixer (DeviceService.session_random).
        self.random: Callable[[int], bytes] = os.urandom
        from device.files import FileTransfers  # it builds on this class

        self.files = FileTransfers(self)

    @classmethod
    def open(cls, home: str | os.PathLike[str], confirm: Confirmer | None = None) -> Device:
        return cls(PadStore(Path(home)), confirm)

    @property
    def name(self) -> str:
        return self.store.device_name

    def close(self) -> None:
        self.flush_refusals()
        self.store.close()

    def flush_refusals(self, force: bool = True) -> None:
        """Write the package refusals counted beyond the budget as one row (when due, or ``force``)."""
        self.store.flush_refusals(self.refusals, force)

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending --------------------------------------------------------------------

    def package(self, contact: str, plaintext: bytes, kind: int = Kind.TEXT) -> Packaged:
        """Encrypt ``plaintext`` for ``contact`` (after confirmation, if a source is set)."""
        kind = Kind(kind)
        if len(plaintext) > fmt.MAX_LENGTH:
            raise InvalidMessage("The message is too long for one package.")
        need = fmt.segment_length(len(plaintext))
        if self.confirm is not None:
            self._confirm(contact, kind, plaintext, need)
        sealed, reserved = self._seal_reserved(contact, kind, plaintext)
        if reserved.crossed and self._running_low(contact) and self.store.setting(ASK_MODE, "auto") == "auto":
            # What is left to send to the contact just fell under 10% (or 1%): ask for more, on this pad.
            try:
                request = self.ask(contact, reserved.pad.send_total)
            except DeviceError:
                return sealed  # no room left even for a request
            return replace(sealed, control=(request,))
        return sealed

    def _running_low(self, contact: str) -> bool:
        """Whether all the pad left for sending to ``contact``, every usable pad together, is under 10%."""
        pads = [p for p in self.store.pads(contact) if not p.retired]
        return low_level(sum(p.send_left for p in pads), sum(p.send_total for p in pads)) > 0

    def receipt(self, received: Unpackaged) -> Packaged:
        """A delivery receipt (kind 3) for a message just received, sent back to its sender.

        It needs no confirmation: its body is made here from the received
        package's pad_id and offset, so a laptop cannot choose what it says,
        and it is made only in the call that opened that message.
        """
        return self._seal(received.contact, Kind.RECEIPT, fmt.receipt_body(received.pad_id, received.offset))

    def seal(self, contact: str, kind: Kind, plaintext: bytes) -> Packaged:
        """Seal without asking: for what the owner already confirmed (a file's header and parts)."""
        return self._seal(contact, kind, plaintext)

    def confirm_file(self, contact: str, file: FileSummary, need: int) -> None:
        """Ask the owner to send ``file`` (its name, size and fingerprint), costing ``need`` pad bytes."""
        if self.confirm is not None:
            self._confirm(contact, Kind.FILE_PART, file.describe().encode("utf-8"), need, file)

    def _seal(self, contact: str, kind: Kind, plaintext: bytes) -> Packaged:
        return self._seal_reserved(contact, kind, plaintext)[0]

    def _seal_reserved(self, contact: str, kind: Kind, plaintext: bytes) -> tuple[Packaged, Reservation]:
        """Seal on a segment the store reserves (rule 1) and destroys once the package is made (rule 2)."""
        reserved, package = self.store.send(
            contact, len(plaintext),
            lambda r, segment, auth_key: fmt.seal(kind, r.pad.pad_id, r.start, segment, plaintext, auth_key))
        return _packaged(reserved, package, len(plaintext)), reserved

    # -- moving the split (docs/pad-lifecycle.md) ---------------------------------------

    def ask(self, contact: str, wanted: int) -> Packaged:
        """A request (kind 4) to ``contact``'s device for ``wanted`` more bytes of pad to send with. It needs no
        confirmation: its body is made here, and it gives nothing away."""
        reserved, package = self.store.ask(
            contact, wanted,
            lambda r, body, segment, key: fmt.seal(Kind.CONTROL, r.pad.pad_id, r.start, segment, body, key))
        return _packaged(reserved, package, fmt.CONTROL.size)

    def grant(self, pad_id: bytes, amount: int | Callable[[PadRecord, bool], int]) -> tuple[Packaged, int]:
        """Give the peer up to ``amount`` bytes of this device's unused half of ``pad_id`` (its own limit moves
        first, durably); the grant package (kind 4) to send, and how many bytes it gives. ``amount`` may be a
        function of the pad as it is in the grant's commit (:meth:`PadStore.grant`)."""
        reserved, given, package = self.store.grant(
            pad_id, amount,
            lambda r, body, segment, key: fmt.seal(Kind.CONTROL, r.pad.pad_id, r.start, segment, body, key))
        return replace(_packaged(reserved, package, fmt.CONTROL.size), gives=given), given

    def regrant(self, pad_id: bytes) -> Packaged:
        """This device's last grant of ``pad_id`` again, on a new segment, while the peer is not using it
        (:meth:`PadStore.regrant`); it gives nothing more (``gives`` 0). NothingToGrant if there is none."""
        reserved, package = self.store.regrant(
            pad_id, lambda r, body, segment, key: fmt.seal(Kind.CONTROL, r.pad.pad_id, r.start, segment, body, key))
        return _packaged(reserved, package, fmt.CONTROL.size)

    def granted_unseen(self) -> dict[bytes, int]:
        """Per pad, the bytes this device gave that no package from the peer has used yet, but for a grant lost
        crossing the peer's (:meth:`granted_lost`): those the peer may still take or use."""
        return {pad.pad_id: given for pad in self.store.pads()
                if (given := sum(m["amount"] for m in self.store.split_moves(pad.pad_id)
                                 if m["how"] == "granted" and m["seen"] is None)
                    - self.store.lost_grant(pad.pad_id))}

    def granted_lost(self) -> dict[bytes, int]:
        """Per pad, the bytes of this device's grant that died crossing the peer's (:meth:`PadStore.lost_grant`):
        nobody's until the next grant moves the split over them; never sent again."""
        return {pad.pad_id: lost for pad in self.store.pads() if (lost := self.store.lost_grant(pad.pad_id))}

    def grant_policy(self) -> tuple[str, int]:
        """(mode, share): how this device answers requests for pad."""
        mode = self.store.setting(GRANT_MODE, "auto") or "auto"
        share = int(self.store.setting(GRANT_SHARE, str(DEFAULT_SHARE)) or DEFAULT_SHARE)
        return (mode if mode in GRANT_MODES else "auto"), share

    def answer_request(self, received: Unpackaged) -> Packaged | None:
        """The grant for a request just opened, if this device's policy (or its owner, on the screen) gives one.

        Only a request this call opened is answered (it travels as its Unpackaged), so a laptop cannot make the
        device grant by itself; the grant's size is the policy's, never the laptop's."""
        if received.kind != Kind.CONTROL or received.control != "request":
            return None
        request = fmt.parse_control(received.plaintext)
        assert isinstance(request, fmt.PadRequest)
        # One request at a time per pad (in this process), so that what the owner is shown is the pad as the
        # grant will find it; across processes the grant's own commit decides again on the locked pad row.
        with self._answering(received.pad_id):
            return self._answer(received, request)

    def _answering(self, pad_id: bytes) -> threading.Lock:
        with self._answer_locks_lock:
            return self._answer_locks.setdefault(pad_id, threading.Lock())

    def _answer(self, received: Unpackaged, request: fmt.PadRequest) -> Packaged | None:
        pad = self.store.pad(received.pad_id)
        if pad is None:
            return None
        mode, share = self.grant_policy()
        spare = spare_of(pad)
        # While this device's last grant is not in use and still stands, the asker may never have had it (a
        # relay can drop exactly the grants): it is said again, and nothing more is given -- in any mode, so no
        # owner is asked. A new grant only once the peer is seen using that one (or the split moved since).
        try:
            return self.regrant(received.pad_id)
        except NothingToGrant:
            pass
        lost = self.store.lost_grant(pad.pad_id)
        amount = grant_amount(mode, share, spare, request, seen_left(pad, lost))
        if amount and mode == "ask":
            if self.confirm is None:
                amount = 0  # no screen to ask on: the owner can grant with `otc device grant`
            else:
                text = (f"{received.contact}'s device is running out of pad to send to you and asks for"
                        f" {request.wanted} bytes (it has {request.left} left). Give it {amount} of your"
                        f" {spare} unused bytes?").encode()
                approved = self.confirm.ask(ConfirmRequest(contact=received.contact, kind="pad-grant", plaintext=text,
                                                           consumes=fmt.segment_length(fmt.CONTROL.size) + amount,
                                                           left_after=spare - amount))
                if not approved:
                    self.store.log_event("declined", contact=received.contact, length=amount,
                                         detail="the owner did not give pad to the contact")
                    return None
        if not amount:
            self.store.log_event("grant-not-given", contact=received.contact, pad_id=received.pad_id,
                                 detail=f"policy {mode}: {spare} unused here, {request.left} left there"
                                        f" ({seen_left(pad, lost)} not seen used)")
            return None
        offered = amount

        def decide(now: PadRecord, pending: bool) -> int:
            # The policy again, on the pad as the grant's commit finds it: never more than was offered (and, in
            # ask mode, approved), nor than the policy allows of what is unused now; and in auto mode nothing
            # while a grant made meanwhile (by another process) is pending.
            if mode == "auto" and pending:
                return 0
            return min(offered, grant_amount(mode, share, spare_of(now), request, seen_left(now, lost)))

        try:
            return self.grant(received.pad_id, decide)[0]
        except NothingToGrant:
            self.store.log_event("grant-not-given", contact=received.contact, pad_id=received.pad_id,
                                 detail=f"policy {mode}: by the time of the grant, too little unused here to give")
            return None

    def _confirm(self, contact: str, kind: Kind, plaintext: bytes, need: int, file: FileSummary | None = None
                 ) -> None:
        pads = self.store.pads(contact)
        if not pads and contact not in self.store.contacts():
            raise UnknownContact(f"No contact named {contact!r} on this device.")
        fitting = [p for p in pads if p.reserve_range(need) is not None]
        if not fitting:
            # Refused here, as the reservation would refuse it, never left to the reservation: a grant applied
            # in between (docs/pad-lifecycle.md) would let it seal what the owner was never asked for.
            self.store.refuse_send(contact, len(plaintext), need)
            fitting = [p for p in self.store.pads(contact) if p.reserve_range(need) is not None]
        left_after = (fitting[0].send_left - need) if fitting else 0
        request = ConfirmRequest(contact=contact, kind="file" if file else kind_name(kind), plaintext=plaintext,
                                 consumes=need, left_after=left_after, file=file)
        approved = self.confirm.ask(request)  # type: ignore[union-attr]
        if not approved:
            self.store.log_event("declined", contact=contact, length=len(plaintext),
                                 detail="the owner declined or did not answer in time")
            raise Declined()

    # -- receiving ------------------------------------------------------------------

    def unpackage(self, data: bytes | bytearray | memoryview) -> Unpackaged:
        """Verify and decrypt a package from a contact."""
        try:
            pkg = fmt.parse(data)
        except PackageRefused as exc:
            self._log_malformed(exc, len(data))
            raise
        start, end = pkg.segment
        received = self.store.receive(pkg.pad_id, pkg.offset, pkg.length, start, end,
                                      lambda segment, auth_key: fmt.open_package(pkg, segment, auth_key),
                                      self.refusals, control=pkg.kind == Kind.CONTROL)
        pad = received.pad
        opened = Unpackaged(pad.contact, pkg.kind, received.opened, pad.pad_id, start, received.warnings,
                            received.control)
        if pkg.kind == Kind.FILE_PART:  # a file's header or --otp part: its pad is spent, the file is checked
            return self.files.received(opened)
        return opened

    def unpackage_base64(self, text: str | bytes) -> Unpackaged:
        """:meth:`unpackage` for a package in its base64 (wire) form."""
        try:
            data = fmt.decode(text)
        except PackageRefused as exc:
            self._log_malformed(exc, len(text))
            raise
        return self.unpackage(data)

    def _log_malformed(self, exc: PackageRefused, size: int) -> None:
        self.store.log_malformed(self.refusals, exc.code, size)

    # -- status ---------------------------------------------------------------------

    def status(self, events: int = 10) -> dict:
        """Contacts, pad left per direction, warnings and recent events (no secrets)."""
        self.flush_refusals(force=False)
        contacts = []
        warnings = []
        pads_by_contact: dict[str, list[PadRecord]] = {}
        for pad in self.store.pads():
            pads_by_contact.setdefault(pad.contact, []).append(pad)
        failures = self.store.tag_failures()
        alarms = []
        unseen = self.granted_unseen()
        lost = self.granted_lost()
        for name in self.store.contacts():
            every = pads_by_contact.get(name, [])
            pads = [p for p in every if not p.retired]
            if given := sum(unseen.get(p.pad_id, 0) for p in every):
                warnings.append(f"grant-unseen: {given} bytes this device gave {name} are not in use by {name}'s"
                                " device yet; a grant lost on the way is sent again when that device next asks"
                                " (for up to 3 requests)"
                                " (unless the split has moved since: then nobody will use them)")
            if dead := sum(lost.get(p.pad_id, 0) for p in every):
                warnings.append(f"grant-lost: {dead} bytes this device gave {name} crossed a grant from {name}'s"
                                " device and neither applied: they are nobody's until the next grant")
            send_total = sum(p.send_total for p in pads)
            send_left = sum(p.send_left for p in pads)
            forged = sum(failures.get(p.pad_id, 0) for p in every)
            alarmed = any(failures.get(p.pad_id, 0) >= FORGERY_ALARM_AT for p in every)  # per pad (DESIGN.md)
            retired = len(every) - len(pads)
            contacts.append({
                "name": name,
                "send": {"total": send_total, "used": sum(p.send_used for p in pads), "left": send_left},
                "receive": {"total": sum(p.recv_total for p in pads), "used": sum(p.recv_bytes for p in pads),
                            "left": sum(p.recv_left for p in pads)},
                "pads": [dict(p.to_dict(), tag_failures=failures.get(p.pad_id, 0),
                              granted_unseen=unseen.get(p.pad_id, 0), granted_lost=lost.get(p.pad_id, 0))
                          for p in every],
                "granted_unseen": sum(unseen.get(p.pad_id, 0) for p in every),
                "granted_lost": sum(lost.get(p.pad_id, 0) for p in every),
                "tag_failures": forged,
                "forgery_alarm": alarmed,
                "must_pair_again": bool(retired) and not pads,
            })
            if alarmed:
                alarms.append(forgery_text(name, forged))
            if retired and not pads:
                warnings.append(f"retired-pad: {retired_text(name)}")
            elif send_total and send_left < fmt.segment_length(1):
                warnings.append(f"pad-exhausted: no pad is left for sending to {name}")
            elif low_level(send_left, send_total):
                warnings.append(low_warning(name, send_left, send_total))
        # A renewal pad (device/storage/abe_tables.py) is a one-time pad under the same rules: its forgery alarm
        # is shown as a contact pad's is.
        for pad_id, holder in AbeTables(self.store).renewal_pad_holders().items():
            if failures.get(pad_id, 0) >= FORGERY_ALARM_AT:
                alarms.append(forgery_text(holder, failures[pad_id]))
        warnings[:0] = alarms
        counts = self.store.event_counts(SECURITY_EVENTS)
        for event in SECURITY_EVENTS:
            if counts.get(event):
                warnings.append(f"{event}: {counts[event]} package(s) refused (see the event log)")
        from device.abe.store import AbeKeys  # attribute keys whose period ends soon, or has ended (issue 22)

        warnings += [f"abe-key-period: {w}" for w in AbeKeys(self.store).key_warnings()]
        return {
            "device": {"name": self.store.device_name, "device_id": self.store.device_id.hex()},
            "contacts": contacts,
            "warnings": warnings,
            "alarms": alarms,
            "refusals_pending": self.refusals.pending(),  # beyond the log budget, written within a minute
            "events": self.store.events(events),
        }


def _packaged(reserved: Reservation, package: bytes | bytearray, length: int) -> Packaged:
    pad = reserved.pad
    return Packaged(package, pad.contact, pad.pad_id, reserved.start, length, pad.mailbox_out, reserved.warnings)
