"""The relay's Flask app: the 2015 endpoints and protocol v1 (docs/relay-protocol.md).

    GET  /check                                   2015: {"status": "ok"}
    POST /send        form or JSON                2015: {"received": true, "ref"}
    GET  /getmessages ?recipient_uid&start_ref[&maxcount]   2015 shape
    GET  /getnextref  ?recipient_uid              2015: {"nextref"}

    GET  /v1/info                                 protocol, limits, server time
    POST /v1/send      {"mailbox", "contents", ["sender"], ["id"]}
    POST /v1/receive   {"mailboxes": {id: after_ref}, ["wait"], ["limit"], ["ack"]}   long poll
    POST /v1/send-bin  ?mailbox&[id]&[sender], body: the message's raw bytes (a file's part)
    POST /v1/receive-bin  as /v1/receive; answers a binary batch (onetimechat/relaywire.py)
    POST /v1/ack       {"mailbox", ["through"], ["refs"]}                    delete delivered
    POST /v1/announce  {"handle", "token", ["ttl"]}                          opt-in presence
    POST /v1/withdraw  {"handle", "token"}
    GET  /v1/list      [?limit]                                              who is online

Every refusal is a 4xx with ``{"error": code, "message": text}``; a store
that cannot be reached is a 503 the client may retry. Unexpected errors are
logged by type only (never contents) and answered with a JSON 500.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from onetimechat import relaywire
from onetimechat.net import client_keys
from relay import protocol as p
from relay.config import RelayConfig
from relay.errors import (
    BadRequest,
    HandleTaken,
    InsufficientStorage,
    NotDurable,
    PresenceQuota,
    RateLimited,
    RelayError,
    StoreChanged,
    UnsupportedMediaType,
)
from relay.notify import Notifier
from relay.parts import PartFiles
from relay.ratelimit import Limiters, client_key
from relay.storage import FILE_MARK, RAW_MARK, Limits, Message, Sent, Store, open_store

log = logging.getLogger("otc.relay")

# A raw part smaller than this is kept in its row, not in a content file of its own (relay/parts.py).
INLINE_RAW_BYTES = 64 * 1024
# The free-space watermark counts inodes too: content files each take one.
MIN_FREE_INODES = 10_000

ORPHAN_SWEEPS = 60  # content files no message names are looked for at every so many sweeps (the first too)

_HTTP_CODES = {400: "bad-request", 404: "not-found", 405: "method-not-allowed", 413: "too-large",
               414: "too-large", 431: "too-large"}


class Relay:
    """Everything one app serves: the store, waiting requests, limits and the expiry sweeper."""

    def __init__(self, config: RelayConfig, store: Store | None = None,
                 clock: Callable[[], float] = time.time, limiters: Limiters | None = None) -> None:
        self.config = config
        self.store = store if store is not None else open_store(config.db, pool_size=config.db_pool)
        self.clock = clock
        self.notifier = Notifier(config.max_waits, config.max_waits_per_address)
        # Worker processes share their buckets (made before they were forked: relay/ratelimit.py).
        limiters = limiters if limiters is not None else Limiters.of(config)
        self.limiter, self.block_limiter = limiters.requests, limiters.block_requests
        self.presence_limiter, self.presence_block_limiter = limiters.presence, limiters.block_presence
        self.limits = Limits.of(config)
        # Deletions by acknowledgement since the last sweep, per origin: (requests, messages) (see ack_summary).
        self._acks: dict[str, list[int]] = {}
        self._acks_lock = threading.Lock()
        # Addresses are kept only as a keyed hash (the origin), under a secret of the store's.
        self._origin_key = self.store.origin_key().to_bytes(8, "big")
        # Readers' cursors are refs of this store: its identity tells them when another store is behind the address.
        self.store_id = self.store.store_id()
        self._disk_path = self.store.disk_path() if config.min_free_bytes else None
        self._stop = threading.Event()
        # Raw messages (a file's parts) of a SQLite store are kept in content files beside it (relay/parts.py).
        where = getattr(self.store, "path", None) if self.store.kind == "sqlite" else None
        self.parts = PartFiles(Path(where).with_name(Path(where).name + "-parts")) if where is not None else None
        self._sweeps = 0
        self.store.watch(self.notifier.notify, self.notifier.notify_all)
        self._sweeper = threading.Thread(target=self._sweep_loop, name="otc-relay-sweep", daemon=True)
        self._sweeper.start()

    def check_store(self, given: str | None) -> None:
        """Refuse (StoreChanged, 409) a reader whose cursors were read from another store than this one; a reader
        that names none (a client from before store identities) is served as before."""
        if given is not None and given != self.store_id:
            raise StoreChanged(self.store_id)

    def origin(self, address: str) -> str:
        """The keyed hash that stands for a client address (an IPv4 address, an IPv6 /64 or /48) in the store."""
        return hmac.new(self._origin_key, address.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def origins(self, remote: str | None) -> tuple[str, str]:
        """The (origin, block) a client's address is counted as: its IPv4 address or IPv6 /64, and its IPv6 /48
        ('' for IPv4, or when /48s share nothing)."""
        group, block = client_keys(remote)
        return self.origin(group), self.origin(block) if block and self.config.block_shares else ""

    def take(self, remote: str | None, presence: bool = False) -> float:
        """Spend a request (or an announcement) of the client's buckets: 0.0, or the seconds to wait."""
        single, shared = ((self.presence_limiter, self.presence_block_limiter) if presence
                          else (self.limiter, self.block_limiter))
        group, block = client_keys(remote)
        wait = single.take(group)
        if not wait and block is not None and self.config.block_shares:
            wait = shared.take(block)
        return wait

    def admit(self, remote: str | None) -> None:
        """Spend a request of the client's buckets, or refuse it (RateLimited, with the seconds to wait)."""
        retry = self.take(remote)
        if retry:
            exc = RateLimited()
            exc.retry_after = max(1, math.ceil(retry))
            raise exc

    def acknowledge(self, deleted: int, remote: str | None) -> None:
        """Count a deletion by acknowledgement, for the log's summary (an address's pseudonym, never a mailbox)."""
        if deleted <= 0:
            return
        origin = self.origin(client_key(remote))
        with self._acks_lock:
            entry = self._acks.setdefault(origin, [0, 0])
            entry[0] += 1
            entry[1] += deleted

    def ack_summary(self) -> str | None:
        """One line on what acknowledgements deleted since the last summary (None if nothing was)."""
        with self._acks_lock:
            acks, self._acks = self._acks, {}
        if not acks:
            return None
        top, (requests, messages) = max(acks.items(), key=lambda item: item[1][1])
        total = sum(m for _, m in acks.values())
        return (f"acknowledged: {total} messages deleted by {sum(r for r, _ in acks.values())} requests from "
                f"{len(acks)} addresses; the most by one, origin {top[:8]}: {messages} in {requests} requests")

    def check_disk(self) -> None:
        """Refuse new messages while the store's disk has less free space than the watermark."""
        if self._disk_path is None:
            return
        try:
            st = os.statvfs(self._disk_path)
        except OSError:
            return  # the store itself reports a disk it cannot use
        if st.f_bavail * st.f_frsize < self.config.min_free_bytes:
            raise InsufficientStorage()
        if st.f_files and st.f_favail < MIN_FREE_INODES:  # f_files 0: a filesystem without an inode count
            raise InsufficientStorage()

    def send(self, mailbox: str, sender: str, contents: bytes, client_id: str | None,
             remote: str | None = None, size: int | None = None, disk_checked: bool = False) -> Sent:
        """Store a message from the client at ``remote`` (its address; None: counted against no address).
        ``disk_checked``: the caller has just checked the disk (one statvfs per send)."""
        if not disk_checked:
            self.check_disk()
        now = self.clock()
        origin, block = self.origins(remote) if remote is not None else ("", "")
        sent = self.store.send(mailbox, sender, contents, client_id, now, now + self.config.expire_seconds,
                               self.limits, origin, block, size)
        if not sent.duplicate:
            self.notifier.notify(mailbox)
        return sent

    def send_raw(self, mailbox: str, sender: str, data: bytes, client_id: str | None, remote: str | None) -> Sent:
        """Store a message sent as raw bytes (a file's part): in a content file written and synced before the
        message is recorded (SQLite), else in its row."""
        if self.parts is None or len(data) < INLINE_RAW_BYTES:
            # Small parts stay in their row: a file of their own would cost a block and an inode, many times
            # what the address's quota counts (an outside review: 1-byte parts took 16 times their quota).
            return self.send(mailbox, sender, RAW_MARK + data, client_id, remote)
        self.check_disk()
        name = self.parts.write(data)
        try:
            sent = self.send(mailbox, sender, FILE_MARK + name.encode("ascii"), client_id, remote, len(data) + 1,
                             disk_checked=True)
        except NotDurable:
            # Committed, perhaps: the row may name the file. The sender retries with its key and finds it; the
            # orphan sweep removes the file if no row names it (an outside review: unlinking it here lost a
            # part the relay then answered as a duplicate).
            raise
        except BaseException:
            self.parts.remove([name])  # refused (a quota, a full store) or failed: nothing names it
            raise
        if sent.duplicate:
            self.parts.remove([name])  # the message was stored before, with its own file
        return sent

    def _with_contents(self, found: list[Message]) -> list[Message]:
        """Messages whose bytes are in content files, with their bytes; one whose file is gone (acknowledged
        and deleted since it was fetched) is left out."""
        if self.parts is None or not any(m.stored for m in found):
            return found
        loaded = []
        for m in found:
            if m.stored:
                data = self.parts.read(m.stored)
                if data is None:
                    continue
                m = replace(m, raw=data, stored=None)
            loaded.append(m)
        return loaded

    def ack(self, mailbox: str, through: int | None, refs: Sequence[int]) -> int:
        """Delete delivered messages (and their content files); how many went."""
        gone: list[str] = []
        deleted = self.store.ack(mailbox, through, refs, self.clock(), gone)
        self._remove_files(gone)
        return deleted

    def ack_cursors(self, cursors: Sequence[tuple[str, int]]) -> int:
        """Delete every message up to each cursor (and their content files); how many went."""
        gone: list[str] = []
        deleted = self.store.ack_cursors(cursors, self.clock(), gone)
        self._remove_files(gone)
        return deleted

    def _remove_files(self, gone: list[str]) -> None:
        """Unlink the content files of messages a committed deletion removed."""
        if self.parts is not None and gone:
            self.parts.remove(gone)

    def receive(self, cursors: Sequence[tuple[str, int]], limit: int, wait: float,
                address: str) -> tuple[list[Message], bool]:
        """Messages after each cursor; with ``wait``, hold the request until some arrive."""
        size = self.config.max_answer_bytes
        if wait <= 0:
            found, complete = self.store.fetch(cursors, limit, size, self.clock())
            return self._with_contents(found), complete
        watch = self.notifier.watch([m for m, _ in cursors], address)
        try:
            deadline = time.monotonic() + wait
            while True:
                watch.clear()  # before looking, so a send landing meanwhile still wakes us
                found, complete = self.store.fetch(cursors, limit, size, self.clock())
                found = self._with_contents(found)
                left = deadline - time.monotonic()
                if found or left <= 0 or self.notifier.closed:
                    return found, complete
                watch.wait(left)
        finally:
            self.notifier.unwatch(watch)

    def sweep(self) -> dict[str, int]:
        now = self.clock()
        gone: list[str] = []
        counts = self.store.sweep(now, idle_before=now - self.config.expire_seconds, gone=gone)
        self._remove_files(gone)
        if self._sweeps % ORPHAN_SWEEPS == 0:
            removed = self.remove_orphans()
            if removed:
                log.info("removed %d content files no message named", removed)
        self._sweeps += 1
        return counts

    def remove_orphans(self, now: float | None = None) -> int:
        """Remove the content files no message names, left by a relay cut between writing one and recording
        it (or between deleting a message and unlinking its file); how many went."""
        if self.parts is None:
            return 0
        live = {name for _, _, name in self.store.part_files(limit=1 << 62)}
        return self.parts.remove_orphans(self.parts.orphans(live, now))

    def _sweep_loop(self) -> None:
        while not self._stop.is_set():
            try:
                counts = self.sweep()
                if any(counts.values()):
                    log.info("expired: %(messages)d messages, %(ids)d idempotency keys, %(presence)d "
                             "presence entries, %(mailboxes)d idle mailboxes", counts)
                summary = self.ack_summary()
                if summary:
                    log.info("%s", summary)
            except RelayError as exc:
                log.warning("expiry sweep skipped: %s", exc.code)
            except Exception as exc:  # noqa: BLE001 - the sweeper must outlive one bad sweep
                log.error("expiry sweep failed: %s", type(exc).__name__)
            self._stop.wait(self.config.sweep_interval)

    def close(self) -> None:
        self._stop.set()
        self.notifier.close()
        self._sweeper.join(timeout=10)
        self.store.close()


