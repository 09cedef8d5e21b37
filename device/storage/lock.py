"""The PIN lock: a random storage key, wrapped by a key derived from the PIN.

``HOME/lock.json`` holds, in the clear, only what unlocking needs: the scrypt
salt and parameters, the storage key sealed with AES-256-GCM under
scrypt(PIN), and the count of wrong PINs in a row with the time before which
no PIN is tried. Pads and client keys are encrypted under keys derived from
the storage key (:mod:`device.storage.atrest`); without the PIN, the home
holds no pad byte and no key in the clear.

Wrong PINs double the wait before the next try (1 s, 2 s, 4 s, ...); after
``wipe_after`` wrong PINs in a row (10 by default) the device erases its
storage key, its pad files and its client keys. The screen warns from the
7th. The count lives in the home, so a restart does not reset it.

What this cannot do: a Pi has no secure element, so someone who copies the SD
card can try PINs offline, at scrypt's pace, without the wipe. Long PINs make
that slow; docs/pin-lock.md says how slow.
"""

from __future__ import annotations

import base64
import enum
import fcntl
import json
import os
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from device import production
from device.errors import DeviceError
from device.storage.database import is_plain, overwrite_and_unlink
from device.storage.padfile import sync_directory


class LockState(enum.Enum):
    NO_PIN = "no-pin"  # first start: the owner sets a PIN
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    WIPED = "wiped"  # too many wrong PINs: pads and keys are gone
    UNLOCKABLE = "unlockable"  # a home made without a PIN (emulated devices, tests, demo)


@dataclass(frozen=True)
class PinStatus:
    """The lock as the PIN screen shows it."""

    state: LockState
    failures: int = 0  # wrong PINs in a row
    retry_at: float = 0.0  # time.time() before which no PIN is accepted
    wipe_after: int = 10  # wrong PINs in a row that wipe the device
    warn_from: int = 7  # failures from which the screen warns of the wipe

    @property
    def attempts_left(self) -> int:
        return max(self.wipe_after - self.failures, 0)

    @property
    def warning(self) -> bool:
        return self.failures >= self.warn_from


@dataclass(frozen=True)
class PinResult:
    ok: bool
    status: PinStatus
    message: str


LOCK_FILE = "lock.json"
WIPED_FILE = "wiped"
PIN_REQUIRED_FILE = "pin-required"
KEY_LEN = 32
WRAP_AAD = b"otc storage key v1"
# scrypt sized for a Raspberry Pi 4: 128 MiB of memory; 0.36 s on the development machine's Xeon core, about
# 1.1 s on a Pi 4 at the assumed factor of 3 (docs/pin-lock.md, "Cost"; `make bench` prints the real figure).
KDF_PARAMS = {"n": 1 << 17, "r": 8, "p": 1}
# Test-only: with OTC_TEST_CHEAP_KDF=1 new locks use n=2^10 so the suite stays fast (unlocking reads the
# parameters from lock.json, so homes made either way unlock either way). Refused on a real device.
TEST_KDF_ENV = "OTC_TEST_CHEAP_KDF"
TEST_KDF_PARAMS = {"n": 1 << 10, "r": 8, "p": 1}
MIN_PIN, MAX_PIN = 6, 64  # a PIN: digits only
MIN_PASSPHRASE, MAX_PASSPHRASE = 8, 256  # anything else: a passphrase
WIPE_AFTER = 10
WARN_FROM = 7


class DeviceLocked(DeviceError):
    """This device is PIN-locked; unlock it first (on its screen, or with --pin-file)."""

    code = "locked"


class DeviceWiped(DeviceError):
    """This device erased its pads and keys after too many wrong PINs."""

    code = "wiped"


class BadPin(DeviceError):
    """A PIN is 6 to 64 digits; a passphrase is 8 to 256 characters (letters, digits, spaces, punctuation)."""

    code = "bad-pin"


