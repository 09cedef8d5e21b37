"""The store's algorithms in SQL that SQLite and PostgreSQL both run.

Every write is a named operation of one transaction (a method ``_op_<name>`` taking the
transaction and plain, picklable arguments) handed to :meth:`SQLStore._transact` by name,
so a store may run it itself or send it as data to the relay's writer process
(relay/writer.py), which runs every worker's writes.
Writes go through a group commit: each request queues its function; one
thread at a time leads, running everything queued so far in one transaction
(each function under its own savepoint, so a refusal undoes only its own
writes) with one durable commit for all, then wakes their threads and hands
the lead to the next one waiting. A store whose writers take turns across
processes (SQLite) makes the leader wait for its turn before it takes the
batch, so what queued meanwhile joins the same commit. Nobody gets an answer before that commit.
One commit (one sync) per batch instead of per request, and one thread doing
store work instead of many contending for it. Reads use :meth:`SQLStore._read`.
Statements are written with ``?`` placeholders.

Ordering: a send locks its mailbox's row (PostgreSQL ``FOR UPDATE``; SQLite
has one writer at a time) before taking the next ref, and holds it until the
commit, so refs within a mailbox become visible in order and a reader's
"after ref N" cursor never skips a message committed late. A batch runs its
functions sorted by mailbox, so batches of two relay processes sharing a
PostgreSQL store take row locks in the same order.
"""

from __future__ import annotations

import abc
import contextlib
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from relay.errors import AddressQuota, MailboxFull, PresenceQuota, RelayError, TooManyMailboxes
from relay.storage import FILE_MARK, MESSAGE_OVERHEAD, RAW_MARK, Limits, Message, Presence, Sent, Store

# How many mailboxes with expired messages one sweep clears (the next sweep does the rest).
SWEEP_MAILBOXES = 1000
# Most transaction functions committed together.
MAX_BATCH = 256
#: The write operations (``SQLStore._op_<name>``): all a writer process will run.
OPS = frozenset({"send", "origin_key", "store_id", "ack", "ack_cursors", "announce", "withdraw", "expire", "forget"})
#: Write operations only an operator's command runs, on a store it opened alone: never sent to a writer process
#: (which runs only OPS).
LOCAL_OPS = frozenset({"new_store_id"})


class Writer(Protocol):
    """Where a store sends its writes instead of committing them itself (relay/writer.py's link to the writer
    process): ``call`` returns the operation's result once durably committed, or raises its RelayError."""

    def call(self, name: str, args: tuple, key: str) -> Any: ...

    def close(self) -> None: ...


class Tx(Protocol):
    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None: ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...  # rowcount; -1 if not known yet


_NO_WAKE = threading.Event()  # an Op nobody waits for (the writer process's)


class Op:
    """One queued transaction function and, once committed, its outcome."""

    __slots__ = ("fn", "key", "done", "value", "error", "wake")

    def __init__(self, fn: Callable[[Tx], Any], key: str, waits: bool = True) -> None:
        self.fn = fn
        self.key = key
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.wake = threading.Event() if waits else _NO_WAKE


class Operation:
    """A named write operation with its arguments, callable as its transaction function (a store may also run it
    its own way: PostgreSQL runs sends and deletions in a server-side function, relay/storage/postgres.py)."""

    __slots__ = ("name", "args", "method")

    def __init__(self, name: str, args: tuple, method: Callable[..., Any]) -> None:
        self.name = name
        self.args = args
        self.method = method

    def __call__(self, tx: Tx) -> Any:
        return self.method(tx, *self.args)


def run_batch(execute: Callable[[str], Any], tx: Tx, batch: list[Op]) -> None:
    """Run each function of ``batch`` under its own savepoint, inside a transaction ``execute`` already opened
    (the :meth:`SQLStore._commit` contract): a refusal (a RelayError) undoes that function's writes and is kept
    in its Op; any other failure is raised."""
    for op in batch:
        execute("SAVEPOINT op")
        try:
            op.value = op.fn(tx)
        except RelayError as exc:
            execute("ROLLBACK TO SAVEPOINT op")
            op.error = exc
        execute("RELEASE SAVEPOINT op")


