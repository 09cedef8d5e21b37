"""The pad store: metadata in SQLite, pad bytes in one file per pad.

Layout of a device home::

    HOME/device.db           metadata (WAL, synchronous=FULL); sealed whole in a PIN-locked home
    HOME/pads/<name>.pad     pad bytes, preallocated, destroyed segment by segment; <name> is the pad
                             id in hex, or in a PIN-locked home an HMAC of it (atrest.FileNames)
    HOME/run/<owner>.lock    one per open store, held with flock while it lives
    HOME/run/open.flock      held while a store opens (and seals an older locked home's files)

Every state change runs in a ``BEGIN IMMEDIATE`` transaction, which SQLite
serialises across threads and processes, and commits durably (the WAL is
synced on each commit). Segments that must be overwritten are recorded in
``pending_wipe`` in the same transaction that consumes them; if the process
dies before it overwrites them, the next store to open the home finds the row
(its owner's lock is free) and overwrites them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, NoReturn, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.errors import (
    ContactExists,
    DeviceExists,
    DeviceNotInitialised,
    InvalidName,
    NothingToGrant,
    OutOfRange,
    PadExhausted,
    PadUnconfirmed,
    Replay,
    RetiredPad,
    StoreError,
    UnknownContact,
    UnknownPad,
)
from device.intervals import IntervalSet
from device.padsize import MIN_PAD_SIZE
from device.storage import database, schema
from device.storage.atrest import FileNames, PadCipher, SecretBox, database_key
from device.storage.lock import KEY_LEN, LOCK_FILE, WIPED_FILE, DeviceLocked, DeviceWiped, StoreLock, check_pin
from device.storage.padfile import PadFile, sync_directory
from device.storage.partials import PARTIAL_STATE_SUFFIX, PARTIAL_SUFFIX, Partials
from onetimechat import package as fmt
from onetimechat.errors import InvalidPackage, MalformedPackage, PackageRefused
from onetimechat.package import AUTH_KEY_LEN, auth_key_range, halves

DB_NAME = "device.db"
PADS_DIR = "pads"
RUN_DIR = "run"
OPEN_LOCK = "open.flock"  # not *.lock: those are the owners' locks
PAD_SUFFIX = ".pad"
# Set in a sealed store once the pads folder holds no file named by a pad id (a home locked by an older
# version named them so, and kept a ceremony's state in the clear).
FILES_SEALED = "files-sealed"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
BUSY_TIMEOUT_S = 120.0
EVENTS_KEPT = 100_000
# Evidence (DESIGN.md, "Devices, relays and stores under attack"): these events are kept for the pad's life and
# never rotated out by other events, so no flood of ordinary events can erase a forgery or a replay.
SECURITY_EVENTS = frozenset({
    "invalid", "replay", "gap", "out-of-range", "unknown-pad", "malformed", "pairing-failed", "rpc-refused",
    "forgery-alarm", "retired-pad", "alarm", "tamper", "wipe", "package-refusals", "ceremony-impostor",
    "room-key-mismatch", "abe-renewal-forged", "abe-renewal-replay", "abe-renewal-out-of-range",
    "grant-refused", "control-malformed", "control-failed",
})
SECURITY_EVENT_PREFIXES = ("hrng",)  # every HRNG alarm code (hrng/errors.py) is one


DEVICE_ID_LABEL = b"otc device id v1\x00"
IDENTITY_CONTEXT = b"device identity"
IDENTITY_SEED_LEN = 32  # an Ed25519 seed; sealed, it is longer


def device_id_for(identity_public: bytes) -> bytes:
    """The id a device made since schema step 7 has: a hash of its identity's public key (self-certifying)."""
    return hashlib.sha256(DEVICE_ID_LABEL + identity_public).digest()[:16]


def is_security_event(event: str) -> bool:
    """Whether ``event`` is evidence the log keeps for good."""
    return event in SECURITY_EVENTS or event.startswith(SECURITY_EVENT_PREFIXES)
SQLITE_MAX_INT = (1 << 63) - 1
WIPE_SYNC_DELAY_S = 0.2  # a used segment's zeros are durable this soon after its call, synced in batches
WIPE_SYNC_BATCH = 64  # or after this many segments, whichever comes first

PAD_FORMAT = 2  # package format v2: both authentication keys set aside
MIN_GRANT = 64  # the fewest bytes a grant gives (a grant costs its giver 34): less is not worth a package
# A split epoch counts one device's grants and takings: it never comes near this honestly. A grant naming an epoch
# at or past it is refused before it reaches SQLite's 64-bit integers (and this device's own next epoch with it).
MAX_SPLIT_EPOCH = 1 << 62
# The most requests one grant is said again for (:meth:`PadStore.regrant`): each copy costs the granter a
# segment, so a peer asking again and again without using the grant burns at most this many.
MAX_GRANT_COPIES = 3

T = TypeVar("T")

INITIATOR = "initiator"
RESPONDER = "responder"


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid device or contact name."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidName()
    return name


@dataclass(frozen=True)
class PadRecord:
    """One pad's metadata (never its bytes)."""

    pad_id: bytes
    contact: str
    role: str
    size: int
    split: int
    mailbox_out: bytes
    mailbox_in: bytes
    send_next: int
    send_count: int
    recv_frontier: int
    recv_bytes: int
    recv_count: int
    low_level: int
    created: float

    #: 2 for pads made with authentication keys set aside (package v2); 1 for retired v1 pads.
    format: int = PAD_FORMAT
    #: How many times this device moved the split (granting bytes, or taking a grant): docs/pad-lifecycle.md.
    split_epoch: int = 0

    @property
    def retired(self) -> bool:
        """A pad made before package format v2: it can no longer send or receive."""
        return self.format < PAD_FORMAT

    @property
    def send_half(self) -> tuple[int, int]:
        """The range this device sends from (its authentication key R excluded)."""
        initiator, responder = halves(self.size, self.split)
        return initiator if self.role == INITIATOR else responder

    @property
    def peer_half(self) -> tuple[int, int]:
        """The range this device decrypts from (the peer's authentication key R excluded)."""
        initiator, responder = halves(self.size, self.split)
        return responder if self.role == INITIATOR else initiator

    @property
    def own_auth_key(self) -> tuple[int, int]:
        """Where this device's authentication key R lies in the pad."""
        return auth_key_range(self.role == INITIATOR, self.size)

    @property
    def peer_auth_key(self) -> tuple[int, int]:
        """Where the peer's authentication key R lies in the pad."""
        return auth_key_range(self.role != INITIATOR, self.size)

    @property
    def send_total(self) -> int:
        lo, hi = self.send_half
        return hi - lo

    @property
    def send_used(self) -> int:
        """Pad bytes consumed from this device's half (sent or reserved)."""
        lo, hi = self.send_half
        if self.role == INITIATOR:
            return self.send_next - lo
        return hi - self.send_next

    @property
    def send_left(self) -> int:
        if self.retired:
            return 0
        return self.send_total - self.send_used

    @property
    def recv_total(self) -> int:
        lo, hi = self.peer_half
        return hi - lo

    @property
    def recv_reached(self) -> int:
        """How far into the peer's half verified packages reach (bytes from its start)."""
        lo, hi = self.peer_half
        if self.role == INITIATOR:
            return hi - self.recv_frontier
        return self.recv_frontier - lo

    @property
    def recv_left(self) -> int:
        """Pad the peer can still send with, as far as this device has seen."""
        if self.retired:
            return 0
        return self.recv_total - self.recv_reached

    def reserve_range(self, need: int) -> tuple[int, int] | None:
        """The next segment of ``need`` bytes in this device's half, if it fits."""
        if need > self.send_left:
            return None
        if self.role == INITIATOR:
            return self.send_next, self.send_next + need
        return self.send_next - need, self.send_next

    def to_dict(self) -> dict:
        return {
            "pad_id": self.pad_id.hex(),
            "role": self.role,
            "size": self.size,
            "split": self.split,
            "split_epoch": self.split_epoch,
            "format": self.format,
            "retired": self.retired,
            "send": {"total": self.send_total, "used": self.send_used, "left": self.send_left,
                     "messages": self.send_count},
            "receive": {"total": self.recv_total, "used": self.recv_bytes, "reached": self.recv_reached,
                        "left": self.recv_left, "messages": self.recv_count},
        }


# -- the rules of pad use (DESIGN.md; docs/pad-engine.md) ------------------------------------------------------
#
# Every rule that touches pad state holds here, in the store, and nowhere else: the engine (device/engine.py)
# only makes and opens packages from the bytes these operations hand it.
#
# 1. Reserve before use: :meth:`PadStore.reserve` commits a send segment as consumed (durably) before
#    :meth:`PadStore.send` reads its bytes; reservations are serialised by SQLite across threads and processes.
# 2. Destroy after use: :meth:`PadStore.send` overwrites the segment once the package is made,
#    :meth:`PadStore.receive` once a package is verified and decrypted.
# 3. Check before reading: :meth:`PadStore.receive` refuses a package overlapping a consumed segment (a replay)
#    before it reads a pad byte.
# 4. Verify before changing state: a package that fails its tag moves no receive state (only its count of tag
#    failures); only a verified package is committed as received.
# 5. Report gaps: a verified package that skips unreceived pad is reported (warning and log).
# 6. Uniform errors: refusals are the few codes of :mod:`device.errors`.
# 7. Local log: refusals, gaps, declines and exhaustion go to the event log with pad_id/offset/length, never
#    pad bytes or plaintext (refusals beyond a budget counted, :class:`RefusalBudget`).
#
# Renewal pads (their bytes in the ``abe_pads`` table) are one-time pads under the same rules: their reserve
# and use are one transaction each in device/storage/abe_tables.py, and their refusals, tag failures and
# forgery alarm go through ``_refusal``, ``_tag_failed`` and ``flush_refusals`` here.

