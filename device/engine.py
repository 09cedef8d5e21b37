"""The pad engine: DESIGN.md's seven rules of pad use over the pad store.

1. Reserve before use -- a send segment is committed (durably) as consumed
   before its bytes are read; concurrent senders get disjoint segments because
   reservations are serialised by SQLite across threads and processes.
2. Destroy after use -- the segment is overwritten once the package is made,
   and once a package is verified and decrypted.
3. Check before reading -- a package overlapping any consumed segment is
   refused as a replay before its pad bytes are read.
4. Verify before changing state -- a package that fails its tag changes no
   pad metadata; only verified packages move the receive state.
5. Report gaps -- a verified package that skips unreceived pad reports it.
6. Uniform errors -- refusals are the few codes of :mod:`device.errors`.
7. Local log -- refusals, gaps, declines and exhaustion go to the event log
   with pad_id/offset/length, never pad bytes or plaintext.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from device.confirm import Confirmer, ConfirmRequest
from device.errors import (
    Declined,
    InvalidMessage,
    OutOfRange,
    PadExhausted,
    Replay,
    RetiredPad,
    UnknownContact,
    UnknownPad,
)
from device.storage.padstore import INITIATOR, PadRecord, PadStore
from onetimechat import package as fmt
from onetimechat.errors import InvalidPackage, PackageRefused
from onetimechat.package import Kind

FORGERY_ALARM_AT = 3  # tag failures on one pad that raise the alarm (DESIGN.md)
REFUSAL_ROWS = 30  # package refusals logged one by one per interval; the rest are counted
REFUSALS_INTERVAL_S = 60.0
LOW_LEVELS = ((2, 100), (1, 10))  # (level, percent): under 1% is level 2, under 10% level 1
SECURITY_EVENTS = ("invalid", "replay", "out-of-range", "unknown-pad", "malformed")


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
        if self.kind != Kind.TEXT:
            result["data"] = fmt.encode(self.plaintext)
        return result


def retired_text(contact: str) -> str:
    return (f"The pad shared with {contact} was made before package format v2 and is retired:"
            f" pair with {contact} again.")


def forgery_text(contact: str, failures: int) -> str:
    return (f"forgery-alarm: {failures} packages from {contact}'s side failed authentication:"
            " someone is forging messages (see the event log)")


def _span(bounds: tuple[int, int]) -> tuple[int, int]:
    """(start, length) of a half-open range, as the pad file reads it."""
    return bounds[0], bounds[1] - bounds[0]


def kind_name(kind: Kind) -> str:
    return kind.name.lower().replace("_", "-")


def low_level(left: int, total: int) -> int:
    """0 while at least 10% is left, 1 under 10%, 2 under 1%."""
    for level, divisor in LOW_LEVELS:
        if left * divisor < total:
            return level
    return 0


def low_warning(contact: str, left: int, total: int) -> str:
    pct = 100.0 * left / total if total else 0.0
    return f"pad-low: {left} bytes ({pct:.1f}%) of the pad for sending to {contact} are left"


class RefusalBudget:
    """Package refusals: the first few of each interval are logged one by one (pad, offset, length), the rest
    counted and written as one ``package-refusals`` row an interval.

    A flood of junk packages (from a hostile laptop, or from the relay through an honest one) could otherwise
    cost a synced commit each, wearing the SD card, and fill the log with rows that are never rotated out.
    Tag failures beyond the budget are counted per pad in memory and added with the aggregate, so the
    forgery alarm still counts every one (the first ``REFUSAL_ROWS`` of an interval are durable at once).
    """

    def __init__(self, rows: int = REFUSAL_ROWS, interval: float = REFUSALS_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rows, self.interval, self.clock = rows, interval, clock
        self._lock = threading.Lock()
        self._window = clock()
        self._used = 0
        self._last_flush = clock()
        self._counts: dict[str, int] = {}
        self._failures: dict[bytes, int] = {}

    def allow(self) -> bool:
        """Whether this refusal may be written as a row of its own now."""
        with self._lock:
            now = self.clock()
            if now - self._window >= self.interval:
                self._window, self._used = now, 0
            if self._used < self.rows:
                self._used += 1
                return True
            return False

    def defer(self, event: str, pad_id: bytes | None = None) -> None:
        with self._lock:
            self._counts[event] = self._counts.get(event, 0) + 1
            if event == "invalid" and pad_id is not None:
                self._failures[pad_id] = self._failures.get(pad_id, 0) + 1

    def pending(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def due(self) -> bool:
        with self._lock:
            return bool(self._counts) and self.clock() - self._last_flush >= self.interval

    def take(self) -> tuple[dict[str, int], dict[bytes, int]]:
        with self._lock:
            counts, failures = self._counts, self._failures
            self._counts, self._failures, self._last_flush = {}, {}, self.clock()
            return counts, failures


class Device:
    """A pad device over its home directory."""

    def __init__(self, store: PadStore, confirm: Confirmer | None = None,
                 refusals: RefusalBudget | None = None) -> None:
        self.store = store
        self.confirm = confirm
        self.refusals = refusals or RefusalBudget()

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
        if not force and not self.refusals.due():
            return
        counts, failures = self.refusals.take()
        if not counts:
            return
        with self.store.transaction() as conn:
            detail = "; ".join(f"{n} {event}" for event, n in sorted(counts.items()))
            self.store.log(conn, "package-refusals", length=sum(counts.values()),
                           detail=f"refused beyond the per-minute log budget: {detail}")
            names = {p.pad_id: p.contact for p in self.store.pads()}
            for pad_id, n in failures.items():
                if pad_id in names:
                    total = self.store.count_tag_failure(conn, pad_id, n)
                    if total >= FORGERY_ALARM_AT > total - n:
                        self.store.log(conn, "forgery-alarm", contact=names[pad_id], pad_id=pad_id,
                                       detail=f"{total} packages on this pad failed authentication: someone is forging")

    def _refusal(self, conn: sqlite3.Connection, event: str, **fields: object) -> None:
        """Log one package refusal, within the budget; count it beyond."""
        if self.refusals.allow():
            self.store.log(conn, event, **fields)  # type: ignore[arg-type]
        else:
            self.refusals.defer(event)

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

    def _seal(self, contact: str, kind: Kind, plaintext: bytes) -> Packaged:
        need = fmt.segment_length(len(plaintext))
        pad, start, end, warnings = self._reserve_segment(contact, len(plaintext))
        try:
            pad_file = self.store.pad_file(pad)
            segment = pad_file.read(start, need)
            package = fmt.seal(kind, pad.pad_id, start, segment, plaintext, pad_file.read(*_span(pad.own_auth_key)))
        finally:
            self.store.wipe(pad, start, end)
        return Packaged(package, contact, pad.pad_id, start, len(plaintext), pad.mailbox_out, warnings)

    def _reserve_segment(self, contact: str, length: int) -> tuple[PadRecord, int, int, list[str]]:
        """Durably reserve the next segment for a message of ``length`` bytes (rule 1)."""
        need = fmt.segment_length(length)
        with self.store.transaction() as conn:
            pads = self.store.pads_for_send(conn, contact)
            for pad in pads:
                segment = pad.reserve_range(need)
                if segment is not None:
                    start, end = segment
                    return pad, start, end, self._reserve(conn, pad, start, end)
            left = max((p.send_left for p in pads), default=0)
            if not pads and any(p.retired for p in self.store.pads(contact)):
                raise RetiredPad(retired_text(contact))
            self.store.log(conn, "pad-exhausted", contact=contact, length=length,
                           detail=f"needed {need} pad bytes, {left} left")
        raise PadExhausted(
            f"Not enough pad left to send to {contact}: this message needs {need} pad bytes and {left} are left."
        )

    def _reserve(self, conn: sqlite3.Connection, pad: PadRecord, start: int, end: int) -> list[str]:
        send_next = end if pad.role == INITIATOR else start
        left = pad.send_left - (end - start)
        level = low_level(left, pad.send_total)
        conn.execute(
            "UPDATE pads SET send_next = ?, send_count = send_count + 1, low_level = max(low_level, ?)"
            " WHERE pad_id = ?",
            (send_next, level, pad.pad_id),
        )
        self.store.add_consumed(conn, pad.pad_id, start, end)
        self.store.add_pending_wipe(conn, pad.pad_id, start, end)
        warnings = []
        if level:
            warnings.append(low_warning(pad.contact, left, pad.send_total))
            if level > pad.low_level:
                self.store.log(conn, "pad-low", contact=pad.contact, pad_id=pad.pad_id, offset=start,
                               length=end - start - fmt.MASK_LEN, detail=f"{left} of {pad.send_total} bytes left")
        return warnings

    def _confirm(self, contact: str, kind: Kind, plaintext: bytes, need: int) -> None:
        pads = self.store.pads(contact)
        if not pads and contact not in self.store.contacts():
            raise UnknownContact(f"No contact named {contact!r} on this device.")
        fitting = [p for p in pads if p.reserve_range(need) is not None]
        left_after = (fitting[0].send_left - need) if fitting else 0
        if fitting:
            request = ConfirmRequest(contact=contact, kind=kind_name(kind), plaintext=plaintext,
                                     consumes=need, left_after=left_after)
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

        refusal: PackageRefused | None = None
        result: Unpackaged | None = None
        with self.store.transaction() as conn:
            pad = self.store.pad(pkg.pad_id, conn)
            fields = {"pad_id": pkg.pad_id, "offset": pkg.offset, "length": pkg.length}
            if pad is None:
                refusal = UnknownPad()
                self._refusal(conn, "unknown-pad", **fields)
            else:
                fields["contact"] = pad.contact
                lo, hi = pad.peer_half
                if pad.retired:
                    refusal = RetiredPad(retired_text(pad.contact))
                    self._refusal(conn, "retired-pad", **fields)
                elif not (lo <= start and end <= hi):
                    refusal = OutOfRange()
                    self._refusal(conn, "out-of-range", **fields)
                elif self.store.overlaps(conn, pad.pad_id, start, end):
                    refusal = Replay()
                    self._refusal(conn, "replay", **fields)
                else:
                    pad_file = self.store.pad_file(pad)
                    segment = pad_file.read(start, end - start)
                    try:
                        plaintext = fmt.open_package(pkg, segment, pad_file.read(*_span(pad.peer_auth_key)))
                    except InvalidPackage as exc:
                        refusal = exc
                        self._tag_failed(conn, pad, fields)
                    else:
                        warnings = self._accept(conn, pad, start, end)
                        result = Unpackaged(pad.contact, pkg.kind, plaintext, pad.pad_id, start, warnings)
        if refusal is not None:
            self.flush_refusals(force=False)
            raise refusal
        assert result is not None and pad is not None
        self.store.wipe(pad, start, end)
        return result

    def _tag_failed(self, conn: sqlite3.Connection, pad: PadRecord, fields: dict) -> None:
        """Log a package that failed its tag, count it for the pad, and raise the alarm from the third."""
        if not self.refusals.allow():
            self.refusals.defer("invalid", pad.pad_id)  # counted for the alarm with the next aggregate
            return
        self.store.log(conn, "invalid", detail="authentication failed", **fields)
        failures = self.store.count_tag_failure(conn, pad.pad_id)
        if failures >= FORGERY_ALARM_AT:
            self.store.log(conn, "forgery-alarm", contact=pad.contact, pad_id=pad.pad_id,
                           detail=f"{failures} packages on this pad failed authentication: someone is forging")

    def unpackage_base64(self, text: str | bytes) -> Unpackaged:
        """:meth:`unpackage` for a package in its base64 (wire) form."""
        try:
            data = fmt.decode(text)
        except PackageRefused as exc:
            self._log_malformed(exc, len(text))
            raise
        return self.unpackage(data)

    def _log_malformed(self, exc: PackageRefused, size: int) -> None:
        if self.refusals.allow():
            self.store.log_event("malformed", length=size, detail=exc.code)
        else:
            self.refusals.defer("malformed")
            self.flush_refusals(force=False)

    def _accept(self, conn: sqlite3.Connection, pad: PadRecord, start: int, end: int) -> list[str]:
        """Record a verified package's segment as consumed; return gap warnings."""
        frontier = pad.recv_frontier
        warnings = []
        if pad.role == INITIATOR:  # the peer sends downward from the top
            gap = frontier - end
            new_frontier = min(frontier, start)
        else:  # the peer sends upward from the split's other side, i.e. from 0
            gap = start - frontier
            new_frontier = max(frontier, end)
        if gap > 0:
            warnings.append(
                f"gap: {gap} bytes of {pad.contact}'s pad before this message were never received;"
                " messages may have been dropped or delayed"
            )
            self.store.log(conn, "gap", contact=pad.contact, pad_id=pad.pad_id, offset=start,
                           length=end - start - fmt.MASK_LEN, detail=f"{gap} bytes skipped")
        elif new_frontier == frontier:
            warnings.append("late: this message arrived after messages sent later")
        conn.execute(
            # A valid package from the peer on a pad proves the peer holds it: it may send now (confirmed).
            "UPDATE pads SET recv_frontier = ?, recv_bytes = recv_bytes + ?, recv_count = recv_count + 1,"
            " confirmed = 1 WHERE pad_id = ?",
            (new_frontier, end - start, pad.pad_id),
        )
        self.store.add_consumed(conn, pad.pad_id, start, end)
        self.store.add_pending_wipe(conn, pad.pad_id, start, end)
        return warnings

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
        warnings[:0] = alarms
        marks = ",".join("?" * len(SECURITY_EVENTS))
        counts = dict(self.store.read(
            f"SELECT event, count(*) FROM events WHERE event IN ({marks}) GROUP BY event", SECURITY_EVENTS
        ))
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
