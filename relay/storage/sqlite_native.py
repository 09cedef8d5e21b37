"""The group commit's writer connection to SQLite, called with the GIL held (issue 21).

Why: with several worker processes, the writers' lock (``<file>-writer``) is
the relay's bottleneck, and what made it so was not SQLite's work but
Python's GIL. The ``sqlite3`` module releases the GIL around every statement
it runs; the committing thread, holding the writers' lock across processes,
must then win the GIL back from its own process's busy request threads
before its next statement, once per statement, about eight statements per
message. Measured (bench_relay, 2 workers at full load): the leader held the
lock 88% of the time it was not running at all, and a 200-statement batch
that takes 0.6 ms alone took 6 to 16 ms beside one to four busy threads
(the same batch called as here: about 1 ms in every case).

So the batch runs on a connection of its own, opened and driven through
SQLite's C interface by ``ctypes.PyDLL``, which keeps the GIL for the call:
the leader takes the GIL once for the whole batch, runs it (a fraction of a
millisecond) and lets the lock go. Only ``BEGIN IMMEDIATE`` is called
through ``ctypes.CDLL`` (GIL released), since it may wait for a writer that
is not ours (SQLite's busy handler sleeps).

Durability, as ``synchronous=FULL`` gave it: this connection commits with
``synchronous=NORMAL`` (the commit's WAL frames are written, not synced,
inside the lock) and the store then calls ``fdatasync`` on the WAL after
letting the lock go and before anyone is answered. The WAL is one file
written in order: one sync makes every frame written before it durable,
those of a commit by the other process included, and a frame a checkpoint
has copied (and synced: a checkpoint syncs the WAL before copying and the
database after, in NORMAL too) no longer needs the WAL at all. So an answered
write is on disk as before; the syncs of the processes now overlap each
other and everyone's statements, instead of queueing behind the lock.

The library must be the very one ``sqlite3`` uses (SQLite's POSIX locks are
kept per process in the library: a second copy closing a file would drop
the first one's locks): it is the ``libsqlite3`` that ``_sqlite3`` mapped
into this process, checked by version. Where ``_sqlite3`` carries its own copy
(a static build), :func:`native_library` says None and the store keeps the
``sqlite3`` module.
"""

from __future__ import annotations

import ctypes
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

SQLITE_OK, SQLITE_ROW, SQLITE_DONE = 0, 100, 101
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_CONSTRAINT = 5, 6, 19
SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB, SQLITE_NULL = 1, 2, 3, 4, 5
SQLITE_OPEN_READWRITE, SQLITE_OPEN_NOMUTEX = 0x2, 0x8000
_TRANSIENT = ctypes.c_void_p(-1)  # SQLite copies bound values before the call returns
_STATEMENT_CACHE = 128

_library: tuple[Any, Any] | None | bool = False  # (PyDLL, CDLL), None when not usable, False before looking