FORGERY_ALARM_AT = 3  # tag failures on one pad that raise the alarm (DESIGN.md)
REFUSAL_ROWS = 30  # package refusals logged one by one per interval; the rest are counted
REFUSALS_INTERVAL_S = 60.0
LOW_LEVELS = ((2, 100), (1, 10))  # (level, percent): under 1% is level 2, under 10% level 1


def retired_text(contact: str) -> str:
    return (f"The pad shared with {contact} was made before package format v2 and is retired:"
            f" pair with {contact} again.")


def forgery_text(contact: str, failures: int) -> str:
    return (f"forgery-alarm: {failures} packages from {contact}'s side failed authentication:"
            " someone is forging messages (see the event log)")


def low_level(left: int, total: int) -> int:
    """0 while at least 10% is left, 1 under 10%, 2 under 1%."""
    for level, divisor in LOW_LEVELS:
        if left * divisor < total:
            return level
    return 0


def low_warning(contact: str, left: int, total: int) -> str:
    pct = 100.0 * left / total if total else 0.0
    return f"pad-low: {left} bytes ({pct:.1f}%) of the pad for sending to {contact} are left"


def _span(bounds: tuple[int, int]) -> tuple[int, int]:
    """(start, length) of a half-open range, as the pad file reads it."""
    return bounds[0], bounds[1] - bounds[0]


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
        self._holders: dict[bytes, str] = {}  # whose pad each counted tag failure was on, for the alarm

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

    def defer(self, event: str, pad_id: bytes | None = None, holder: str | None = None) -> None:
        """Count a refusal beyond the budget; with ``pad_id``, a tag failure on that pad (``holder``: whose)."""
        with self._lock:
            self._counts[event] = self._counts.get(event, 0) + 1
            if pad_id is not None:
                self._failures[pad_id] = self._failures.get(pad_id, 0) + 1
                if holder is not None:
                    self._holders[pad_id] = holder

    def holder(self, pad_id: bytes) -> str | None:
        """Whose pad ``pad_id`` is, as given with a tag failure counted on it."""
        with self._lock:
            return self._holders.get(pad_id)

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


@dataclass(frozen=True)
class Reservation:
    """A send segment committed as consumed (rule 1): ``[start, end)`` of ``pad``, and warnings about the pad."""

    pad: PadRecord
    start: int
    end: int
    warnings: list[str]
    #: Whether this reservation took the half under 10%, or under 1%, for the first time (time to ask for more).
    crossed: bool = False


@dataclass(frozen=True)
class Received(Generic[T]):
    """A package verified on ``pad`` at ``[start, end)``, committed as received: what its opener gave, and gap
    or lateness warnings."""

    pad: PadRecord
    start: int
    end: int
    opened: T
    warnings: list[str]
    #: For a control package: "request", "applied" (the split moved), "refused" or "malformed".
    control: str | None = None


_PAD_COLUMNS = (
    "pad_id, contact, role, size, split, mailbox_out, mailbox_in, send_next, send_count, "
    "recv_frontier, recv_bytes, recv_count, low_level, created, format, split_epoch"
)


