"""Pairing in person, run by the device server and carried by the owners' laptops.

A Pi has one network port, and it is cabled to its owner's laptop. So when
two owners meet, each laptop asks its own device (a sealed RPC call) to take
part in the ceremony, and the two laptops carry its bytes between them: the
device listens on its cable-side address for one connection from its laptop,
which proves itself with a one-time token the RPC call returned, and the
laptop pipes that connection to the other laptop (`otc pair host|join
--device URL`, client/ceremony.py).

The laptops are not trusted with anything here, as for every ceremony link:
the key agreement is authenticated by the short string both devices show on
their own screens and both owners compare there, so a laptop (or anything
between the two) that alters the traffic is caught and nothing is stored.

Nor is anything that reaches the listener trusted to behave: connections
present their token concurrently, each within a few seconds, and the wrong
ones are dropped; each part of the ceremony has a budget of time (the
transfer a minimum rate), so a peer that trickles bytes ends it rather than
holding the device's one ceremony slot; and what `ceremony_status` reports
belongs to one ceremony, read by its id by the laptop that armed it, and is
forgotten a little after the end.
"""

from __future__ import annotations

import secrets
import selectors
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from device.errors import DeviceError
from device.storage.padstore import PadStore
from device.ui import Console
from onetimechat.errors import OTCError
from provisioning.view import CeremonyView

if TYPE_CHECKING:
    from provisioning.wire import Wire

TOKEN_LEN = 32
IDLE_TIMEOUT_S = 600.0  # for any one read: an owner may take a while to compare the pairing string
COMPARE_TIMEOUT_S = 300.0
WATCH_S = 0.25  # how often the budgets are checked
ACCEPT_TICK_S = 0.25  # how often the listener looks for a cancel between connections

RandomSource = Callable[[], AbstractContextManager[Callable[[int], bytes]]]
# What runs over the carried connection: the store, the keyed wire and the random source in; the final status out.
Job = Callable[[PadStore, "Wire", Callable[[int], bytes]], dict]


@dataclass(frozen=True)
class Limits:
    """How long each part of a ceremony may take, and what the listener puts up with."""

    token_s: float = 120.0  # for the laptop to connect and present its token, from arming
    token_read_s: float = 5.0  # for each connection to present its token once accepted
    pending: int = 16  # connections presenting tokens at once; beyond, the oldest is dropped
    agree_s: float = 120.0  # from the token to the pairing string on the screen: the key agreement
    # From the string to the pad's first chunk: both owners' answers, then settling (all of a grant's end).
    compare_s: float = COMPARE_TIMEOUT_S + 120.0
    # The transfer's minimum progress: after a grace, the pad made since the transfer began must average this
    # rate, so a pad of S bytes has at most grace + S / min_rate. Below the slowest HRNG docs/hrng.md names
    # (40 KB/s, a TrueRNG): each device draws its share at its HRNG's pace.
    min_rate: float = 16 << 10
    transfer_grace_s: float = 600.0
    finish_s: float = 120.0  # from the last chunk to the end: fingerprints and proofs
    keep_status_s: float = 120.0  # an ended ceremony's status is readable this long, then forgotten


class CeremonyBusy(DeviceError):
    """A pairing ceremony is already under way on this device."""

    code = "ceremony-busy"


class CeremonyUnknown(DeviceError):
    """No ceremony of that id for this laptop (it ended a while ago, or another laptop armed it)."""

    code = "ceremony-unknown"


def _duration(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} minutes"
    return f"{seconds:g} seconds"


