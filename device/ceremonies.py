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
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from device.errors import DeviceError
from device.storage.padstore import PadStore
from device.ui import CeremonyView, Console
from onetimechat.errors import OTCError

if TYPE_CHECKING:
    from provisioning.wire import Wire

TOKEN_LEN = 32
ACCEPT_TIMEOUT_S = 120.0  # for the laptop to connect after arming
IDLE_TIMEOUT_S = 600.0  # an owner may take a while to compare the pairing string
COMPARE_TIMEOUT_S = 300.0

RandomSource = Callable[[], AbstractContextManager[Callable[[int], bytes]]]
# What runs over the carried connection: the store, the keyed wire and the random source in; the final status out.
Job = Callable[[PadStore, "Wire", Callable[[int], bytes]], dict]


class CeremonyBusy(DeviceError):
    """A pairing ceremony is already under way on this device."""

    code = "ceremony-busy"


class CeremonyRunner:
    """At most one ceremony at a time; its state is what `ceremony_status` returns."""

    def __init__(self, store: Callable[[], PadStore], host: str, console: Console | None,
                 compare: Callable[[str], bool] | None, random_source: RandomSource) -> None:
        self._store = store
        self.host = host
        self.console = console
        self.compare = compare
        self.random_source = random_source
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {"stage": "idle"}

    def start(self, role: str, size: int | None, name: str | None) -> dict:
        """Arm a pad ceremony: listen for this laptop's connection; its port and one-time token."""
        from provisioning.ceremony import HOST, JOIN, Ceremony  # provisioning builds on the device

        if role not in (HOST, JOIN):
            raise DeviceError("A ceremony role is host or join.")
        # Check what the ceremony would refuse before anyone connects.
        Ceremony(self._store(), role, random_bytes=lambda n: b"", compare=lambda sas: False, size=size, name=name)

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

        return self.arm("pad", role, pair)

    def arm(self, kind: str, role: str, job: Job) -> dict:
        """Listen for this laptop's connection, then run ``job`` over it (a pad ceremony or a grant)."""
        store = self._store()
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise CeremonyBusy()
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.bind((self.host, 0))
            listener.listen(1)
            token = secrets.token_bytes(TOKEN_LEN)
            self._state = {"stage": "waiting", "kind": kind, "role": role}
            self._thread = threading.Thread(target=self._run, args=(listener, token, store, job),
                                            name="otc-ceremony", daemon=True)
            self._thread.start()
        return {"port": listener.getsockname()[1], "token": token.hex()}

    def status(self) -> dict:
        with self._lock:
            return dict(self._state)

    def update(self, **state: Any) -> None:
        """Add to what `ceremony_status` reports (never key material)."""
        with self._lock:
            self._state = {**self._state, **state}

    def ask_owner(self, view: CeremonyView, fallback: Callable[[], bool] | None) -> bool:
        """Show ``view`` (stage "compare") and wait for the owner's answer on the device's screen, or ask
        ``fallback`` on a device without one (tty, auto)."""
        self.update(**view_fields(view))
        if self.console is not None:
            self.console.show_ceremony(view)
            return self.console.wait_ceremony_answer(COMPARE_TIMEOUT_S)
        return fallback() if fallback is not None else False

    def _run(self, listener: socket.socket, token: bytes, store: PadStore, job: Job) -> None:
        from provisioning.wire import Wire

        what = "Pairing" if self.status().get("kind") == "pad" else "The grant"
        cancelled = threading.Event()
        open_sockets = [listener]

        def cancel() -> None:
            """Cancel on the device's screen: the sockets close under the ceremony, which stops there."""
            cancelled.set()
            for sock in open_sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            listener.close()

        if self.console is not None:
            self.console.on_ceremony_cancel(cancel)
        try:
            sock = self._accept(listener, token)
            open_sockets.append(sock)
            if cancelled.is_set():
                cancel()
            sock.settimeout(IDLE_TIMEOUT_S)
            with self.random_source() as random_bytes:
                wire = Wire(sock)
                try:
                    result = job(store, wire, random_bytes)
                finally:
                    wire.close()
            self.update(stage="done", **result)
        except (OTCError, OSError) as exc:
            if cancelled.is_set():
                self._fail(f"{what} was cancelled on this device.")
            elif isinstance(exc, OTCError):
                self._fail(str(exc))
            else:
                self._fail(f"The connection to the other device broke: {what.lower()} stopped.")
        except Exception as exc:  # noqa: BLE001 - a thread's last word, by type only (no secrets)
            self._fail(f"{what} stopped by an internal error ({type(exc).__name__}).")
        finally:
            if self.console is not None:
                self.console.on_ceremony_cancel(None)

    def _fail(self, message: str) -> None:
        self.update(stage="failed", message=message)
        if self.console is not None:
            state = self.status()
            self.console.show_ceremony(CeremonyView(peer=str(state.get("peer", "")), stage="failed", message=message,
                                                    kind=str(state.get("kind", "pad")), role=state.get("role")))

    def _accept(self, listener: socket.socket, token: bytes) -> socket.socket:
        """The one connection that presents the token (others are dropped) within the time allowed."""
        deadline = time.monotonic() + ACCEPT_TIMEOUT_S
        with listener:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeviceError("No laptop connected to carry the pairing: it was cancelled.")
                listener.settimeout(left)
                try:
                    sock, _ = listener.accept()
                except TimeoutError:
                    continue
                sock.settimeout(10)
                try:
                    presented = b"".join(_read_exactly(sock, TOKEN_LEN))
                except OSError:
                    presented = b""
                if secrets.compare_digest(presented, token):
                    return sock
                sock.close()

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


def _read_exactly(sock: socket.socket, n: int) -> Iterator[bytes]:
    while n:
        chunk = sock.recv(n)
        if not chunk:
            return
        n -= len(chunk)
        yield chunk