def pin_problem(secret: str) -> str | None:
    """Why ``secret`` cannot be a new PIN or passphrase, or None if it can.

    Lengths count the NFC form, which is what derives the key (a decomposed é is one character).
    """
    secret = unicodedata.normalize("NFC", secret)
    if secret.isascii() and secret.isdigit():
        if len(secret) < MIN_PIN:
            return f"Use at least {MIN_PIN} digits, or a passphrase of at least {MIN_PASSPHRASE} characters."
        return None if len(secret) <= MAX_PIN else f"A PIN has at most {MAX_PIN} digits."
    if len(secret) < MIN_PASSPHRASE:
        return f"A passphrase has at least {MIN_PASSPHRASE} characters (or use a PIN of {MIN_PIN} digits or more)."
    if len(secret) > MAX_PASSPHRASE:
        return f"A passphrase has at most {MAX_PASSPHRASE} characters."
    if not secret.isprintable() or secret != secret.strip():
        return "A passphrase is letters, digits, spaces and punctuation, with no space at either end."
    return None


def check_pin(secret: str) -> str:
    """``secret`` if it is a valid new PIN (6+ digits) or passphrase (8+ characters); else BadPin."""
    if pin_problem(secret) is not None:
        raise BadPin()
    return secret


def _tried(secret: str) -> str:
    """A PIN or passphrase to try against an existing lock: any length a lock may have been made with."""
    if not 1 <= len(secret) <= MAX_PASSPHRASE:
        raise BadPin()
    return secret


def default_kdf_params() -> dict:
    """scrypt's parameters for new locks: :data:`KDF_PARAMS`, or the test-only cheap ones when asked."""
    if os.environ.get(TEST_KDF_ENV) == "1":
        if production.is_production():
            raise BadPin(f"{TEST_KDF_ENV} is for tests; this is a real device, where PINs get the full scrypt cost.")
        return dict(TEST_KDF_PARAMS)
    return dict(KDF_PARAMS)


