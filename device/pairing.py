"""Pairing a laptop with the device: a one-time code, SPAKE2, key confirmation.

1. ``begin``: the device makes a fresh 8-digit code and shows it to its owner
   (screen, terminal, or ``HOME/pairing-code`` in ``auto`` mode).
2. ``exchange``: the laptop, whose owner typed the code, sends its SPAKE2
   message; the device answers with its own. Each side now holds a key that
   matches only if both used the same code; nothing sent so far lets anyone
   test a guess offline.
3. ``confirm``: the laptop proves it holds the key (an HMAC over the whole
   exchange); only then does the device store the client, and it proves the
   key back so the laptop stores it too.

A code serves one attempt: a wrong confirmation burns it, is logged, and
counts towards a lockout that grows with every further failure, up to
``MAX_DELAY_S``. The count is forgotten after ``FAILURE_MEMORY_S`` without a
failure, so one stray failure an hour never keeps pairing locked. At most
``LOGGED_PER_WINDOW`` failures an hour are logged one by one; the rest are
counted and the count goes into the next row logged.

One pairing at a time: while a session is in progress (begun, not yet
completed, failed or expired) a further ``begin`` is refused (``pairing-busy``)
rather than replacing it, so nobody on the cable can cut off a laptop whose
owner is typing the code.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from spake2 import SPAKE2_B

from device.clients import ClientRegistry
from device.confirm import ConfirmSource
from device.errors import DeviceError
from device.storage.padstore import PadStore, check_name
from onetimechat import rpc
from onetimechat.crypto import equal
from onetimechat.rpc import CODE_DIGITS, format_code, transcript_of

SESSION_TTL_S = 300.0
FREE_FAILURES = 3  # failures before any delay
FIRST_DELAY_S = 5.0
MAX_DELAY_S = 900.0
FAILURE_MEMORY_S = 3600.0  # failures are forgotten after this long without one
LOG_WINDOW_S = 3600.0
LOGGED_PER_WINDOW = 5  # pairing-failed rows per window; further failures are counted into the next row


class PairingFailed(DeviceError):
    """Pairing failed: the code was wrong, already used or expired. Start again for a new code."""

    code = "pairing-failed"


class PairingLocked(DeviceError):
    """Pairing is locked after repeated wrong codes; try again later."""

    code = "pairing-locked"

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(int(retry_after + 0.999), 1)
        super().__init__(f"Pairing is locked after repeated wrong codes; try again in {self.retry_after} s.")


class PairingBusy(DeviceError):
    """Another pairing is in progress on this device; wait until it completes or its code expires."""

    code = "pairing-busy"

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(int(retry_after + 0.999), 1)
        super().__init__("Another pairing is in progress on this device (its code is on the screen); try again "
                         f"when it is done or in {self.retry_after} s, when its code expires.")


def lockout_delay(failures: int) -> float:
    """Seconds pairing stays locked after ``failures`` consecutive wrong codes."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(FIRST_DELAY_S * 2 ** (failures - FREE_FAILURES), MAX_DELAY_S)


@dataclass
class _Session:
    session_id: bytes
    digits: str
    name: str
    started: float
    spake: SPAKE2_B = field(repr=False)
    msg_a: bytes | None = None
    msg_b: bytes | None = None
    key: bytes | None = field(default=None, repr=False)


