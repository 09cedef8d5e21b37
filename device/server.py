"""The device RPC: a Flask app factory, served by waitress (docs/device-rpc.md).

Endpoints (protocol version 1):

    GET  /v1/health          no pairing needed: {"status": "ok", "protocol": 2}
    POST /v1/pair/begin      {"name"}                -> {"session", "digits", "expires_in"}
    POST /v1/pair/exchange   {"session", "message"}  -> {"message"}
    POST /v1/pair/confirm    {"session", "confirm"}  -> {"client_id", "confirm"}
    POST /v1/pair/cancel     {"session"}             -> {"cancelled"}
    POST /v1/call            a sealed call (onetimechat.rpc) -> a sealed response

Every other answer is JSON ``{"error": code, "message": text}`` with a 4xx
status. Whatever fails inside /v1/call -- unknown or revoked client, altered
bytes, a replayed or reordered counter -- is the same 401, and nothing
changes. Errors of authenticated calls travel inside the sealed response, so
only the paired laptop learns them.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, TextIO

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from device.abe.rpc import abe_methods, start_grant
from device.ceremonies import CeremonyRunner
from device.clients import ClientRegistry, PairedClient
from device.confirm import DEFAULT_TIMEOUT_S, ConfirmBroker, ConfirmRequest, ConfirmSource, compare_pairing_string
from device.engine import FORGERY_ALARM_AT, Device, RefusalBudget
from device.errors import Declined, DeviceError, PadExhausted, UnknownContact
from device.home import WrongPin
from device.pairing import PairingBusy, PairingLocked, PairingManager
from device.rooms.rpc import room_methods
from device.storage.abe_tables import AbeTables
from device.storage.lock import DeviceLocked, DeviceWiped, StoreLock
from device.storage.padstore import PadStore
from device.ui import LOCKED_NAME, Console, ContactView, LaptopView, LockState
from hrng.errors import HRNGError
from hrng.mixer import pad_random
from hrng.sources import parse_url
from onetimechat import boundedjson, net, rpc
from onetimechat import package as fmt
from onetimechat.errors import OTCError, PackageRefused, UsageError
from onetimechat.net import listen_failure
from onetimechat.package import Kind
from onetimechat.serving import Guard, GuardedServer, Refusal

log = logging.getLogger("otc.device")

PROTOCOL = rpc.VERSION
DEFAULT_MAX_REQUEST = 48 << 20  # a 32 MiB message, base64 and sealed, fits
# Largest body of anything but a sealed call: pairing messages and health are a few hundred bytes. Nobody gets
# to send (and have buffered) more before the device knows who is asking.
PREAUTH_MAX_REQUEST = 16 << 10
BODY_BUDGET = DEFAULT_MAX_REQUEST + (16 << 20)
CONNECTION_LIMIT = 512  # in all; one address holds at most ServerConfig.guard.per_address of them
REFUSALS_FLUSH_S = 60.0  # unauthenticated refusals reach the event log at most once a minute, in aggregate


class BadRequest(DeviceError):
    """The request is not well formed."""

    code = "bad-request"


# How waitress moves a large call (issue 21): 256 KiB per socket read instead of 8 KiB (a 1 MiB call is 4 reads
# through the parser, not 128), and bodies and answers up to 8 MiB kept in memory instead of spooled to a
# temporary file (the app reads the whole call into memory anyway; past 8 MiB waitress spools as before).
# Calls whose counter is committed unsynced, to be made durable by the call's own commit (DeviceService.call):
# everything they do goes through the store's commits (a file part's record, its place: device/files.py).
FOLDED_COUNTER_METHODS = frozenset({"package", "unpackage", "file_part", "file_open"})
# How long locking waits for the calls in flight to finish before it refuses (the owner taps Lock again).
LOCK_WAIT_S = 5.0
IO_ADJUSTMENTS: dict[str, Any] = {"recv_bytes": 256 * 1024, "inbuf_overflow": 8 << 20, "outbuf_overflow": 8 << 20}


@dataclass
class ServerConfig:
    home: Path
    source: ConfirmSource
    confirm_timeout: float = DEFAULT_TIMEOUT_S
    max_request_bytes: int = DEFAULT_MAX_REQUEST
    pairing_ttl: float = 300.0
    pin: str | None = None  # unlock a PIN-locked home at start
    console: Console | None = None  # the device's screen and buttons, if it has them
    hrng: tuple[str, ...] = ()  # hardware random sources for pads made in person (none: the OS CSPRNG)
    # Connections per client address and how long a request may take to arrive (onetimechat/serving.py).
    # The call screen's body budget: every body let in past its header, in all, at once (the largest call, and
    # room for small ones beside it). A flood under a paired client's header (its id is sent in the clear)
    # holds at most this much memory or spool, not connections times 8 MiB (an outside review, issue 21).
    guard: Guard = field(default_factory=lambda: Guard(per_address=16, header_timeout=10.0, request_timeout=300.0,
                                                       body_budget=BODY_BUDGET))
    # The address the RPC is served on (the cable-side address on the image): ceremonies carried by the
    # laptop listen there too, since that is where the laptop reaches the device. Server sets it.
    address: str = "127.0.0.1"


# Events that the owner should see on the device's own screen at once.
ALARM_EVENTS = {
    "replay": "A replayed message was refused",
    "invalid": "A forged or altered message was refused",
    "out-of-range": "A message outside its pad was refused",
    "unknown-pad": "A message for an unknown pad was refused",
    "pad-low": "Pad is running low",
    "pad-exhausted": "Pad exhausted",
    "forgery-alarm": "Someone is forging messages: three or more failed authentication",
}


class DeviceService:
    """Everything the RPC serves, built once per app; the store opens once unlocked."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        PadStore.peek_name(config.home)  # a clear error now if the home holds no device
        self.lock = StoreLock(config.home)
        self.broker = ConfirmBroker(config.source, config.confirm_timeout,
                                    on_queue=config.console.set_queued if config.console is not None else None)
        self.console = config.console
        self._open_lock = threading.Lock()
        self.store: PadStore | None = None
        # Calls in flight hold the store open: locking by hand lets none begin and waits for these to end.
        self._gate = threading.Condition()
        self._in_flight = 0
        self._locking = False
        self.lock.on_unlock.append(self._open)
        self.lock.on_wipe.append(self._wiped)
        if not self.lock.locked_home:
            self._open(None)
        elif config.pin is not None:
            result = self.lock.unlock(config.pin)
            if not result.ok:
                raise WrongPin(result.message)
        self.methods: dict[str, Callable[[PairedClient, dict], Any]] = {
            "ping": self.ping,
            "status": self.status,
            "contacts": self.contacts,
            "package": self.package,
            "unpackage": self.unpackage,
            "events": self.events,
            **self.file_methods(),
            "clients": self.list_clients,
            "revoke": self.revoke,
            **room_methods(self),  # device/rooms/rpc.py
            **abe_methods(self),  # device/abe/rpc.py
            "ceremony_start": self.ceremony_start,
            "ceremony_status": self.ceremony_status,
        }
        # Unauthenticated refusals: none written one by one (a row per call would let anyone who reaches the
        # port wear the SD card and flood the log); one ``rpc-refused`` row an interval, and at close.
        self.refusals = RefusalBudget(rows=0, interval=REFUSALS_FLUSH_S)
        self._lock_random = threading.Lock()
        self._hrng_state: str | None = None  # None until the first draw; then "healthy" or the last alarm
        self.ceremonies = CeremonyRunner(self.ready, config.address, self.console, _ceremony_compare(config.source),
                                         self._pad_random)

    @property
    def device_name(self) -> str | None:
        """The device's name; None while a PIN-locked home is locked (its name is sealed)."""
        store = self.store
        return store.device_name if store is not None else PadStore.peek_name(self.config.home)

    def _open(self, key: bytes | None) -> None:
        with self._open_lock:
            if self.store is not None and (key is None or self.store.sealed):
                return
            if self.store is not None:
                # A PIN was just set on a home served without one: open it again with the key, which seals
                # its store and files (DESIGN.md: nothing identifying readable in a locked home).
                self.store.close()
                self.store = None
            store = PadStore(self.config.home, storage_key=key)
            self.device = Device(store, self.broker)
            self.device.random = self.session_random  # file keys from the HRNG mixer (DESIGN.md, "HRNG")
            self.clients = ClientRegistry(store)
            self.pairing = PairingManager(store, self.clients, self.config.source, ttl=self.config.pairing_ttl,
                                          in_advance=self.config.source.name == "auto")
            store.listeners.append(self._on_event)
            self.store = store
        if self.console is not None:
            self.console.set_device_name(store.device_name)
            # A forgery alarm outlives restarts: tag failures are counted on disk.
            names = {pad.pad_id: pad.contact for pad in store.pads()}
            names.update(AbeTables(store).renewal_pad_holders())  # renewal pads: their authority's
            for pad_id, failures in store.tag_failures().items():
                if failures >= FORGERY_ALARM_AT and pad_id in names:
                    self.console.raise_alarm("forgery-alarm", f"{ALARM_EVENTS['forgery-alarm']} ({names[pad_id]}):"
                                             f" {failures} packages refused.")

    def _wiped(self) -> None:
        with self._open_lock:
            store, self.store = self.store, None
        if store is not None:
            store.close()
        if self.console is not None:
            self.console.raise_alarm("wipe", "Too many wrong PINs: this device erased its pads and keys.")

    def lock_device(self, wait: float = LOCK_WAIT_S) -> str | None:
        """The owner locks the device by hand: the store closes and the key is forgotten, so the home is sealed
        again and only health and 423 answers are served until the PIN is entered. Calls in flight finish first
        (none begins meanwhile); None once locked, or why not (no PIN to lock with, a call or ceremony under
        way that did not end within ``wait`` seconds: nothing is closed then)."""
        if not self.lock.locked_home:
            return "No PIN: nothing to lock it with."
        with self._gate:
            if self.store is None:
                return None  # already locked (or wiped)
            self._locking = True
            try:
                if not self._gate.wait_for(lambda: self._in_flight == 0, timeout=wait):
                    return "A call is under way: lock again soon."
                # Checked with no call in flight and none able to begin: none can arm a ceremony meanwhile.
                if self.ceremonies.busy():
                    return "A ceremony runs: lock after it."
                self.flush_refusals()  # the refusals counted so far, while the store is open
                self.device.flush_refusals()
                with self._open_lock:
                    store, self.store = self.store, None
                self.lock.lock()
            finally:
                self._locking = False
        store.close()
        store.forget_keys()
        log.info("device locked by hand")
        if self.console is not None:
            self.console.set_device_name(LOCKED_NAME)  # its name is sealed again
        return None

    @contextmanager
    def serving(self) -> Iterator[PadStore]:
        """Hold the open store for one call: a call begun runs to its end before a lock by hand closes it."""
        with self._gate:
            if self._locking:
                raise DeviceLocked("The device is locking: enter its PIN on the device.")
            store = self.ready()
            self._in_flight += 1
        try:
            yield store
        finally:
            with self._gate:
                self._in_flight -= 1
                self._gate.notify_all()

    def _on_event(self, event: str, fields: dict) -> None:
        if self.console is not None and event in ALARM_EVENTS:
            who = f" ({fields['contact']})" if fields.get("contact") else ""
            self.console.raise_alarm(event, ALARM_EVENTS[event] + who + ".")

    def ready(self) -> PadStore:
        """The open store; raises if the device is locked or wiped."""
        store = self.store
        if store is None:
            if self.lock.status().state == LockState.WIPED:
                raise DeviceWiped()
            raise DeviceLocked("The device is locked: enter its PIN on the device.")
        return store

    def panel_status(self) -> tuple[tuple[ContactView, ...], tuple[str, ...], str]:
        """What the home screen shows: contacts with pad left, paired laptops, HRNG state."""
        store = self.store
        if store is None:
            return (), (), self.hrng_status()
        views: dict[str, list[int]] = {}
        retired: dict[str, int] = {}
        forged: dict[str, int] = {}
        alarmed: set[str] = set()
        failures = store.tag_failures()
        for pad in store.pads():
            forged[pad.contact] = forged.get(pad.contact, 0) + failures.get(pad.pad_id, 0)
            if failures.get(pad.pad_id, 0) >= FORGERY_ALARM_AT:  # the alarm is per pad (DESIGN.md)
                alarmed.add(pad.contact)
            if pad.retired:
                retired[pad.contact] = retired.get(pad.contact, 0) + 1
                continue
            v = views.setdefault(pad.contact, [0, 0, 0, 0])
            v[0] += pad.send_left
            v[1] += pad.send_total
            v[2] += pad.recv_left
            v[3] += pad.recv_total

        def note(name: str) -> str:
            if name in alarmed:
                return f"Forgery alarm: {forged[name]} forged messages refused. Someone is forging."
            if retired.get(name) and name not in views:
                return "Pad retired (made before package v2): pair again in person."
            return ""

        def view(name: str) -> ContactView:
            send_left, send_total, receive_left, receive_total = views.get(name, [0, 0, 0, 0])
            return ContactView(name, send_left, send_total, receive_left, receive_total, note=note(name))

        contacts = tuple(view(name) for name in store.contacts())
        clients = tuple(c.name for c in self.clients.list() if c.revoked is None)
        return contacts, clients, self.hrng_status()

    def hrng_status(self) -> str:
        """One line for the home screen: which random sources the device mixes, and how the last draw went."""
        if not self.config.hrng:
            return "No hardware RNG: pads and keys from the OS CSPRNG alone"
        names = []
        for url in self.config.hrng:
            try:
                names.append(parse_url(url).path or url)
            except HRNGError:
                names.append("an unreadable source URL")
        sources = ", ".join(names)
        if self._hrng_state is None:
            return f"{sources}: health-tested at the first draw"
        if self._hrng_state == "healthy":
            return f"{sources}: healthy at the last draw"
        return f"{sources}: ALARM, {self._hrng_state}"

    def close(self) -> None:
        self.ceremonies.close()
        if self.store is not None:
            self.flush_refusals()
            self.device.flush_refusals()
            self.store.close()

    def flush_refusals(self, force: bool = True) -> None:
        """Write the refusals counted since the last flush as one event (nothing if there were none).

        Reading status or the log writes them only once they are due: a caller interleaving one refused call
        with each read must not get a row per read.
        """
        store = self.store
        if store is None or not (force or self.refusals.due()):
            return
        counts, _ = self.refusals.take()
        if counts:
            detail = "; ".join(f"{n} {why}" for why, n in sorted(counts.items()))
            store.log_event("rpc-refused", length=sum(counts.values()),
                            detail=f"unauthenticated calls refused: {detail}")

    # -- methods (each gets the calling client and its params) ------------------------

    def ping(self, client: PairedClient, params: dict) -> dict:
        return {"device": self.device_name, "client": client.name}

    def status(self, client: PairedClient, params: dict) -> dict:
        self.flush_refusals(force=False)
        status = self.device.status(events=_int(params, "events", 10, 0, 1000))
        status["confirm"] = {"mode": self.broker.mode, "timeout": self.broker.timeout,
                             "queued": self.broker.queued()}
        return status

    def contacts(self, client: PairedClient, params: dict) -> list[dict]:
        by_name: dict[str, dict] = {}
        store = self.ready()
        for name in store.contacts():
            by_name[name] = {"name": name, "send_left": 0, "receive_left": 0, "send_total": 0, "receive_total": 0,
                             "mailboxes_out": [],
                             "mailboxes_in": [], "must_pair_again": False, "forgery_alarm": False}
        failures = store.tag_failures()
        usable: set[str] = set()
        for pad in store.pads():
            entry = by_name[pad.contact]
            entry["forgery_alarm"] |= failures.get(pad.pad_id, 0) >= FORGERY_ALARM_AT
            entry["must_pair_again"] |= pad.retired
            if not pad.retired:
                usable.add(pad.contact)
            entry["send_left"] += pad.send_left
            entry["receive_left"] += pad.recv_left
            entry["send_total"] += 0 if pad.retired else pad.send_total
            entry["receive_total"] += 0 if pad.retired else pad.recv_total
            entry["mailboxes_out"].append(pad.mailbox_out.hex())
            entry["mailboxes_in"].append(pad.mailbox_in.hex())
        for name in usable:
            by_name[name]["must_pair_again"] = False  # a new pad replaced the retired one
        return list(by_name.values())

    def package(self, client: PairedClient, params: dict) -> dict:
        contact = _str(params, "contact")
        text = _str(params, "text", allow_empty=True)
        if contact not in self.ready().contacts():
            raise UnknownContact(f"No contact named {contact!r} on this device.")
        result = self.device.package(contact, rpc.utf8_of(text))  # as it came: not encoded again
        # The package raw (it travels as a blob, onetimechat/rpc.py), and any request for more pad the device
        # made with it (small: base64 in the JSON), for the laptop to send after it (docs/pad-lifecycle.md).
        control = [{**c.to_json(), "package": fmt.encode(c.package)} for c in result.control]
        return {**result.to_json(), "control": control}

    def unpackage(self, client: PairedClient, params: dict) -> dict:
        package = params.get("package")
        received = (self.device.unpackage(package) if isinstance(package, bytes)  # raw, as package answers it
                    else self.device.unpackage_base64(_str(params, "package")))
        answer = received.to_json()
        if answer.get("kind") == "file-part":
            answer["data"] = received.plaintext  # raw: it travels as a blob
        if params.get("receipt") is True and received.kind == Kind.TEXT:
            # The message is already opened; a receipt that cannot be made only costs a warning.
            try:
                receipt = self.device.receipt(received)
            except PadExhausted:
                answer["warnings"].append("receipt-not-sent: no pad left to send a delivery receipt")
            else:
                answer["receipt"] = {"package": fmt.encode(receipt.package), "mailbox": receipt.mailbox.hex(),
                                     "consumed": receipt.consumed}
        if received.control == "request":
            # The device's own answer to a request it just opened: a grant within its owner's policy (or none).
            grant = self.device.answer_request(received)
            if grant is not None:
                answer["grant"] = {"package": fmt.encode(grant.package), "mailbox": grant.mailbox.hex(),
                                   "consumed": grant.consumed, "gives": grant.gives}
        return answer

    # -- files (device/files.py, docs/attachments.md) -------------------------------------------------------

    def file_methods(self) -> dict[str, Callable[[PairedClient, dict], Any]]:
        return {"file_begin": self.file_begin, "file_part": self.file_part, "file_resume": self.file_resume,
                "file_open": self.file_open, "file_info": self.file_info, "file_end": self.file_end}

    def file_begin(self, client: PairedClient, params: dict) -> dict:
        """Confirm a file with the owner and seal its header: the header package, and the file's public header."""
        self.ready()
        contact = _str(params, "contact")
        name = params.get("name")
        if not isinstance(name, str):
            raise BadRequest("The parameter 'name' must be a string.")
        sha256 = _hex_field(params, "sha256", 32)
        header, packaged = self.device.files.begin(contact, name, _int(params, "size", 0, 0, 1 << 40), sha256,
                                                   otp=params.get("otp") is True)
        return {"file": header.public(), "package": bytes(packaged.package), "mailbox": packaged.mailbox.hex(),
                "consumed": packaged.consumed, "warnings": packaged.warnings}

    def file_part(self, client: PairedClient, params: dict) -> dict:
        """Seal part ``index`` of a file being sent (``want`` false: only hash it again, on a resume)."""
        self.ready()
        data = params.get("data")
        if not isinstance(data, bytes):
            raise BadRequest("The parameter 'data' must be bytes.")
        part, last = self.device.files.seal(_hex_field(params, "file", 16), _int(params, "index", 0, 0, 2**32 - 1),
                                            data, want=params.get("want", True) is not False)
        return {"part": bytes(part) if part is not None else None, "last": last}

    def file_resume(self, client: PairedClient, params: dict) -> dict:
        self.ready()
        return self.device.files.resume(_hex_field(params, "file", 16))

    def file_open(self, client: PairedClient, params: dict) -> dict:
        """Open a streamed part received: its bytes, and where it stands in its file."""
        self.ready()
        part = params.get("part")
        if not isinstance(part, bytes):
            raise BadRequest("The parameter 'part' must be bytes.")
        data, info = self.device.files.open_part(part)
        return {"data": data, "file": info}

    def file_info(self, client: PairedClient, params: dict) -> dict:
        self.ready()
        return self.device.files.info(_hex_field(params, "file", 16))

    def file_end(self, client: PairedClient, params: dict) -> dict:
        """Forget a file sent or received: its key leaves the device's store."""
        self.ready()
        file_id = _hex_field(params, "file", 16)
        return {"ended": self.device.files.end(file_id, "file-end", f"file {file_id.hex()[:8]} ended by laptop "
                                                                      f"{client.name}")}

    def events(self, client: PairedClient, params: dict) -> list[dict]:
        self.flush_refusals(force=False)
        return self.ready().events(_int(params, "limit", 50, 0, 10_000))

    def list_clients(self, client: PairedClient, params: dict) -> list[dict]:
        return [dict(c.to_dict(), this=c.client_id == client.client_id) for c in self.clients.list()]

    def revoke(self, client: PairedClient, params: dict) -> dict:
        """Revoke a paired laptop, once the owner approves on the device (an unconfirmed revoke changes nothing)."""
        target = self.clients.find(_str(params, "client_id"))
        if target is None:
            raise BadRequest("No single paired client matches that id.")
        if target.revoked is None:
            itself = " (the laptop asking)" if target.client_id == client.client_id else ""
            request = ConfirmRequest(
                contact="paired laptops", kind="revoke",
                plaintext=(f"Revoke the laptop {target.name}{itself}, id {target.client_id.hex()[:8]}?\n\n"
                           "It will no longer reach this device; to use it again, pair it again with a code "
                           f"from this screen.\n\nAsked by the laptop {client.name}.").encode(),
                consumes=0, left_after=0)
            if not self.broker.ask(request):
                self.ready().log_event("declined", detail=f"revoking laptop {target.name}, asked by laptop "
                                                          f"{client.name}")
                raise Declined("The owner did not approve: no laptop was revoked.")
        return {"revoked": self.clients.revoke(target.client_id), "client_id": target.client_id.hex()}

    def panel_laptops(self) -> tuple[LaptopView, ...]:
        """The paired laptops the touchscreen lists (never a key)."""
        if self.store is None:
            return ()
        return tuple(LaptopView(c.client_id.hex(), c.name, c.to_dict()["last_used"])
                     for c in self.clients.list() if c.revoked is None)

    def revoke_from_panel(self, client_id: str) -> bool:
        """Revoke a laptop from the device's own screen: the owner's tap there is the confirmation."""
        target = self.clients.find(client_id) if self.store is not None else None
        if target is None or target.revoked is not None:
            return False
        return self.clients.revoke(target.client_id, how="on the device's screen")

    def ceremony_start(self, client: PairedClient, params: dict) -> dict:
        """Take part in pairing in person, or in a grant, carried by this laptop (device/ceremonies.py)."""
        kind = params.get("kind", "pad")
        if kind == "grant":
            return start_grant(self, client, params)  # device/abe/rpc.py
        if kind != "pad":
            raise BadRequest("A ceremony's kind is pad or grant.")
        if params.get("attributes") is not None:
            raise BadRequest("Attributes are for grants (kind grant).")
        role = _str(params, "role")
        size = params.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            raise BadRequest("size must be a number of bytes.")
        name = params.get("name")
        if name is not None and not isinstance(name, str):
            raise BadRequest("name must be a string.")
        self.ready().log_event("ceremony-started", detail=f"{role}, carried by laptop {client.name}")
        return self.ceremonies.start(role, size, name, owner=client.client_id.hex())

    def ceremony_status(self, client: PairedClient, params: dict) -> dict:
        """The state of the ceremony ``ceremony`` (the id ``ceremony_start`` returned) if this laptop armed it;
        with no id, only whether one is under way."""
        ceremony = params.get("ceremony")
        if ceremony is not None and not isinstance(ceremony, str):
            raise BadRequest("ceremony is the id ceremony_start returned.")
        return self.ceremonies.report(ceremony, client.client_id.hex())

    def _pad_random(self, stream: TextIO | None = None) -> AbstractContextManager[Callable[[int], bytes]]:
        def on_alarm(alarm: Exception) -> None:
            self._hrng_state = str(alarm)
            self.ready().log_event("hrng-alarm", detail=str(alarm))
            if self.console is not None:
                self.console.raise_alarm("hrng", str(alarm))

        def on_recovered(alarm: Exception) -> None:
            recovered = getattr(alarm, "recovered", None)
            self.ready().log_event("hrng-recovered", detail=recovered() if callable(recovered) else str(alarm))

        @contextmanager
        def draw() -> Iterator[Callable[[int], bytes]]:
            with pad_random(list(self.config.hrng), on_alarm=on_alarm, stream=stream,
                            on_recovered=on_recovered) as random_bytes:
                yield random_bytes
            if self.config.hrng:
                self._hrng_state = "healthy"  # the draw ran to its end without an alarm

        return draw()

    def session_random(self, n: int) -> bytes:
        """Bytes for session keys (room keys): from the HRNG mixer like pads (DESIGN.md), or the OS CSPRNG alone
        when the device has no HRNG configured. A failing HRNG stops the draw with its alarm."""
        if not self.config.hrng:
            return os.urandom(n)
        with self._lock_random, self._pad_random(stream=io.StringIO()) as draw:
            return draw(n)

    # -- the sealed call ----------------------------------------------------------------

    def screen_call(self, head: bytes) -> bool:
        """Whether a sealed call whose body begins with ``head`` (its header, before the rest is read) may be
        read: a well formed header from a paired, unrevoked client with a counter above its last. A refusal is
        counted like any other unauthenticated one. While the device is locked, the call is read and answered
        423 as before (nothing is opened)."""
        try:
            with self.serving():
                try:
                    client_id, counter = rpc.parse_request_header(head + bytes(16))  # the tag is not here yet
                except rpc.Unauthorized:
                    why = "malformed"
                else:
                    if self.clients.might_accept(client_id, counter):
                        return True
                    why = ("replayed or reordered" if self.clients.get(client_id) is not None
                           else "from an unpaired or revoked client")
        except (DeviceLocked, DeviceWiped):
            return True
        self.refused_unread(why)
        return False

    def refused_unread(self, why: str) -> None:
        """Count a call refused before its body was read, as every unauthenticated refusal is counted."""
        if self.store is None:
            return
        self.refusals.defer(why)
        if self.refusals.due():
            # Not on the server's network loop: the row is a synced commit.
            threading.Thread(target=self._flush_refusals_served, name="otc-refusals", daemon=True).start()

    def _flush_refusals_served(self) -> None:
        try:
            with self.serving():
                self.flush_refusals()
        except (DeviceLocked, DeviceWiped):
            pass  # counted still: written at the next flush once unlocked, or at close

    def call(self, body: bytes) -> bytes:
        """Authenticate, check the counter, run the method, seal the answer."""
        store = self.ready()
        try:
            client_id, counter = rpc.parse_request_header(body)
        except rpc.Unauthorized:
            self._refused("malformed")
        client = self.clients.get(client_id)
        if client is None:
            self._refused("from an unpaired or revoked client")
        payload: dict | None
        malformed = ""
        try:
            payload = rpc.open_request(client.keys, body)
        except rpc.Unauthorized:
            self._refused("that did not authenticate")
        except rpc.MalformedPayload as exc:  # from the paired laptop itself: an error it is told, not a refusal
            payload = None
            malformed = "The call is not a framed JSON object of finite values."
            if isinstance(exc, rpc.NotUnicode):
                malformed = "The call's text is not valid Unicode (it holds lone surrogates)."
        method = payload.get("method") if payload is not None else None
        # One sync per call (issue 21): a package, unpackage, file_part or file_open call's counter is committed
        # unsynced and rides on the sync of the call's own commit (the reservation, the received mark, a file
        # part's digest or place, issue 24); whatever the call does, it is made durable before any answer leaves
        # (make_durable below), so no answer can come from a call a power cut could let be replayed. Other calls
        # keep a durable counter first (what they do may not all go through the store's commits).
        folded = method in FOLDED_COUNTER_METHODS
        if not self.clients.accept_counter(client_id, counter, durable=not folded):
            self._refused("replayed or reordered")
        try:
            if payload is None:  # authentic, counted; told in the clear (the reason holds nothing secret)
                raise BadRequest(malformed)
            try:
                params = payload.get("params", {})
                if not isinstance(method, str) or method not in self.methods or not isinstance(params, dict):
                    raise BadRequest("Unknown method or malformed parameters.")
                answer = {"ok": True, "result": self.methods[method](client, params)}
            except OTCError as exc:
                answer = {"ok": False, "error": exc.code, "message": str(exc)}
        finally:
            if folded:
                store.make_durable()
        return rpc.seal_response(client.keys, counter, answer)

    def _refused(self, why: str) -> NoReturn:
        # Counted, not written: the log gets the aggregate (flush_refusals).
        self.refusals.defer(why)
        if self.refusals.due():
            self.flush_refusals()
        raise rpc.Unauthorized()