def read_pin_file(path: str | os.PathLike[str], new: bool = False) -> str:
    """The PIN or passphrase in a file: its first line, surrounding white space ignored.

    A ``new`` one (for a new lock, or a change) must be 6+ digits or 8+ characters; one to unlock with is
    taken as it is (a lock made before that rule opens with its shorter PIN)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise BadPin(f"Cannot read a PIN from {path}.") from None
    secret = text.splitlines()[0].strip() if text.strip() else ""
    return check_pin(secret) if new else _tried(secret)


def _weaker(stored: dict, wanted: dict) -> bool:
    """Whether scrypt parameters ``stored`` cost less than ``wanted`` (memory n*r, or n or r alone)."""
    try:
        n, r = int(stored["n"]), int(stored["r"])
    except (KeyError, TypeError, ValueError):
        return True
    return n * r < wanted["n"] * wanted["r"] or n < wanted["n"] or r < wanted["r"]


def _derive(pin: str, salt: bytes, params: dict) -> bytes:
    # NFC: a passphrase typed on another keyboard (a composed or a decomposed é) derives the same key.
    secret = unicodedata.normalize("NFC", pin).encode("utf-8")
    return Scrypt(salt=salt, length=KEY_LEN, n=params["n"], r=params["r"], p=params["p"]).derive(secret)


def _log_wipe(home: Path) -> None:
    """Record the wipe in the event log (a security event, never rotated out); best effort.

    A sealed store (a PIN-locked home's) cannot take it: its key went with the storage key. There the
    marker file alone records the wipe, with its time."""
    import sqlite3

    db = home / "device.db"
    try:
        if not is_plain(db):
            return
    except OSError:
        return
    try:
        conn = sqlite3.connect(db, timeout=10, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("INSERT INTO events (ts, event, detail) VALUES (?, 'wipe', ?)",
                         (time.time(), "erased after too many wrong PINs"))
        finally:
            conn.close()
    except sqlite3.Error:
        pass  # the marker file says it too


class StoreLock:
    """The PIN lock of one device home (implements device.ui.PinLock)."""

    def __init__(self, home: str | os.PathLike[str], clock: Callable[[], float] = time.time,
                 kdf_params: dict | None = None, wipe_after: int = WIPE_AFTER) -> None:
        self.home = Path(home)
        self.path = self.home / LOCK_FILE
        self.clock = clock
        self.kdf_params = dict(kdf_params or default_kdf_params())
        self.wipe_after = wipe_after
        self.key: bytes | None = None
        self._mutex = threading.Lock()
        self.on_unlock: list[Callable[[bytes], None]] = []
        self.on_wipe: list[Callable[[], None]] = []

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold this home's PIN lock against every thread and process: each read-modify-write of lock.json
        (an unlock's counters, a re-wrap, a PIN change, a wipe) runs whole, so none undoes another's."""
        with self._mutex:
            run = self.home / "run"
            run.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(run / "pin.flock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    # -- state ---------------------------------------------------------------------

    @property
    def locked_home(self) -> bool:
        """Whether this home has a PIN at all."""
        return self.path.exists()

    def _record(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            raise DeviceLocked("This device's lock file is unreadable; it cannot be unlocked.") from None

    def status(self) -> PinStatus:
        if (self.home / WIPED_FILE).exists():
            return PinStatus(LockState.WIPED, wipe_after=self.wipe_after, warn_from=WARN_FROM)
        if not self.path.exists():
            required = (self.home / PIN_REQUIRED_FILE).exists()
            return PinStatus(LockState.NO_PIN if required else LockState.UNLOCKABLE,
                             wipe_after=self.wipe_after, warn_from=WARN_FROM)
        record = self._record()
        return PinStatus(
            LockState.UNLOCKED if self.key is not None else LockState.LOCKED,
            failures=int(record.get("failures", 0)),
            retry_at=float(record.get("retry_at", 0)),
            wipe_after=int(record.get("wipe_after", self.wipe_after)),
            warn_from=WARN_FROM,
        )

    # -- the owner's acts ------------------------------------------------------------

    def unlock(self, pin: str) -> PinResult:
        with self._exclusive():
            status = self.status()
            if status.state == LockState.WIPED:
                return PinResult(False, status, "This device erased its pads and keys after too many wrong PINs.")
            if status.state in (LockState.UNLOCKABLE, LockState.NO_PIN):
                return PinResult(status.state == LockState.UNLOCKABLE, status, "This device has no PIN.")
            if status.state == LockState.UNLOCKED:
                return PinResult(True, status, "Unlocked.")
            wait = status.retry_at - self.clock()
            if wait > 0:
                return PinResult(False, status, f"Wait {int(wait + 0.999)} s before the next try.")
            record = self._record()
            try:
                _tried(pin)  # a lock made before PINs had 6 digits still opens with its shorter one
                kek = _derive(pin, base64.b64decode(record["salt"]), record["kdf"])
                wrapped = base64.b64decode(record["wrapped"])
                key = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], WRAP_AAD)
            except (BadPin, InvalidTag, ValueError, KeyError):
                return self._wrong(record)
            record["failures"], record["retry_at"] = 0, 0
            if _weaker(record["kdf"], self.kdf_params):
                # Wrapped at a lower scrypt cost than this software's (a home made with the test-only cheap
                # cost, or by an older version): wrap it again at today's cost now that the PIN is known.
                record = self._wrap(pin, key, {k: record[k] for k in ("failures", "retry_at", "wipe_after")
                                               if k in record})
            self._write(record)
            self.key = key
        for callback in self.on_unlock:
            callback(key)
        return PinResult(True, self.status(), "Unlocked.")

    def _wrong(self, record: dict) -> PinResult:
        failures = int(record.get("failures", 0)) + 1
        wipe_after = int(record.get("wipe_after", self.wipe_after))
        if failures >= wipe_after:
            self._wipe()
            return PinResult(False, self.status(), "Too many wrong PINs: this device erased its pads and keys.")
        record["failures"] = failures
        record["retry_at"] = self.clock() + 2 ** (failures - 1)
        self._write(record)
        status = self.status()
        message = f"Wrong PIN. Wait {2 ** (failures - 1)} s before the next try."
        if status.warning:
            message += f" {status.attempts_left} more wrong PIN(s) erase this device."
        return PinResult(False, status, message)

    def set_pin(self, pin: str, key: bytes | None = None) -> PinResult:
        """Give a home without a PIN its first one (before it holds any pad).

        ``key`` is the storage key to wrap (a new home's store is sealed under it before its PIN is set);
        a new random one without it."""
        check_pin(pin)
        with self._exclusive():
            status = self.status()
            if status.state not in (LockState.NO_PIN, LockState.UNLOCKABLE):
                return PinResult(False, status, "This device already has a PIN; change it instead.")
            if any((self.home / "pads").glob("*.pad")) or any((self.home / "pads").glob("*.pad.partial")):
                return PinResult(False, status, "Set the PIN before the device holds any pad.")
            key = key if key is not None else secrets.token_bytes(KEY_LEN)
            self._write(self._wrap(pin, key, {"failures": 0, "retry_at": 0, "wipe_after": self.wipe_after}))
            (self.home / PIN_REQUIRED_FILE).unlink(missing_ok=True)
            self.key = key
        for callback in self.on_unlock:
            callback(key)
        return PinResult(True, self.status(), "PIN set.")

    def change_pin(self, old: str, new: str) -> PinResult:
        check_pin(new)
        result = self.unlock(old) if self.key is None else None
        if result is not None and not result.ok:
            return result
        with self._exclusive():
            if (self.home / WIPED_FILE).exists():
                return PinResult(False, self.status(),
                                 "This device erased its pads and keys after too many wrong PINs.")
            record = self._record()
            try:
                kek = _derive(_tried(old), base64.b64decode(record["salt"]), record["kdf"])
                wrapped = base64.b64decode(record["wrapped"])
                key = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], WRAP_AAD)
            except (BadPin, InvalidTag, ValueError, KeyError):
                return self._wrong(record)
            self._write(self._wrap(new, key, {"failures": 0, "retry_at": 0,
                                              "wipe_after": record.get("wipe_after", self.wipe_after)}))
        return PinResult(True, self.status(), "PIN changed.")

    def lock(self) -> None:
        self.key = None

    # -- internals --------------------------------------------------------------------

    def _wrap(self, pin: str, key: bytes, extra: dict) -> dict:
        salt = secrets.token_bytes(16)
        kek = _derive(pin, salt, self.kdf_params)
        nonce = secrets.token_bytes(12)
        wrapped = nonce + AESGCM(kek).encrypt(nonce, key, WRAP_AAD)
        return {"version": 1, "kdf": {"name": "scrypt", **self.kdf_params},
                "salt": base64.b64encode(salt).decode(), "wrapped": base64.b64encode(wrapped).decode(), **extra}

    def _write(self, record: dict) -> None:
        """Replace lock.json atomically, then overwrite the old one's bytes (it held the wrapped key too)."""
        try:
            old = os.open(self.path, os.O_WRONLY)
        except FileNotFoundError:
            old = None
        try:
            tmp = self.path.with_name(f"{self.path.name}.{secrets.token_hex(8)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            sync_directory(self.home)
            if old is not None:  # the new record is durable: the old inode's copy of the key goes
                os.pwrite(old, bytes(os.fstat(old).st_size), 0)
                os.fsync(old)
        finally:
            if old is not None:
                os.close(old)

    def _wipe(self) -> None:
        """Erase the storage key, the pads and the client keys; leave a marker.

        The wrapped key is overwritten in place and synced before its file is unlinked, so the home's files
        keep no byte of it (flash wear levelling may keep an old copy in the card's spare blocks: see
        docs/pin-lock.md). Without the storage key every pad byte and sealed key left is noise."""
        marker = self.home / WIPED_FILE
        with open(marker, "w") as f:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
            f.write(f"erased after too many wrong PINs at {when}\n")
            f.flush()
            os.fsync(f.fileno())
        for path in (self.path, *self.home.glob(self.path.name + "*.tmp")):
            overwrite_and_unlink(path)
        # Pad files, a ceremony's partial pad and its sealed state: noise without the storage key, unlinked.
        for pad in (self.home / "pads").glob("*"):
            if pad.is_file():
                pad.unlink(missing_ok=True)
        self.key = None
        sync_directory(self.home)
        sync_directory(self.home / "pads")
        _log_wipe(self.home)
        for callback in self.on_wipe:
            callback()