def _mapped_sqlite() -> str | None:
    """The path of the libsqlite3 mapped into this process (by ``_sqlite3``), if there is one."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(None, 5)[-1] if line.count(" ") >= 5 else ""
                if "/libsqlite3.so" in path:
                    return path
    except OSError:
        pass
    return None


def native_library() -> tuple[Any, Any] | None:
    """(PyDLL, CDLL) of the SQLite library ``sqlite3`` uses, or None (no such shared library, or another
    version than ``sqlite3``'s: then the ``sqlite3`` module writes, as before)."""
    global _library
    if _library is not False:
        return _library  # type: ignore[return-value]
    _library = None
    if os.environ.get("OTC_RELAY_SQLITE_NATIVE", "1") == "0":
        return None
    path = _mapped_sqlite()
    if path is None:
        return None
    try:
        held, released = ctypes.PyDLL(path), ctypes.CDLL(path)
    except OSError:
        return None
    held.sqlite3_libversion.restype = ctypes.c_char_p
    if held.sqlite3_libversion().decode() != sqlite3.sqlite_version:
        return None
    _declare(held)
    _declare(released)
    _library = (held, released)
    return _library


def _declare(lib: Any) -> None:
    p, i, i64, d, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_double, ctypes.c_char_p
    for name, args, res in (
            ("sqlite3_open_v2", [s, ctypes.POINTER(p), i, s], i),
            ("sqlite3_close_v2", [p], i),
            ("sqlite3_extended_result_codes", [p, i], i),
            ("sqlite3_busy_timeout", [p, i], i),
            ("sqlite3_errmsg", [p], s),
            ("sqlite3_exec", [p, s, p, p, p], i),
            ("sqlite3_prepare_v2", [p, s, i, ctypes.POINTER(p), p], i),
            ("sqlite3_finalize", [p], i),
            ("sqlite3_reset", [p], i),
            ("sqlite3_clear_bindings", [p], i),
            ("sqlite3_step", [p], i),
            ("sqlite3_bind_null", [p, i], i),
            ("sqlite3_bind_int64", [p, i, i64], i),
            ("sqlite3_bind_double", [p, i, d], i),
            ("sqlite3_bind_text", [p, i, s, i, p], i),
            ("sqlite3_bind_blob", [p, i, s, i, p], i),
            ("sqlite3_bind_parameter_count", [p], i),
            ("sqlite3_column_count", [p], i),
            ("sqlite3_column_type", [p, i], i),
            ("sqlite3_column_int64", [p, i], i64),
            ("sqlite3_column_double", [p, i], d),
            ("sqlite3_column_blob", [p, i], p),
            ("sqlite3_column_text", [p, i], p),
            ("sqlite3_column_bytes", [p, i], i),
            ("sqlite3_changes", [p], i),
            ("sqlite3_last_insert_rowid", [p], i64),
            ("sqlite3_get_autocommit", [p], i)):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res


class NativeConnection:
    """One connection for the group commit's leader (one thread at a time), GIL held for every call but BEGIN.

    Errors are raised as the ``sqlite3`` module's own classes, so the store treats them alike."""

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        lib = native_library()
        if lib is None:
            raise sqlite3.OperationalError("the native SQLite writer is not available")
        self._lib, self._wait_lib = lib
        handle = ctypes.c_void_p()
        code = self._lib.sqlite3_open_v2(os.fsencode(path), ctypes.byref(handle),
                                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, None)
        self._db = handle
        self._statements: dict[str, ctypes.c_void_p] = {}
        if code != SQLITE_OK:
            try:
                self._raise(code)
            finally:
                self.close()  # SQLite makes a handle even when it cannot open the file
        self._lib.sqlite3_busy_timeout(self._db, int(busy_timeout_s * 1000))
        self.execute("PRAGMA journal_mode=WAL")
        self.execute("PRAGMA synchronous=NORMAL")  # the store syncs the WAL after the commit (see above)
        self.last_id: int | None = None

    # -- the Tx protocol (relay/storage/sql.py) ------------------------------------------------

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        rows = self._run(sql, params, 1)
        return rows[0] if rows else None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._run(sql, params, None)

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._run(sql, params, 0)
        self.last_id = int(self._lib.sqlite3_last_insert_rowid(self._db))
        return int(self._lib.sqlite3_changes(self._db))

    def execute(self, sql: str) -> None:
        """A statement without parameters or rows (SAVEPOINT, COMMIT, PRAGMA ...)."""
        self._run(sql, (), 0)

    def begin(self) -> None:
        """BEGIN IMMEDIATE with the GIL released: it may wait (busy_timeout) for a writer that is not ours."""
        code = self._wait_lib.sqlite3_exec(self._db, b"BEGIN IMMEDIATE", None, None, None)
        if code != SQLITE_OK:
            self._raise(code)

    @property
    def in_transaction(self) -> bool:
        return not self._lib.sqlite3_get_autocommit(self._db)

    # -- inside ---------------------------------------------------------------------------------

    def _statement(self, sql: str) -> ctypes.c_void_p:
        stmt = self._statements.get(sql)
        if stmt is None:
            stmt = ctypes.c_void_p()
            code = self._lib.sqlite3_prepare_v2(self._db, sql.encode("utf-8"), -1, ctypes.byref(stmt), None)
            if code != SQLITE_OK:
                self._raise(code)
            if len(self._statements) >= _STATEMENT_CACHE:
                self._lib.sqlite3_finalize(self._statements.pop(next(iter(self._statements))))
            self._statements[sql] = stmt
        return stmt

    def _run(self, sql: str, params: Sequence[Any], limit: int | None) -> list[tuple]:
        lib = self._lib
        stmt = self._statement(sql)
        try:
            if lib.sqlite3_bind_parameter_count(stmt) != len(params):
                raise sqlite3.ProgrammingError(f"{len(params)} values for a statement that takes "
                                               f"{lib.sqlite3_bind_parameter_count(stmt)}")
            for n, value in enumerate(params, 1):
                self._bind(stmt, n, value)
            rows: list[tuple] = []
            while True:
                code = lib.sqlite3_step(stmt)
                if code == SQLITE_DONE:
                    return rows
                if code != SQLITE_ROW:
                    self._raise(lib.sqlite3_reset(stmt) or code)
                if limit is None or len(rows) < limit:
                    rows.append(self._row(stmt))
        finally:
            lib.sqlite3_reset(stmt)
            lib.sqlite3_clear_bindings(stmt)

    def _bind(self, stmt: ctypes.c_void_p, n: int, value: Any) -> None:
        lib = self._lib
        if value is None:
            code = lib.sqlite3_bind_null(stmt, n)
        elif isinstance(value, int):  # bool too, as sqlite3 binds it
            code = lib.sqlite3_bind_int64(stmt, n, int(value))
        elif isinstance(value, float):
            code = lib.sqlite3_bind_double(stmt, n, value)
        elif isinstance(value, str):
            data = value.encode("utf-8")
            code = lib.sqlite3_bind_text(stmt, n, data, len(data), _TRANSIENT)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            code = lib.sqlite3_bind_blob(stmt, n, data, len(data), _TRANSIENT)
        else:
            raise sqlite3.ProgrammingError(f"cannot bind a {type(value).__name__}")
        if code != SQLITE_OK:
            self._raise(code)

    def _row(self, stmt: ctypes.c_void_p) -> tuple:
        lib = self._lib
        row: list[Any] = []
        for col in range(lib.sqlite3_column_count(stmt)):
            kind = lib.sqlite3_column_type(stmt, col)
            if kind == SQLITE_INTEGER:
                row.append(int(lib.sqlite3_column_int64(stmt, col)))
            elif kind == SQLITE_FLOAT:
                row.append(float(lib.sqlite3_column_double(stmt, col)))
            elif kind == SQLITE_NULL:
                row.append(None)
            elif kind == SQLITE_TEXT:
                ptr = lib.sqlite3_column_text(stmt, col)
                size = lib.sqlite3_column_bytes(stmt, col)
                row.append(ctypes.string_at(ptr, size).decode("utf-8") if size else "")
            else:
                ptr = lib.sqlite3_column_blob(stmt, col)
                size = lib.sqlite3_column_bytes(stmt, col)
                row.append(ctypes.string_at(ptr, size) if size else b"")
        return tuple(row)

    def _raise(self, code: int) -> None:
        message = (self._lib.sqlite3_errmsg(self._db) or b"").decode("utf-8", "replace") if self._db else ""
        primary = code & 0xFF
        if primary == SQLITE_CONSTRAINT:
            raise sqlite3.IntegrityError(message)
        raise sqlite3.OperationalError(message or f"SQLite error {code}")

    def close(self) -> None:
        for stmt in self._statements.values():
            self._lib.sqlite3_finalize(stmt)
        self._statements.clear()
        if self._db:
            self._lib.sqlite3_close_v2(self._db)
            self._db = ctypes.c_void_p()