def _ceremony_compare(source: ConfirmSource) -> Callable[[str], bool] | None:
    """How the owner compares a pairing string when the device has no screen of its own."""
    if source.name in ("auto", "tty"):
        return compare_pairing_string(source.name)
    return None


def _str(params: dict, name: str, allow_empty: bool = False) -> str:
    value = params.get(name)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise BadRequest(f"The parameter {name!r} must be a {'' if allow_empty else 'non-empty '}string.")
    return value


def _int(params: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadRequest(f"The parameter {name!r} must be a whole number from {lo} to {hi}.")
    return value


def _b64_field(data: dict, name: str, max_len: int = 4096) -> bytes:
    value = data.get(name)
    if not isinstance(value, str) or len(value) > max_len:
        raise BadRequest(f"The field {name!r} must be a base64 string.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"The field {name!r} must be a base64 string.") from None


def _hex_field(data: dict, name: str, length: int) -> bytes:
    value = data.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != length:
        raise BadRequest(f"The field {name!r} must be {length} bytes of hex.")
    return raw


def error(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": code, "message": message, **extra})
    response.status_code = status
    return response


class CallScreen:
    """The device's :class:`~onetimechat.serving.BodyScreen`: what may be sent before the device reads it.

    Every request but a sealed call has a body of at most :data:`PREAUTH_MAX_REQUEST`; a sealed call may be
    as large as ``max_request_bytes`` only once its first 29 bytes (the header: client id and counter) name a
    paired client and a fresh counter. Anything else is refused there, so an unpaired sender cannot make the
    device take in 48 MiB, nor buffer it to disk. ``/v1/call`` takes only POST (any other method is
    refused before its body). A chunked body (no Content-Length) is refused: the client never sends one.
    """

    def __init__(self, service: DeviceService) -> None:
        self.service = service

    def headers(self, method: str, path: str, length: int | None) -> Refusal | int:
        if length is None:
            return Refusal(411, "length-required", "Send the body with a Content-Length.")
        if path == "/v1/call":
            if method != "POST":  # only a POST is screened and may be large (an outside review)
                return Refusal(405, "method-not-allowed", "A sealed call is a POST.")
            if length > self.service.config.max_request_bytes:
                return Refusal(413, "request-entity-too-large", "Request Entity Too Large")
            return rpc.REQUEST_HEADER.size
        if length > min(PREAUTH_MAX_REQUEST, self.service.config.max_request_bytes):
            return Refusal(413, "request-entity-too-large", "Request Entity Too Large")
        return 0

    def body(self, method: str, path: str, head: bytes) -> Refusal | None:
        if method == "POST" and (other := other_version(head)) is not None:
            self.service.refused_unread("of another protocol version")  # counted like any refusal (evidence)
            return other
        try:
            allowed = method != "POST" or self.service.screen_call(head)
        except Exception as exc:  # noqa: BLE001 - the network loop must not fail; the app answers this request
            log.warning("call screen: %s; the request goes to the app", type(exc).__name__)
            return None
        return None if allowed else Refusal(401, "unauthorized", "Unauthorized.")


def other_version(head: bytes) -> Refusal | None:
    """A call of another protocol version (its header well formed but for version 1, say: an old laptop's otc)
    is told so in the clear, before its body is read: nothing in it is secret (``/v1/health`` says the
    version), and the owner learns what to upgrade instead of reading "unauthorized"."""
    try:
        rpc.parse_request_header(head + bytes(16))
    except rpc.OtherVersion as exc:
        return Refusal(400, "protocol-version", rpc.version_mismatch(exc.version, "device"))
    except rpc.Unauthorized:
        pass
    return None


def create_app(config: ServerConfig) -> Flask:
    """The device RPC app over the home in ``config``."""
    service = DeviceService(config)
    app = Flask("otc-device")
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    app.extensions["otc"] = service

    def json_body() -> dict:
        # Before pairing: small bodies only (413 past it).
        request.max_content_length = min(PREAUTH_MAX_REQUEST, config.max_request_bytes)
        try:
            data = boundedjson.loads(request.get_data(cache=False))
        except ValueError:  # not JSON, or nested too deep (boundedjson.TooDeep)
            data = None
        if not isinstance(data, dict):
            raise BadRequest("The body must be a JSON object.")
        return data

    @app.before_request
    def only_health_while_locked() -> Response | None:
        if request.path != "/v1/health":
            # Raises DeviceLocked / DeviceWiped: 423. Held to the request's end, so a lock by hand waits for it.
            serving = service.serving()
            serving.__enter__()
            g.otc_serving = serving
        return None

    @app.teardown_request
    def served(exc: BaseException | None) -> None:
        serving = g.pop("otc_serving", None)
        if serving is not None:
            serving.__exit__(None, None, None)

    @app.get("/v1/health")
    def health() -> Response:
        return jsonify({"status": "ok", "protocol": PROTOCOL})

    @app.post("/v1/pair/begin")
    def pair_begin() -> Response:
        data = json_body()
        name = data.get("name")
        if not isinstance(name, str):
            raise BadRequest("The field 'name' must be a string.")
        return jsonify(service.pairing.begin(name))

    @app.post("/v1/pair/exchange")
    def pair_exchange() -> Response:
        data = json_body()
        session = _hex_field(data, "session", 16)
        msg_b = service.pairing.exchange(session, _b64_field(data, "message"))
        return jsonify({"message": base64.b64encode(msg_b).decode()})

    @app.post("/v1/pair/cancel")
    def pair_cancel() -> Response:
        data = json_body()
        return jsonify({"cancelled": service.pairing.cancel(_hex_field(data, "session", 16))})

    @app.post("/v1/pair/confirm")
    def pair_confirm() -> Response:
        data = json_body()
        session = _hex_field(data, "session", 16)
        client_id, proof = service.pairing.confirm(session, _b64_field(data, "confirm"))
        return jsonify({"client_id": client_id.hex(), "confirm": base64.b64encode(proof).decode()})

    @app.post("/v1/call")
    def call() -> Response:
        # The header first: an unpaired client, or a stale counter, is refused before the rest is read (under
        # waitress the CallScreen has already done this as the bytes arrived).
        length = request.content_length
        if length is None:
            return error(411, "length-required", "Send the body with a Content-Length.")
        if length > config.max_request_bytes:
            return error(413, "request-entity-too-large", "Request Entity Too Large")
        stream = request.stream
        head = stream.read(rpc.REQUEST_HEADER.size)
        other = other_version(head)
        if other is not None:
            return error(other.status, other.code, other.message)
        if not service.screen_call(head):
            return error(401, "unauthorized", "Unauthorized.")
        try:
            # Exactly the rest: read(n) sizes its buffer by n, and a read of the 48 MiB limit for a 1 MiB call
            # cost more than the call (issue 21).
            sealed = service.call(head + stream.read(length - len(head)))
        except rpc.Unauthorized:
            return error(401, "unauthorized", "Unauthorized.")
        return Response(sealed, status=200, mimetype="application/octet-stream")

    @app.errorhandler(PairingLocked)
    def locked(exc: PairingLocked) -> Response:
        response = error(429, exc.code, str(exc), retry_after=exc.retry_after)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(PairingBusy)
    def busy(exc: PairingBusy) -> Response:
        response = error(409, exc.code, str(exc), retry_after=exc.retry_after)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(DeviceError)
    @app.errorhandler(PackageRefused)  # the package format's own refusals (onetimechat/errors.py)
    def refused(exc: DeviceError | PackageRefused) -> Response:
        status = {"pairing-failed": 401, "locked": 423, "wiped": 423}.get(exc.code, 400)
        return error(status, exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "-")
        return error(exc.code or 400, code, exc.name or "Error.")

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> Response:
        # Never the message: it could hold secrets. The type is enough to look further.
        log.error("internal error in %s: %s", request.path, type(exc).__name__)
        return error(500, "internal", "Internal error.")

    return app


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT with HOST a literal IP address; a wildcard address is refused."""
    return net.parse_listen(text, "192.168.7.1:8470", "the cable-side address", BadRequest,
                            wildcard="The device serves on one address only: give the cable-side address, "
                                     "not a wildcard.")


class Server(GuardedServer):
    """The app under waitress, bound to exactly one address (onetimechat/serving.py)."""

    def __init__(self, config: ServerConfig, host: str, port: int, threads: int = 16) -> None:
        app = create_app(replace(config, address=host))
        try:
            super().__init__(app, host, port, config.guard, name="otc-device-server",
                             screen=CallScreen(app.extensions["otc"]), threads=threads, ident="otc-device",
                             connection_limit=CONNECTION_LIMIT, channel_timeout=60, clear_untrusted_proxy_headers=True,
                             **IO_ADJUSTMENTS)
        except OSError as exc:
            app.extensions["otc"].close()
            clear = getattr(config.source, "clear_code", None)
            if clear is not None:  # a code shown in advance (auto) belongs to no device: a script must not pair
                clear()            # with whatever else listens there (a cold run of the README)
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise UsageError(listen_failure(shown, exc)) from None

    def close(self, timeout: float = 5.0) -> None:
        super().close(timeout)
        self.app.extensions["otc"].close()
