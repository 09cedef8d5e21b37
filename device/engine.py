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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from device.confirm import Confirmer, ConfirmRequest, FileSummary
from device.errors import (
    Declined,
    InvalidMessage,
    UnknownContact,
)
from device.storage.abe_tables import AbeTables
from device.storage.padstore import (
    FORGERY_ALARM_AT,
    REFUSAL_ROWS,
    PadRecord,
    PadStore,
    RefusalBudget,
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

    @property
    def consumed(self) -> int:
        return fmt.segment_length(self.length)


@dataclass(frozen=True)
class Unpackaged:
    """A verified, decrypted package."""

    contact: str
    kind: Kind
    plaintext: bytes
    pad_id: bytes
    offset: int
    warnings: list[str] = field(default_factory=list)
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


class Device:
    """A pad device over its home directory."""

    def __init__(self, store: PadStore, confirm: Confirmer | None = None,
                 refusals: RefusalBudget | None = None) -> None:
        self.store = store
        self.confirm = confirm
        self.refusals = refusals or RefusalBudget()
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
        return self._seal(contact, kind, plaintext)

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
        """Seal on a segment the store reserves (rule 1) and destroys once the package is made (rule 2)."""
        reserved, package = self.store.send(
            contact, len(plaintext),
            lambda r, segment, auth_key: fmt.seal(kind, r.pad.pad_id, r.start, segment, plaintext, auth_key))
        pad = reserved.pad
        return Packaged(package, contact, pad.pad_id, reserved.start, len(plaintext), pad.mailbox_out,
                        reserved.warnings)

    def _confirm(self, contact: str, kind: Kind, plaintext: bytes, need: int, file: FileSummary | None = None
                 ) -> None:
        pads = self.store.pads(contact)
        if not pads and contact not in self.store.contacts():
            raise UnknownContact(f"No contact named {contact!r} on this device.")
        fitting = [p for p in pads if p.reserve_range(need) is not None]
        left_after = (fitting[0].send_left - need) if fitting else 0
        if fitting:
            request = ConfirmRequest(contact=contact, kind="file" if file else kind_name(kind), plaintext=plaintext,
                                     consumes=need, left_after=left_after, file=file)
            approved = self.confirm.ask(request)  # type: ignore[union-attr]
            if not approved:
                self.store.log_event("declined", contact=contact, length=len(plaintext),
                                     detail="the owner declined or did not answer in time")
                raise Declined()
        # A message that cannot fit is refused by the reservation, without asking.

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
                                      self.refusals)
        pad = received.pad
        opened = Unpackaged(pad.contact, pkg.kind, received.opened, pad.pad_id, start, received.warnings)
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
        for name in self.store.contacts():
            every = pads_by_contact.get(name, [])
            pads = [p for p in every if not p.retired]
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
                "pads": [dict(p.to_dict(), tag_failures=failures.get(p.pad_id, 0)) for p in every],
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