class SQLStore(Store):
    #: Row-lock clauses (PostgreSQL); SQLite's write transactions are already exclusive.
    LOCK = ""
    SHARE = ""
    LOCK_MAILBOX = ""  # the mailbox row only, in a join aliased m

    _queue: list[Op]
    _queue_lock: threading.Lock
    _leading: bool
    _writer_link: Writer | None = None
    #: Tells this process's sends from others' to the store's watcher (PostgreSQL's notifications).
    _tag: str = ""

    def _init_group_commit(self) -> None:
        self._queue = []
        self._queue_lock = threading.Lock()
        self._leading = False  # a thread is committing; the others wait for it
        self._tag = secrets.token_hex(8)

    def use_writer(self, writer: Writer) -> None:
        """Send every write to ``writer`` (a worker of ``--workers N``: the writer process commits them)."""
        self._writer_link = writer

    def _close_writer(self) -> None:
        if self._writer_link is not None:
            self._writer_link.close()

    def operation(self, name: str, args: Sequence[Any]) -> Operation:
        """The transaction function of the write operation ``name`` (one of OPS) with ``args``."""
        if name not in OPS and not (name in LOCAL_OPS and self._writer_link is None):
            raise ValueError(f"no write operation {name!r}")
        return Operation(name, tuple(args), getattr(self, "_op_" + name))

    def _transact(self, name: str, args: tuple, key: str = "") -> Any:
        """Run the write operation ``name`` with ``args`` in a write transaction; its result once durably
        committed (here, or by the writer process if the store has one).

        If it raises, nothing it wrote is kept and the error is raised here.
        ``key`` (the mailbox) orders operations within a batch.
        """
        if self._writer_link is not None:
            return self._writer_link.call(name, args, key)
        mine = Op(self.operation(name, args), key)
        with self._queue_lock:
            self._queue.append(mine)
            lead = not self._leading
            self._leading = True
        if not lead:
            # Woken when a leader has committed our function, or when we are to lead next.
            mine.wake.wait()
        if not mine.done:
            self._lead()
        if mine.error is not None:
            raise mine.error
        return mine.value

    def _lead(self) -> None:
        batch: list[Op] = []
        try:
            batch = self.commit_batch(self._take_batch)
        except BaseException as exc:  # noqa: BLE001 - failed before its turn: the queue's head fails with it
            batch = self._take_batch()
            self._failed(batch, exc)
        finally:
            for op in batch:
                op.done = True
                op.wake.set()
            with self._queue_lock:
                if self._queue:
                    self._queue[0].wake.set()  # still leading: the next thread takes over
                else:
                    self._leading = False

    def commit_batch(self, take: Callable[[], list[Op]]) -> list[Op]:
        """Commit the operations ``take()`` gives once it is this process's turn to write (what queued while it
        waited joins this commit), in one durable transaction; each Op gets its value or its error. If the commit
        fails, every one of them gets that failure. Raises only if the turn itself could not be had."""
        with self._writer_turn():
            batch = take()
            try:
                self._commit(sorted(batch, key=lambda op: op.key))
            except BaseException as exc:  # noqa: BLE001 - the commit failed: nothing in the batch was kept
                self._failed(batch, exc)
                return batch
        try:
            self._make_durable()  # after the turn: the other processes write meanwhile
        except BaseException as exc:  # noqa: BLE001 - not durable: nobody may be told it is stored
            self._failed(batch, exc)
        return batch

    @staticmethod
    def _failed(batch: list[Op], exc: BaseException) -> None:
        for op in batch:
            op.value, op.error = None, exc

    def _take_batch(self) -> list[Op]:
        with self._queue_lock:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        return batch

    def _writer_turn(self) -> contextlib.AbstractContextManager[None]:
        """Held while this process's leader takes its batch and commits it: the store's writer lock across
        processes, if it has one (SQLite: one writer at a time)."""
        return contextlib.nullcontext()

    def _make_durable(self) -> None:
        """Called after a commit, outside the writers' turn and before anyone is answered: make it durable if
        the commit itself did not (SQLite commits without syncing and syncs the WAL here)."""
        return None

    @abc.abstractmethod
    def _commit(self, batch: list[Op]) -> None:
        """Run each function of ``batch`` under a savepoint in one transaction and commit it.

        A function that raises a RelayError (a refusal) has its writes undone and the error
        stored in its Op; any other failure is raised and fails the whole batch.
        """

    @abc.abstractmethod
    def _read(self) -> contextlib.AbstractContextManager[Tx]:
        """A connection for reads."""

    def _after_send(self, tx: Tx, mailbox: str, tag: str) -> int | None:
        """Called inside the send transaction, after the message's row is written, for a send by the process
        ``tag`` names; the message's id, if the store has one."""
        return None

    # -- messages ---------------------------------------------------------------------

    def send(self, mailbox: str, sender: str, contents: bytes, client_id: str | None, now: float,
             expires_at: float, limits: Limits, origin: str = "", block: str = "", size: int | None = None) -> Sent:
        """``size``: the bytes the message counts as, if not its ``contents``' (a content file's, relay/parts.py)."""
        size = len(contents) if size is None else size
        sent, sent_id = self._transact("send", (mailbox, sender, contents, client_id, now, expires_at, limits, origin,
                                                block, size, self._tag), mailbox)
        if sent_id is not None and self._writer_link is not None:
            self._sent_here(sent_id)
        return sent

    def _sent_here(self, sent_id: int) -> None:
        """A message this process sent was stored under ``sent_id`` (SQLite's watcher skips those)."""

    def _op_send(self, tx: Tx, mailbox: str, sender: str, contents: bytes, client_id: str | None, now: float,
                 expires_at: float, limits: Limits, origin: str, block: str, size: int,
                 tag: str) -> tuple[Sent, int | None]:
        """A send, and the stored message's id if the store has one (``tag``: the sending process's)."""
        next_ref, count, nbytes, seen_ref, seen_expires = self._lock_mailbox(tx, mailbox, client_id, now,
                                                                             origin, limits, block)
        if seen_ref is not None:
            return Sent(int(seen_ref), float(seen_expires), duplicate=True), None
        ref, count, nbytes = int(next_ref), int(count), int(nbytes)
        if count + 1 > limits.max_messages or nbytes + size > limits.max_bytes:
            raise MailboxFull()
        # Charged and checked in one statement each; a refusal undoes the charges with the rest of the send.
        for who, cap in ((origin, limits.origin_max_bytes), (block, limits.block_max_bytes)):
            if who:
                used = tx.one("INSERT INTO origins (origin, bytes, new_mailboxes, window_start) "
                              "VALUES (?, ?, 0, ?) ON CONFLICT (origin) DO UPDATE SET "
                              "bytes = origins.bytes + excluded.bytes RETURNING bytes",
                              (who, size + MESSAGE_OVERHEAD, now))
                if cap and used is not None and int(used[0]) > cap:
                    raise AddressQuota()
        tx.run("UPDATE mailboxes SET next_ref = ?, count = count + 1, bytes = bytes + ?, touched = ? "
               "WHERE mailbox = ?", (ref + 1, size, now, mailbox))
        tx.run("INSERT INTO messages (mailbox, ref, sender, contents, size, created, expires, origin, block) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (mailbox, ref, sender, contents, size, now, expires_at, origin, block))
        sent_id = self._after_send(tx, mailbox, tag)
        if client_id is not None:
            tx.run("INSERT INTO sent_ids (mailbox, client_id, ref, expires) VALUES (?, ?, ?, ?)",
                   (mailbox, client_id, ref, expires_at))
        return Sent(ref, expires_at), sent_id

    def _lock_mailbox(self, tx: Tx, mailbox: str, client_id: str | None, now: float, origin: str,
                      limits: Limits, block: str = "") -> tuple:
        """The mailbox's (next_ref, count, bytes), locked for this transaction and made if new (counted
        against ``origin``'s and ``block``'s new mailboxes), with the (ref, expires) an earlier send with this
        idempotency key got, if any."""
        select = ("SELECT m.next_ref, m.count, m.bytes, s.ref, s.expires FROM mailboxes m "
                  "LEFT JOIN sent_ids s ON s.mailbox = m.mailbox AND s.client_id = ? "
                  "WHERE m.mailbox = ?" + self.LOCK_MAILBOX)
        row = tx.one(select, (client_id, mailbox))
        if row is None:
            # The floor is read under a share lock: a sweep forgetting mailboxes raises it under
            # an exclusive one, so a mailbox made again never reuses a ref it had before.
            floor = tx.one("SELECT value FROM relay_meta WHERE key = 'ref_floor'" + self.SHARE)
            tx.run("INSERT INTO mailboxes (mailbox, next_ref, count, bytes, touched) VALUES (?, ?, 0, 0, ?) "
                   "ON CONFLICT (mailbox) DO NOTHING", (mailbox, int(floor[0]) if floor else 1, now))
            window_opened_before = now - limits.new_mailbox_window
            for who, cap in ((origin, limits.origin_new_mailboxes), (block, limits.block_new_mailboxes)):
                if not (who and cap):
                    continue
                made = tx.one(
                    "INSERT INTO origins (origin, bytes, new_mailboxes, window_start) VALUES (?, 0, 1, ?) "
                    "ON CONFLICT (origin) DO UPDATE SET "
                    "new_mailboxes = CASE WHEN origins.window_start <= ? THEN 1 ELSE origins.new_mailboxes + 1 END, "
                    "window_start = CASE WHEN origins.window_start <= ? THEN excluded.window_start "
                    "ELSE origins.window_start END RETURNING new_mailboxes",
                    (who, now, window_opened_before, window_opened_before))
                if made is not None and int(made[0]) > cap:
                    raise TooManyMailboxes()
            row = tx.one(select, (client_id, mailbox))
        assert row is not None
        return row

    def origin_key(self) -> int:
        return int(self._transact("origin_key", (secrets.randbits(63),)))

    @staticmethod
    def _op_origin_key(tx: Tx, made: int) -> int:
        return SQLStore._made_once(tx, "origin_key", made)

    def store_id(self) -> str:
        return f"{int(self._transact('store_id', (secrets.randbits(63),))):016x}"

    @staticmethod
    def _op_store_id(tx: Tx, made: int) -> int:
        # A store from before identities gets one the first time a relay of this version opens it.
        return SQLStore._made_once(tx, "store_id", made)

    def new_store_id(self) -> tuple[str | None, str]:
        old, made = self._transact("new_store_id", (secrets.randbits(63),))
        return (None if old is None else f"{int(old):016x}"), f"{int(made):016x}"

    @staticmethod
    def _op_new_store_id(tx: Tx, made: int) -> tuple[int | None, int]:
        row = tx.one("SELECT value FROM relay_meta WHERE key = 'store_id'")
        old = None if row is None else int(row[0])
        while made == old:
            made = secrets.randbits(63)
        tx.run("INSERT INTO relay_meta (key, value) VALUES ('store_id', ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (made,))
        return old, made

    @staticmethod
    def _made_once(tx: Tx, key: str, made: int) -> int:
        """The value of ``key`` in relay_meta: ``made`` if this is the first asking (by any process), else the
        value the first one stored."""
        tx.run("INSERT INTO relay_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, made))
        row = tx.one("SELECT value FROM relay_meta WHERE key = ?", (key,))
        assert row is not None
        return int(row[0])

    def fetch(self, cursors: Sequence[tuple[str, int]], limit: int, max_bytes: int,
              now: float) -> tuple[list[Message], bool]:
        found: list[Message] = []
        total = 0
        with self._read() as tx:
            for mailbox, after in cursors:
                room = limit - len(found)
                if room <= 0 or (found and total >= max_bytes):
                    return found, False
                rows = tx.all("SELECT ref, sender, contents, created, expires, size FROM messages "
                              "WHERE mailbox = ? AND ref > ? AND expires > ? ORDER BY ref LIMIT ?",
                              (mailbox, after, now, room + 1))
                for n, (ref, sender, contents, created, expires, stored_size) in enumerate(rows):
                    blob = bytes(contents)
                    mark = blob[:1]
                    # Raw bytes count as their base64, what a JSON answer carries of them.
                    size = len(blob) if mark not in (RAW_MARK, FILE_MARK) else 4 * ((int(stored_size) + 2) // 3)
                    if n == room or (found and total + size > max_bytes):
                        return found, False
                    total += size
                    if mark == RAW_MARK:
                        message = Message(mailbox, int(ref), sender, "", float(created), float(expires), blob[1:])
                    elif mark == FILE_MARK:
                        message = Message(mailbox, int(ref), sender, "", float(created), float(expires),
                                          stored=blob[1:].decode("ascii"))
                    else:
                        message = Message(mailbox, int(ref), sender, blob.decode("utf-8"), float(created),
                                          float(expires))
                    found.append(message)
        return found, True

    # -- content files (relay/parts.py): which messages name one -------------------------------------------

    _FILE_ROWS = "length(contents) <= 64 AND substr(contents, 1, 1) = ?"  # the length first: no large value read

    def part_files(self, limit: int = 100_000) -> list[tuple[str, int, str]]:
        """(mailbox, ref, file name) of the messages kept in content files."""
        with self._read() as tx:
            rows = tx.all("SELECT mailbox, ref, contents FROM messages WHERE " + self._FILE_ROWS + " LIMIT ?",
                          (FILE_MARK, limit))
        return [(str(m), int(r), bytes(c)[1:].decode("ascii")) for m, r, c in rows]

    def next_ref(self, mailbox: str) -> int:
        with self._read() as tx:
            row = tx.one("SELECT next_ref FROM mailboxes WHERE mailbox = ?", (mailbox,))
            if row is None:
                row = tx.one("SELECT value FROM relay_meta WHERE key = 'ref_floor'")
        return int(row[0]) if row else 1

    def ack(self, mailbox: str, through: int | None, refs: Sequence[int], now: float,
            gone: list[str] | None = None) -> int:
        return self._deleting("ack", (mailbox, through, tuple(refs), now), mailbox, gone)

    def ack_cursors(self, cursors: Sequence[tuple[str, int]], now: float, gone: list[str] | None = None) -> int:
        """Delete everything up to each cursor, in one transaction."""
        cursors = sorted((m, c) for m, c in cursors if c > 0)
        if not cursors:
            return 0
        return self._deleting("ack_cursors", (cursors, now), cursors[0][0], gone)

    def _deleting(self, name: str, args: tuple, key: str, gone: list[str] | None) -> int:
        """A deleting operation's count; the names of the content files it deleted added to ``gone``."""
        count, files = self._transact(name, args, key)
        if gone is not None:
            gone += files
        return int(count)

    def _op_ack(self, tx: Tx, mailbox: str, through: int | None, refs: tuple[int, ...],
                now: float) -> tuple[int, list[str]]:
        gone: list[str] = []
        return self._delete(tx, mailbox, through, refs, now, gone), gone

    def _op_ack_cursors(self, tx: Tx, cursors: list[tuple[str, int]], now: float) -> tuple[int, list[str]]:
        gone: list[str] = []
        return sum(self._delete(tx, m, c, (), now, gone) for m, c in cursors), gone

    # What a deletion returns of each message: its size and whose it was, and its content file's name if it has
    # one (relay/parts.py; the length first, so no large value is read).
    _DELETED = "RETURNING size, origin, block, CASE WHEN length(contents) <= 64 AND substr(contents, 1, 1) = ? " \
               "THEN contents END"

    def _delete(self, tx: Tx, mailbox: str, through: int | None, refs: Sequence[int], now: float,
                gone: list[str]) -> int:
        # Messages first, then the mailbox's counters, and only if something went: a poll that
        # acknowledges nothing new writes nothing (no lock, no sync). The names of the content files of what
        # went are added to ``gone``, from the deletion itself: exactly what this commit removes.
        rows: list[tuple] = []
        if through is not None:
            rows += tx.all("DELETE FROM messages WHERE mailbox = ? AND ref <= ? " + self._DELETED,
                           (mailbox, through, FILE_MARK))
        if refs:
            marks = ", ".join("?" * len(refs))
            rows += tx.all(f"DELETE FROM messages WHERE mailbox = ? AND ref IN ({marks}) " + self._DELETED,
                           (mailbox, *refs, FILE_MARK))
        self._deleted(tx, mailbox, rows, now, gone)
        return len(rows)

    @classmethod
    def _deleted(cls, tx: Tx, mailbox: str, rows: list[tuple], now: float, gone: list[str]) -> None:
        """After a deletion ``... RETURNING`` :attr:`_DELETED`: its messages taken off the counts, and the names of
        their content files added to ``gone`` (what this commit removes, from the deletion itself)."""
        cls._uncount(tx, mailbox, [row[:3] for row in rows], now)
        gone += [bytes(row[3])[1:].decode("ascii") for row in rows if row[3] is not None]

    @staticmethod
    def _uncount(tx: Tx, mailbox: str, sizes: list[tuple], now: float) -> None:
        """Take deleted messages, as (size, origin, block) rows, off their mailbox's, origins' and blocks'
        counts."""
        if sizes:
            tx.run("UPDATE mailboxes SET count = count - ?, bytes = bytes - ?, touched = ? WHERE mailbox = ?",
                   (len(sizes), sum(int(s[0]) for s in sizes), now, mailbox))
            freed: dict[str, int] = {}
            for size, *whose in sizes:
                for who in whose:
                    if who:  # messages stored before origins (or blocks) were counted have none
                        freed[who] = freed.get(who, 0) + int(size) + MESSAGE_OVERHEAD
            for origin in sorted(freed):
                tx.run("UPDATE origins SET bytes = bytes - ? WHERE origin = ?", (freed[origin], origin))

    # -- presence ---------------------------------------------------------------------

    def announce(self, handle: str, token_hash: bytes, now: float, expires_at: float, origin: str = "",
                 block: str = "", limits: Limits | None = None) -> Presence | None:
        return self._transact("announce", (handle, token_hash, now, expires_at, origin, block, limits))

    def _op_announce(self, tx: Tx, handle: str, token_hash: bytes, now: float, expires_at: float, origin: str,
                     block: str, limits: Limits | None) -> Presence | None:
        if limits is not None:
            live = tx.one("SELECT token_hash FROM presence WHERE handle = ? AND expires > ?" + self.LOCK,
                          (handle, now))
            if live is None:  # a new claim (a renewal never counts): within each cap?
                self._presence_room(tx, now, origin, block, limits)
        # One upsert: a live handle is only renewed under its own token.
        row = tx.one(
            "INSERT INTO presence (handle, token_hash, since, expires, origin, block) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (handle) DO UPDATE SET "
            "since = CASE WHEN presence.expires > ? THEN presence.since ELSE excluded.since END, "
            "token_hash = excluded.token_hash, expires = excluded.expires, "
            # A renewal keeps the handle counted where it was claimed: renewing from another address
            # would move it off the first one's cap, which could then claim more (an outside review).
            "origin = CASE WHEN presence.expires > ? THEN presence.origin ELSE excluded.origin END, "
            "block = CASE WHEN presence.expires > ? THEN presence.block ELSE excluded.block END "
            "WHERE presence.expires <= ? OR presence.token_hash = excluded.token_hash "
            "RETURNING since",
            (handle, token_hash, now, expires_at, origin, block, now, now, now, now))
        return None if row is None else Presence(handle, float(row[0]), expires_at)

    @staticmethod
    def _presence_room(tx: Tx, now: float, origin: str, block: str, limits: Limits) -> None:
        """Raise PresenceQuota if one more live handle would pass a presence cap."""
        checks = [("origin", origin, limits.origin_presence), ("block", block, limits.block_presence)]
        for column, who, cap in checks:
            if who and cap:
                row = tx.one(f"SELECT count(*) FROM presence WHERE {column} = ? AND expires > ?", (who, now))
                if row is not None and int(row[0]) >= cap:
                    raise PresenceQuota()
        if limits.max_presence:
            # Expired rows count until the next sweep (a minute): cheaper than a range count, and errs safe.
            row = tx.one("SELECT count(*) FROM presence")
            if row is not None and int(row[0]) >= limits.max_presence:
                raise PresenceQuota()

    def withdraw(self, handle: str, token_hash: bytes, now: float) -> bool | None:
        return self._transact("withdraw", (handle, token_hash, now))

    def _op_withdraw(self, tx: Tx, handle: str, token_hash: bytes, now: float) -> bool | None:
        row = tx.one("SELECT token_hash FROM presence WHERE handle = ? AND expires > ?" + self.LOCK, (handle, now))
        if row is None:
            return None
        if bytes(row[0]) != token_hash:
            return False
        tx.run("DELETE FROM presence WHERE handle = ?", (handle,))
        return True

    def online(self, now: float, limit: int) -> list[Presence]:
        with self._read() as tx:
            rows = tx.all("SELECT handle, since, expires FROM presence WHERE expires > ? ORDER BY handle LIMIT ?",
                          (now, limit))
        return [Presence(h, float(s), float(e)) for h, s, e in rows]

    # -- expiry -----------------------------------------------------------------------

    def sweep(self, now: float, idle_before: float, gone: list[str] | None = None) -> dict[str, int]:
        counts = {"messages": 0, "ids": 0, "presence": 0, "mailboxes": 0}
        with self._read() as tx:
            expired = [r[0] for r in tx.all("SELECT DISTINCT mailbox FROM messages WHERE expires <= ? LIMIT ?",
                                             (now, SWEEP_MAILBOXES))]
        for mailbox in expired:
            # One mailbox per transaction, like an acknowledgement.
            counts["messages"] += self._deleting("expire", (mailbox, now), mailbox, gone)
        counts["ids"], counts["presence"], counts["mailboxes"] = self._transact("forget", (now, idle_before))
        return counts

    def _op_expire(self, tx: Tx, mailbox: str, now: float) -> tuple[int, list[str]]:
        rows = tx.all("DELETE FROM messages WHERE mailbox = ? AND expires <= ? " + self._DELETED,
                      (mailbox, now, FILE_MARK))
        gone: list[str] = []
        self._deleted(tx, mailbox, rows, now, gone)
        return len(rows), gone

    def _op_forget(self, tx: Tx, now: float, idle_before: float) -> tuple[int, int, int]:
        # Counted through RETURNING: rowcounts are not known yet in PostgreSQL's pipeline mode.
        ids = len(tx.all("DELETE FROM sent_ids WHERE expires <= ? RETURNING 1", (now,)))
        presence = len(tx.all("DELETE FROM presence WHERE expires <= ? RETURNING 1", (now,)))
        floor = tx.one("SELECT value FROM relay_meta WHERE key = 'ref_floor'" + self.LOCK)
        forgotten = tx.all("DELETE FROM mailboxes WHERE count = 0 AND touched <= ? RETURNING next_ref",
                           (idle_before,))
        if forgotten:
            top = max([int(floor[0]) if floor else 1] + [int(r[0]) for r in forgotten])
            tx.run("UPDATE relay_meta SET value = ? WHERE key = 'ref_floor'", (top,))
        # An address with nothing stored and no recent new mailbox is forgotten.
        tx.run("DELETE FROM origins WHERE bytes <= 0 AND window_start <= ?", (idle_before,))
        return ids, presence, len(forgotten)
