"""Pairing in person: two devices agree keys, compare a string, and make a pad (``otc-pairing-v4``).

The ceremony (docs/pairing.md has the full protocol and the attacks it stops):

1. **Key agreement with a commitment** (provisioning/agree.py). The host
   commits to the exact bytes of its hello (its X25519 key, a nonce, its
   device id and name) before it sees the joiner's; then it reveals those
   bytes, which the joiner checks and hashes into the transcript as received.
   A man in the middle gets one guess at the string, 10^-9.
2. **The SAS.** Both devices show ``123-456-789`` derived from the transcript;
   each owner confirms through the device's confirm source that both screens
   match. Either "no" stops the ceremony; nothing is stored.
3. **Settle** what an earlier, cut ceremony with this peer left, on proofs of
   holding each pad (never on the device id the peer gives): a pad both
   provably hold is finished on both (and this ceremony ends with it), one
   only a side holds is discarded there when that cannot hurt the real peer.
4. **The pad.** Each device draws its share from its HRNG mixer; the pad is the
   XOR of both shares, so neither HRNG alone has to be trusted. Each share is
   sealed under a key of its own and committed to (a hash of that key) before
   the peer's matching share can be opened: a key is revealed only once the
   peer's sealed share has arrived, and checked against its commitment, so
   neither device can choose pad bytes. Sealed shares travel in share frames,
   authenticated per direction (AES-256-GCM, counter nonces) but not
   encrypted again; each side writes ``share XOR peer share`` and both
   compare every chunk's tag (GMAC under a key from the session). Verified
   progress is synced and recorded every few chunks (and whenever the
   transfer ends or breaks), so a broken ceremony resumes.
5. **All or nothing, then proofs.** The pad stays a ``.partial`` file that no
   rule of the device uses until both devices have computed the same
   fingerprint; then each stores it unconfirmed and sends a proof that it
   holds it. A device sends on the pad only once it has the peer's proof (or
   the next ceremony, or the peer's first valid package, says the peer holds
   it).
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial as bind

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from device.errors import ContactExists
from device.padsize import check_size
from device.storage.atrest import PadCipher
from device.storage.padfile import PadFile
from device.storage.padstore import (
    INITIATOR,
    RESPONDER,
    PadRecord,
    PadStore,
    check_name,
    device_id_for,
)
from onetimechat.errors import OTCError
from onetimechat.package import auth_key_range
from provisioning.agree import agree
from provisioning.agree import format_sas as format_sas
from provisioning.errors import CeremonyAborted, CeremonyBroken, CeremonyError, CeremonyRefused
from provisioning.link import HOST, JOIN
from provisioning.settle import MAX_LISTED, holding_proof, listing
from provisioning.settle import proven as settled
from provisioning.view import CeremonyView
from provisioning.wire import PAYLOAD_OFFSET, SHARE, Wire

PROTOCOL = "otc-pairing-v4"  # v3: commitments bind bytes, shares committed ahead, pads confirmed by both;
# v4: what an earlier ceremony left is settled on proofs of holding the pad, never on a claimed device id
CHUNK = 4 << 20
MAX_CHUNK = 4 << 20
WINDOW = 4  # own shares generated (and sealed) ahead of the peer's
MAX_HELD = 2 * WINDOW + 2  # the peer's sealed shares held for their keys, at most (memory stays bounded)
TAG_BYTES = 16  # a chunk's GMAC tag
MAX_PARTIALS = 4  # unfinished pads kept, all peers together (a peer has one at a time); the stalest go first
SPACE_MARGIN = 64 << 20  # free space a ceremony leaves beyond its pad and every kept partial's remainder
PERSIST_CHUNKS = 16  # verified progress is synced and recorded every this many chunks,
PERSIST_SECONDS = 1.0  # or after this long, whichever comes first, and when the transfer ends or breaks
PROGRESS_SECONDS = 0.1  # the progress view changes at most this often
WRITE_AHEAD = 2  # chunks verified but not yet written, at most (the receiving thread waits beyond)
DROP_BEHIND = 8  # a chunk's pages leave the page cache once this many more are written (written back by then)

RandomBytes = Callable[[int], bytes]
Compare = Callable[[str], bool]
ProgressHook = Callable[[CeremonyView], None]


def fingerprint(pad_id: bytes, chunk_hashes: list[bytes]) -> str:
    """The pad's fingerprint: a hash over its chunks' tags, shown in groups of four."""
    digest = hashlib.sha256(b"otc pad fingerprint v2" + pad_id + b"".join(chunk_hashes)).hexdigest()
    return " ".join(digest[i : i + 4] for i in range(0, 20, 4))


SHARE_KEY_LABEL = b"otc pairing v3 share key\x00"
SHARE_LABEL = b"otc pairing v3 share\x00"
SHARE_NONCE = bytes(12)  # every share is sealed under a key of its own
SEALED_EXTRA = 16  # a sealed share's GCM tag


def share_context(pad_id: bytes, role: str, index: int) -> bytes:
    """What a share's commitment binds besides its bytes: the pad, the sender's role and the chunk."""
    return pad_id + role.encode() + index.to_bytes(8, "big")


def key_commitment(pad_id: bytes, role: str, index: int, key: bytes) -> bytes:
    """The hash a device sends with its sealed share ``index``: it binds the key it reveals later."""
    return hashlib.sha256(SHARE_KEY_LABEL + share_context(pad_id, role, index) + key).digest()


def open_share(pad_id: bytes, role: str, index: int, commitment: bytes, key: bytes,
               sealed: memoryview) -> memoryview:
    """The peer's share ``index``, opened in place from ``sealed`` with the key it revealed.

    ``commitment`` came with the sealed share, before this device revealed its own share's key; the key
    must match it, so the share is the one the peer fixed before it could see this device's.
    """
    if len(key) != 32 or not hmac.compare_digest(key_commitment(pad_id, role, index, key), commitment):
        raise CeremonyError("The other device did not keep its commitment to its share: pairing stopped.")
    share = sealed[: len(sealed) - SEALED_EXTRA]
    try:
        AESGCM(key).decrypt_into(SHARE_NONCE, sealed, SHARE_LABEL + share_context(pad_id, role, index), share)
    except Exception:  # noqa: BLE001 - InvalidTag, or a length cryptography refuses: one error
        raise CeremonyError("The other device did not keep its commitment to its share: pairing stopped.") from None
    return share


SETTLE_BINDING = "otc ceremony v4 settle"
SETTLE_PROOF_LABEL = b"otc ceremony v4 settle proof\x00"


def proof_key(pad_file: PadFile, size: int) -> bytes:
    """A pad's proof key: its two authentication keys R (initiator's, then responder's).

    Both devices hold them, nobody else does, and no package ever spends them as keystream or wipes them,
    so they prove that a device holds the pad for as long as it exists, used up or not.
    """
    return b"".join(bytes(pad_file.read(lo, hi - lo)) for lo, hi in (auth_key_range(True, size),
                                                                        auth_key_range(False, size)))


def chunk_tag(tag_key: AESGCM, index: int, chunk: bytes | memoryview) -> bytes:
    """Chunk ``index``'s tag: GMAC (AES-256-GCM over the chunk as associated data, nonce ``index``).

    Both devices tag what they wrote and compare. GHASH is a universal hash:
    two different chunks of L 16-byte blocks get the same tag with
    probability at most L/2^128 (below 2^-110 for 4 MiB) under a key neither
    chunk depends on; the key comes from this session's agreement and is
    forgotten after it, and each nonce is used once, so a recorded tag says
    nothing about the pad. It runs at memory speed (about 28 GB/s on the
    development VM, where SHA-256, which used to set the pace of the whole
    transfer, does 1 GB/s).
    """
    return tag_key.encrypt(index.to_bytes(12, "big"), b"", chunk)


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
    hashes: list[str] = field(default_factory=list)  # the verified chunks' tags, in order (a prefix of them)

    # Its files are the pad store's (device/storage/partials.py, ``store.partials``): the store names them (in a
    # PIN-locked home by an HMAC of the pad id) and seals the record, so the pads folder shows no pad id, peer,
    # mailbox or contact. The ceremony only says what the record holds and when it is saved.

    @classmethod
    def recorded(cls, store: PadStore) -> list[Partial]:
        """Every partial pad with its record and its file, the least recently advanced first (a record is
        rewritten as the transfer verifies chunks)."""
        found = []
        for record in store.partials.records():
            try:
                found.append(cls(**record))
            except TypeError:  # not a ceremony's record
                continue
        return found

    @classmethod
    def all_for_peer(cls, store: PadStore, peer_device_id: bytes) -> list[Partial]:
        return [p for p in cls.recorded(store) if p.peer_device_id == peer_device_id.hex()]

    def unwritten(self, store: PadStore) -> int:
        """Bytes of the pad not on disk yet: its file is sparse at the pad's size, so a resume may still need
        the rest of it."""
        return store.partials.unwritten(bytes.fromhex(self.pad_id), self.size)

    @classmethod
    def for_peer(cls, store: PadStore, peer_device_id: bytes) -> Partial | None:
        found = cls.all_for_peer(store, peer_device_id)
        return found[0] if found else None

    @property
    def complete(self) -> bool:
        """Whether every chunk is verified by both devices (the fingerprints are then equal)."""
        return len(self.hashes) == -(-self.size // self.chunk)

    def fingerprint(self) -> str:
        return fingerprint(bytes.fromhex(self.pad_id), [bytes.fromhex(h) for h in self.hashes])

    def proof_key(self, store: PadStore) -> bytes:
        """The proof key of a wholly verified partial pad (see :func:`proof_key`)."""
        pad_file = store.partials.pad_file(bytes.fromhex(self.pad_id), self.size)
        try:
            return proof_key(pad_file, self.size)
        finally:
            pad_file.close()

    def save(self, store: PadStore) -> None:
        store.partials.save(bytes.fromhex(self.pad_id), asdict(self))

    def discard(self, store: PadStore) -> None:
        store.partials.discard(bytes.fromhex(self.pad_id))


def check_request(role: str, size: int | None, name: str | None) -> str | None:
    """What a ceremony refuses before anyone connects: the role, the host's pad size, the contact's name.

    Returns the name as it will be stored (None: the peer's own name is used).
    """
    if role not in (HOST, JOIN):
        raise ValueError("role is host or join")
    if role == HOST:
        if size is None:
            raise ValueError("the host chooses the size")
        check_size(size)
    return check_name(name) if name else None


class Ceremony:
    """One device's side of the pairing ceremony."""

    def __init__(self, store: PadStore, role: str, *, random_bytes: RandomBytes, compare: Compare,
                 size: int | None = None, name: str | None = None, chunk: int = CHUNK,
                 on_progress: ProgressHook | None = None, on_sas: Callable[[str], None] | None = None,
                 persist_every: int = PERSIST_CHUNKS) -> None:
        checked_name = check_request(role, size, name)
        if not 4096 <= chunk <= MAX_CHUNK:
            raise ValueError("chunk size out of range")
        if persist_every < 1:
            raise ValueError("persist_every is at least 1")
        self.store = store
        self.role = role
        self.random_bytes = random_bytes
        self.compare = compare
        self.size = size
        self.name = checked_name
        self.chunk = chunk
        self.on_progress = on_progress or (lambda view: None)
        self.on_sas = on_sas or (lambda sas: None)
        self.persist_every = persist_every
        self._last_view = 0.0
        self.peer_name = ""
        self.peer_identity = b""
        self.trusted = False  # the peer is proved to be the device its id names (see _check_identity)
        self.known_contact: str | None = None
        self.sas = ""
        self.fingerprint = ""

    # -- the whole ceremony ------------------------------------------------------------

    def run(self, wire: Wire) -> PadRecord:
        for name in self.store.partials.sweep_orphans():
            self.store.log_event("ceremony-swept", detail=f"an unrecorded partial pad {name[:8]} was deleted")
        peer_device_id = self._check_identity(wire, self._agree(wire))
        # A device id already filed under a contact: the screen says the pad joins that contact, so an owner
        # facing someone else sees it.
        self.known_contact = self._known_contact(peer_device_id)
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
        finished = self._settle(wire, peer_device_id)
        if finished is not None:  # an earlier ceremony's pad, finished on both devices now
            self._view("done", sas=self.sas, done=finished.size, total=finished.size, fingerprint=self.fingerprint)
            if not self.store.peer_pads(peer_device_id).get(finished.pad_id, (False, None))[0]:
                raise CeremonyBroken("The earlier pad is stored but not usable yet: run the ceremony again to "
                                     "finish it.")
            return finished
        partial, start = (self._offer if self.role == HOST else self._accept)(wire, peer_device_id)
        self._transfer(wire, partial, start)
        return self._finish(wire, partial)

    # -- 1. key agreement ---------------------------------------------------------------

    def _agree(self, wire: Wire) -> bytes:
        agreed = agree(wire, self.role, self.store, self.random_bytes, PROTOCOL)
        self.peer_name, self.sas, self.peer_identity = agreed.peer_name, agreed.sas, agreed.peer_identity
        self.trusted = agreed.peer_certified
        return agreed.peer_device_id

    def _check_identity(self, wire: Wire, claimed: bytes) -> bytes:
        """Whose device this is; the device id this ceremony files the peer under.

        The agreement proved that the peer holds the identity key its hello named. Its device id is
        *certified* when it is the hash of that key (every device made since identities): nobody else can
        give it. Otherwise (a device from before identities, or a stranger giving someone's id) the id is
        used only where a contact made before identities has it: there the peer is not *trusted* and must
        prove holding that contact's pads (:meth:`_settle`). Anywhere else the peer is filed under the hash
        of its own key instead, so nobody can squat on another device's id. A contact that remembers an
        identity refuses any other key giving its id, before anything is shown or changed.
        """
        known = self.store.peer_identity(claimed)
        if known is not None and known[1] is not None:
            if not hmac.compare_digest(known[1], self.peer_identity):
                wire.send({"t": "refuse", "reason": "this device knows another device by that id"})
                self.store.log_event("ceremony-impostor", contact=known[0],
                                     detail="a device gave the id of a contact's device under another identity")
                raise CeremonyRefused(f"The other device gives the id of {known[0]}'s device but is not that "
                                      "device (another identity key): pairing stopped, nothing changed.")
            self.trusted = True
            return claimed
        if self.trusted:  # certified: the id is its key's
            return claimed
        if known is not None:  # a contact from before identities: its pads decide
            return claimed
        self.trusted = True  # filed under its own key's id, which only it can give
        return device_id_for(self.peer_identity)

    def _known_contact(self, peer_device_id: bytes) -> str | None:
        """The contact this device files the peer's device id under, if any (the id is the peer's word)."""
        known = self.store.peer_identity(peer_device_id)
        return known[0] if known is not None else None

    def _contact_name(self, peer_device_id: bytes) -> str:
        name = self.name or self.peer_name
        known = self._known_contact(peer_device_id)
        if known is not None:
            if self.name and known != self.name:
                raise ContactExists(f"That device is already a contact, named {known!r}.")
            return known
        if self.store.contact_device(name) is not None:
            raise ContactExists(f"A contact named {name!r} already exists for another device; "
                                "choose another with --name.")
        return name

    def _check_space(self, size: int, kept: int = 0) -> None:
        """Refuse unless the disk holds ``size`` more bytes beside ``kept``, what kept partial pads may still
        fill, and the margin."""
        if self.store.free_space() - kept < size + SPACE_MARGIN:
            beside = f" beside {kept} bytes that unfinished pads may still fill" if kept else ""
            raise CeremonyRefused(f"Not enough free disk space for a {size}-byte pad{beside}.")

    def _make_room(self, peer_device_id: bytes, resuming: Partial | None, size: int) -> None:
        """Bound the partial pads before one with this peer is made (``size`` bytes) or resumed, and check
        that it fits.

        A peer has one partial pad at a time: any other with it goes. All peers together keep at most
        ``MAX_PARTIALS``, this one included, the least recently advanced going first, so a peer that claims
        a new device id for each ceremony it cuts leaves no more than that. The disk must hold what this pad
        still needs beside what the kept ones may still fill (their files are sparse: what they lack is
        counted too); if sweeping the stalest would make room, they go, oldest first; if even sweeping all
        would not, nothing is swept and the pad is refused. Each sweep is logged (``ceremony-swept``).
        """
        store = self.store
        others = []
        for partial in Partial.recorded(store):
            if resuming is not None and partial.pad_id == resuming.pad_id:
                continue
            if partial.peer_device_id == peer_device_id.hex():
                self._sweep(partial, "a newer pad with the same device replaces it")
            elif not partial.complete:
                # A wholly verified one is kept: it needs no more space, only its ceremony's end, and another
                # device's ceremonies must not throw it away (an outside review).
                others.append(partial)
        while len(others) >= MAX_PARTIALS:
            self._sweep(others.pop(0), f"at most {MAX_PARTIALS} unfinished pads are kept")
        need = resuming.unwritten(store) if resuming is not None else size
        free = store.free_space()
        left = [p.unwritten(store) for p in others]
        # Sweeping a partial frees what it wrote and what it may still fill: its whole size.
        if free - sum(left) + sum(p.size for p in others) >= need + SPACE_MARGIN:
            while others and free - sum(left) < need + SPACE_MARGIN:
                swept = others.pop(0)
                free += swept.size - left.pop(0)
                self._sweep(swept, "its space is needed for a new pad")
        self._check_space(need, sum(p.unwritten(store) for p in others))

    def _sweep(self, partial: Partial, why: str) -> None:
        partial.discard(self.store)
        self.store.log_event("ceremony-swept", pad_id=bytes.fromhex(partial.pad_id), length=partial.size,
                             detail=f"an unfinished pad {partial.pad_id[:8]} with device "
                                    f"{partial.peer_device_id[:8]} was deleted: {why}")

    def _offer(self, wire: Wire, peer_device_id: bytes) -> tuple[Partial, int]:
        try:
            contact = self._contact_name(peer_device_id)
        except ContactExists as exc:
            wire.send({"t": "refuse", "reason": "the host cannot store this contact"})
            raise CeremonyRefused(str(exc)) from None
        # A broken ceremony resumes only with a peer proved to be the device it was with (a stranger giving
        # its id would otherwise be handed the recorded tags, and make the rest of that pad with this device).
        partial = Partial.for_peer(self.store, peer_device_id) if self.trusted else None
        if partial is not None and (partial.role != HOST or partial.size != self.size):
            partial.discard(self.store)  # another pad was being made: start afresh
            partial = None
        assert self.size is not None
        try:
            self._make_room(peer_device_id, partial, self.size)
        except CeremonyRefused:
            wire.send({"t": "refuse", "reason": "the host has no room for this pad"})
            raise
        if partial is None:
            partial = Partial(
                pad_id=self.random_bytes(16).hex(), peer_device_id=peer_device_id.hex(), role=HOST,
                size=self.size, chunk=self.chunk, mailbox_h2j=self.random_bytes(16).hex(),
                mailbox_j2h=self.random_bytes(16).hex(), contact=contact,
            )
        offer = {k: v for k, v in asdict(partial).items() if k not in ("peer_device_id", "role", "contact", "hashes")}
        # The recorded tags travel as the frame's binary payload (16 bytes each): a 1 TiB pad's 262,144 fit.
        wire.send({"t": "offer", **offer, "tags": len(partial.hashes)},
                  b"".join(bytes.fromhex(h) for h in partial.hashes))
        reply, _ = self._expect(wire, "accept")
        start = reply.get("resume_from")
        if not isinstance(start, int) or not 0 <= start <= len(partial.hashes):
            raise CeremonyBroken("The other device sent a malformed answer.")
        del partial.hashes[start:]
        return partial, start

    def _accept(self, wire: Wire, peer_device_id: bytes) -> tuple[Partial, int]:
        offer, tag_data = self._expect(wire, "offer")
        try:
            pad_id = bytes.fromhex(str(offer["pad_id"]))
            size, chunk = int(offer["size"]), int(offer["chunk"])
            mailboxes = [bytes.fromhex(str(offer[k])) for k in ("mailbox_h2j", "mailbox_j2h")]
            count = offer["tags"]
        except (KeyError, ValueError, TypeError):
            raise CeremonyBroken("The other device sent a malformed offer.") from None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0 or len(tag_data) != TAG_BYTES * count:
            raise CeremonyBroken("The other device sent a malformed offer.")
        hashes = [bytes(tag_data[i : i + TAG_BYTES]) for i in range(0, len(tag_data), TAG_BYTES)]
        if len(pad_id) != 16 or any(len(m) != 16 for m in mailboxes) or not 4096 <= chunk <= MAX_CHUNK:
            raise CeremonyBroken("The other device sent a malformed offer.")
        try:
            check_size(size)
            contact = self._contact_name(peer_device_id)
        except (ContactExists, OTCError) as exc:
            wire.send({"t": "refuse", "reason": "the joining device cannot take this pad"})
            raise CeremonyRefused(str(exc)) from None
        # Resumed only with a peer proved to be the device it was with (see _offer).
        partial = Partial.for_peer(self.store, peer_device_id) if self.trusted else None
        resuming = partial is not None and partial.pad_id == pad_id.hex() and partial.size == size \
            and partial.chunk == chunk and partial.role == JOIN
        # A pad id this device holds, or another ceremony's partial pad has, is never reused: a host offering
        # it would otherwise overwrite that pad's progress (an outside review).
        if self.store.pad(pad_id) is not None or (not resuming and self.store.partials.exists(pad_id)):
            wire.send({"t": "refuse", "reason": "pad id already in use"})
            raise CeremonyRefused("The offered pad id is already in use.")
        if partial is not None and not resuming:
            partial.discard(self.store)
            partial = None
        try:
            self._make_room(peer_device_id, partial, size)
        except CeremonyRefused:
            wire.send({"t": "refuse", "reason": "the joining device cannot take this pad"})
            raise
        start = 0
        if partial is not None:
            for mine, theirs in zip(partial.hashes, hashes):
                if not hmac.compare_digest(bytes.fromhex(mine), theirs):
                    break
                start += 1
            del partial.hashes[start:]
        else:
            partial = Partial(
                pad_id=pad_id.hex(), peer_device_id=peer_device_id.hex(), role=JOIN, size=size, chunk=chunk,
                mailbox_h2j=mailboxes[0].hex(), mailbox_j2h=mailboxes[1].hex(), contact=contact,
            )
        wire.send({"t": "accept", "resume_from": start})
        return partial, start

    # -- 3. the transfer ----------------------------------------------------------------------

    def _transfer(self, wire: Wire, partial: Partial, start: int) -> None:
        """Make the pad from ``start`` on: both shares, sealed, XORed, written, tagged and compared per chunk.

        Four threads per device: this one receives, XORs and tags; a sender
        (:class:`_Sender`) makes this device's shares and sends everything; a
        writer (:class:`_Writer`) puts the pad on disk; a persister
        (:class:`_Persister`) syncs and records the verified, written prefix.
        This thread never sends, so two devices can never both wait on a full
        connection that neither reads.
        """
        store = self.store
        pad_id = bytes.fromhex(partial.pad_id)
        step = partial.chunk
        total_chunks = -(-partial.size // step)

        def length_of(i: int) -> int:
            return min(step, partial.size - i * step)

        # The partial pad's file, sparse at the pad's size, and its record, made durable by the store.
        fd = store.partials.begin(pad_id, partial.size, asdict(partial))
        writer = None
        try:
            tag_key = AESGCM(wire.export("otc ceremony v3 chunk tags"))
            peer_role = JOIN if self.role == HOST else HOST
            sender = _Sender(wire, _filler(self.random_bytes), range(start, total_chunks), length_of, step,
                             pad_id, self.role)
            # The peer's shares arrive into reused buffers, are opened and XORed there, and are written
            # from there; each comes back here once written.
            room = PAYLOAD_OFFSET + step + SEALED_EXTRA
            spare: deque[memoryview] = deque()
            writer = _Writer(fd, store.pad_cipher(pad_id), step, start, spare.append)
            persister = _Persister(store, partial, fd, start)
            mine: dict[int, bytes] = {}
            theirs: dict[int, bytes] = {}
            # The peer's sealed shares, each held with its commitment until the peer reveals its key; this
            # device's shares, each held until then too.
            held: dict[int, tuple[memoryview, memoryview, bytes]] = {}
            own: dict[int, memoryview] = {}
            into = _aligned_buffer(room)
            verified = next_chunk = start
            started = time.monotonic()
            self._progress(partial, verified, start, started, force=True)
            try:
                while verified < total_chunks:
                    frame, message, data = wire.recv_frame(into)
                    kind = message.get("t")
                    if (kind == "chunk") != (frame == SHARE):  # shares come in share frames, and nothing else
                        raise CeremonyBroken("The other device broke the pairing protocol.")
                    i = message.get("i")
                    if not isinstance(i, int) or isinstance(i, bool) or not start <= i < total_chunks:
                        raise CeremonyBroken("The other device sent a malformed chunk.")
                    if kind == "chunk":
                        # The peer's share i, sealed under a key it committed to. Only now, with the peer
                        # bound to its share, does this device reveal the key to its own share i.
                        n = length_of(i)
                        try:
                            commitment = bytes.fromhex(str(message.get("c")))
                        except ValueError:
                            commitment = b""
                        if i != next_chunk or len(data) != n + SEALED_EXTRA or len(commitment) != 32:
                            raise CeremonyBroken("The other device sent a malformed chunk.")  # in order, whole
                        next_chunk += 1
                        # An honest peer's key for chunk i - WINDOW comes before its share i (it sends what it
                        # owes before each share), so this device then holds fewer than WINDOW shares of its own
                        # for keys: waiting for another share of its own now would wait for ever.
                        if len(held) >= MAX_HELD or len(own) >= WINDOW:
                            raise CeremonyBroken("The other device sent shares too far ahead of their keys.")
                        held[i] = (into, data, commitment)
                        into = spare.pop() if spare else _aligned_buffer(room)
                        buf, key = sender.take(i)
                        own[i] = buf
                        sender.post({"t": "key", "i": i, "k": key.hex()})
                    elif kind == "key":
                        if i not in held:  # a key before its share, or twice
                            raise CeremonyBroken("The other device broke the pairing protocol.")
                        try:
                            key = bytes.fromhex(str(message.get("k")))
                        except ValueError:
                            key = b""
                        kept, sealed, commitment = held.pop(i)
                        chunk = open_share(pad_id, peer_role, i, commitment, key, sealed)
                        buf = own.pop(i)
                        pad = np.frombuffer(chunk, np.uint8)
                        np.bitwise_xor(pad, np.frombuffer(buf, np.uint8, len(chunk)), out=pad)  # the peer's
                        sender.give_back(buf)  # share becomes the pad where it is; ours is done with
                        mine[i] = tag = chunk_tag(tag_key, i, chunk)
                        sender.post({"t": "verify", "i": i, "h": tag.hex()})
                        writer.put(i, kept, chunk)  # the buffer comes back here once written
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
                    if verified < total_chunks:
                        persister.maybe(min(verified, writer.written), self.persist_every)
                        if advanced:
                            self._progress(partial, verified, start, started)
                sender.finish()  # the last verify messages go out before anything else
                writer.finish()
                persister.finish_at(verified)  # the whole pad is on disk and recorded
                _drop_cache(fd, 0, partial.size)  # and none of it stays cached
            except BaseException:
                sender.stop()
                writer.stop()
                persister.finish_at(min(verified, writer.written), quietly=True)  # both verified it: keep it
                raise
            self._progress(partial, verified, start, started, force=True)
        finally:
            if writer is not None:
                writer.stop()
            os.close(fd)

    def _progress(self, partial: Partial, verified: int, start: int, started: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_view < PROGRESS_SECONDS:
            return
        self._last_view = now
        done = min(verified * partial.chunk, partial.size)
        elapsed = max(now - started, 1e-9)
        rate = (done - min(start * partial.chunk, partial.size)) / elapsed
        eta = (partial.size - done) / rate if rate > 0 else 0.0
        self._view("transfer", sas=self.sas, done=done, total=partial.size, rate=rate, eta=eta)

    # -- 4. all or nothing ----------------------------------------------------------------------

    def _finish(self, wire: Wire, partial: Partial) -> PadRecord:
        """Compare fingerprints, store the pad (not usable yet), then trade proofs that both hold it."""
        pad_id = bytes.fromhex(partial.pad_id)
        self.fingerprint = partial.fingerprint()
        self._view("verify", sas=self.sas, done=partial.size, total=partial.size, fingerprint=self.fingerprint)
        wire.send({"t": "final", "fingerprint": self.fingerprint})
        message, _ = self._expect(wire, "final")
        if not hmac.compare_digest(str(message.get("fingerprint")).encode(), self.fingerprint.encode()):
            partial.discard(self.store)
            raise CeremonyError("The two devices computed different pads: pairing stopped, nothing stored.")
        record = self._store_pad(partial)
        # Stored here; it sends only once this device knows the other holds it too.
        wire.send({"t": "stored", "fingerprint": self.fingerprint})
        try:
            message, _ = self._expect(wire, "stored")
        except CeremonyBroken:
            raise CeremonyBroken(
                "The pad is stored but not usable yet: the other device did not confirm that it holds it too. "
                "Run the ceremony again with it to finish the pad (or it becomes usable with the other "
                "device's first message on it).") from None
        if not hmac.compare_digest(str(message.get("fingerprint")).encode(), self.fingerprint.encode()):
            raise CeremonyBroken("The other device broke the pairing protocol.")
        self.store.confirm_pad(pad_id, "the peer's proof at the end of the ceremony")
        self._view("done", sas=self.sas, done=partial.size, total=partial.size, fingerprint=self.fingerprint)
        return self.store.pad(pad_id) or record

    def _store_pad(self, partial: Partial) -> PadRecord:
        """Install a wholly verified partial pad as a pad, not yet confirmed (the store moves it into place and
        adds it in one crash-safe operation: ``store.partials.install``)."""
        pad_id = bytes.fromhex(partial.pad_id)
        h2j, j2h = bytes.fromhex(partial.mailbox_h2j), bytes.fromhex(partial.mailbox_j2h)
        hosted = partial.role == HOST
        fp = partial.fingerprint()
        record = self.store.partials.install(
            pad_id, contact=partial.contact, peer_device_id=bytes.fromhex(partial.peer_device_id),
            role=INITIATOR if hosted else RESPONDER, size=partial.size,
            mailbox_out=h2j if hosted else j2h, mailbox_in=j2h if hosted else h2j,
            confirmed=False, fingerprint=fp,
        )
        if self.peer_identity:  # the contact's device, from now on, is the one holding this identity
            self.store.bind_identity(bytes.fromhex(partial.peer_device_id), self.peer_identity)
        self.store.log_event("pad-paired", contact=partial.contact, pad_id=pad_id, length=partial.size,
                             detail=f"in person, fingerprint {fp}")
        return record

    # -- 0. after a cut: finish what both hold, discard what one lacks ---------------------------

    def _settle(self, wire: Wire, peer_device_id: bytes) -> PadRecord | None:
        """Settle what an earlier ceremony with this peer left unfinished; the pad finished, if any.

        The peer's device id is only its word, so nothing here rests on it. Each device lists the pads it
        holds with the device the peer says it is (stored, confirmed or not, and wholly verified partial
        ones), each with a proof that it holds that pad: an HMAC keyed with the pad's two authentication
        keys (R, never used as keystream and never wiped) over this session's binding and its role. A pad
        counts as held by both only when the peer's proof for it verifies. An untrusted peer that proves
        none of the pads this device has stored with that id is not that device: the ceremony stops,
        nothing changed. A pending pad (unconfirmed or partial on either side) that both hold is finished on both:
        stored, then confirmed once the other's second list shows it stored. One that only this side holds
        is discarded there if it is a partial (the peer cannot have confirmed a pad this device never
        stored), and if it is stored only once the peer has proved who it is (it holds another pad of
        ours): a stranger's word never destroys a pad the real peer may use. If any pending pad was
        finished, this ceremony ends with it; otherwise it goes on to make a new pad.
        """
        bind = wire.export(SETTLE_BINDING)
        peer_role = JOIN if self.role == HOST else HOST
        keys: dict[str, bytes] = {}  # pad id (hex) -> the pad's proof key
        states: dict[str, str] = {}
        stored: set[str] = set()  # pads stored here: the real peer holds each (it sent its fingerprint first)
        for raw_id, (ok, _fp) in self.store.peer_pads(peer_device_id).items():
            record = self.store.pad(raw_id)
            if record is None or record.retired:  # a retired pad's bytes are destroyed: it proves nothing
                continue
            keys[raw_id.hex()] = proof_key(self.store.pad_file(record), record.size)
            states[raw_id.hex()] = "confirmed" if ok else "unconfirmed"
            stored.add(raw_id.hex())
        complete = [p for p in Partial.all_for_peer(self.store, peer_device_id) if p.complete]
        for partial in complete:
            keys[partial.pad_id] = partial.proof_key(self.store)
            states[partial.pad_id] = "partial"
        wire.send({"t": "holding", "pads": {pid: {"state": states[pid],
                                                  "proof": holding_proof(SETTLE_PROOF_LABEL, keys[pid], bind,
                                                                         self.role, pid)}
                                            for pid in keys}})
        message, _ = self._expect(wire, "holding")
        theirs = listing(message, "pads", "pads")
        proven = settled(theirs, keys, SETTLE_PROOF_LABEL, bind, peer_role)
        if stored and not proven & stored and not self.trusted:
            contact = self._known_contact(peer_device_id) or "a contact"
            wire.send({"t": "refuse", "reason": "the other device did not prove it is the device it says"})
            self.store.log_event("ceremony-impostor", contact=contact,
                                 detail="a device gave the id of a contact's device but proved none of its pads")
            raise CeremonyRefused(
                f"The other device says it is {contact}'s device but proved it holds none of the pads shared with "
                f"{contact}: pairing stopped, nothing changed.")

        def pending(pid: str) -> bool:
            return states.get(pid) in ("unconfirmed", "partial") or \
                str(theirs[pid].get("state")) in ("unconfirmed", "partial")

        finishing = sorted(pid for pid in proven if pending(pid))
        # What only this side holds goes on the word of a peer proved to be the device it says (its identity,
        # or another pad of ours), never on a stranger's.
        sure = self.trusted or bool(proven)
        for partial in complete:
            if partial.pad_id in finishing:
                self._store_pad(partial)
            elif sure:
                partial.discard(self.store)
                self.store.log_event("ceremony-discarded", pad_id=bytes.fromhex(partial.pad_id),
                                     detail="a verified partial pad the other device does not hold")
        for pid, state in states.items():
            # A stored pad may be confirmed on the peer (it had this device's proof): it goes only once the peer
            # has proved who it is. Never sent on here: it was never confirmed.
            if state == "unconfirmed" and pid not in finishing and sure:
                self.store.remove_unused_pad(bytes.fromhex(pid))
        now = self.store.peer_pads(peer_device_id)
        wire.send({"t": "held", "pads": sorted(pid.hex() for pid in now)})
        message, _ = self._expect(wire, "held")
        held = message.get("pads")
        if not isinstance(held, list) or len(held) > MAX_LISTED:
            raise CeremonyBroken("The other device sent a malformed list of pads.")
        for pad_id, (ok, _fp) in now.items():
            if not ok and pad_id.hex() in held and pad_id.hex() in proven:
                self.store.confirm_pad(pad_id, "the next ceremony with the peer")
        if proven:  # a contact from before identities learns its peer's now
            self.store.bind_identity(peer_device_id, self.peer_identity)
            self.trusted = True
        if not finishing:
            return None
        record = self.store.pad(bytes.fromhex(finishing[-1]))
        if record is None:
            raise CeremonyBroken("The pad could not be finished: run the ceremony again.")
        _ok, fp = self.store.peer_pads(peer_device_id).get(record.pad_id, (False, None))
        self.fingerprint = fp or ""
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
        self.on_progress(CeremonyView(peer=self.known_contact or self.name or self.peer_name,
                                      existing=self.known_contact is not None, stage=stage,
                                      **fields))  # type: ignore[arg-type]


# -- the transfer's helpers -----------------------------------------------------------------


def _filler(random_bytes: RandomBytes) -> Callable[[memoryview], None]:
    """Fill a buffer from the random source: in place where it can (``os_stream.into``), else by copying."""
    into = getattr(random_bytes, "into", None)
    if callable(into):
        return into

    def fill(view: memoryview) -> None:
        data = random_bytes(len(view))
        if len(data) != len(view):
            raise ValueError("the random source gave the wrong number of bytes")
        view[:] = data

    return fill


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _aligned_buffer(size: int) -> memoryview:
    """``size`` writable bytes at a page-aligned address (anonymous memory, mapped at once)."""
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    return memoryview(mmap.mmap(-1, size, flags=flags))


def _drop_cache(fd: int, offset: int, length: int) -> None:
    """Start writing ``length`` bytes at ``offset`` back now, and drop those of them already on disk from the
    page cache (``POSIX_FADV_DONTNEED``: Linux starts the write-back of dirty pages, drops clean ones). Only
    advice: where it is missing or refused, the next sync writes everything."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


class _Worker:
    """One of the transfer's threads: its work is guarded by ``cond``; a failure is kept for the receiver.

    Subclasses implement :meth:`_step`, called with ``cond`` held: it returns
    the work to do outside the lock (a callable), or None to end the thread.
    """

    name = "otc-ceremony"

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.failure: BaseException | None = None
        self.closing = self.stopping = False
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    work = self._step()
                if work is None:
                    return
                work()
        except BaseException as exc:  # noqa: BLE001 - handed to the receiving thread
            with self.cond:
                self.failure = exc
                self.cond.notify_all()

    def _step(self) -> Callable[[], None] | None:
        raise NotImplementedError

    def check(self) -> None:
        """Raise the thread's failure, if it had one (call with or without ``cond``)."""
        if self.failure is not None:
            raise self.failure

    def finish(self) -> None:
        """Do what is asked, then stop; raises the thread's failure."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.thread.join()
        self.check()

    def stop(self) -> None:
        """Stop as soon as the work in hand is done (what is queued is dropped); idempotent."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(timeout=10)


class _Sender(_Worker):
    """The sending half of the transfer: this device's committed shares and the receiving thread's messages.

    Each share is drawn straight into one of ``WINDOW`` buffers and sealed
    under a key of its own (AES-256-GCM), which is committed to by a hash sent
    with it and revealed only once the peer's matching share has arrived
    (the receiving thread posts the key). The share is handed to the receiving
    thread (:meth:`take`) as soon as it is sealed, before its frame is sent, so
    the receiver never waits on the connection. Messages the receiver posts go
    out before the next share. Only this thread sends while the transfer runs.
    """

    name = "otc-ceremony-send"

    def __init__(self, wire: Wire, fill: Callable[[memoryview], None], chunks: range,
                 length_of: Callable[[int], int], chunk: int, pad_id: bytes, role: str) -> None:
        super().__init__()
        self.wire, self.fill, self.length_of = wire, fill, length_of
        self.pad_id, self.role = pad_id, role
        self.todo = iter(chunks)
        self.remaining = len(chunks)
        self.free = [_aligned_buffer(chunk) for _ in range(min(WINDOW, len(chunks)))]
        self.out = bytearray(PAYLOAD_OFFSET + chunk + SEALED_EXTRA)  # the sealed share, reused (this thread's)
        self.sealed: dict[int, tuple[memoryview, bytes]] = {}
        self.outbox: deque[dict] = deque()
        self.thread.start()

    def _step(self) -> Callable[[], None] | None:
        while not (self.stopping or self.outbox or (self.remaining and self.free) or self.closing):
            self.cond.wait()
        if self.stopping:
            return None
        messages = list(self.outbox)
        self.outbox.clear()
        if self.remaining and self.free:
            self.remaining -= 1
            return bind(self._send, messages, next(self.todo), self.free.pop())
        if not messages:
            return None  # closing, and everything is sent
        return bind(self._send, messages, None, None)

    def _send(self, messages: list[dict], i: int | None, buf: memoryview | None) -> None:
        for message in messages:
            self.wire.send(message)
        if i is not None and buf is not None:
            n = self.length_of(i)
            share = buf[:n]
            self.fill(share)
            key = secrets.token_bytes(32)
            out = memoryview(self.out)
            AESGCM(key).encrypt_into(SHARE_NONCE, share, SHARE_LABEL + share_context(self.pad_id, self.role, i),
                                     out[PAYLOAD_OFFSET : PAYLOAD_OFFSET + n + SEALED_EXTRA])
            commitment = key_commitment(self.pad_id, self.role, i, key)
            with self.cond:  # the key goes out only after this frame: only this thread sends
                self.sealed[i] = (buf, key)
                self.cond.notify_all()
            self.wire.send_share({"t": "chunk", "i": i, "c": commitment.hex()}, out, n + SEALED_EXTRA)

    def take(self, i: int) -> tuple[memoryview, bytes]:
        """This device's share ``i`` (once sealed) and its key; the caller reads the share, then
        :meth:`give_back` its buffer."""
        with self.cond:
            while i not in self.sealed and self.failure is None:
                self.cond.wait(1.0)
            if i not in self.sealed:
                self.check()
            return self.sealed.pop(i)

    def give_back(self, buf: memoryview) -> None:
        with self.cond:
            self.free.append(buf)
            self.cond.notify_all()

    def post(self, message: dict) -> None:
        with self.cond:
            self.check()
            self.outbox.append(message)
            self.cond.notify_all()


class _Writer(_Worker):
    """Puts the pad on disk, in order, and keeps it out of the page cache.

    The pad is written once and read back rarely and in pieces, so caching
    it buys nothing. Each chunk goes through the page cache and its write-back
    starts at once (not at the next sync, which then has little left to do);
    a few chunks later, written back, its pages are dropped, so the cache
    never fills with pad. In a PIN-locked home each chunk is encrypted at rest
    here, on its way to the disk.
    """

    name = "otc-ceremony-write"

    def __init__(self, fd: int, cipher: PadCipher | None, step: int, start: int,
                 done: Callable[[memoryview], None]) -> None:
        super().__init__()
        self.fd, self.cipher, self.step, self.done = fd, cipher, step, done
        self.at_rest = _aligned_buffer(step) if cipher is not None else None
        self.queue: deque[tuple[int, memoryview, memoryview]] = deque()
        self.written = start  # the chunks before this one are written (not yet synced)
        self.thread.start()

    def put(self, i: int, buf: memoryview, chunk: memoryview) -> None:
        """Write ``chunk`` (a view into ``buf``) as chunk ``i``, then hand ``buf`` back.

        Waits while ``WRITE_AHEAD`` chunks are still to be written: a disk slower than the link holds the
        transfer back instead of the buffers piling up.
        """
        with self.cond:
            while i - self.written >= WRITE_AHEAD and self.failure is None and not self.stopping:
                self.cond.wait()
            self.check()
            self.queue.append((i, buf, chunk))
            self.cond.notify_all()

    def _step(self) -> Callable[[], None] | None:
        while not self.queue and not self.closing and not self.stopping:
            self.cond.wait()
        if self.stopping or not self.queue:
            return None
        return bind(self._write_chunk, *self.queue.popleft())

    def _write_chunk(self, i: int, buf: memoryview, chunk: memoryview) -> None:
        offset = i * self.step
        if self.cipher is not None and self.at_rest is not None:
            chunk = self.cipher.crypt_into(chunk, offset, self.at_rest)
        _pwrite_all(self.fd, chunk, offset)
        self.done(buf)
        _drop_cache(self.fd, offset, len(chunk))  # its write-back starts now
        if i >= DROP_BEHIND:
            _drop_cache(self.fd, offset - DROP_BEHIND * self.step, self.step)  # written back by now: dropped
        with self.cond:
            self.written = i + 1
            self.cond.notify_all()


class _Persister(_Worker):
    """Syncs the pad file, then records the verified prefix, in its own thread.

    The record never runs ahead of the data: a chunk is counted only once it
    is both verified and written, and the file is synced before the record
    that counts it is saved. A break loses at most the chunks verified since
    the last record (the transfer records what it has whenever it ends or
    breaks, so only a crash or a kill loses any); a resume makes them again.
    """

    name = "otc-ceremony-persist"

    def __init__(self, store: PadStore, partial: Partial, fd: int, recorded: int) -> None:
        super().__init__()
        self.store, self.partial, self.fd = store, partial, fd
        self.recorded = self.wanted = recorded
        self.last = time.monotonic()
        self.thread.start()

    def maybe(self, count: int, every: int) -> None:
        """Record ``count`` chunks if ``every`` more are ready or ``PERSIST_SECONDS`` passed since the last record."""
        self.check()
        if count - self.wanted >= every or (count > self.wanted and time.monotonic() - self.last >= PERSIST_SECONDS):
            self.last = time.monotonic()
            with self.cond:
                self.wanted = count
                self.cond.notify_all()

    def _step(self) -> Callable[[], None] | None:
        while self.wanted == self.recorded and not self.closing and not self.stopping:
            self.cond.wait()
        if self.stopping or self.wanted == self.recorded:
            return None
        return bind(self._record, self.wanted)

    def _record(self, count: int) -> None:
        os.fdatasync(self.fd)  # the chunks are on disk before the record says so
        replace(self.partial, hashes=self.partial.hashes[:count]).save(self.store)
        with self.cond:
            self.recorded = count
            self.cond.notify_all()

    def finish_at(self, count: int, quietly: bool = False) -> None:
        """Record ``count`` chunks now and stop (``quietly``: on the way out of a failure, errors ignored)."""
        try:
            self.finish()
            if self.recorded != count:
                self._record(count)
        except Exception:
            if not quietly:
                raise