def presence_token_hash(token: str) -> bytes:
    """The relay keeps only this hash of a presence token."""
    return hashlib.sha256(b"otc-relay presence token\x00" + token.encode("utf-8")).digest()


def error_response(status: int, code: str, message: str, retry_after: float | None = None,
                   fields: Mapping[str, str] | None = None) -> Response:
    response = jsonify({**(fields or {}), "error": code, "message": message})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def create_app(config: RelayConfig | Mapping[str, Any] | None = None, *, store: Store | None = None,
               clock: Callable[[], float] = time.time, limiters: Limiters | None = None) -> Flask:
    """The relay app. ``app.extensions["otc_relay"].close()`` stops its threads and store. ``limiters``: rate
    limit buckets shared with other worker processes (relay/ratelimit.py), else its own."""
    if config is None:
        config = RelayConfig()
    elif not isinstance(config, RelayConfig):
        config = RelayConfig.from_mapping(config)
    relay = Relay(config, store=store, clock=clock, limiters=limiters)
    app = Flask("otc-relay", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes()
    app.config["MAX_FORM_MEMORY_SIZE"] = config.max_request_bytes()
    app.config["MAX_FORM_PARTS"] = 100
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False  # every answer is JSON; OPTIONS is a 405 like PUT
    app.extensions["otc_relay"] = relay
    # No redirects (they answer in HTML): "/v1/send/" is simply not found.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = True

    def address() -> str:
        return client_key(request.remote_addr)

    def remote() -> str:
        return request.remote_addr or "-"

    def body() -> dict[str, Any]:
        return p.json_object(request.get_data(cache=False))

    def form_or_json() -> Mapping[str, Any]:
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            return request.form
        return body()

    @app.before_request
    def rate_limit() -> None:
        relay.admit(remote())

    # -- the 2015 endpoints, unchanged for 2015 clients --------------------------------

    @app.get("/check")
    def check() -> Response:
        return jsonify({"status": "ok"})

    @app.post("/send")
    def send_2015() -> Response:
        fields = form_or_json()
        recipient = p.ident(fields.get("recipient_uid"), "recipient_uid")
        sender = p.ident(fields.get("sender_uid", ""), "sender_uid", allow_empty=True)
        contents = p.contents(fields.get("contents"), config.max_message_bytes)
        sent = relay.send(recipient, sender, contents, None, remote())
        return jsonify({"received": True, "ref": sent.ref})

    @app.get("/getmessages")
    def getmessages_2015() -> Response:
        recipient = p.ident(request.args.get("recipient_uid"), "recipient_uid")
        start = p.query_number(request.args.get("start_ref"), "start_ref")
        maxcount = request.args.get("maxcount")
        limit = config.max_batch if maxcount is None else min(p.query_number(maxcount, "maxcount"),
                                                              config.max_batch)
        after = max(start - 1, 0)  # 2015's start_ref is inclusive
        found: list[Message]
        if limit == 0:
            peek, _ = relay.receive([(recipient, after)], 1, 0, address())
            found, complete = [], not peek
        else:
            found, complete = relay.receive([(recipient, after)], limit, 0, address())
        return jsonify({"recipient_uid": recipient, "count": len(found),
                        "messages": [p.message_2015(m) for m in found], "complete": complete})

    @app.get("/getnextref")
    def getnextref_2015() -> Response:
        recipient = p.ident(request.args.get("recipient_uid"), "recipient_uid")
        return jsonify({"nextref": relay.store.next_ref(recipient)})

    # -- protocol v1 ----------------------------------------------------------------------

    @app.get("/")
    @app.get("/v1/info")
    def info() -> Response:
        return jsonify({
            "service": "otc-relay",
            "protocol": p.PROTOCOL,
            "store": relay.store_id,
            "time": round(relay.clock(), 3),
            "limits": {
                "max_message_bytes": config.max_message_bytes,
                "mailbox_max_messages": config.mailbox_max_messages,
                "mailbox_max_bytes": config.mailbox_max_bytes,
                "expire_seconds": config.expire_seconds,
                "max_wait": config.max_wait,
                "max_batch": config.max_batch,
                "max_mailboxes": config.max_mailboxes,
                "presence_max_ttl": config.presence_max_ttl,
                "rate_limit": config.rate_limit,
                "rate_burst": config.rate_burst,
                "address_max_bytes": config.address_max_bytes,
                "address_new_mailboxes": config.address_new_mailboxes,
                "block_shares": config.block_shares,
                "presence_rate": config.presence_rate,
                "presence_per_address": config.presence_per_address,
            },
        })

    # /v1/send and /v1/receive are most of a relay's requests: each is served by a lean path (HotPath, below)
    # and by Flask alike, through these two functions (the request's JSON object and the client's address in,
    # the answer out).

    def send_v1(data: dict[str, Any], remote_addr: str | None) -> dict[str, Any]:
        mailbox = p.ident(data.get("mailbox"), "mailbox")
        sender = p.ident(data.get("sender", ""), "sender", allow_empty=True)
        client_id = p.optional_ident(data, "id")
        contents = p.contents(data.get("contents"), config.max_message_bytes)
        sent = relay.send(mailbox, sender, contents, client_id, remote_addr or "-")
        return {"mailbox": mailbox, "ref": sent.ref, "expires_at": round(sent.expires_at, 3),
                "duplicate": sent.duplicate}

    def receive_v1(data: dict[str, Any], remote_addr: str | None) -> dict[str, Any]:
        found, complete = receive_any(data, remote_addr)
        return {"messages": [p.message_v1(m) for m in found], "complete": complete, "store": relay.store_id}

    # A file's parts travel as raw bytes both ways (docs/relay-protocol.md, "Binary parts"): no base64, no JSON
    # around a megabyte. The bytes are kept in a content file (SQLite) or in the row (Relay.send_raw); JSON answers
    # carry them in base64.
    max_raw = config.max_message_bytes * 3 // 4  # its base64 fits where a text message's must

    def send_bin(call: Call) -> dict[str, Any]:
        if call.mimetype != relaywire.CONTENT_TYPE:
            raise UnsupportedMediaType(f"The body must be {relaywire.CONTENT_TYPE}: the message's bytes.")
        try:
            query = parse_qs(call.query, keep_blank_values=True, strict_parsing=bool(call.query), max_num_fields=8,
                             errors="strict")
        except ValueError:  # UnicodeDecodeError included
            raise BadRequest("The query string must be mailbox=ID, optionally &id=KEY and &sender=NAME.") from None
        unknown = set(query) - {"mailbox", "id", "sender"}
        if unknown:
            raise BadRequest("The query string takes only 'mailbox', 'id' and 'sender'.")
        mailbox = p.query_ident(query, "mailbox")
        client_id = p.query_ident(query, "id", required=False)
        sender = p.query_ident(query, "sender", required=False) or ""
        assert mailbox is not None
        contents = p.raw_contents(call.body, max_raw)
        sent = relay.send_raw(mailbox, sender, contents, client_id, call.remote or "-")
        return {"mailbox": mailbox, "ref": sent.ref, "expires_at": round(sent.expires_at, 3),
                "duplicate": sent.duplicate}

    def receive_bin(call: Call) -> list[bytes]:
        found, complete = receive_any(p.json_object(call.body), call.remote)
        return relaywire.frame([p.message_bin(m) for m in found], complete, store=relay.store_id)

    def receive_any(data: dict[str, Any], remote_addr: str | None) -> tuple[list[Message], bool]:
        cursors = p.cursors(data.get("mailboxes"), config.max_mailboxes)
        wait = p.seconds(data.get("wait", 0), "wait", config.max_wait)
        limit = min(p.number(data.get("limit", config.max_batch), "limit", 1), config.max_batch)
        ack = data.get("ack", False)
        if not isinstance(ack, bool):
            raise BadRequest("The field 'ack' must be true or false.")
        # Cursors read from another store mean nothing here: neither deleted up to nor read after.
        relay.check_store(p.store_id(data))
        if ack:
            # The reader has everything up to its cursors: delete it (one round trip, not two).
            relay.acknowledge(relay.ack_cursors(cursors), remote_addr or "-")
        return relay.receive(cursors, limit, wait, client_key(remote_addr))

    hot: dict[str, Callable[[Call], dict[str, Any] | list[bytes]]] = {
        "/v1/send": lambda call: send_v1(p.json_object(call.body), call.remote),
        "/v1/receive": lambda call: receive_v1(p.json_object(call.body), call.remote),
        "/v1/send-bin": send_bin,
        "/v1/receive-bin": receive_bin,
    }

    def flask_route(answer: Callable[[Call], dict[str, Any] | list[bytes]]) -> Callable[[], Response]:
        def route() -> Response:
            call = Call(request.get_data(cache=False), request.query_string.decode("latin-1"), request.mimetype,
                        request.remote_addr)
            return as_response(answer(call))

        return route

    for path, answer in hot.items():
        app.add_url_rule(path, path, flask_route(answer), methods=["POST"])

    @app.post("/v1/ack")
    def ack_v1() -> Response:
        data = body()
        mailbox = p.ident(data.get("mailbox"), "mailbox")
        through = data.get("through")
        through = None if through is None else p.number(through, "through")
        refs = data.get("refs", [])
        if not isinstance(refs, list) or len(refs) > config.max_batch:
            raise BadRequest(f"The field 'refs' must be a list of at most {config.max_batch} refs.")
        refs = sorted({p.number(r, "refs") for r in refs})
        if through is None and not refs:
            raise BadRequest("Say which messages to delete: 'through' (a ref) and/or 'refs' (a list).")
        relay.check_store(p.store_id(data))
        # Idempotent: what is already gone counts 0. Anyone who knows the mailbox id may do this (see
        # docs/relay-protocol.md, "Who may delete"); deletions are summed per address in the log.
        deleted = relay.ack(mailbox, through, refs)
        relay.acknowledge(deleted, remote())
        return jsonify({"mailbox": mailbox, "deleted": deleted, "store": relay.store_id})

    @app.post("/v1/announce")
    def announce_v1() -> Response:
        data = body()
        handle = p.handle(data.get("handle"))
        token = p.token(data.get("token"))
        ttl = max(1.0, p.seconds(data.get("ttl", config.presence_ttl), "ttl", config.presence_max_ttl))
        retry = relay.take(remote(), presence=True)
        if retry:
            exc = PresenceQuota("Too many announcements from this address; slow down.")
            exc.retry_after = max(1, math.ceil(retry))
            raise exc
        now = relay.clock()
        origin, block = relay.origins(remote())
        presence = relay.store.announce(handle, presence_token_hash(token), now, now + ttl, origin, block,
                                        relay.limits)
        if presence is None:
            raise HandleTaken()
        return jsonify(p.presence_v1(presence))

    @app.post("/v1/withdraw")
    def withdraw_v1() -> Response:
        data = body()
        handle = p.handle(data.get("handle"))
        token = p.token(data.get("token"))
        withdrawn = relay.store.withdraw(handle, presence_token_hash(token), relay.clock())
        if withdrawn is False:
            raise HandleTaken()
        return jsonify({"handle": handle, "withdrawn": bool(withdrawn)})

    @app.get("/v1/list")
    def list_v1() -> Response:
        text = request.args.get("limit")
        limit = config.max_presence_list if text is None else min(
            p.query_number(text, "limit", 1), config.max_presence_list)
        online = relay.store.online(relay.clock(), limit + 1)
        return jsonify({"online": [p.presence_v1(x) for x in online[:limit]], "count": min(len(online), limit),
                        "complete": len(online) <= limit})

    # -- errors: always JSON, never a traceback -------------------------------------------

    @app.errorhandler(RelayError)
    def refused(exc: RelayError) -> Response:
        return error_response(exc.status, exc.code, str(exc), exc.retry_after, exc.fields())

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 400
        if status >= 500:
            log.error("internal HTTP error on %s %s: %s", request.method, request.path, type(exc).__name__)
            return error_response(500, "internal", "Internal error.")
        response = error_response(status, _HTTP_CODES.get(status, f"http-{status}"), exc.name or "Refused.")
        for name, value in exc.get_headers():
            if name.lower() == "allow":
                response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> Response:
        # The type only: a message could quote contents or ids.
        log.error("internal error on %s %s: %s", request.method, request.path, type(exc).__name__)
        return error_response(500, "internal", "Internal error.")

    app.wsgi_app = HotPath(app.wsgi_app, relay, hot, config.max_request_bytes())  # type: ignore[method-assign]
    return app


class Call:
    """A hot request: its body, query string, media type (without parameters) and the client's address."""

    __slots__ = ("body", "query", "mimetype", "remote")

    def __init__(self, body: bytes, query: str, mimetype: str, remote: str | None) -> None:
        self.body, self.query, self.mimetype, self.remote = body, query, mimetype, remote


def as_response(answer: dict[str, Any] | list[bytes]) -> Response:
    if isinstance(answer, dict):
        return jsonify(answer)
    return Response(b"".join(answer), mimetype=relaywire.CONTENT_TYPE)


_JSON = json.JSONEncoder(ensure_ascii=True, sort_keys=True, separators=(",", ":"))  # jsonify's, byte for byte
_JSON_HEADER = ("Content-Type", "application/json")
_STATUS = {code: f"{code} {phrase.upper()}" for code, phrase in HTTP_STATUS_CODES.items()}  # as werkzeug's


class HotPath:
    """The WSGI app in front of Flask's: ``POST /v1/send`` and ``POST /v1/receive`` with a Content-Length within
    the limit are answered here, everything else by Flask (docs/relay-protocol.md, "Serving").

    The answer is Flask's to the byte (``hot`` holds the same functions Flask's routes call; the rate limit,
    the refusals and the 500 are its handlers' too); what is skipped is Flask's dispatch around them: request
    and app contexts, URL matching, the session, the Response object. A relay spends most of its time on these
    two requests, and that dispatch cost more than the store work behind them.
    """

    def __init__(self, flask_app: Callable[..., Any], relay: Relay,
                 hot: Mapping[str, Callable[[Call], dict[str, Any] | list[bytes]]], max_body: int) -> None:
        self.flask_app, self.relay, self.hot, self.max_body = flask_app, relay, hot, max_body

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        answer = self.hot.get(environ.get("PATH_INFO", "")) if environ.get("REQUEST_METHOD") == "POST" else None
        length = environ.get("CONTENT_LENGTH", "")
        # Anything else (a body too large, chunked, a length that is not plain digits) is Flask's to refuse.
        if answer is None or not (length.isascii() and length.isdigit()) or int(length) > self.max_body:
            return self.flask_app(environ, start_response)
        remote_addr = environ.get("REMOTE_ADDR")
        retry_after = None
        payload: dict[str, Any] | list[bytes]
        try:
            self.relay.admit(remote_addr or "-")
            mimetype = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
            call = Call(environ["wsgi.input"].read(int(length)), environ.get("QUERY_STRING", ""), mimetype,
                        remote_addr)
            status, payload = 200, answer(call)
        except RelayError as exc:
            status, retry_after = exc.status, exc.retry_after
            payload = {**exc.fields(), "error": exc.code, "message": str(exc)}
        except Exception as exc:  # noqa: BLE001 - as Flask's handler: the type only, a JSON 500
            log.error("internal error on POST %s: %s", environ["PATH_INFO"], type(exc).__name__)
            status, payload = 500, {"error": "internal", "message": "Internal error."}
        if isinstance(payload, list):  # a binary batch
            headers = [("Content-Type", relaywire.CONTENT_TYPE), ("Content-Length", str(sum(map(len, payload))))]
            start_response(_STATUS[status], headers)
            return payload
        data = (_JSON.encode(payload) + "\n").encode("ascii")
        headers = [_JSON_HEADER, ("Content-Length", str(len(data)))]
        if retry_after is not None:
            headers.append(("Retry-After", str(max(1, math.ceil(retry_after)))))
        start_response(_STATUS[status], headers)
        return [data]