class Budget:
    """When a ceremony must have moved on: a budget per stage, each entered once and in order.

    ``overdue`` is given what the ceremony reports (its stage, bytes done and
    total) and the time; it says why the ceremony is out of time, or None.
    A stage's budget starts when the ceremony is first seen in it, and a later
    view of an earlier stage changes nothing, so no peer extends one.
    """

    ORDER = ("connected", "compare", "transfer", "verify")

    def __init__(self, limits: Limits, now: float, what: str = "Pairing") -> None:
        self.limits, self.what = limits, what
        self.stage, self.since, self.until = "connected", now, now + limits.agree_s
        self.from_done = 0

    def _enter(self, state: dict[str, Any], now: float) -> None:
        stage = state.get("stage")
        if stage not in self.ORDER or self.ORDER.index(stage) <= self.ORDER.index(self.stage):
            return
        limits = self.limits
        self.stage, self.since = str(stage), now
        if stage == "compare":
            self.until = now + limits.compare_s
        elif stage == "transfer":
            self.from_done = _int(state.get("done"))
            left = max(_int(state.get("total")) - self.from_done, 0)
            self.until = now + limits.transfer_grace_s + left / limits.min_rate
        else:
            self.until = now + limits.finish_s

    def overdue(self, state: dict[str, Any], now: float) -> str | None:
        self._enter(state, now)
        limits, what = self.limits, self.what
        if self.stage == "transfer":
            made = _int(state.get("done")) - self.from_done
            if made < limits.min_rate * (now - self.since - limits.transfer_grace_s):
                return (f"The pad was made slower than {limits.min_rate / 1024:g} KiB/s: pairing stopped "
                        "(what both devices verified is kept, and the next ceremony resumes it).")
            return None
        if now < self.until:
            return None
        if self.stage == "connected":
            return f"The other device did not finish the key agreement within {_duration(limits.agree_s)}: " \
                   f"{what.lower()} stopped."
        if self.stage == "compare":
            return f"The pairing string was not answered on both devices within {_duration(limits.compare_s)}: " \
                   f"{what.lower()} stopped."
        return f"The other device did not finish within {_duration(limits.finish_s)} of the last chunk: " \
               f"{what.lower()} stopped."


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass
class _Record:
    """One ceremony as `ceremony_status` reports it, to the laptop that armed it."""

    ceremony_id: str
    owner: str | None
    state: dict[str, Any]
    ended: float | None = None
    timer: threading.Timer | None = field(default=None, repr=False)
    stop: Callable[[], None] | None = field(default=None, repr=False)  # closes its sockets under it