class PairingManager:
    """The device side of pairing; one pairing at a time.

    A code is shown when a laptop begins pairing, and stays valid for one
    attempt within ``ttl`` seconds. With ``in_advance`` (the ``auto`` source)
    a code is always shown, so a script can read it before it begins.
    """

    def __init__(self, store: PadStore, registry: ClientRegistry, source: ConfirmSource,
                 ttl: float = SESSION_TTL_S, clock: Callable[[], float] = time.time,
                 in_advance: bool = False) -> None:
        self.store = store
        self.registry = registry
        self.source = source
        self.ttl = ttl
        self.clock = clock
        self.in_advance = in_advance
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._code: tuple[str, float] | None = None  # (digits, when shown)
        if in_advance:
            with self._lock:
                self._fresh_code()

    def begin(self, name: str) -> dict:
        """Start pairing a laptop called ``name`` with the code on show (a new one if none)."""
        check_name(name)
        with self._lock:
            self._check_lock()
            current = self._session
            if current is not None:
                left = self.ttl - (self.clock() - current.started)
                if left > 0:
                    raise PairingBusy(left)  # never replace a session in progress
                self._drop()  # expired: no failure counted
            digits = self._fresh_code()
            session = _Session(
                session_id=secrets.token_bytes(16),
                digits=digits,
                name=name,
                started=self.clock(),
                spake=SPAKE2_B(digits.encode(), idA=rpc.SPAKE2_ID_CLIENT, idB=rpc.SPAKE2_ID_DEVICE,
                               entropy_f=secrets.token_bytes),
            )
            self._session = session
            return {"session": session.session_id.hex(), "digits": CODE_DIGITS, "expires_in": int(self.ttl)}

    def _fresh_code(self) -> str:
        """The code on show if it is still fresh, else a new one, shown."""
        if self._code is None or self.clock() - self._code[1] > self.ttl:
            digits = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
            self._code = (digits, self.clock())
            self.source.show_code(format_code(digits))
        return self._code[0]

    def exchange(self, session_id: bytes, msg_a: bytes) -> bytes:
        """The laptop's SPAKE2 message in, the device's out."""
        with self._lock:
            session = self._current(session_id)
            if session.msg_a is not None:
                self._fail("a second exchange on one code")
            try:
                session.msg_b = session.spake.start()
                session.key = session.spake.finish(msg_a)
            except Exception:  # noqa: BLE001 - spake2 raises several types for a bad message
                self._fail("a malformed pairing message")
            session.msg_a = msg_a
            return session.msg_b

    def confirm(self, session_id: bytes, client_proof: bytes) -> tuple[bytes, bytes]:
        """Check the laptop's proof; store it; return (client_id, the device's proof)."""
        with self._lock:
            session = self._current(session_id)
            if session.key is None or session.msg_a is None or session.msg_b is None:
                self._fail("a confirmation before the exchange")
            transcript = transcript_of(session.session_id, session.msg_a, session.msg_b, session.name)
            if not equal(client_proof, rpc.confirmation(session.key, b"client", transcript)):
                self._fail("a wrong code")
            client_id = self.registry.add(session.name, session.key)
            device_proof = rpc.confirmation(session.key, b"device", transcript + client_id)
            self.store.save_settings({"pairing_failures": "0", "pairing_locked_until": "0"})
            self._drop()
            return client_id, device_proof

    def cancel(self, session_id: bytes) -> bool:
        """End the session ``session_id`` before its exchange: the laptop that began it gave up (its owner
        pressed Ctrl-C, or typed a code that is not one). Only the holder of the session id (16 random bytes,
        given to that laptop alone) can; no failure is counted, and the next laptop may begin at once."""
        with self._lock:
            session = self._session
            if session is None or session.msg_a is not None or not equal(session.session_id, session_id):
                return False
            self._drop()
            return True

    # -- internals --------------------------------------------------------------------

    def _current(self, session_id: bytes) -> _Session:
        session = self._session
        if session is None or not equal(session.session_id, session_id):
            raise PairingFailed()
        if self.clock() - session.started > self.ttl:
            self._drop()  # an expired attempt is not a wrong code: no failure counted
            raise PairingFailed()
        return session

    def _check_lock(self) -> None:
        locked_until = float(self.store.setting("pairing_locked_until", "0") or 0)
        now = self.clock()
        if now < locked_until:
            raise PairingLocked(locked_until - now)

    def _fail(self, why: str) -> NoReturn:
        """Burn the code, count the failure, lock if due; always raises."""
        now = self.clock()
        setting = self.store.setting
        last = float(setting("pairing_last_failure", "0") or 0)
        failures = int(setting("pairing_failures", "0") or 0)
        if now - last > FAILURE_MEMORY_S:
            failures = 0  # a quiet hour: earlier failures are forgotten
        failures += 1
        delay = lockout_delay(failures)
        window = float(setting("pairing_log_window", "0") or 0)
        logged = int(setting("pairing_log_count", "0") or 0)
        unlogged = int(setting("pairing_unlogged", "0") or 0)
        if now - window >= LOG_WINDOW_S or now < window:
            window, logged = now, 0
        detail: str | None = None
        if logged < LOGGED_PER_WINDOW:
            detail = f"{why}; {failures} failure(s) in a row"
            if delay:
                detail += f"; pairing locked for {int(delay)} s"
            if unlogged:
                detail += f"; {unlogged} earlier failure(s) counted but not logged one by one"
            logged, unlogged = logged + 1, 0
        else:
            unlogged += 1  # past the hour's rows: counted, told in the next row
        self.store.save_settings(  # one commit, the failure's row with it
            {"pairing_failures": str(failures), "pairing_last_failure": str(now),
             "pairing_locked_until": str(now + delay), "pairing_log_window": str(window),
             "pairing_log_count": str(logged), "pairing_unlogged": str(unlogged)},
            event="pairing-failed" if detail is not None else None, detail=detail)
        self._drop()
        raise PairingFailed()

    def _drop(self) -> None:
        """The code is used up (success, failure, expiry): stop showing it."""
        self._session = None
        if self._code is not None:
            self._code = None
            self.source.clear_code()
        if self.in_advance:
            self._fresh_code()
