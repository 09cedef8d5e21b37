"""Attachments on the device: files sent and received in parts (docs/attachments.md).

The device does every encryption of a file, as it does of a text:

* **Sending.** :meth:`FileTransfers.begin` draws the file's id, key and nonce prefix from the device's random
  source (the HRNG mixer under ``otc device serve``), asks the owner to confirm the file's name, size and
  fingerprint, records the file (its key sealed like the rest of the store's secrets) and seals its header
  under the pad. :meth:`FileTransfers.seal` then seals its parts in order. The device keeps a running SHA-256
  of the parts and refuses to seal the last one unless the whole file matches the fingerprint the owner
  confirmed, so a laptop cannot get a file out under a fingerprint it does not have. It records the SHA-256
  of every part before it gives the part out: a part sealed again (a resume) must be the same bytes, since
  a second plaintext under the same key and nonce would break the cipher. An ``--otp`` part's package is
  kept until the file ends and given back on a repeat, so the pad spent is exactly what the owner confirmed.
* **Receiving.** A header package opened under the pad records the file; :meth:`FileTransfers.open_part`
  opens its parts strictly in order and hands their bytes to the laptop (never the key). The last
  :data:`GIVEN_AGAIN` parts given may be asked for again: the laptop may have been cut before it saved them, and
  it has the device open a part while it saves the one before (client/messenger.py), so two may be in flight.
  Any earlier one is a duplicate, any later one out of order.

The key stays on the device until the laptop ends the transfer (:meth:`FileTransfers.end`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from device.confirm import FileSummary
from device.errors import PadExhausted, UnknownContact
from onetimechat import attachment as att
from onetimechat import package as fmt
from onetimechat.crypto import equal
from onetimechat.errors import (
    FileChanged,
    FileIdTaken,
    FilePartDuplicate,
    FilePartOrder,
    FileSizeMismatch,
    FileUnknown,
    MalformedPackage,
)
from onetimechat.package import Kind

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from device.engine import Device, Packaged, Unpackaged

OUT, IN = "file-out:", "file-in:"
OTP_KEPT = "file-otp:"  # an --otp part's package, kept for a repeat: file-otp:<file_id>:<index>
# Streamed parts a laptop may have opened again (the last ones given): the one it saves and the one opened meanwhile.
# Before issue 24's speed work only the last one: a laptop could not open a part before it had saved the previous.
GIVEN_AGAIN = 2


@dataclass
class _Outgoing:
    contact: str
    header: att.FileHeader
    digests: list[bytes]  # of every part sealed so far, in order (durable before each part is given out)
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    hashed: int = 0  # parts in ``hasher`` (in memory only: a restarted device is fed again from part 0)
    aead: ChaCha20Poly1305 | None = None


@dataclass
class _Incoming:
    contact: str
    header: att.FileHeader
    next: int = 0  # the next part to open
    aead: ChaCha20Poly1305 | None = None


def _header_json(header: att.FileHeader) -> dict:
    return {"file_id": header.file_id.hex(), "mode": header.mode, "size": header.size,
            "part_size": header.part_size, "sha256": header.sha256.hex(), "name": header.name,
            "key": base64.b64encode(header.key).decode(), "prefix": header.prefix.hex()}


def _header_of(data: dict) -> att.FileHeader:
    return att.FileHeader(bytes.fromhex(data["file_id"]), int(data["mode"]), int(data["size"]),
                          int(data["part_size"]), bytes.fromhex(data["sha256"]), base64.b64decode(data["key"]),
                          bytes.fromhex(data["prefix"]), str(data["name"]))


def summary(header: att.FileHeader) -> FileSummary:
    return FileSummary(header.name, header.size, header.sha256.hex(), att.MODES[header.mode])


class FileTransfers:
    """The files one device is sending and receiving."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self._lock = threading.RLock()
        self._out: dict[bytes, _Outgoing] = {}
        self._in: dict[bytes, _Incoming] = {}

    @property
    def random(self) -> Callable[[int], bytes]:
        return self.device.random

    # -- the store ------------------------------------------------------------------------------------------

    def _save(self, prefix: str, file_id: bytes, record: dict, event: str | None = None,
              detail: str | None = None) -> None:
        store = self.device.store
        raw = json.dumps(record, sort_keys=True).encode()
        if store.secrets:
            raw = store.secrets.seal(raw, (prefix + file_id.hex()).encode())
        store.save_settings({prefix + file_id.hex(): base64.b64encode(raw).decode()}, event, detail)

    def _load(self, prefix: str, file_id: bytes) -> dict | None:
        store = self.device.store
        value = store.setting(prefix + file_id.hex())
        if value is None:
            return None
        raw = base64.b64decode(value)
        if store.secrets:
            raw = store.secrets.open(raw, (prefix + file_id.hex()).encode())
        return json.loads(raw)

    def _record(self, prefix: str, file_id: bytes) -> tuple[str, att.FileHeader, dict]:
        """(contact, header, the rest) of a file this device records; FileUnknown if it has none."""
        record = self._load(prefix, file_id)
        if record is None:
            raise FileUnknown()
        return record["contact"], _header_of(record["header"]), record

    def _outgoing(self, file_id: bytes) -> _Outgoing:
        if file_id not in self._out:
            contact, header, record = self._record(OUT, file_id)
            self._out[file_id] = _Outgoing(contact, header, [bytes.fromhex(d) for d in record["digests"]])
        return self._out[file_id]

    def _incoming(self, file_id: bytes) -> _Incoming:
        if file_id not in self._in:
            contact, header, record = self._record(IN, file_id)
            self._in[file_id] = _Incoming(contact, header, int(record["next"]))
        return self._in[file_id]

    def _save_outgoing(self, file_id: bytes, session: _Outgoing, event: str | None = None,
                       detail: str | None = None) -> None:
        self._save(OUT, file_id, {"contact": session.contact, "header": _header_json(session.header),
                                  "digests": [d.hex() for d in session.digests]}, event, detail)

    def _save_incoming(self, file_id: bytes, session: _Incoming, event: str | None = None,
                       detail: str | None = None) -> None:
        self._save(IN, file_id, {"contact": session.contact, "header": _header_json(session.header),
                                 "next": session.next}, event, detail)

    # -- sending --------------------------------------------------------------------------------------------

    def begin(self, contact: str, name: str, size: int, sha256: bytes, otp: bool = False
              ) -> tuple[att.FileHeader, Packaged]:
        """Confirm the file with the owner, record it and seal its header (kind 2) under the pad."""
        device = self.device
        att.check_name(name)
        if len(sha256) != att.SHA256_LEN:
            raise MalformedPackage("A file's fingerprint is a SHA-256 (32 bytes).")
        if contact not in device.store.contacts():
            raise UnknownContact(f"No contact named {contact!r} on this device.")
        header = att.new_header(name, size, sha256, att.OTP if otp else att.STREAM,
                                self.random(att.FILE_ID_LEN + att.KEY_LEN + att.PREFIX_LEN))
        body = att.header_body(header)
        need = fmt.segment_length(len(body))
        if otp:
            need += sum(fmt.segment_length(att.otp_package_length(header, i)) for i in range(header.parts))
            left = max((p.send_left for p in device.store.pads(contact) if not p.retired), default=0)
            if need > left:
                raise PadExhausted(f"The file does not fit in the pad left for {contact}: sent with --otp it "
                                   f"needs {need} pad bytes and {left} are left; send it without --otp.")
        device.confirm_file(contact, summary(header), need)
        session = _Outgoing(contact, header, [])
        with self._lock:
            # Recorded before the header goes out: a key that left in a header is always one this device knows.
            self._save_outgoing(header.file_id, session, "file-send",
                                f"{att.MODES[header.mode]} file of {size} bytes to {contact}")
            self._out[header.file_id] = session
        try:
            packaged = device.seal(contact, Kind.FILE_PART, body)
        except BaseException:
            self.end(header.file_id)
            raise
        return header, packaged

    def resume(self, file_id: bytes) -> dict:
        """Where a send stands: the next part to feed (``next``), parts sealed so far, and the header."""
        with self._lock:
            session = self._outgoing(file_id)
            return {"next": session.hashed, "sealed": len(session.digests), "contact": session.contact,
                    "file": session.header.public()}

    def seal(self, file_id: bytes, index: int, data: bytes | memoryview, want: bool = True
             ) -> tuple[bytes | bytearray | None, bool]:
        """Part ``index`` of an outgoing file: (its bytes to send, whether it is the last). With ``want``
        False (a resume feeding parts already sent, to hash them again) nothing is sealed.

        FilePartOrder past the next part to feed; FileChanged if a part sealed before is fed with other bytes,
        or if the last part's file does not match the confirmed fingerprint (the send then ends)."""
        with self._lock:
            session = self._outgoing(file_id)
            header = session.header
            if len(data) != header.part_length(index):
                raise FileSizeMismatch()
            if index > session.hashed or index > len(session.digests):
                raise FilePartOrder(f"File part refused: feed the parts in order, from part {session.hashed}.")
            part_digest = att.digest(data)
            fresh = index == len(session.digests)
            if not fresh and not equal(part_digest, session.digests[index]):
                self._fail(file_id, session, "a part sealed before was fed with other bytes")
            hasher = session.hasher
            if index == session.hashed:
                hasher = session.hasher.copy()
                hasher.update(data)
            last = header.is_last(index)
            if last and fresh and not equal(hasher.digest(), header.sha256):
                self._fail(file_id, session, "the file does not match the fingerprint confirmed")
            if fresh:
                session.digests.append(part_digest)
                try:
                    self._save_outgoing(file_id, session)  # durable before the part leaves (see the module)
                except BaseException:
                    session.digests.pop()
                    raise
            if index == session.hashed:
                session.hasher, session.hashed = hasher, session.hashed + 1
            if not want:
                return None, last
            if header.mode == att.STREAM:
                if session.aead is None:
                    session.aead = att.stream_key(header)
                return att.seal_part(header, session.aead, index, data), last
            # An --otp part is sealed under the pad once: a repeat (a resume) gets the package kept for it, never
            # fresh pad the owner did not confirm. Kept (ciphertext only) before it is given out; only a device
            # cut between sealing and keeping it (the package never left) seals that part again.
            name = f"{OTP_KEPT}{file_id.hex()}:{index}"
            kept = self.device.store.setting(name)
            if kept is not None:
                return base64.b64decode(kept), last
            package = self.device.seal(session.contact, Kind.FILE_PART, att.otp_part_body(header, index, data))
            self.device.store.save_settings({name: base64.b64encode(package.package).decode()})
            return package.package, last

    def _fail(self, file_id: bytes, session: _Outgoing, why: str) -> None:
        self.end(file_id, "file-changed", f"to {session.contact}: {why}; the send is ended")
        raise FileChanged()

    def end(self, file_id: bytes, event: str | None = None, detail: str | None = None) -> bool:
        """Forget a file sent or received (its key above all); whether this device had it."""
        store = self.device.store
        with self._lock:
            self._out.pop(file_id, None)
            self._in.pop(file_id, None)
            known = [p + file_id.hex() for p in (OUT, IN) if store.setting(p + file_id.hex()) is not None]
            kept = list(store.settings_with_prefix(f"{OTP_KEPT}{file_id.hex()}:"))
            if known or kept or event is not None:
                store.erase_settings(known + kept, event, detail)  # the key overwritten, not just unlinked
        return bool(known)

    # -- receiving ------------------------------------------------------------------------------------------

    def received(self, opened: Unpackaged) -> Unpackaged:
        """A kind 2 package just opened under the pad: a header (recorded) or an --otp part. What the laptop
        gets back: the file's public header, and the part's bytes; never the key."""
        from dataclasses import replace

        body = opened.plaintext
        if att.body_type(body) == att.HEADER_TYPE:
            header = att.parse_header(body)
            with self._lock:
                # An id this device already has, either way, is refused: a peer reusing the id of the file this
                # device sends it (in the clear in every part) would otherwise let a garbage part under it, and
                # the laptop's discard of "that incoming file", end this device's own send.
                if any(self._load(prefix, header.file_id) is not None for prefix in (OUT, IN)):
                    self.device.store.log_event("file-refused", contact=opened.contact,
                                                detail="a file header reused the id of a file this device has")
                    raise FileIdTaken()
                session = _Incoming(opened.contact, header)
                self._save_incoming(header.file_id, session, "file-receive",
                                    f"{att.MODES[header.mode]} file of {header.size} bytes from {opened.contact}")
                self._in[header.file_id] = session
            return replace(opened, plaintext=b"", file={**header.public(), "header": True})
        file_id, index, data = att.parse_otp_part(body)
        with self._lock:
            session = self._incoming(file_id)
            if session.header.mode != att.OTP or session.contact != opened.contact:
                raise FileUnknown()
            self._take(file_id, session, index, len(data), again_ok=False)
        return replace(opened, plaintext=data, file=self._part_info(session, index))

    def open_part(self, blob: bytes) -> tuple[bytes, dict]:
        """Open a streamed part in order: (its bytes, what it is)."""
        file_id, index, _ = att.part_address(blob)
        with self._lock:
            session = self._incoming(file_id)
            if session.header.mode != att.STREAM:
                raise FileUnknown()
            if index > session.next:
                raise FilePartOrder()
            if index < session.next - GIVEN_AGAIN:
                raise FilePartDuplicate()
            if session.aead is None:
                session.aead = att.stream_key(session.header)
            index, data = att.open_part(session.header, session.aead, blob)
            self._take(file_id, session, index, len(data), again_ok=True)
            return data, self._part_info(session, index)

    def _take(self, file_id: bytes, session: _Incoming, index: int, length: int, again_ok: bool) -> None:
        """Move the receive state past part ``index`` (verified), or accept it again as one of the last given
        (``again_ok``: a streamed part)."""
        if length != session.header.part_length(index):
            raise FileSizeMismatch()
        if index == session.next:
            session.next += 1
            try:
                self._save_incoming(file_id, session)
            except BaseException:
                session.next -= 1
                raise
        elif index > session.next:
            raise FilePartOrder()
        elif not (again_ok and index >= session.next - GIVEN_AGAIN):
            raise FilePartDuplicate()

    def _part_info(self, session: _Incoming, index: int) -> dict:
        header = session.header
        return {"id": header.file_id.hex(), "index": index, "last": header.is_last(index),
                "parts": header.parts, "size": header.size, "complete": index + 1 == header.parts}  # in order

    def info(self, file_id: bytes) -> dict:
        """The public header of a file being received, and the next part the device expects."""
        with self._lock:
            session = self._incoming(file_id)
            return {**session.header.public(), "contact": session.contact, "next": session.next}