class CeremonyRunner:
    """At most one ceremony at a time; each one's state is what `ceremony_status` returns for its id."""

    def __init__(self, store: Callable[[], PadStore], host: str, console: Console | None,
                 compare: Callable[[str], bool] | None, random_source: RandomSource,
                 limits: Limits | None = None) -> None:
        self._store = store
        self.host = host
        self.console = console
        self.compare = compare
        self.random_source = random_source
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._current: _Record | None = None  # the ceremony running or the last to run
        self._records: dict[str, _Record] = {}  # those running or ended less than keep_status_s ago

    def start(self, role: str, size: int | None, name: str | None, owner: str | None = None) -> dict:
        """Arm a pad ceremony: listen for this laptop's connection; its id, port and one-time token."""
        # The ceremony's code (and numpy) loads with the first ceremony, not with the device server.
        from provisioning.ceremony import HOST, JOIN, Ceremony, check_request

        if role not in (HOST, JOIN):
            raise DeviceError("A ceremony role is host or join.")
        self._store()  # a locked device refuses now
        check_request(role, size, name)  # what the ceremony would refuse, before anyone connects

        def pair(store: PadStore, wire: Wire, random_bytes: Callable[[int], bytes]) -> dict:
            def on_progress(view: CeremonyView) -> None:
                self.update(**view_fields(view))
                if self.console is not None:
                    self.console.show_ceremony(view)

            ceremony = Ceremony(store, role, random_bytes=random_bytes, compare=self._compare, size=size,
                                name=name, on_progress=on_progress)
            record = ceremony.run(wire)
            return {"contact": record.contact, "fingerprint": ceremony.fingerprint, "size": record.size,
                    "pad_id": record.pad_id.hex()}

        return self.arm("pad", role, pair, owner=owner)

    def arm(self, kind: str, role: str, job: Job, owner: str | None = None) -> dict:
        """Listen for this laptop's connection, then run ``job`` over it (a pad ceremony or a grant).

        ``owner`` names the laptop that armed it (its client id): only it reads the ceremony's status."""
        store = self._store()
        with self._lock:
            if self._busy():
                raise CeremonyBusy()
            self._prune()
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            try:
                listener.bind((self.host, 0))
                listener.listen(self.limits.pending)
                port = listener.getsockname()[1]
            except OSError:
                listener.close()
                raise
            token = secrets.token_bytes(TOKEN_LEN)
            record = _Record(secrets.token_hex(16), owner, {"stage": "waiting", "kind": kind, "role": role})
            self._current = self._records[record.ceremony_id] = record
            threading.Thread(target=self._run, args=(record, listener, token, store, job), name="otc-ceremony",
                             daemon=True).start()
        return {"ceremony": record.ceremony_id, "port": port, "token": token.hex()}

    def status(self) -> dict:
        """The state of the ceremony running (or the last to run) on this device, for the device itself."""
        with self._lock:
            return dict(self._current.state) if self._current is not None else {"stage": "idle"}

    def report(self, ceremony_id: str | None, owner: str | None) -> dict:
        """What `ceremony_status` answers a laptop: ceremony ``ceremony_id``'s state if that laptop armed it
        and it is running or ended less than ``keep_status_s`` ago; with no id, only whether one runs."""
        with self._lock:
            self._prune()
            if ceremony_id is None:
                return {"stage": "busy" if self._busy() else "idle"}
            record = self._records.get(ceremony_id)
            if record is None or record.owner != owner:
                raise CeremonyUnknown("No such ceremony for this laptop: it ended a while ago, or another "
                                      "laptop started it.")
            return {"ceremony": record.ceremony_id, **record.state}

    def update(self, **state: Any) -> None:
        """Add to what `ceremony_status` reports of the ceremony running (never key material)."""
        with self._lock:
            if self._current is not None and self._current.ended is None:
                self._current.state = {**self._current.state, **state}

    def close(self) -> None:
        """The server is closing: stop the ceremony under way, forget every ended one's status now."""
        with self._lock:
            records = list(self._records.values())
            for record in records:
                if record.ended is not None:
                    self._forget(record)
        for record in records:
            if record.ended is None and record.stop is not None:
                record.stop()

    def busy(self) -> bool:
        """Whether a ceremony holds the slot now (armed, or running)."""
        with self._lock:
            return self._busy()

    def ask_owner(self, view: CeremonyView, fallback: Callable[[], bool] | None) -> bool:
        """Show ``view`` (stage "compare") and wait for the owner's answer on the device's screen, or ask
        ``fallback`` on a device without one (tty, auto)."""
        self.update(**view_fields(view))
        if self.console is not None:
            self.console.show_ceremony(view)
            return self.console.wait_ceremony_answer(COMPARE_TIMEOUT_S)
        return fallback() if fallback is not None else False

    # -- the records -----------------------------------------------------------------------------

    def _busy(self) -> bool:
        """Whether a ceremony holds the slot (called with the lock held): it does until its end is recorded,
        the last thing its thread does."""
        return self._current is not None and self._current.ended is None

    def _end(self, record: _Record, final: dict[str, Any]) -> None:
        """The ceremony ended as ``final`` says (the screen shows a failure): the slot is free, and its status
        stays readable for ``keep_status_s``, then goes."""
        if final["stage"] == "failed" and self.console is not None:
            state = {**record.state, **final}
            self.console.show_ceremony(CeremonyView(peer=str(state.get("peer", "")), stage="failed",
                                                    message=str(final["message"]), kind=str(state.get("kind", "pad")),
                                                    role=state.get("role")))
        with self._lock:
            record.state = {**record.state, **final}
            record.ended = time.monotonic()
            record.timer = threading.Timer(self.limits.keep_status_s, self._expire, args=(record,))
            record.timer.daemon = True
            record.timer.start()

    def _expire(self, record: _Record) -> None:
        with self._lock:
            self._forget(record)

    def _forget(self, record: _Record) -> None:
        if record.timer is not None:
            record.timer.cancel()
        self._records.pop(record.ceremony_id, None)
        record.state = {}
        if self._current is record:
            self._current = None

    def _prune(self) -> None:
        """Forget what ended long enough ago (should a timer be late); called with the lock held."""
        now = time.monotonic()
        for record in list(self._records.values()):
            if record.ended is not None and now - record.ended >= self.limits.keep_status_s:
                self._forget(record)

    # -- one ceremony ------------------------------------------------------------------------------

    def _run(self, record: _Record, listener: socket.socket, token: bytes, store: PadStore, job: Job) -> None:
        from provisioning.wire import Wire

        what = "Pairing" if record.state.get("kind") == "pad" else "The grant"
        cancelled = threading.Event()
        expired: list[str] = []
        open_sockets = [listener]

        def close_all() -> None:
            """The sockets close under the ceremony, which stops there."""
            for sock in open_sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            listener.close()

        def cancel() -> None:
            """Cancel on the device's screen."""
            cancelled.set()
            close_all()

        watching = threading.Event()

        def watch() -> None:
            budget = Budget(self.limits, time.monotonic(), what)
            while not watching.wait(WATCH_S):
                with self._lock:
                    state = dict(record.state)
                reason = budget.overdue(state, time.monotonic())
                if reason is not None:
                    expired.append(reason)
                    close_all()
                    return

        watcher = threading.Thread(target=watch, name="otc-ceremony-watch", daemon=True)
        record.stop = cancel
        if self.console is not None:
            self.console.on_ceremony_cancel(cancel)
        final: dict[str, Any]
        try:
            sock = self._accept(listener, token, cancelled)
            open_sockets.append(sock)
            if cancelled.is_set():
                cancel()
            sock.settimeout(IDLE_TIMEOUT_S)
            self.update(stage="connected")
            watcher.start()
            with self.random_source() as random_bytes:
                wire = Wire(sock)
                try:
                    result = job(store, wire, random_bytes)
                finally:
                    wire.close()
            final = {"stage": "done", **result}
        except (OTCError, OSError) as exc:
            if expired:
                final = {"stage": "failed", "message": expired[0]}
            elif cancelled.is_set():
                final = {"stage": "failed", "message": f"{what} was cancelled on this device."}
            elif isinstance(exc, OTCError):
                final = {"stage": "failed", "message": str(exc)}
            else:
                final = {"stage": "failed", "message": f"The connection to the other device broke: {what.lower()} "
                                                       "stopped."}
        except Exception as exc:  # noqa: BLE001 - a thread's last word, by type only (no secrets)
            final = {"stage": "failed", "message": f"{what} stopped by an internal error ({type(exc).__name__})."}
        finally:
            watching.set()
            if watcher.is_alive():
                watcher.join()
            if self.console is not None:
                self.console.on_ceremony_cancel(None)
        self._end(record, final)

    def _accept(self, listener: socket.socket, token: bytes, cancelled: threading.Event) -> socket.socket:
        """The connection that presents the token before ``token_s`` is up.

        Connections are taken as they come and read side by side, each given
        ``token_read_s`` to present its token: one that shows another token,
        closes or keeps silent is dropped, so no stranger who connects first,
        or many times, keeps the laptop from presenting its own. Beyond
        ``pending`` connections waiting, the oldest is dropped.
        """
        limits = self.limits
        deadline = time.monotonic() + limits.token_s
        waiting: dict[socket.socket, tuple[float, bytearray]] = {}  # in the order they came
        selector = selectors.DefaultSelector()

        def drop(sock: socket.socket) -> None:
            waiting.pop(sock, None)
            try:
                selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()

        def read(sock: socket.socket) -> bool:
            """Read what ``sock`` has of its token; whether it is the token (a wrong one is dropped)."""
            got = waiting[sock][1]
            try:
                chunk = sock.recv(TOKEN_LEN - len(got))
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                chunk = b""
            if not chunk:
                drop(sock)
                return False
            got += chunk
            if len(got) < TOKEN_LEN:
                return False
            if secrets.compare_digest(bytes(got), token):
                return True
            drop(sock)
            return False

        try:
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if cancelled.is_set() or now >= deadline:
                    raise DeviceError("No laptop connected to carry the pairing: it was cancelled.")
                for sock, (until, _) in list(waiting.items()):
                    if now >= until:
                        drop(sock)
                wake = min([deadline, now + ACCEPT_TICK_S, *(until for until, _ in waiting.values())])
                for key, _events in selector.select(max(wake - now, 0.0)):
                    if key.fileobj is listener:
                        while True:
                            try:
                                sock, _ = listener.accept()
                            except (BlockingIOError, InterruptedError):
                                break
                            sock.setblocking(False)
                            waiting[sock] = (time.monotonic() + limits.token_read_s, bytearray())
                            selector.register(sock, selectors.EVENT_READ)
                            if len(waiting) > limits.pending:
                                drop(next(iter(waiting)))
                    else:
                        sock = key.fileobj  # type: ignore[assignment]
                        if sock in waiting and read(sock):
                            selector.unregister(sock)
                            del waiting[sock]
                            sock.setblocking(True)
                            return sock
        finally:
            for sock in list(waiting):
                drop(sock)
            selector.close()
            listener.close()

    def _compare(self, sas: str) -> bool:
        if self.console is not None:
            return self.console.wait_ceremony_answer(COMPARE_TIMEOUT_S)
        if self.compare is not None:
            return self.compare(sas)
        return False


def view_fields(view: CeremonyView) -> dict[str, Any]:
    """What `ceremony_status` reports of a screen view: the fields it has."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(view).items()
            if v is not None and v != ()}