class PadStore:
    """A device home: its metadata database and pad files."""

    def __init__(self, home: str | os.PathLike[str], storage_key: bytes | None = None) -> None:
        self.home = Path(home)
        self.db_path = self.home / DB_NAME
        if not self.db_path.is_file():
            raise DeviceNotInitialised()
        if (self.home / WIPED_FILE).exists():
            raise DeviceWiped()
        if (self.home / LOCK_FILE).exists() and storage_key is None:
            raise DeviceLocked()
        self._storage_key = storage_key
        self.secrets = SecretBox(storage_key) if storage_key else None
        # Set when device.db is sealed (a PIN-locked home): the database's key, and the pad files' names.
        self._db_key: bytes | None = None
        self._names: FileNames | None = None
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._pad_files: dict[bytes, PadFile] = {}
        self._pad_files_lock = threading.Lock()
        self._wiped: list[tuple[bytes, int]] = []  # wiped and synced: their pending rows go with the next commit
        self._unsynced: list[tuple[bytes, int]] = []  # wiped, the sync still to come (batched)
        self._unsynced_files: dict[bytes, PadFile] = {}
        self._wipe_timer: threading.Timer | None = None
        self._wiped_lock = threading.Lock()
        self._wipe_sync_lock = threading.Lock()
        # Commits numbered in commit order, and the last one known durable (see _transaction's durable=False).
        self._commits_lock = threading.Lock()
        self._commits = 0
        self._durable_through = 0
        self.owner = secrets.token_hex(8)
        #: The pads being made in this home: their files, from the first byte until they are pads.
        self.partials = Partials(self, self.home / PADS_DIR)
        #: Called as listener(event, fields) for each event, once its transaction commits.
        self.listeners: list[Callable[[str, dict], None]] = []
        self._logged = threading.local()
        self._owner_fd: int | None = self._hold_owner_lock()
        try:
            if storage_key is not None:
                self._open_sealed(storage_key)
            schema.upgrade(self._conn())
            row = self._conn().execute("SELECT name, device_id FROM device WHERE id = 1").fetchone()
            if row is None:
                raise DeviceNotInitialised()
            self.device_name: str = row[0]
            self.device_id: bytes = bytes(row[1])
            self._identity = self._load_identity()
            self.recover()
            self.partials.recover()
            self.destroy_retired()
        except BaseException:
            self.close()
            raise

    # -- identity -----------------------------------------------------------------

    def _load_identity(self) -> Ed25519PrivateKey:
        """This device's identity key: made at init (sealed in a PIN-locked home), or at the first opening of
        a device from before schema step 7 (which keeps its id). A seed stored in the clear (a home locked
        after it was made) is sealed now. Every opener ends with the one key stored: a race between two
        openers making it leaves the first one's."""
        (stored,) = self._conn().execute("SELECT identity FROM device WHERE id = 1").fetchone()
        if stored is None or (self.secrets and len(stored) == IDENTITY_SEED_LEN):
            seed = secrets.token_bytes(IDENTITY_SEED_LEN) if stored is None else bytes(stored)
            with self._transaction() as conn:
                (current,) = conn.execute("SELECT identity FROM device WHERE id = 1").fetchone()
                if current is None or (self.secrets and len(current) == IDENTITY_SEED_LEN):
                    seed = seed if current is None else bytes(current)
                    conn.execute("UPDATE device SET identity = ? WHERE id = 1",
                                 (self.secrets.seal(seed, IDENTITY_CONTEXT) if self.secrets else seed,))
                    if current is None:
                        self._log(conn, "identity", detail="this device's identity key was made (its id stays)")
                (stored,) = conn.execute("SELECT identity FROM device WHERE id = 1").fetchone()
        seed = self.secrets.open(bytes(stored), IDENTITY_CONTEXT) if self.secrets else bytes(stored)
        return Ed25519PrivateKey.from_private_bytes(seed)

    @property
    def identity_public(self) -> bytes:
        """This device's identity (public key, 32 bytes): what it signs ceremonies with."""
        return self._identity.public_key().public_bytes_raw()

    def sign_identity(self, message: bytes) -> bytes:
        return self._identity.sign(message)

    def peer_identity(self, peer_device_id: bytes) -> tuple[str, bytes | None] | None:
        """(contact name, the identity it was made with, or None for a contact from before) for a device id."""
        rows = self._read("SELECT name, peer_identity FROM contacts WHERE peer_device_id = ?", (peer_device_id,))
        if not rows:
            return None
        return str(rows[0][0]), bytes(rows[0][1]) if rows[0][1] is not None else None

    def contact_device(self, name: str) -> bytes | None:
        """The device id of the contact named ``name``, if there is one."""
        rows = self._read("SELECT peer_device_id FROM contacts WHERE name = ?", (name,))
        return bytes(rows[0][0]) if rows else None

    def bind_identity(self, peer_device_id: bytes, identity: bytes) -> None:
        """Remember the identity of the contact with ``peer_device_id`` (only where none is known)."""
        with self._transaction() as conn:
            if conn.execute("UPDATE contacts SET peer_identity = ? WHERE peer_device_id = ? AND peer_identity IS NULL",
                            (identity, peer_device_id)).rowcount:
                self._log(conn, "contact-identity", detail="a contact's device identity is known from now on")

    # -- creation -----------------------------------------------------------------

    @classmethod
    def init(cls, home: str | os.PathLike[str], name: str, pin: str | None = None) -> PadStore:
        """Create a new device in ``home`` (an empty or missing directory), PIN-locked if ``pin``."""
        check_name(name)
        if pin is not None:
            check_pin(pin)
        home = Path(home)
        if home.exists() and not home.is_dir():
            raise StoreError(f"{home} is a file, not a folder: give --home a new or empty folder.")
        if (home / DB_NAME).exists():
            raise DeviceExists()
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            (home / PADS_DIR).mkdir(mode=0o700, exist_ok=True)
            (home / RUN_DIR).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot make the device home {home}: {exc.strerror or type(exc).__name__}.") from None
        # A PIN-locked home's store is sealed from its first byte: its key exists before the database does.
        key = secrets.token_bytes(KEY_LEN) if pin is not None else None
        with _flocked(home / RUN_DIR / "init.flock"):
            if (home / DB_NAME).exists():
                raise DeviceExists()
            tmp = home / (DB_NAME + ".new")
            for stale in (tmp, *(Path(str(tmp) + side) for side in database.SIDE_FILES)):
                stale.unlink(missing_ok=True)
            conn = database.connect(tmp, database_key(key) if key else None, BUSY_TIMEOUT_S)
            try:
                schema.upgrade(conn)
                conn.execute("BEGIN IMMEDIATE")
                seed = secrets.token_bytes(32)
                public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
                conn.execute(  # the identity sealed under the storage key too, in a PIN-locked home
                    "INSERT INTO device (id, name, device_id, created, identity) VALUES (1, ?, ?, ?, ?)",
                    (name, device_id_for(public), time.time(),
                     SecretBox(key).seal(seed, IDENTITY_CONTEXT) if key else seed),
                )
                conn.execute(
                    "INSERT INTO events (ts, event, detail) VALUES (?, 'init', ?)",
                    (time.time(), f"device {name} created"),
                )
                if key is not None:
                    cls._set_setting(conn, FILES_SEALED, "1")
                conn.execute("COMMIT")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            for side in database.SIDE_FILES:
                Path(str(tmp) + side).unlink(missing_ok=True)
            try:
                if key is not None:
                    # A lock.json with no device.db beside it is what an init that died left: it wraps a key
                    # nothing was ever sealed under, so it goes.
                    database.overwrite_and_unlink(home / LOCK_FILE)
                    result = StoreLock(home).set_pin(pin or "", key=key)
                    if not result.ok:
                        raise StoreError(result.message)
                os.link(tmp, home / DB_NAME)  # fails if another init won the race
            except FileExistsError:
                raise DeviceExists() from None
            finally:
                tmp.unlink(missing_ok=True)
            sync_directory(home)
        return cls(home, storage_key=key)

    @staticmethod
    def peek_name(home: str | os.PathLike[str]) -> str | None:
        """The device's name, read without opening the store; None in a PIN-locked home, where it is sealed
        (a lock screen does not know whose device it is)."""
        path = Path(home) / DB_NAME
        if not path.is_file():
            raise DeviceNotInitialised()
        if (Path(home) / LOCK_FILE).exists() or (Path(home) / WIPED_FILE).exists():
            return None
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT name FROM device WHERE id = 1").fetchone()
        except sqlite3.Error:
            row = None
        finally:
            conn.close()
        if row is None:
            raise DeviceNotInitialised()
        return str(row[0])

    # -- sealing a PIN-locked home ------------------------------------------------

    @property
    def sealed(self) -> bool:
        """Whether device.db is sealed and the pad files opaquely named (a PIN-locked home)."""
        return self._db_key is not None

    def _open_sealed(self, storage_key: bytes) -> None:
        """Open a PIN-locked home's store sealed; seal what an older version left in the clear first.

        Sealing replaces device.db and renames files, so it runs only while no other store of this home is
        open (each holds its owner lock; ``run/open.flock`` keeps a store from opening meanwhile). If one is,
        this store opens the home as that one found it, and a later open seals it.
        """
        with _flocked(self.home / RUN_DIR / OPEN_LOCK):
            alone = not self._others_alive()
            plain = database.is_plain(self.db_path)
            if plain and alone:
                database.seal(self.db_path, database_key(storage_key))
                plain = False
            if plain:
                return
            self._db_key = database_key(storage_key)
            self._names = FileNames(storage_key)
            schema.upgrade(self._conn())
            if alone and self.setting(FILES_SEALED) is None:
                self._seal_files()
                with self._transaction() as conn:
                    self._set_setting(conn, FILES_SEALED, "1")

    def _seal_files(self) -> None:
        """Rename the pad files of an older locked home to opaque names; seal its ceremonies' state."""
        pads = self.home / PADS_DIR
        for (pad_id,) in self._read("SELECT pad_id FROM pads"):
            legacy = pads / f"{bytes(pad_id).hex()}{PAD_SUFFIX}"
            if legacy.exists():
                os.replace(legacy, self.pad_path(bytes(pad_id)))
        for state in sorted(pads.glob("*" + PARTIAL_STATE_SUFFIX)):
            stem = state.name[: -len(PARTIAL_STATE_SUFFIX)]
            try:
                raw = state.read_bytes()
                if not raw.strip(b"\0"):  # zeroed by a sealing a crash cut short before it unlinked it
                    state.unlink(missing_ok=True)
                    continue
                record = json.loads(raw)
                pad_id = bytes.fromhex(record["pad_id"])
            except (OSError, ValueError, TypeError, KeyError):
                continue  # sealed already (not JSON), or not a ceremony's
            if record["pad_id"] != stem or len(pad_id) != 16:
                continue
            data = pads / f"{stem}{PARTIAL_SUFFIX}"
            if data.exists():
                os.replace(data, self.pad_path(pad_id, PARTIAL_SUFFIX))
            self.write_sealed(self.pad_path(pad_id, PARTIAL_STATE_SUFFIX), raw)
            database.overwrite_and_unlink(state)
        for tmp in pads.glob("*.tmp"):  # no other store is open: every one is an interrupted write's
            if tmp.name.endswith(PARTIAL_STATE_SUFFIX + ".tmp"):
                database.overwrite_and_unlink(tmp)
            else:
                tmp.unlink(missing_ok=True)
        for data in pads.glob("*" + PARTIAL_SUFFIX):  # a ceremony's pad with no state: nothing resumes it
            if not data.with_name(data.name[: -len(PARTIAL_SUFFIX)] + PARTIAL_STATE_SUFFIX).exists():
                data.unlink(missing_ok=True)
        sync_directory(pads)

    def _others_alive(self) -> bool:
        """Whether another store of this home is open (holds its owner lock)."""
        for path in (self.home / RUN_DIR).glob("*.lock"):
            owner = path.name[: -len(".lock")]
            if owner != self.owner and re.fullmatch(r"[0-9a-f]{16}", owner) and not self._owner_is_dead(owner):
                return True
        return False

    def seal_file(self, data: bytes, name: str) -> bytes:
        """A small file's contents as this home keeps them: sealed, bound to ``name``, if the store is."""
        return self.secrets.seal_file(data, name) if self.sealed and self.secrets else data

    def open_file(self, data: bytes, name: str) -> bytes:
        """What :meth:`seal_file` kept; ValueError if it does not open."""
        return self.secrets.open_file(data, name) if self.sealed and self.secrets else data

    def write_sealed(self, path: Path, data: bytes) -> None:
        """Write a small file durably and atomically (through ``path.tmp``), sealed as :meth:`seal_file` does."""
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.seal_file(data, path.name))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # -- connections and transactions ---------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = database.connect(self.db_path, self._db_key, BUSY_TIMEOUT_S)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction, serialised across threads and processes, committed durably.

        With ``durable=False`` the commit is not synced (SQLite's synchronous=NORMAL for it): it becomes durable
        with the next durable commit of any connection (the WAL is one append-only file, and that commit's
        sync covers every frame before it), or by :meth:`make_durable`, which the caller must reach before it
        answers anyone (issue 21: a call's counter rides on its package's sync)."""
        conn = self._conn()
        if not durable:
            conn.execute("PRAGMA synchronous = NORMAL")
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except database.operational_errors() as exc:
                raise StoreError("The device store is busy or unavailable; try again.") from exc
            with self._wiped_lock:
                wiped, self._wiped = self._wiped, []
            self._logged.events = []
            try:
                if wiped:
                    conn.executemany("DELETE FROM pending_wipe WHERE pad_id = ? AND start = ?", wiped)
                yield conn
                with self._commits_lock:  # numbered under the write lock: in the order they commit
                    self._commits += 1
                    number = self._commits
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                with self._wiped_lock:
                    self._wiped[:0] = wiped
                raise
            finally:
                logged, self._logged.events = self._logged.events, []
        finally:
            if not durable:
                conn.execute("PRAGMA synchronous = FULL")
        with self._commits_lock:
            if durable:
                self._durable_through = max(self._durable_through, number)
            else:
                self._local.light = number
        for event, fields in logged if self.listeners else ():
            for listener in self.listeners:
                listener(event, fields)

    def make_durable(self) -> None:
        """Make this thread's last commit made with ``durable=False`` durable, unless a durable commit since
        has (then this costs nothing): one sync of the WAL."""
        number = getattr(self._local, "light", 0)
        self._local.light = 0
        with self._commits_lock:
            if number <= self._durable_through:
                return
        try:
            fd = os.open(str(self.db_path) + "-wal", os.O_RDONLY)
        except FileNotFoundError:  # checkpointed and removed: a checkpoint syncs the WAL before it copies it
            pass
        else:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        with self._commits_lock:
            self._durable_through = max(self._durable_through, number)

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run a read-only query outside any write transaction."""
        return self._conn().execute(sql, params).fetchall()

    def home_lock(self, name: str) -> AbstractContextManager[None]:
        """An exclusive flock on ``run/<name>.flock`` in this home: held, it serialises one kind of work across
        every process that opens this home (the device server and `otc ... --home` beside it)."""
        return _flocked(self.home / RUN_DIR / f"{name}.flock")

    def forget_keys(self) -> None:
        """After close, on a lock by hand: drop this store's references to the storage key and the keys derived
        from it, so nothing the closed store leaves behind (the engine, the registry built on it) holds them.
        (Python cannot overwrite the bytes themselves; they are freed with their last reference.)"""
        self._storage_key = None
        self.secrets = None
        self._db_key = None
        self._names = None

    def close(self) -> None:
        """Flush bookkeeping and release files and locks."""
        try:
            if getattr(self, "_unsynced", None) is not None:
                self.sync_wipes()
        except OSError:  # recovery redoes the wipes
            pass
        try:
            if getattr(self, "_wiped", None) and getattr(self, "db_path", None):
                with self._transaction():
                    pass
        except Exception:  # noqa: BLE001, S110 - recovery redoes the wipes; close must not fail
            pass
        with self._pad_files_lock:
            for pad_file in self._pad_files.values():
                pad_file.close()
            self._pad_files.clear()
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()
        owner_fd = getattr(self, "_owner_fd", None)
        if owner_fd is not None:
            (self.home / RUN_DIR / f"{self.owner}.lock").unlink(missing_ok=True)
            os.close(owner_fd)
            self._owner_fd = None

    def __enter__(self) -> PadStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- contacts and pads --------------------------------------------------------

    def contacts(self) -> list[str]:
        return [r[0] for r in self._read("SELECT name FROM contacts ORDER BY name")]

    def pads(self, contact: str | None = None) -> list[PadRecord]:
        if contact is None:
            rows = self._read(f"SELECT {_PAD_COLUMNS} FROM pads ORDER BY contact, created")
        else:
            rows = self._read(f"SELECT {_PAD_COLUMNS} FROM pads WHERE contact = ? ORDER BY created", (contact,))
        return [_pad_record(r) for r in rows]

    def pad(self, pad_id: bytes) -> PadRecord | None:
        return self._pad(self._conn(), pad_id)

    def _pad(self, conn: sqlite3.Connection, pad_id: bytes) -> PadRecord | None:
        row = conn.execute(f"SELECT {_PAD_COLUMNS} FROM pads WHERE pad_id = ?", (pad_id,)).fetchone()
        return _pad_record(row) if row else None

    def _pads_for_send(self, conn: sqlite3.Connection, contact: str) -> list[PadRecord]:
        """The contact's pads that can send (retired ones, and ones the peer is not yet known to hold, left
        out), oldest first."""
        if conn.execute("SELECT 1 FROM contacts WHERE name = ?", (contact,)).fetchone() is None:
            raise UnknownContact(f"No contact named {contact!r} on this device.")
        rows = conn.execute(f"SELECT {_PAD_COLUMNS} FROM pads WHERE contact = ? AND format >= ? AND confirmed = 1"
                            " ORDER BY created", (contact, PAD_FORMAT)).fetchall()
        if not rows and conn.execute("SELECT 1 FROM pads WHERE contact = ? AND format >= ? AND confirmed = 0",
                                     (contact, PAD_FORMAT)).fetchone():
            raise PadUnconfirmed(f"The pad with {contact} is not usable yet: this device does not know that "
                                 f"{contact}'s device holds it too. Pair again in person to finish it, or wait "
                                 f"for {contact}'s first message on it.")
        return [_pad_record(r) for r in rows]

    # -- sending (rules 1, 2, 7) -------------------------------------------------------

    def reserve(self, contact: str, length: int) -> Reservation:
        """Durably reserve the next segment for a message of ``length`` bytes to ``contact`` (rule 1): the
        first pad that can send and has room, oldest first. PadExhausted (logged), RetiredPad, UnknownContact
        or PadUnconfirmed otherwise."""
        exhausted: PadExhausted | None = None
        with self._transaction() as conn:
            try:
                return self._reserve_for(conn, contact, length)
            except PadExhausted as exc:
                exhausted = exc  # logged in this transaction, which commits
        raise exhausted

    def refuse_send(self, contact: str, length: int, need: int) -> None:
        """The refusal :meth:`reserve` gives a message of ``length`` bytes when no pad that can send has room
        for ``need`` pad bytes, logged the same way, reserving nothing: for a confirmation that cannot be
        asked (Device._confirm), so that nothing is sealed that the owner was not asked for. Returns only if
        a pad has room now (a grant applied since the caller looked)."""
        exhausted: PadExhausted | None = None
        with self._transaction() as conn:
            pads = self._pads_for_send(conn, contact)
            if any(pad.reserve_range(need) is not None for pad in pads):
                return
            try:
                self._refuse(conn, contact, length, need, pads)
            except PadExhausted as exc:
                exhausted = exc  # logged in this transaction, which commits
        raise exhausted

    def _reserve_for(self, conn: sqlite3.Connection, contact: str, length: int) -> Reservation:
        """:meth:`reserve` inside ``conn``'s transaction; PadExhausted once it has logged it there."""
        need = fmt.segment_length(length)
        pads = self._pads_for_send(conn, contact)
        for pad in pads:
            segment = pad.reserve_range(need)
            if segment is not None:
                start, end = segment
                warnings, crossed = self._reserve(conn, pad, start, end)
                return Reservation(pad, start, end, warnings, crossed)
        self._refuse(conn, contact, length, need, pads)

    def _refuse(self, conn: sqlite3.Connection, contact: str, length: int, need: int, pads: list[PadRecord]
                ) -> NoReturn:
        """No pad in ``pads`` has room for ``need`` bytes: RetiredPad, or PadExhausted logged in ``conn``."""
        left = max((p.send_left for p in pads), default=0)
        if not pads and any(p.retired for p in self.pads(contact)):
            raise RetiredPad(retired_text(contact))
        self._log(conn, "pad-exhausted", contact=contact, length=length,
                  detail=f"needed {need} pad bytes, {left} left")
        raise PadExhausted(
            f"Not enough pad left to send to {contact}: this message needs {need} pad bytes and {left} are left."
        )

    def _reserve(self, conn: sqlite3.Connection, pad: PadRecord, start: int, end: int) -> tuple[list[str], bool]:
        send_next = end if pad.role == INITIATOR else start
        left = pad.send_left - (end - start)
        level = low_level(left, pad.send_total)
        conn.execute(
            "UPDATE pads SET send_next = ?, send_count = send_count + 1, low_level = max(low_level, ?)"
            " WHERE pad_id = ?",
            (send_next, level, pad.pad_id),
        )
        self.add_consumed(conn, pad.pad_id, start, end)
        self.add_pending_wipe(conn, pad.pad_id, start, end)
        warnings = []
        if level:
            warnings.append(low_warning(pad.contact, left, pad.send_total))
            if level > pad.low_level:
                self._log(conn, "pad-low", contact=pad.contact, pad_id=pad.pad_id, offset=start,
                          length=end - start - fmt.MASK_LEN, detail=f"{left} of {pad.send_total} bytes left")
        return warnings, level > pad.low_level

    def send(self, contact: str, length: int, make: Callable[[Reservation, memoryview, memoryview], T]
             ) -> tuple[Reservation, T]:
        """Reserve a segment for ``length`` bytes to ``contact`` (rule 1), then give ``make`` the reservation,
        the segment's bytes and this device's authentication key; the segment is overwritten whatever ``make``
        does (rule 2). What ``make`` returns (the package)."""
        reservation = self.reserve(contact, length)
        return reservation, self._use(reservation, make)

    def _use(self, reservation: Reservation, make: Callable[[Reservation, memoryview, memoryview], T]) -> T:
        """Hand a committed reservation's bytes and this device's R to ``make``; overwrite them whatever it does."""
        pad, start, end = reservation.pad, reservation.start, reservation.end
        try:
            pad_file = self.pad_file(pad)
            segment = pad_file.read(start, end - start)
            return make(reservation, segment, pad_file.read(*_span(pad.own_auth_key)))
        finally:
            self.wipe(pad, start, end)

    # -- receiving (rules 2 to 5, 7) -------------------------------------------------------

    def receive(self, pad_id: bytes, offset: int, length: int, start: int, end: int,
                open_package: Callable[[memoryview, memoryview], T], refusals: RefusalBudget,
                control: bool = False) -> Received[T]:
        """Commit a package on ``pad_id`` at segment ``[start, end)`` as received, if ``open_package`` (given the
        segment's bytes and the peer's authentication key) verifies and opens it.

        Refused, logged within ``refusals`` (rule 7), before any pad byte is read: an unknown pad, a retired
        one, a segment outside the peer's half, one overlapping a consumed segment (a replay, rule 3). A
        package whose tag fails (``open_package`` raises InvalidPackage) only counts a tag failure on the pad
        (rule 4): the third raises the forgery alarm. A verified one moves the receive state, its segment is
        consumed, a gap is reported (rule 5), and its bytes are overwritten after the commit (rule 2).

        With ``control`` (a kind-4 package, whose opener returns its body), a verified request is recorded and a
        verified grant applied or refused in that same commit (:meth:`_on_control`)."""
        refusal: PackageRefused | None = None
        received: Received[T] | None = None
        with self._transaction() as conn:
            pad = self._pad(conn, pad_id)
            fields: dict = {"pad_id": pad_id, "offset": offset, "length": length}
            if pad is None:
                refusal = UnknownPad()
                self._refusal(conn, refusals, "unknown-pad", **fields)
            else:
                fields["contact"] = pad.contact
                lo, hi = pad.peer_half
                if pad.retired:
                    refusal = RetiredPad(retired_text(pad.contact))
                    self._refusal(conn, refusals, "retired-pad", **fields)
                elif not (lo <= start and end <= hi):
                    refusal = OutOfRange()
                    self._refusal(conn, refusals, "out-of-range", **fields)
                elif self.overlaps(conn, pad.pad_id, start, end):
                    refusal = Replay()
                    self._refusal(conn, refusals, "replay", **fields)
                else:
                    pad_file = self.pad_file(pad)
                    segment = pad_file.read(start, end - start)
                    try:
                        opened = open_package(segment, pad_file.read(*_span(pad.peer_auth_key)))
                    except InvalidPackage as exc:
                        refusal = exc
                        self._tag_failed(conn, refusals, pad.pad_id, pad.contact, fields)
                    else:
                        warnings = self._accept(conn, pad, start, end)
                        outcome = None
                        if control:
                            outcome, more = self._on_control_guarded(conn, pad, bytes(opened), start)  # type: ignore[call-overload]
                            warnings += more
                        received = Received(pad, start, end, opened, warnings, outcome)
        if refusal is not None:
            self.flush_refusals(refusals, force=False)
            raise refusal
        assert received is not None
        self.wipe(received.pad, start, end)
        return received

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
            self._log(conn, "gap", contact=pad.contact, pad_id=pad.pad_id, offset=start,
                      length=end - start - fmt.MASK_LEN, detail=f"{gap} bytes skipped")
        elif new_frontier == frontier:
            warnings.append("late: this message arrived after messages sent later")
        conn.execute(
            # A valid package from the peer on a pad proves the peer holds it: it may send now (confirmed).
            "UPDATE pads SET recv_frontier = ?, recv_bytes = recv_bytes + ?, recv_count = recv_count + 1,"
            " confirmed = 1 WHERE pad_id = ?",
            (new_frontier, end - start, pad.pad_id),
        )
        self.add_consumed(conn, pad.pad_id, start, end)
        self.add_pending_wipe(conn, pad.pad_id, start, end)
        # A grant of this device's is seen taken once the peer sends with its bytes, or past them (it sends in
        # order: its pointer went through them).
        self._grants_done_with(conn, pad.pad_id, *((start, pad.size) if pad.role == INITIATOR else (0, end)))
        return warnings

    @staticmethod
    def _grants_done_with(conn: sqlite3.Connection, pad_id: bytes, start: int, end: int, *,
                          returned: bool = False) -> int:
        """Mark this device's unseen grants of ``pad_id`` that give any byte of ``[start, end)`` as seen: the
        peer used those bytes (it sends in order: the whole grant is done with). With ``returned``, a grant this
        device took gave ``[start, end)`` back: only the overlap is done with, so a grant given back in part
        stays unseen for the rest (its ``amount`` becomes what the peer still holds). The bytes so marked."""
        done = 0
        for move_id, old, new, amount in conn.execute(
                "SELECT id, old_split, new_split, amount FROM split_moves WHERE pad_id = ? AND how = 'granted'"
                " AND seen IS NULL", (pad_id,)).fetchall():
            lo, hi = max(start, min(old, new)), min(end, max(old, new))
            if lo >= hi:
                continue
            back = min(amount, hi - lo) if returned else amount
            if back < amount:
                conn.execute("UPDATE split_moves SET amount = ? WHERE id = ?", (amount - back, move_id))
            else:
                conn.execute("UPDATE split_moves SET seen = ? WHERE id = ?", (time.time(), move_id))
            done += back
        return done

    def lost_grant(self, pad_id: bytes) -> int:
        """The bytes of this device's last grant of ``pad_id`` if it died crossing a grant of the peer's: not seen
        used, the peer's latest grant made at that same epoch (``peer_epoch`` one past it), and this device has
        applied no grant of the peer's made after it. Both grants were refused: those bytes are nobody's until the
        next grant moves the split over them, and no copy of it is ever sent (:meth:`_pending_grant`). 0 if none."""
        return self._lost_grant(self._conn(), pad_id)

    @staticmethod
    def _lost_grant(conn: sqlite3.Connection, pad_id: bytes) -> int:
        last = conn.execute("SELECT epoch, amount, seen FROM split_moves WHERE pad_id = ? AND how = 'granted'"
                            " ORDER BY id DESC LIMIT 1", (pad_id,)).fetchone()
        if last is None or last[2] is not None:
            return 0
        peer_epoch = conn.execute("SELECT peer_epoch FROM pads WHERE pad_id = ?", (pad_id,)).fetchone()[0]
        # Exactly crossing: the peer granted at this grant's own epoch. A peer epoch pushed further (a lying
        # peer's refused grant) never makes a grant count as lost, so it cannot shrink what auto believes the
        # peer still has (docs/pad-lifecycle.md, C3).
        if last[0] + 1 != peer_epoch or conn.execute(
                "SELECT 1 FROM split_moves WHERE pad_id = ? AND how = 'applied' AND epoch > ?",
                (pad_id, last[0])).fetchone():
            return 0
        return int(last[1])

    # -- moving the split (docs/pad-lifecycle.md) ---------------------------------------------------------
    #
    # Only the owner of bytes gives them away. A grant moves this device's own limit, durably, in the commit that
    # reserves the grant package's own segment, before that package exists; the peer takes the bytes when it
    # opens the grant, in the commit that records the grant as received. Each device counts the changes of its
    # split (``split_epoch``): a grant made at epoch e is taken only by a device still at epoch e or before it,
    # and only if it moves the split in that device's favour onto bytes it has not seen used. So whatever is
    # lost, delayed, replayed or reordered, whichever device is killed at whatever moment, and even when both
    # grant at once, no byte is ever inside both halves (the proof is in docs/pad-lifecycle.md).

    def ask(self, contact: str, wanted: int, make: Callable[[Reservation, bytes, memoryview, memoryview], T]
            ) -> tuple[Reservation, T]:
        """Ask ``contact`` for ``wanted`` more bytes: reserve a control segment (rule 1) and record the request
        in one commit, then give ``make`` the reservation, the request's body, the segment's bytes and R."""
        length = fmt.CONTROL.size
        exhausted: PadExhausted | None = None
        with self._transaction() as conn:
            try:
                reservation = self._reserve_for(conn, contact, length)
            except PadExhausted as exc:
                exhausted = exc
            else:
                pad = reservation.pad
                left = pad.send_left - (reservation.end - reservation.start)
                self._move(conn, pad.pad_id, "asked", amount=wanted, offset=reservation.start)
                self._log(conn, "pad-asked", contact=contact, pad_id=pad.pad_id, offset=reservation.start,
                          length=length, detail=f"asked for {wanted} more bytes to send with; {left} left")
        if exhausted is not None:
            raise exhausted
        body = fmt.request_body(wanted, left)
        return reservation, self._use(reservation, lambda r, segment, key: make(r, body, segment, key))

    def grant(self, pad_id: bytes, amount: int | Callable[[PadRecord, bool], int],
              make: Callable[[Reservation, bytes, memoryview, memoryview], T]) -> tuple[Reservation, int, T]:
        """Give the peer up to ``amount`` bytes of this device's unused half of ``pad_id``: in one commit, reserve
        the grant's own segment (rule 1), move this device's limit past the bytes given, count the epoch and
        record the grant; then give ``make`` the reservation, the grant's body, the segment's bytes and R.
        ``amount`` may be a function of the pad as it is inside that commit and of whether this device's last
        grant of it still stands unused (:meth:`_pending_grant`): a policy decided on the locked row, so that two
        grants decided at once cannot both count the same unused bytes. Returns (the reservation,
        the bytes given, what ``make`` made). NothingToGrant if fewer than :data:`MIN_GRANT` bytes can be given."""
        need = fmt.segment_length(fmt.CONTROL.size)
        with self._transaction() as conn:
            pad = self._grantable(conn, pad_id)
            segment = pad.reserve_range(need)
            if callable(amount):
                amount = amount(pad, self._pending_grant(conn, pad) is not None)
            amount = min(amount, pad.send_left - need)
            if segment is None or amount < MIN_GRANT or pad.split_epoch >= MAX_SPLIT_EPOCH:
                raise NothingToGrant(f"This device has no unused pad to give {pad.contact}.")
            start, end = segment
            warnings, _ = self._reserve(conn, pad, start, end)
            old = pad.split
            new = old - amount if pad.role == INITIATOR else old + amount
            body = fmt.grant_body(pad.split_epoch, new)  # made before the commit: a grant that cannot be said is none
            left, total = pad.send_left - need - amount, pad.send_total - amount
            conn.execute("UPDATE pads SET split = ?, split_epoch = split_epoch + 1, low_level = max(low_level, ?)"
                         " WHERE pad_id = ?", (new, low_level(left, total), pad_id))
            self._move(conn, pad_id, "granted", epoch=pad.split_epoch, old=old, new=new, amount=amount, offset=start)
            self._log(conn, "pad-granted", contact=pad.contact, pad_id=pad_id, offset=start,
                      length=fmt.CONTROL.size,
                      detail=f"gave {amount} bytes of this device's half: split {old} -> {new}; {left} left")
        reservation = Reservation(pad, start, end, warnings)
        return reservation, amount, self._use(reservation, lambda r, segment, key: make(r, body, segment, key))

    def _grantable(self, conn: sqlite3.Connection, pad_id: bytes) -> PadRecord:
        """A pad this device may send a grant on: known, not retired, confirmed."""
        pad = self._pad(conn, pad_id)
        if pad is None:
            raise UnknownPad()
        if pad.retired:
            raise RetiredPad(retired_text(pad.contact))
        if not conn.execute("SELECT confirmed FROM pads WHERE pad_id = ?", (pad_id,)).fetchone()[0]:
            raise PadUnconfirmed(f"The pad with {pad.contact} is not usable yet.")
        return pad

    def regrant(self, pad_id: bytes, make: Callable[[Reservation, bytes, memoryview, memoryview], T]
                ) -> tuple[Reservation, T]:
        """Say this device's last grant of ``pad_id`` again, on a new segment: the same body (the epoch it was
        made at, the split it named), when it is not in use by the peer yet and nothing changed this device's
        split since (so it is still the whole of what this device has given). It gives nothing more: a copy is
        what the first package, delayed, would be (the epoch rule makes the later of the two out of date), so
        a relay that lost the first does not burn the bytes for good. At most for :data:`MAX_GRANT_COPIES`
        requests received since the grant (a peer asking without using it burns no more of this device's half
        than that); NothingToGrant otherwise."""
        with self._transaction() as conn:
            pad = self._grantable(conn, pad_id)
            pending = self._pending_grant(conn, pad)
            segment = pad.reserve_range(fmt.segment_length(fmt.CONTROL.size))
            if pending is None or segment is None:
                raise NothingToGrant(f"This device has no grant to {pad.contact} to send again.")
            epoch, split = pending
            asked = conn.execute(
                "SELECT count(*) FROM split_moves WHERE pad_id = ? AND how = 'requested' AND id >"
                " (SELECT max(id) FROM split_moves WHERE pad_id = ? AND how = 'granted')",
                (pad_id, pad_id)).fetchone()[0]
            if asked > MAX_GRANT_COPIES:
                raise NothingToGrant(f"The grant to {pad.contact} was sent again {MAX_GRANT_COPIES} times already.")
            body = fmt.grant_body(epoch, split)
            start, end = segment
            warnings, _ = self._reserve(conn, pad, start, end)
            self._log(conn, "pad-grant-resent", contact=pad.contact, pad_id=pad_id, offset=start,
                      length=fmt.CONTROL.size, detail=f"the grant of split {split} at epoch {epoch} again:"
                      f" {pad.contact}'s device is not using it yet")
        reservation = Reservation(pad, start, end, warnings)
        return reservation, self._use(reservation, lambda r, segment, key: make(r, body, segment, key))

    def _on_control_guarded(self, conn: sqlite3.Connection, pad: PadRecord, body: bytes, start: int
                            ) -> tuple[str, list[str]]:
        """:meth:`_on_control` inside a savepoint: whatever goes wrong in it, the verified package's segment is
        still recorded as consumed (and wiped after the commit); what the control package would have changed is
        undone, and it is set aside as ``control-failed`` (kept as evidence)."""
        events = getattr(self._logged, "events", None)
        logged = len(events) if events is not None else 0
        conn.execute("SAVEPOINT control")
        try:
            result = self._on_control(conn, pad, body, start)
        except Exception as exc:  # noqa: BLE001 - a peer's numbers must never leave a verified segment unconsumed
            conn.execute("ROLLBACK TO control")
            if events is not None:
                del events[logged:]
            self._log(conn, "control-failed", contact=pad.contact, pad_id=pad.pad_id, offset=start,
                      length=len(body), detail=f"a control package could not be applied ({type(exc).__name__});"
                      " it was set aside and changed nothing")
            result = "malformed", [f"control-malformed: a control package from {pad.contact}'s device could not"
                                   " be applied; it changed nothing"]
        conn.execute("RELEASE control")
        return result

    def _on_control(self, conn: sqlite3.Connection, pad: PadRecord, body: bytes, start: int
                    ) -> tuple[str, list[str]]:
        """A verified control package from the peer, just recorded as received: record a request; apply a grant
        (or refuse it: out of date, or not in this device's favour). Returns (outcome, warnings)."""
        contact = pad.contact
        try:
            control = fmt.parse_control(body)
        except MalformedPackage:
            self._log(conn, "control-malformed", contact=contact, pad_id=pad.pad_id, offset=start,
                      length=len(body), detail="a control package this device cannot read")
            return "malformed", [f"control-malformed: a control package from {contact}'s device could not be read"]
        if isinstance(control, fmt.PadRequest):
            # A peer's numbers: nobody can want or have more than the whole pad.
            wanted, left = min(control.wanted, pad.size), min(control.left, pad.size)
            self._move(conn, pad.pad_id, "requested", amount=wanted, offset=start)
            self._log(conn, "pad-requested", contact=contact, pad_id=pad.pad_id, offset=start,
                      length=fmt.CONTROL.size, detail=f"asks for {wanted} more bytes; {left} left")
            return "request", [f"pad-requested: {contact}'s device asked for {wanted} more bytes of pad"
                               f" to send with ({left} left)"]
        now = self._pad(conn, pad.pad_id)
        assert now is not None
        old, new = now.split, control.split
        if now.role == INITIATOR:  # the initiator's half grows upward, the responder's downward
            gained = (old, new) if old < new <= now.size - AUTH_KEY_LEN else None
        else:
            gained = (new, old) if AUTH_KEY_LEN <= new < old else None
        if control.epoch + 1 == now.split_epoch and control.split == old and conn.execute(
                "SELECT 1 FROM split_moves WHERE pad_id = ? AND how = 'applied' AND epoch = ? AND new_split = ?",
                (pad.pad_id, control.epoch, old)).fetchone():
            # A copy of the grant this device took last (the granter said it again, not knowing it arrived).
            self._log(conn, "grant-repeated", contact=contact, pad_id=pad.pad_id, offset=start,
                      length=fmt.CONTROL.size, detail=f"split {new} at epoch {control.epoch}: already taken")
            return "repeated", []
        why = ""
        if control.epoch >= MAX_SPLIT_EPOCH:
            why = "its epoch is out of range"
        elif control.epoch < now.split_epoch:
            why = "it is out of date: the split changed after it was made"
        elif gained is None:
            why = "it would not give this device any bytes"
        elif self.overlaps(conn, pad.pad_id, *gained):
            why = "it gives bytes already used"
        if control.epoch < MAX_SPLIT_EPOCH:  # whatever becomes of it, the peer's epoch is past the one it names
            conn.execute("UPDATE pads SET peer_epoch = max(peer_epoch, ?) WHERE pad_id = ?",
                         (control.epoch + 1, pad.pad_id))
        if why:
            self._log(conn, "grant-refused", contact=contact, pad_id=pad.pad_id, offset=start,
                      length=fmt.CONTROL.size, detail=f"split {new} at epoch {control.epoch} refused: {why}")
            return "refused", [f"grant-refused: a grant from {contact}'s device was refused ({why});"
                               " the split did not move"]
        assert gained is not None
        moved = replace(now, split=new)
        conn.execute("UPDATE pads SET split = ?, split_epoch = ?, low_level = ? WHERE pad_id = ?",
                     (new, control.epoch + 1, low_level(moved.send_left, moved.send_total), pad.pad_id))
        amount = gained[1] - gained[0]
        self._move(conn, pad.pad_id, "applied", epoch=control.epoch, old=old, new=new, amount=amount, offset=start)
        self._log(conn, "split-moved", contact=contact, pad_id=pad.pad_id, offset=start, length=fmt.CONTROL.size,
                  detail=f"{contact} gave {amount} bytes: split {old} -> {new}; {moved.send_left} left")
        # After crossing grants, a grant taken may hand back bytes of this device's own refused grant: they are
        # this device's to use again, no longer given and unseen.
        if back := self._grants_done_with(conn, pad.pad_id, *gained, returned=True):
            self._log(conn, "grant-returned", contact=contact, pad_id=pad.pad_id, offset=start,
                      length=fmt.CONTROL.size, detail=f"{back} bytes of a grant this device made came back with it")
        return "applied", [f"split-moved: {contact}'s device gave {amount} bytes of pad;"
                           f" {moved.send_left} bytes are left for sending to {contact}"]

    @staticmethod
    def _move(conn: sqlite3.Connection, pad_id: bytes, how: str, *, epoch: int | None = None, old: int | None = None,
              new: int | None = None, amount: int | None = None, offset: int | None = None) -> None:
        conn.execute('INSERT INTO split_moves (pad_id, how, epoch, old_split, new_split, amount, "offset", ts)'
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (pad_id, how, epoch, old, new, amount, offset, time.time()))

    @staticmethod
    def _pending_grant(conn: sqlite3.Connection, pad: PadRecord) -> tuple[int, int] | None:
        """This device's last grant of ``pad`` -- (the epoch it was made at, the split it named) -- if the peer
        has not been seen using it and nothing has changed this device's split since: it may still be on its way
        (or lost), and it is still the whole of what this device has given. None otherwise."""
        last = conn.execute("SELECT epoch, new_split, seen FROM split_moves WHERE pad_id = ? AND how = 'granted'"
                            " ORDER BY id DESC LIMIT 1", (pad.pad_id,)).fetchone()
        if last is None or last[2] is not None or last[1] != pad.split or last[0] + 1 != pad.split_epoch:
            return None
        # The peer made a grant at an epoch at or past this one's: its own epoch is past it, so this grant was
        # taken already or never will be (crossing grants): saying it again would be refused, to no end.
        if last[0] < conn.execute("SELECT peer_epoch FROM pads WHERE pad_id = ?", (pad.pad_id,)).fetchone()[0]:
            return None
        return int(last[0]), int(last[1])

    def split_moves(self, pad_id: bytes) -> list[dict]:
        """Every request and grant of a pad, sent or received, oldest first (no secrets)."""
        rows = self._read('SELECT how, epoch, old_split, new_split, amount, "offset", ts, seen FROM split_moves'
                          " WHERE pad_id = ? ORDER BY id", (pad_id,))
        return [{"how": r[0], "epoch": r[1], "old_split": r[2], "new_split": r[3], "amount": r[4], "offset": r[5],
                 "time": r[6], "seen": r[7]} for r in rows]

    # -- refusals (rule 7) ------------------------------------------------------------------

    def _refusal(self, conn: sqlite3.Connection, refusals: RefusalBudget, event: str, **fields: object) -> None:
        """Log one package refusal, within the budget; count it beyond."""
        if refusals.allow():
            self._log(conn, event, **fields)  # type: ignore[arg-type]
        else:
            refusals.defer(event)

    def _tag_failed(self, conn: sqlite3.Connection, refusals: RefusalBudget, pad_id: bytes, holder: str,
                    fields: dict, event: str = "invalid") -> None:
        """Log a package that failed its tag (as ``event``), count it for the pad, and raise the alarm from the
        third. ``holder`` is whom the pad is shared with (a contact; for a renewal pad, its authority)."""
        if not refusals.allow():
            refusals.defer(event, pad_id, holder)  # counted for the alarm with the next aggregate
            return
        self._log(conn, event, detail="authentication failed", **fields)
        failures = self.count_tag_failure(conn, pad_id)
        if failures >= FORGERY_ALARM_AT:
            self._log(conn, "forgery-alarm", contact=holder, pad_id=pad_id,
                      detail=f"{failures} packages on this pad failed authentication: someone is forging")

    def log_malformed(self, refusals: RefusalBudget, code: str, size: int) -> None:
        """Log a package that does not parse, within the budget; count it beyond."""
        if refusals.allow():
            self.log_event("malformed", length=size, detail=code)
        else:
            refusals.defer("malformed")
            self.flush_refusals(refusals, force=False)

    def flush_refusals(self, refusals: RefusalBudget, force: bool = True) -> None:
        """Write the package refusals counted beyond the budget as one row (when due, or ``force``), and add
        the tag failures among them to their pads' counts (raising the forgery alarm where due)."""
        if not force and not refusals.due():
            return
        counts, failures = refusals.take()
        if not counts:
            return
        with self._transaction() as conn:
            detail = "; ".join(f"{n} {event}" for event, n in sorted(counts.items()))
            self._log(conn, "package-refusals", length=sum(counts.values()),
                      detail=f"refused beyond the per-minute log budget: {detail}")
            names = {p.pad_id: p.contact for p in self.pads()}
            for pad_id, n in failures.items():
                holder = names.get(pad_id) or refusals.holder(pad_id)  # a renewal pad's: its authority
                if holder is not None:
                    total = self.count_tag_failure(conn, pad_id, n)
                    if total >= FORGERY_ALARM_AT > total - n:
                        self._log(conn, "forgery-alarm", contact=holder, pad_id=pad_id,
                                  detail=f"{total} packages on this pad failed authentication: someone is forging")

    def event_counts(self, events: tuple[str, ...]) -> dict[str, int]:
        """How many times each of ``events`` is in the log."""
        marks = ",".join("?" * len(events))
        return dict(self._read(f"SELECT event, count(*) FROM events WHERE event IN ({marks}) GROUP BY event",
                               events))

    # -- whether the peer holds a pad (pairing in person v3) ---------------------------

    def peer_pads(self, peer_device_id: bytes) -> dict[bytes, tuple[bool, str | None]]:
        """Every pad this device shares with the device ``peer_device_id``: whether it is confirmed, and its
        fingerprint (None for pads made before pairing recorded it)."""
        rows = self._read("SELECT p.pad_id, p.confirmed, p.fingerprint FROM pads p JOIN contacts c"
                         " ON p.contact = c.name WHERE c.peer_device_id = ?", (peer_device_id,))
        return {bytes(r[0]): (bool(r[1]), r[2]) for r in rows}

    def confirm_pad(self, pad_id: bytes, how: str) -> bool:
        """Mark a pad usable: its peer holds it too (``how`` says how this device knows). Whether it changed."""
        with self._transaction() as conn:
            changed = conn.execute("UPDATE pads SET confirmed = 1 WHERE pad_id = ? AND confirmed = 0",
                                   (pad_id,)).rowcount
            if changed:
                self._log(conn, "pad-confirmed", pad_id=pad_id, detail=how)
        return bool(changed)

    def destroy_retired(self) -> int:
        """Overwrite, sync and remove the bytes of retired (pre-v2) pads; return how many.

        Their metadata stays, so status can say the contact must pair again.
        """
        done = 0
        for pad_id, contact in self._read("SELECT pad_id, contact FROM pads WHERE format < ?", (PAD_FORMAT,)):
            path = self.pad_path(bytes(pad_id))
            try:  # another process opening the home may be destroying the same file: either one finishes
                size = path.stat().st_size
                pad_file = PadFile(path, size)
                try:
                    pad_file.wipe(0, size)
                finally:
                    pad_file.close()
                path.unlink()
            except OSError as exc:
                if path.exists():
                    raise StoreError(f"A retired pad's file could not be destroyed: {exc.strerror}.") from None
                continue
            sync_directory(path.parent)
            self.log_event("pad-retired", contact=contact, pad_id=bytes(pad_id), length=size,
                           detail="made before package format v2; its bytes were destroyed: pair again")
            done += 1
        return done

    # -- tag failures ---------------------------------------------------------------

    @staticmethod
    def count_tag_failure(conn: sqlite3.Connection, pad_id: bytes, n: int = 1) -> int:
        """Count ``n`` more packages that failed their tag on ``pad_id``; return the total so far."""
        conn.execute(
            "INSERT INTO tag_failures (pad_id, count, last) VALUES (?, ?, ?)"
            " ON CONFLICT (pad_id) DO UPDATE SET count = count + excluded.count, last = excluded.last",
            (pad_id, n, time.time()),
        )
        return int(conn.execute("SELECT count FROM tag_failures WHERE pad_id = ?", (pad_id,)).fetchone()[0])

    def tag_failures(self) -> dict[bytes, int]:
        """Packages that failed their tag, per pad (kept across restarts)."""
        return {bytes(pad_id): count for pad_id, count in self._read("SELECT pad_id, count FROM tag_failures")}

    def pad_path(self, pad_id: bytes, suffix: str = PAD_SUFFIX) -> Path:
        """Where a pad's file lies (or, with another ``suffix``, another file of that pad's)."""
        stem = self._names.stem(pad_id) if self._names is not None else pad_id.hex()
        return self.home / PADS_DIR / f"{stem}{suffix}"

    def pad_cipher(self, pad_id: bytes) -> PadCipher | None:
        """How this home encrypts a pad at rest (None without a PIN)."""
        return PadCipher(self._storage_key, pad_id) if self._storage_key else None

    def free_space(self) -> int:
        """Bytes free on the disk that holds this home's pads."""
        return shutil.disk_usage(self.home / PADS_DIR).free

    def pad_file(self, pad: PadRecord) -> PadFile:
        with self._pad_files_lock:
            pad_file = self._pad_files.get(pad.pad_id)
            if pad_file is None:
                pad_file = PadFile(self.pad_path(pad.pad_id), pad.size, self.pad_cipher(pad.pad_id))
                self._pad_files[pad.pad_id] = pad_file
            return pad_file

    def add_pad(
        self,
        *,
        contact: str,
        peer_device_id: bytes,
        pad_id: bytes,
        role: str,
        size: int,
        mailbox_out: bytes,
        mailbox_in: bytes,
        confirmed: bool = True,
        fingerprint: str | None = None,
    ) -> PadRecord:
        """Register a pad whose file is already at :meth:`pad_path` (a pad made here goes through
        :meth:`Partials.install <device.storage.partials.Partials.install>`, which moves it there and calls this).

        A pad made in person is added unconfirmed (it does not send) until the peer is known to hold it.
        """
        check_name(contact)
        if size < MIN_PAD_SIZE:
            raise StoreError(f"A pad must be at least {MIN_PAD_SIZE} bytes.")
        if role not in (INITIATOR, RESPONDER):
            raise ValueError("role must be initiator or responder")
        if not self.pad_path(pad_id).is_file():
            raise StoreError("The pad file is missing.")
        split = size // 2
        now = time.time()
        with self._transaction() as conn:
            row = conn.execute("SELECT name FROM contacts WHERE peer_device_id = ?", (peer_device_id,)).fetchone()
            if row is None:
                if conn.execute("SELECT 1 FROM contacts WHERE name = ?", (contact,)).fetchone():
                    raise ContactExists(f"A contact named {contact!r} already exists for another device.")
                conn.execute(
                    "INSERT INTO contacts (name, peer_device_id, created) VALUES (?, ?, ?)",
                    (contact, peer_device_id, now),
                )
            elif row[0] != contact:
                raise ContactExists(f"That device is already a contact, named {row[0]!r}.")
            # Both authentication keys are set aside: the initiator sends from [16, split) upward,
            # the responder from [split, N-16) downward (package format v2).
            (init_lo, _), (_, resp_hi) = halves(size, split)
            conn.execute(
                "INSERT INTO pads (pad_id, contact, role, size, split, mailbox_out, mailbox_in,"
                " send_next, recv_frontier, created, format) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pad_id, contact, role, size, split, mailbox_out, mailbox_in,
                    init_lo if role == INITIATOR else resp_hi,
                    resp_hi if role == INITIATOR else init_lo,
                    now, PAD_FORMAT,
                ),
            )
            if not confirmed or fingerprint is not None:
                conn.execute("UPDATE pads SET confirmed = ?, fingerprint = ? WHERE pad_id = ?",
                             (int(confirmed), fingerprint, pad_id))
            self._log(conn, "pad-added", contact=contact, pad_id=pad_id, length=size,
                     detail=f"{role}, {size} bytes")
        record = self.pad(pad_id)
        assert record is not None
        return record

    def remove_unused_pad(self, pad_id: bytes) -> None:
        """Undo :meth:`add_pad` for a pad never used (a failed pairing); delete its file."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT contact FROM pads WHERE pad_id = ? AND send_count = 0 AND recv_count = 0", (pad_id,)
            ).fetchone()
            if row is not None:
                conn.execute("DELETE FROM consumed WHERE pad_id = ?", (pad_id,))
                conn.execute("DELETE FROM pads WHERE pad_id = ?", (pad_id,))
                conn.execute(
                    "DELETE FROM contacts WHERE name = ? AND NOT EXISTS (SELECT 1 FROM pads WHERE contact = ?)",
                    (row[0], row[0]),
                )
                self._log(conn, "pad-removed", contact=row[0], pad_id=pad_id, detail="pairing did not complete")
        self.pad_path(pad_id).unlink(missing_ok=True)

    # -- the consumed-interval set (same algorithm as device.intervals) -------------

    @staticmethod
    def overlaps(conn: sqlite3.Connection, pad_id: bytes, start: int, end: int) -> bool:
        """Whether ``[start, end)`` intersects a consumed segment of the pad."""
        if start >= end:
            return False
        row = conn.execute(
            'SELECT "end" FROM consumed WHERE pad_id = ? AND start < ? ORDER BY start DESC LIMIT 1',
            (pad_id, end),
        ).fetchone()
        return row is not None and row[0] > start

    @staticmethod
    def add_consumed(conn: sqlite3.Connection, pad_id: bytes, start: int, end: int) -> None:
        """Add ``[start, end)`` (disjoint from the set) and merge it with touching neighbours."""
        if start >= end:
            return
        # Both neighbours by the primary key (pad_id, start): the range just before ``start`` (touching
        # only if it ends there) and the one starting at ``end``. One ordered index lookup each, however
        # many ranges gaps have left (a lookup by "end" would scan every range of the pad).
        before = conn.execute(
            'SELECT start, "end" FROM consumed WHERE pad_id = ? AND start < ? ORDER BY start DESC LIMIT 1',
            (pad_id, start),
        ).fetchone()
        left = before if before is not None and before[1] == start else None
        right = conn.execute(
            'SELECT "end" FROM consumed WHERE pad_id = ? AND start = ?', (pad_id, end)
        ).fetchone()
        if right is not None:
            conn.execute("DELETE FROM consumed WHERE pad_id = ? AND start = ?", (pad_id, end))
            end = right[0]
        if left is not None:
            conn.execute('UPDATE consumed SET "end" = ? WHERE pad_id = ? AND start = ?', (end, pad_id, left[0]))
        else:
            conn.execute('INSERT INTO consumed (pad_id, start, "end") VALUES (?, ?, ?)', (pad_id, start, end))

    def consumed(self, pad_id: bytes) -> IntervalSet:
        rows = self._read('SELECT start, "end" FROM consumed WHERE pad_id = ? ORDER BY start', (pad_id,))
        return IntervalSet(rows)

    # -- destroying used pad --------------------------------------------------------

    def add_pending_wipe(self, conn: sqlite3.Connection, pad_id: bytes, start: int, end: int) -> None:
        conn.execute(
            'INSERT INTO pending_wipe (pad_id, start, "end", owner) VALUES (?, ?, ?, ?)',
            (pad_id, start, end, self.owner),
        )

    def wipe(self, pad: PadRecord, start: int, end: int) -> None:
        """Overwrite a consumed segment now; make it durable within :data:`WIPE_SYNC_DELAY_S` (or
        :data:`WIPE_SYNC_BATCH` segments), batched; its pending row goes with the first commit after that.

        So a call costs one sync (its commit), not two. The rule still holds across a crash: the segment's
        pending row, committed with its reservation, stays until its zeros are on disk, and whoever opens
        the store next overwrites every segment still pending (:meth:`recover`).
        """
        pad_file = self.pad_file(pad)
        pad_file.wipe(start, end - start, sync=False)
        with self._wiped_lock:
            self._unsynced.append((pad.pad_id, start))
            self._unsynced_files[pad.pad_id] = pad_file
            due = len(self._unsynced) >= WIPE_SYNC_BATCH
            if not due and self._wipe_timer is None:
                self._wipe_timer = threading.Timer(WIPE_SYNC_DELAY_S, self.sync_wipes)
                self._wipe_timer.daemon = True
                self._wipe_timer.start()
        if due:
            self.sync_wipes()

    def sync_wipes(self) -> None:
        """Sync every segment wiped so far; their pending rows go with the next commit."""
        with self._wipe_sync_lock:
            with self._wiped_lock:
                entries, self._unsynced = self._unsynced, []
                files, self._unsynced_files = self._unsynced_files, {}
                timer, self._wipe_timer = self._wipe_timer, None
            if timer is not None:
                timer.cancel()
            for pad_file in files.values():
                try:
                    pad_file.sync()
                except OSError:  # closed or gone: the rows stay pending and recovery overwrites them again
                    entries = [e for e in entries if e[0] not in files]
                    break
            with self._wiped_lock:
                self._wiped.extend(entries)

    def recover(self) -> int:
        """Overwrite segments left pending by stores that died; return how many."""
        rows = self._read('SELECT pad_id, start, "end", owner FROM pending_wipe WHERE owner != ?', (self.owner,))
        dead: dict[str, bool] = {}
        done = []
        for pad_id, start, end, owner in rows:
            if owner not in dead:
                dead[owner] = self._owner_is_dead(owner)
            if not dead[owner]:
                continue
            pad = self.pad(bytes(pad_id))
            if pad is not None:
                self.pad_file(pad).wipe(start, end - start)
            done.append((pad_id, start))
        if done:
            with self._transaction() as conn:
                conn.executemany("DELETE FROM pending_wipe WHERE pad_id = ? AND start = ?", done)
                self._log(conn, "recovered", detail=f"{len(done)} interrupted segment(s) destroyed")
        for owner, is_dead in dead.items():
            if is_dead:
                (self.home / RUN_DIR / f"{owner}.lock").unlink(missing_ok=True)
        return len(done)

    def _hold_owner_lock(self) -> int:
        run = self.home / RUN_DIR
        run.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(run / f"{self.owner}.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _owner_is_dead(self, owner: str) -> bool:
        if not re.fullmatch(r"[0-9a-f]{16}", owner):
            return True
        try:
            fd = os.open(self.home / RUN_DIR / f"{owner}.lock", os.O_RDWR)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    # -- settings -------------------------------------------------------------------

    def setting(self, name: str, default: str | None = None) -> str | None:
        rows = self._read("SELECT value FROM settings WHERE name = ?", (name,))
        return rows[0][0] if rows else default

    def settings_with_prefix(self, prefix: str) -> dict[str, str]:
        """Every setting whose name starts with ``prefix``."""
        return {str(name): str(value) for name, value in
                self._read("SELECT name, value FROM settings WHERE name LIKE ?", (prefix + "%",))}

    def save_settings(self, values: dict[str, str], event: str | None = None, detail: str | None = None) -> None:
        """Set ``values`` in one commit, with the event ``event`` (if given) logged in it."""
        with self._transaction() as conn:
            for name, value in values.items():
                self._set_setting(conn, name, value)
            if event is not None:
                self._log(conn, event, detail=detail)

    def delete_setting(self, name: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM settings WHERE name = ?", (name,))

    def erase_settings(self, names: list[str], event: str | None = None, detail: str | None = None) -> None:
        """Delete ``names`` (secrets: a file's key) in one commit, then copy the WAL into the database and empty
        it, so that no earlier version of those rows stays on the card: the rows are zeroed where they lay
        (``secure_delete``, on for every connection), and the WAL's old frames go with the checkpoint.
        Best effort for the WAL: a reader still holding an older snapshot lets the next checkpoint finish it."""
        with self._transaction() as conn:
            conn.executemany("DELETE FROM settings WHERE name = ?", [(name,) for name in names])
            if event is not None:
                self._log(conn, event, detail=detail)
        self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    @staticmethod
    def _set_setting(conn: sqlite3.Connection, name: str, value: str) -> None:
        conn.execute(
            "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    # -- the event log --------------------------------------------------------------

    def _log(
        self,
        conn: sqlite3.Connection,
        event: str,
        *,
        contact: str | None = None,
        pad_id: bytes | None = None,
        offset: int | None = None,
        length: int | None = None,
        detail: str | None = None,
    ) -> None:
        """Append to the event log inside ``conn``'s transaction (never secrets)."""
        if offset is not None and offset > SQLITE_MAX_INT:
            # A hostile package's offset may not fit SQLite's integers; keep it as text.
            detail = f"offset {offset}" + (f"; {detail}" if detail else "")
            offset = None
        cur = conn.execute(
            'INSERT INTO events (ts, event, contact, pad_id, "offset", length, detail) VALUES (?, ?, ?, ?, ?, ?, ?)',
            (time.time(), event, contact, pad_id, offset, length, detail),
        )
        events = getattr(self._logged, "events", None)
        if events is not None:
            events.append((event, {"contact": contact, "pad_id": pad_id, "offset": offset, "length": length,
                                   "detail": detail}))
        if cur.lastrowid and cur.lastrowid % 1000 == 0:
            # Only ordinary events rotate; evidence stays (SECURITY_EVENTS).
            marks = ",".join("?" * len(SECURITY_EVENTS))
            likes = "".join(" AND event NOT LIKE ?" for _ in SECURITY_EVENT_PREFIXES)
            conn.execute(
                f"DELETE FROM events WHERE id <= ? AND event NOT IN ({marks}){likes}",
                (cur.lastrowid - EVENTS_KEPT, *sorted(SECURITY_EVENTS), *(p + "%" for p in SECURITY_EVENT_PREFIXES)),
            )

    def log_event(self, event: str, **fields: object) -> None:
        """Append to the event log in a transaction of its own."""
        with self._transaction() as conn:
            self._log(conn, event, **fields)  # type: ignore[arg-type]

    def events(self, limit: int = 50) -> list[dict]:
        rows = self._read(
            'SELECT id, ts, event, contact, pad_id, "offset", length, detail FROM events ORDER BY id DESC LIMIT ?',
            (limit,),
        )
        return [
            {
                "id": r[0],
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r[1])),
                "event": r[2],
                "contact": r[3],
                "pad_id": bytes(r[4]).hex() if r[4] is not None else None,
                "offset": r[5],
                "length": r[6],
                "detail": r[7],
            }
            for r in reversed(rows)
        ]


@contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (made if missing)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _pad_record(row: tuple) -> PadRecord:
    return PadRecord(
        pad_id=bytes(row[0]),
        contact=row[1],
        role=row[2],
        size=row[3],
        split=row[4],
        mailbox_out=bytes(row[5]),
        mailbox_in=bytes(row[6]),
        send_next=row[7],
        send_count=row[8],
        recv_frontier=row[9],
        recv_bytes=row[10],
        recv_count=row[11],
        low_level=row[12],
        created=row[13],
        format=row[14],
        split_epoch=row[15],
    )
