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
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from device.errors import DeviceError
from device.storage.padfile import sync_directory
from device.ui import LockState, PinResult, PinStatus

LOCK_FILE = "lock.json"
WIPED_FILE = "wiped"
PIN_REQUIRED_FILE = "pin-required"
KEY_LEN = 32
WRAP_AAD = b"otc storage key v1"
# scrypt sized for a Raspberry Pi 4: 64 MiB of memory, about a second there
# (about 0.15 s on the development laptop).
KDF_PARAMS = {"n": 1 << 16, "r": 8, "p": 1}
MIN_PIN, MAX_PIN = 4, 16
WIPE_AFTER = 10
WARN_FROM = 7


class DeviceLocked(DeviceError):
    """This device is PIN-locked; unlock it first (on its screen, or with --pin-file)."""

    code = "locked"


class DeviceWiped(DeviceError):
    """This device erased its pads and keys after too many wrong PINs."""

    code = "wiped"


class BadPin(DeviceError):
    """A PIN is 4 to 16 digits."""

    code = "bad-pin"


def check_pin(pin: str) -> str:
    if not (MIN_PIN <= len(pin) <= MAX_PIN and pin.isascii() and pin.isdigit()):
        raise BadPin()
    return pin


def read_pin_file(path: str | os.PathLike[str]) -> str:
    """The PIN in a file: its first line, surrounding white space ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise BadPin(f"Cannot read a PIN from {path}.") from None
    return check_pin(text.splitlines()[0].strip() if text.strip() else "")


def _derive(pin: str, salt: bytes, params: dict) -> bytes:
    return Scrypt(salt=salt, length=KEY_LEN, n=params["n"], r=params["r"], p=params["p"]).derive(pin.encode())


class StoreLock:
    """The PIN lock of one device home (implements device.ui.PinLock)."""

    def __init__(self, home: str | os.PathLike[str], clock: Callable[[], float] = time.time,
                 kdf_params: dict | None = None, wipe_after: int = WIPE_AFTER) -> None:
        self.home = Path(home)
        self.path = self.home / LOCK_FILE
        self.clock = clock
        self.kdf_params = dict(kdf_params or KDF_PARAMS)
        self.wipe_after = wipe_after
        self.key: bytes | None = None
        self._mutex = threading.Lock()
        self.on_unlock: list[Callable[[bytes], None]] = []
        self.on_wipe: list[Callable[[], None]] = []

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
        with self._mutex:
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
                check_pin(pin)
                kek = _derive(pin, base64.b64decode(record["salt"]), record["kdf"])
                wrapped = base64.b64decode(record["wrapped"])
                key = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], WRAP_AAD)
            except (BadPin, InvalidTag, ValueError, KeyError):
                return self._wrong(record)
            record["failures"], record["retry_at"] = 0, 0
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

    def set_pin(self, pin: str) -> PinResult:
        """Give a home without a PIN its first one (before it holds any pad)."""
        check_pin(pin)
        with self._mutex:
            status = self.status()
            if status.state not in (LockState.NO_PIN, LockState.UNLOCKABLE):
                return PinResult(False, status, "This device already has a PIN; change it instead.")
            if any((self.home / "pads").glob("*.pad")):
                return PinResult(False, status, "Set the PIN before the device holds any pad.")
            key = secrets.token_bytes(KEY_LEN)
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
        with self._mutex:
            record = self._record()
            try:
                kek = _derive(check_pin(old), base64.b64decode(record["salt"]), record["kdf"])
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
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        sync_directory(self.home)

    def _wipe(self) -> None:
        """Erase the storage key, the pads and the client keys; leave a marker."""
        (self.home / WIPED_FILE).write_text("erased after too many wrong PINs\n")
        self.path.unlink(missing_ok=True)  # the storage key is gone: every sealed byte is noise
        for pad in (self.home / "pads").glob("*.pad*"):
            pad.unlink(missing_ok=True)
        self.key = None
        sync_directory(self.home)
        for callback in self.on_wipe:
            callback()
