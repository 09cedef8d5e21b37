"""Pairing in person: two devices agree keys, compare a string, and make a pad.

The ceremony (docs/pairing.md has the full protocol):

1. **Key agreement with a commitment.** The host commits to its hello (its
   X25519 key, a nonce, its device id and name) before it sees the joiner's;
   then it reveals it. A man in the middle must fix his keys before he learns
   the ones that decide the short authentication string (SAS), so he matches
   it with probability 10^-9.
2. **The SAS.** Both devices show ``123-456-789`` derived from the transcript;
   each owner confirms through the device's confirm source that both screens
   match. Either "no" stops the ceremony; nothing is stored.
3. **The pad.** Each device draws its share from its HRNG mixer; the pad is the
   XOR of both shares, so neither HRNG alone has to be trusted. Shares travel
   sealed (AES-256-GCM, per-direction keys, counter nonces) chunk by
   chunk; each side writes ``share XOR peer share`` and both compare every
   chunk's hash. Verified progress is saved, so a broken ceremony resumes from
   the last verified chunk when both run it again.
4. **All or nothing.** The pad stays a ``.partial`` file that no rule of the
   device will use until both devices have computed the same fingerprint over
   the whole pad; then each commits it (renames the file, records the pad).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from device import package as fmt
from device.errors import ContactExists
from device.localpair import check_size
from device.storage.padfile import sync_directory
from device.storage.padstore import INITIATOR, RESPONDER, PadRecord, PadStore, check_name
from device.ui import CeremonyView
from onetimechat.errors import OTCError
from provisioning.agree import HOST, JOIN, agree
from provisioning.agree import format_sas as format_sas
from provisioning.errors import CeremonyAborted, CeremonyBroken, CeremonyError, CeremonyRefused
from provisioning.wire import Wire

PROTOCOL = "otc-pairing-v1"
CHUNK = 4 << 20
MAX_CHUNK = 4 << 20
WINDOW = 8  # own shares generated ahead of the peer's

RandomBytes = Callable[[int], bytes]
Compare = Callable[[str], bool]
ProgressHook = Callable[[CeremonyView], None]


def fingerprint(pad_id: bytes, chunk_hashes: list[bytes]) -> str:
    """The pad's fingerprint: a hash over its chunks' hashes, shown in groups of four."""
    digest = hashlib.sha256(b"otc pad fingerprint v1" + pad_id + b"".join(chunk_hashes)).hexdigest()
    return " ".join(digest[i : i + 4] for i in range(0, 20, 4))


@dataclass
class Partial:
    """A ceremony's saved progress: the verified prefix of a pad not yet usable."""

    pad_id: str
    peer_device_id: str
    role: str
    size: int
    chunk: int
    mailbox_h2j: str
    mailbox_j2h: str
    contact: str
    hashes: list[str] = field(default_factory=list)  # of the verified chunks, in order

    @staticmethod
    def state_path(store: PadStore, pad_id: str) -> Path:
        return store.home / "pads" / f"{pad_id}.ceremony.json"

    @staticmethod
    def data_path(store: PadStore, pad_id: str) -> Path:
        return store.home / "pads" / f"{pad_id}.pad.partial"

    @classmethod
    def for_peer(cls, store: PadStore, peer_device_id: bytes) -> Partial | None:
        for path in sorted((store.home / "pads").glob("*.ceremony.json")):
            try:
                partial = cls(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if partial.peer_device_id == peer_device_id.hex() and cls.data_path(store, partial.pad_id).exists():
                return partial
        return None

    def save(self, store: PadStore) -> None:
        path = self.state_path(store, self.pad_id)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(self), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def discard(self, store: PadStore) -> None:
        self.data_path(store, self.pad_id).unlink(missing_ok=True)
        self.state_path(store, self.pad_id).unlink(missing_ok=True)


class Ceremony:
    """One device's side of the pairing ceremony."""

    def __init__(self, store: PadStore, role: str, *, random_bytes: RandomBytes, compare: Compare,
                 size: int | None = None, name: str | None = None, chunk: int = CHUNK,
                 on_progress: ProgressHook | None = None, on_sas: Callable[[str], None] | None = None) -> None:
        if role not in (HOST, JOIN):
            raise ValueError("role is host or join")
        if role == HOST:
            if size is None:
                raise ValueError("the host chooses the size")
            check_size(size)
        if not 4096 <= chunk <= MAX_CHUNK:
            raise ValueError("chunk size out of range")
        self.store = store
        self.role = role
        self.random_bytes = random_bytes
        self.compare = compare
        self.size = size
        self.name = check_name(name) if name else None
        self.chunk = chunk
        self.on_progress = on_progress or (lambda view: None)
        self.on_sas = on_sas or (lambda sas: None)
        self.peer_name = ""
        self.sas = ""
        self.fingerprint = ""

    # -- the whole ceremony ------------------------------------------------------------

    def run(self, wire: Wire) -> PadRecord:
        peer_device_id = self._agree(wire)
        self.on_sas(self.sas)
        self._view("compare", sas=self.sas)
        approved = bool(self.compare(self.sas))
        wire.send({"t": "sas", "ok": approved})
        message, _ = self._expect(wire, "sas")
        if not approved:
            self._view("failed", message="You did not confirm the pairing string.")
            raise CeremonyAborted("Pairing stopped: the pairing string was not confirmed on this device.")
        if not message.get("ok"):
            self._view("failed", message="The other device's owner did not confirm the pairing string.")
            raise CeremonyAborted("Pairing stopped: the other device's owner did not confirm the pairing string.")
        partial, start = (self._offer if self.role == HOST else self._accept)(wire, peer_device_id)
        self._transfer(wire, partial, start)
        return self._finish(wire, partial)

    # -- 1. key agreement ---------------------------------------------------------------

    def _agree(self, wire: Wire) -> bytes:
        agreed = agree(wire, self.role, self.store, self.random_bytes, PROTOCOL)
        self.peer_name, self.sas = agreed.peer_name, agreed.sas
        return agreed.peer_device_id

    # -- 2. what to make, or where to resume -----------------------------------------------

    def _contact_name(self, peer_device_id: bytes) -> str:
        name = self.name or self.peer_name
        rows = self.store.read("SELECT name FROM contacts WHERE peer_device_id = ?", (peer_device_id,))
        if rows:
            if self.name and rows[0][0] != self.name:
                raise ContactExists(f"That device is already a contact, named {rows[0][0]!r}.")
            return str(rows[0][0])
        if self.store.read("SELECT 1 FROM contacts WHERE name = ?", (name,)):
            raise ContactExists(f"A contact named {name!r} already exists for another device; "
                                "choose another with --name.")
        return name

    def _check_space(self, size: int) -> None:
        if shutil.disk_usage(self.store.home).free < size + (64 << 20):
            raise CeremonyRefused(f"Not enough free disk space for a {size}-byte pad.")

    def _offer(self, wire: Wire, peer_device_id: bytes) -> tuple[Partial, int]:
        try:
            contact = self._contact_name(peer_device_id)
        except ContactExists as exc:
            wire.send({"t": "refuse", "reason": "the host cannot store this contact"})
            raise CeremonyRefused(str(exc)) from None
        partial = Partial.for_peer(self.store, peer_device_id)
        if partial is not None and (partial.role != HOST or partial.size != self.size):
            partial.discard(self.store)  # another pad was being made: start afresh
            partial = None
        if partial is None:
            assert self.size is not None
            self._check_space(self.size)
            partial = Partial(
                pad_id=self.random_bytes(16).hex(), peer_device_id=peer_device_id.hex(), role=HOST,
                size=self.size, chunk=self.chunk, mailbox_h2j=self.random_bytes(16).hex(),
                mailbox_j2h=self.random_bytes(16).hex(), contact=contact,
            )
        offer = {k: v for k, v in asdict(partial).items() if k not in ("peer_device_id", "role", "contact")}
        wire.send({"t": "offer", **offer})
        reply, _ = self._expect(wire, "accept")
        start = reply.get("resume_from")
        if not isinstance(start, int) or not 0 <= start <= len(partial.hashes):
            raise CeremonyBroken("The other device sent a malformed answer.")
        del partial.hashes[start:]
        return partial, start

    def _accept(self, wire: Wire, peer_device_id: bytes) -> tuple[Partial, int]:
        offer, _ = self._expect(wire, "offer")
        try:
            pad_id = bytes.fromhex(str(offer["pad_id"]))
            size, chunk = int(offer["size"]), int(offer["chunk"])
            mailboxes = [bytes.fromhex(str(offer[k])) for k in ("mailbox_h2j", "mailbox_j2h")]
            hashes = [bytes.fromhex(str(h)) for h in offer.get("hashes", [])]
        except (KeyError, ValueError, TypeError):
            raise CeremonyBroken("The other device sent a malformed offer.") from None
        if len(pad_id) != 16 or any(len(m) != 16 for m in mailboxes) or not 4096 <= chunk <= MAX_CHUNK:
            raise CeremonyBroken("The other device sent a malformed offer.")
        try:
            check_size(size)
            contact = self._contact_name(peer_device_id)
            self._check_space(size)
        except (ContactExists, CeremonyRefused, OTCError) as exc:
            wire.send({"t": "refuse", "reason": "the joining device cannot take this pad"})
            raise CeremonyRefused(str(exc)) from None
        if self.store.pad(pad_id) is not None:
            wire.send({"t": "refuse", "reason": "pad id already in use"})
            raise CeremonyRefused("The offered pad id is already in use.")
        partial = Partial.for_peer(self.store, peer_device_id)
        start = 0
        if partial is not None and partial.pad_id == pad_id.hex() and partial.size == size \
                and partial.chunk == chunk and partial.role == JOIN:
            for mine, theirs in zip(partial.hashes, hashes):
                if not hmac.compare_digest(bytes.fromhex(mine), theirs):
                    break
                start += 1
            del partial.hashes[start:]
        else:
            if partial is not None:
                partial.discard(self.store)
            partial = Partial(
                pad_id=pad_id.hex(), peer_device_id=peer_device_id.hex(), role=JOIN, size=size, chunk=chunk,
                mailbox_h2j=mailboxes[0].hex(), mailbox_j2h=mailboxes[1].hex(), contact=contact,
            )
        wire.send({"t": "accept", "resume_from": start})
        return partial, start

    # -- 3. the transfer ----------------------------------------------------------------------

    def _transfer(self, wire: Wire, partial: Partial, start: int) -> None:
        store = self.store
        pad_id = bytes.fromhex(partial.pad_id)
        total_chunks = -(-partial.size // partial.chunk)
        path = Partial.data_path(store, partial.pad_id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, partial.size)
            partial.save(store)
            sync_directory(path.parent)
            cipher = store.pad_cipher(pad_id)
            own: dict[int, bytes] = {}
            cond = threading.Condition()
            window = threading.Semaphore(WINDOW)
            failure: list[BaseException] = []
            stop = threading.Event()

            def length_of(i: int) -> int:
                return min(partial.chunk, partial.size - i * partial.chunk)

            def send_shares() -> None:
                try:
                    for i in range(start, total_chunks):
                        while not window.acquire(timeout=0.5):
                            if stop.is_set():
                                return
                        share = self.random_bytes(length_of(i))
                        with cond:
                            own[i] = share
                            cond.notify_all()
                        wire.send({"t": "chunk", "i": i}, share)
                except BaseException as exc:  # noqa: BLE001 - handed to the receiving thread
                    failure.append(exc)
                    with cond:
                        cond.notify_all()

            sender = threading.Thread(target=send_shares, name="otc-ceremony-send", daemon=True)
            sender.start()
            mine: dict[int, bytes] = {}
            theirs: dict[int, bytes] = {}
            verified = start
            started = time.monotonic()
            self._progress(partial, verified, start, started)
            try:
                while verified < total_chunks:
                    message, data = wire.recv()
                    kind = message.get("t")
                    i = message.get("i")
                    if not isinstance(i, int) or not start <= i < total_chunks:
                        raise CeremonyBroken("The other device sent a malformed chunk.")
                    if kind == "chunk":
                        if len(data) != length_of(i) or i in mine:
                            raise CeremonyBroken("The other device sent a malformed chunk.")
                        with cond:
                            while i not in own and not failure:
                                cond.wait(1.0)
                            if failure:
                                raise failure[0]
                            share = own.pop(i)
                        window.release()
                        chunk = fmt.xor(share, data)
                        os.pwrite(fd, cipher.crypt(chunk, i * partial.chunk) if cipher else chunk,
                                  i * partial.chunk)
                        mine[i] = hashlib.sha256(chunk).digest()
                        wire.send({"t": "verify", "i": i, "h": mine[i].hex()})
                    elif kind == "verify":
                        try:
                            theirs[i] = bytes.fromhex(str(message.get("h")))
                        except ValueError:
                            raise CeremonyBroken("The other device sent a malformed chunk hash.") from None
                    else:
                        raise CeremonyBroken("The other device broke the pairing protocol.")
                    advanced = False
                    while verified in mine and verified in theirs:
                        if not hmac.compare_digest(mine[verified], theirs[verified]):
                            raise CeremonyError("The two devices computed different pads: pairing stopped.")
                        partial.hashes.append(mine.pop(verified).hex())
                        del theirs[verified]
                        verified += 1
                        advanced = True
                    if advanced:
                        os.fdatasync(fd)  # the chunks are on disk before the record says so
                        partial.save(store)
                        self._progress(partial, verified, start, started)
            finally:
                stop.set()
                sender.join(timeout=10)
            if failure:
                raise failure[0]
        finally:
            os.close(fd)

    def _progress(self, partial: Partial, verified: int, start: int, started: float) -> None:
        done = min(verified * partial.chunk, partial.size)
        elapsed = max(time.monotonic() - started, 1e-9)
        rate = (done - min(start * partial.chunk, partial.size)) / elapsed
        eta = (partial.size - done) / rate if rate > 0 else 0.0
        self._view("transfer", sas=self.sas, done=done, total=partial.size, rate=rate, eta=eta)

    # -- 4. all or nothing ----------------------------------------------------------------------

    def _finish(self, wire: Wire, partial: Partial) -> PadRecord:
        pad_id = bytes.fromhex(partial.pad_id)
        hashes = [bytes.fromhex(h) for h in partial.hashes]
        self.fingerprint = fingerprint(pad_id, hashes)
        self._view("verify", sas=self.sas, done=partial.size, total=partial.size, fingerprint=self.fingerprint)
        wire.send({"t": "final", "fingerprint": self.fingerprint})
        message, _ = self._expect(wire, "final")
        if not hmac.compare_digest(str(message.get("fingerprint")), self.fingerprint):
            partial.discard(self.store)
            raise CeremonyError("The two devices computed different pads: pairing stopped, nothing stored.")
        # Both devices hold the same pad: make it usable.
        final = self.store.pad_path(pad_id)
        os.replace(Partial.data_path(self.store, partial.pad_id), final)
        sync_directory(final.parent)
        h2j, j2h = bytes.fromhex(partial.mailbox_h2j), bytes.fromhex(partial.mailbox_j2h)
        record = self.store.add_pad(
            contact=partial.contact, peer_device_id=bytes.fromhex(partial.peer_device_id), pad_id=pad_id,
            role=INITIATOR if self.role == HOST else RESPONDER, size=partial.size,
            mailbox_out=h2j if self.role == HOST else j2h, mailbox_in=j2h if self.role == HOST else h2j,
        )
        Partial.state_path(self.store, partial.pad_id).unlink(missing_ok=True)
        self.store.log_event("pad-paired", contact=partial.contact, pad_id=pad_id, length=partial.size,
                             detail=f"in person, fingerprint {self.fingerprint}")
        self._view("done", sas=self.sas, done=partial.size, total=partial.size, fingerprint=self.fingerprint)
        try:
            wire.send({"t": "committed"})
        except CeremonyBroken:
            pass  # the pad is committed here; the other side committed on our fingerprint
        return record

    # -- helpers ----------------------------------------------------------------------------

    def _expect(self, wire: Wire, kind: str) -> tuple[dict, bytes]:
        message, data = wire.recv()
        if message.get("t") == "refuse":
            raise CeremonyRefused(f"The other device refused the pairing ({str(message.get('reason'))[:80]}).")
        if message.get("t") != kind:
            raise CeremonyBroken("The other device broke the pairing protocol.")
        return message, data

    def _view(self, stage: str, **fields: object) -> None:
        self.on_progress(CeremonyView(peer=self.name or self.peer_name, stage=stage, **fields))  # type: ignore[arg-type]
