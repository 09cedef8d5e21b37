"""The embedded store: one SQLite file in WAL mode, every commit synced.

SQLite has one writer at a time; the group commit (``sql.py``) makes this
process's writers take turns without sleeping in SQLite's busy handler, and
the committing thread of each process (worker processes of one relay, or
relays sharing the file) takes an exclusive ``flock`` on ``<file>-writer``
before it begins: a process waiting for another's commit sleeps in the kernel
and wakes the moment it ends, instead of in SQLite's busy handler, which polls
with sleeps of up to 100 ms. Every commit is synced before anyone is
answered, but after the writers' turn: connections commit with
``synchronous=NORMAL`` (the WAL frames written, not synced, inside the turn)
and the committing thread then calls ``fdatasync`` on the WAL (``_make_durable``).
The WAL is written in order, so that one sync makes every frame before it
durable (another process's too), and frames a checkpoint has copied were
synced by the checkpoint (it syncs the WAL before copying and the database
after). Before, ``synchronous=FULL`` synced inside the turn: the other
processes waited for the sync, and for this thread to win the interpreter
lock back after it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from relay.errors import NotDurable, StoreError, Unavailable
from relay.storage import schema
from relay.storage.sql import Op, SQLStore, run_batch

log = logging.getLogger("otc.relay")

BUSY_TIMEOUT_S = 30.0
# How often the watcher looks for commits by other processes when nothing rings its doorbell, and the least time
# between two looks when it rings (commits under load ring it a thousand times a second). The doorbell: each
# commit ends by writing a byte to the writers' lock file, which every process's watcher watches with inotify
# (Linux; elsewhere the watcher only polls). Not the WAL: it is written before the commit is visible.
WATCH_INTERVAL_S = 0.05
WATCH_GAP_S = 0.003
IN_MODIFY = 0x2


class _Tx:
    __slots__ = ("conn", "last_id")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.last_id: int | None = None

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.conn.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.conn.execute(sql, params)
        self.last_id = cur.lastrowid
        return cur.rowcount


class SQLiteStore(SQLStore):
    kind = "sqlite"

    def __init__(self, path: str | Path, pool_size: int = 8, *, alone: bool = False) -> None:
        self.path = Path(path)
        if alone:
            _check_existing(self.path)
        self._idle: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._init_group_commit()
        self._own_ids: set[int] = set()  # messages this process wrote, which its watcher skips
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None
        self._wal: int | None = None  # the WAL, open to sync it after each commit (_make_durable)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"Cannot create the relay store's folder {self.path.parent}: {exc.strerror}.") from None
        try:
            self._writer = os.open(f"{self.path}-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"Cannot open the relay store's lock file next to {self.path}: {exc.strerror}.") \
                from None
        self._open: int | None = None
        try:
            conn = self._connect()
            try:
                self._open = _hold_open(self.path, alone)
                self.found_version = self._upgrade(conn)
                self._make_durable()
            except BaseException:
                conn.close()
                raise
        except BaseException:
            os.close(self._writer)
            if self._open is not None:
                os.close(self._open)
            raise
        self._idle.append(conn)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_S)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            # Commits are not synced inside the writers' turn: _make_durable syncs the WAL after it, before
            # anyone is answered (docs/relay-protocol.md, "Inside").
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} cannot be used as a relay store ({type(exc).__name__}).") from None
        if str(mode).lower() != "wal":
            conn.close()
            raise StoreError(f"{self.path} cannot be put in WAL mode (it is in {mode} mode).")
        return conn

    @staticmethod
    def _upgrade(conn: sqlite3.Connection) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if found > schema.LATEST:
                raise StoreError(schema.too_new(found))
            for step in range(found, schema.LATEST):
                for statement in schema.statements(schema.STEPS[step]["sqlite"]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {step + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return found

    # -- connections ------------------------------------------------------------------

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        if self._closed.is_set():
            raise Unavailable()
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = self._connect()
            yield conn
        except sqlite3.OperationalError as exc:
            # Locked past the timeout, disk full, I/O error: the request can be retried.
            log.warning("store unavailable: %s", type(exc).__name__)
            raise Unavailable() from None
        finally:
            if conn is not None:
                with self._pool_lock:
                    if self._closed.is_set():
                        conn.close()
                    else:
                        self._idle.append(conn)

    @contextlib.contextmanager
    def _read(self) -> Iterator[_Tx]:
        with self._conn() as conn:
            yield _Tx(conn)

    # -- group commit (SQLStore._transact) ----------------------------------------------

    def _commit(self, batch: list[Op]) -> None:
        try:
            with self._conn() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    run_batch(conn.execute, _Tx(conn), batch)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
        except BaseException:
            self._own_ids.clear()  # their ids may be reused, possibly by another process
            raise

    def _make_durable(self) -> None:
        wal = f"{self.path}-wal"
        try:
            if self._wal is not None and os.fstat(self._wal).st_ino != os.stat(wal).st_ino:
                os.close(self._wal)  # a new WAL (the old one was checkpointed and removed)
                self._wal = None
            if self._wal is None:
                self._wal = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
            os.fdatasync(self._wal)
        except FileNotFoundError:
            # No WAL: everything was checkpointed into the database file, which the checkpoint synced; sync it
            # again all the same.
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("store unavailable: the WAL could not be synced (%s)", exc.strerror)
            raise NotDurable() from None

    @contextlib.contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """The writers' lock across processes (the group commit's leader is this process's one writer)."""
        fcntl.flock(self._writer, fcntl.LOCK_EX)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.pwrite(self._writer, b"\1", 0)  # the other processes' doorbell (see WATCH_GAP_S)
            with contextlib.suppress(OSError):  # closed under a commit: the lock went with the file
                fcntl.flock(self._writer, fcntl.LOCK_UN)

    def disk_path(self) -> str | None:
        return str(self.path.parent)

    def _after_send(self, tx: Any, mailbox: str, tag: str) -> int | None:
        if tag == self._tag and tx.last_id is not None:
            self._own_ids.add(tx.last_id)  # inside the transaction: the watcher can never see it first
        return tx.last_id

    def _sent_here(self, sent_id: int) -> None:
        # A send committed by the writer process: its id is known once answered, which may be after this
        # process's watcher saw the commit (then it woke the mailbox's waiters too, which costs one read).
        self._own_ids.add(sent_id)

    # -- watching other processes ---------------------------------------------------------

    def watch(self, changed: Callable[[str], None], unknown: Callable[[], None]) -> None:
        self._watcher = threading.Thread(target=self._watch, args=(changed, unknown),
                                         name="otc-relay-sqlite-watch", daemon=True)
        self._watcher.start()

    def _watch(self, changed: Callable[[str], None], unknown: Callable[[], None]) -> None:
        # PRAGMA data_version changes when another connection commits; message ids
        # (AUTOINCREMENT, never reused) then say which mailboxes got something. Our own
        # process's sends have already woken their readers.
        bell = self._doorbell()
        try:
            self._watch_loop(changed, unknown, bell)
        finally:
            if bell is not None:
                os.close(bell)

    def _doorbell(self) -> int | None:
        """An inotify descriptor, readable once a commit by any process has ended (it writes to the writers' lock
        file); None where there is none (then the watcher only polls)."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            bell = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        except (OSError, AttributeError):
            return None
        if bell < 0:
            return None
        if libc.inotify_add_watch(bell, os.fsencode(f"{self.path}-writer"), IN_MODIFY) < 0:
            os.close(bell)
            return None
        return bell

    def _wait_for_commit(self, bell: int | None, last: float) -> bool:
        """Wait until another commit may have landed (the doorbell, or the polling interval); False once closed."""
        if bell is None:
            return not self._closed.wait(WATCH_INTERVAL_S)
        gap = last + WATCH_GAP_S - time.monotonic()
        if gap > 0:
            time.sleep(gap)
        select.select([bell], [], [], WATCH_INTERVAL_S)
        with contextlib.suppress(BlockingIOError):
            while os.read(bell, 65536):
                pass
        return not self._closed.is_set()

    def _watch_loop(self, changed: Callable[[str], None], unknown: Callable[[], None], bell: int | None) -> None:
        conn: sqlite3.Connection | None = None
        version, last_id, last = None, 0, 0.0
        while self._wait_for_commit(bell, last):
            last = time.monotonic()
            try:
                if conn is None:
                    conn = self._connect()
                    top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
                    last_id = int(top[0]) if top else 0
                    version = None
                    unknown()
                now_version = conn.execute("PRAGMA data_version").fetchone()[0]
                if now_version == version:
                    continue
                version = now_version
                conn.execute("BEGIN")  # one snapshot for both reads
                try:
                    top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
                    rows = conn.execute("SELECT id, mailbox FROM messages WHERE id > ?", (last_id,)).fetchall()
                finally:
                    conn.execute("COMMIT")
                own = self._own_ids
                for mailbox in {m for i, m in rows if i not in own}:
                    changed(mailbox)
                # Every id up to the sequence's top has been seen or deleted: forget those.
                last_id = max(last_id, int(top[0]) if top else 0)
                if own:
                    self._own_ids = {i for i in list(own) if i > last_id}
            except (sqlite3.Error, StoreError) as exc:
                log.warning("store watcher: %s; retrying", type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._closed.set()
        self._close_writer()
        if self._wal is not None:
            with contextlib.suppress(OSError):
                os.close(self._wal)
            self._wal = None
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        with contextlib.suppress(OSError):
            os.close(self._writer)
        if self._open is not None:
            with contextlib.suppress(OSError):
                os.close(self._open)  # its lock goes with it
            self._open = None


OPEN_WAIT_S = 10.0


def _check_existing(path: Path) -> None:
    """For a store opened alone: ``path`` is a relay store already (read without writing, so nothing is made)."""
    if not path.is_file():
        raise StoreError(f"No relay store at {path}.")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            ours = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'relay_meta'")
            found = ours.fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} cannot be used as a relay store ({type(exc).__name__}).") from None
    if not found:
        raise StoreError(f"No relay store at {path} (the file holds no relay's tables).")


def _hold_open(path: Path, alone: bool) -> int:
    """A descriptor of the store's file with a ``flock`` held while the store is open: shared by every relay
    process, exclusive for a store opened ``alone`` (refused while any relay holds it; relays starting meanwhile
    wait up to OPEN_WAIT_S for it). SQLite's own locks are fcntl locks, which flock locks do not touch."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if alone:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"A relay has the store {path} open: stop every relay process of it first.") \
                    from None
            return fd
        deadline = time.monotonic() + OPEN_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(f"The store {path} is held by an operator's command (otc relay new-identity); "
                                     "try again once it is done.") from None
                time.sleep(0.05)
    except BaseException:
        os.close(fd)
        raise
