"""The shared store: PostgreSQL through psycopg 3, for several relay processes.

Every process keeps a small pool of connections and one more that LISTENs:
a send queues ``NOTIFY otc_relay, '<mailbox>'`` in its transaction, so long
polls in every process wake when the commit lands. Commits are synchronous
(``synchronous_commit = on`` for our sessions whatever the server default),
so a ref is only answered once the message is durable.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from relay.errors import AddressQuota, MailboxFull, RelayError, StoreError, TooManyMailboxes, Unavailable
from relay.storage import FILE_MARK, MESSAGE_OVERHEAD, Sent, schema
from relay.storage.sql import Op, Operation, SQLStore, run_batch

log = logging.getLogger("otc.relay")

CHANNEL = "otc_relay"
# pg_advisory_xact_lock key for schema upgrades (any fixed number; ours spells "otc-rely").
UPGRADE_LOCK = 0x6F74632D72656C79
POOL_WAIT_S = 30.0
CONNECT_TIMEOUT_S = 10
#: Runs of a batch the server aborts (deadlock, serialization failure) before it fails.
COMMIT_ATTEMPTS = 5
RETRY_JITTER_MS = 10  # the most a run waits before the next, times the runs so far
#: The operations a batch runs in schema.BATCH_FUNCTION (one round trip for a run of them); the others run as
#: statements, each under its savepoint.
IN_FUNCTION = frozenset({"send", "ack", "ack_cursors"})
# The refusals the function returns as codes.
REFUSALS: dict[str, type[RelayError]] = {"full": MailboxFull, "quota": AddressQuota, "mailboxes": TooManyMailboxes}
# Its call: every argument cast, so psycopg's choice of array types (int2[] for small numbers) does not matter.
_CALL = (f"SELECT * FROM {schema.BATCH_FUNCTION}(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[], "
         "%s::float8[], %s::float8[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::bigint[], %s::bigint[], "
         "%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::float8[], %s::bigint[], %s::int[], "
         "%s::bigint[], %s, %s, %s)")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError("A PostgreSQL store needs psycopg 3: pipx install --force 'onetimechat[postgres]'.") from None
    return psycopg


class _Tx:
    __slots__ = ("cur",)
    _converted: dict[str, str] = {}

    def __init__(self, cur: Any) -> None:
        self.cur = cur

    @classmethod
    def _sql(cls, sql: str) -> str:
        # Statements are written with '?' (sqlite3's style); psycopg takes %s.
        out = cls._converted.get(sql)
        if out is None:
            out = cls._converted[sql] = sql.replace("?", "%s")
        return out

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.cur.execute(self._sql(sql), params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.cur.execute(self._sql(sql), params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.cur.execute(self._sql(sql), params).rowcount


class PostgresStore(SQLStore):
    kind = "postgresql"
    LOCK = " FOR UPDATE"
    SHARE = " FOR SHARE"
    LOCK_MAILBOX = " FOR UPDATE OF m"

    def __init__(self, conninfo: str, pool_size: int = 8, *, alone: bool = False) -> None:
        self._pg = _psycopg()
        self._conninfo = conninfo
        self._idle: list[Any] = []
        self._pool_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, pool_size))
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None
        self._init_group_commit()
        try:
            conn = self._connect()
        except self._pg.Error as exc:
            raise StoreError(f"Cannot connect to the PostgreSQL store: {_first_line(exc)}") from None
        try:
            if alone:
                self._check_alone(conn)
            self.found_version = self._upgrade(conn)
        except BaseException:
            conn.close()
            raise
        self._idle.append(conn)

    @staticmethod
    def _check_alone(conn: Any) -> None:
        """For a store opened alone: the database holds a relay store, and no relay process is connected to it
        (relays name their connections otc-relay and otc-relay-listen). A relay starting after this check is not
        held back: the operator's command says to stop them first, and the check catches the ones forgotten."""
        if conn.execute("SELECT to_regclass('relay_meta')").fetchone()[0] is None:
            raise StoreError("No relay store in this PostgreSQL database (it holds no relay's tables).")
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND application_name LIKE 'otc-relay%%' AND pid <> pg_backend_pid()").fetchone()
        if row[0]:
            raise StoreError(f"{row[0]} relay connection{'s are' if row[0] != 1 else ' is'} open to this store: "
                             "stop every relay process of it first.")

    def _connect(self) -> Any:
        conn = self._pg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                application_name="otc-relay")
        conn.execute("SET synchronous_commit = on")
        return conn

    def _upgrade(self, conn: Any) -> int:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (UPGRADE_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS relay_schema (version integer NOT NULL)")
            row = conn.execute("SELECT version FROM relay_schema").fetchone()
            if row is None:
                conn.execute("INSERT INTO relay_schema (version) VALUES (0)")
            found = int(row[0]) if row else 0
            if found > schema.LATEST:
                raise StoreError(schema.too_new(found))
            for step in range(found, schema.LATEST):
                for statement in schema.statements(schema.STEPS[step]["postgresql"]):
                    conn.execute(statement)
                conn.execute("UPDATE relay_schema SET version = %s", (step + 1,))
            body = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = %s",
                                (schema.BATCH_FUNCTION,)).fetchone()
            if body is None or body[0] != schema.BATCH_BODY:
                conn.execute(schema.batch_function())
        return found

    # -- connections ------------------------------------------------------------------

    @contextlib.contextmanager
    def _conn(self) -> Iterator[Any]:
        if self._closed.is_set() or not self._slots.acquire(timeout=POOL_WAIT_S):
            raise Unavailable()
        conn = None
        try:
            with self._pool_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is not None and conn.closed:
                conn = None
            if conn is None:
                conn = self._connect()
            yield conn
        except (self._pg.OperationalError, self._pg.errors.DeadlockDetected,
                self._pg.errors.SerializationFailure) as exc:
            # Connection lost, server restarting, or a transaction the server chose to abort.
            log.warning("store unavailable: %s", type(exc).__name__)
            if conn is not None and (conn.closed or isinstance(exc, self._pg.OperationalError)):
                conn.close()
                conn = None
            raise Unavailable() from None
        finally:
            if conn is not None:
                with self._pool_lock:
                    if self._closed.is_set() or conn.closed:
                        conn.close()
                    else:
                        self._idle.append(conn)
            self._slots.release()

    def _commit(self, batch: list[Op]) -> None:
        # A batch the server aborts to end a deadlock (another relay process's batch locked, in another order,
        # mailboxes this one needs: an acknowledgement of several mailboxes locks them where its first one falls
        # in the batch) or a serialization failure kept nothing: it runs again, up to COMMIT_ATTEMPTS times in
        # all, and only then fails (503, as any store failure). Review relay-s31 R6.
        with self._conn() as conn:
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                try:
                    self._commit_once(conn, batch)
                    return
                except (self._pg.errors.DeadlockDetected, self._pg.errors.SerializationFailure) as exc:
                    if attempt == COMMIT_ATTEMPTS or conn.closed:
                        raise
                    log.info("store: a batch the server aborted (%s) runs again", type(exc).__name__)
                    for op in batch:
                        op.value, op.error = None, None
                    # A moment apart, at random, so the batch it collided with (likely run again too) goes first.
                    time.sleep(secrets.randbelow(RETRY_JITTER_MS * attempt + 1) / 1000)

    @staticmethod
    def _commit_once(conn: Any, batch: list[Op]) -> None:
        # Each run of sends and deletions is one call of the batch function (one round trip); the other
        # operations go as statements in pipeline mode, where those whose results are not read (savepoints,
        # writes) travel with the next one that is. The commit is one more round trip.
        with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
            tx = _Tx(cur)
            run: list[Op] = []
            for op in batch:
                if isinstance(op.fn, Operation) and op.fn.name in IN_FUNCTION:
                    run.append(op)
                    continue
                if run:
                    _run_in_function(cur, run)
                    run = []
                run_batch(cur.execute, tx, [op])
            if run:
                _run_in_function(cur, run)

    @contextlib.contextmanager
    def _read(self) -> Iterator[_Tx]:
        with self._conn() as conn, conn.cursor() as cur:
            yield _Tx(cur)

    def _after_send(self, tx: Any, mailbox: str, tag: str) -> int | None:
        # Delivered at commit to every listening relay process; the sending one (``tag``: under --workers N, the
        # worker that asked the writer process for the send) skips its own.
        tx.run("SELECT pg_notify(?, ?)", (CHANNEL, f"{tag} {mailbox}"))
        return None

    # -- watching other processes -------------------------------------------------------

    def watch(self, changed: Callable[[str], None], unknown: Callable[[], None]) -> None:
        self._watcher = threading.Thread(target=self._listen, args=(changed, unknown),
                                         name="otc-relay-pg-listen", daemon=True)
        self._watcher.start()

    def _listen(self, changed: Callable[[str], None], unknown: Callable[[], None]) -> None:
        while not self._closed.is_set():
            try:
                with self._pg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                      application_name="otc-relay-listen") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    unknown()  # notifications sent while we were not listening are lost
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=0.5):
                            if self._closed.is_set():
                                break
                            sender, _, mailbox = note.payload.partition(" ")
                            if sender != self._tag:
                                changed(mailbox)
            except self._pg.Error as exc:
                log.warning("store listener: %s; reconnecting", type(exc).__name__)
                self._closed.wait(1.0)

    def close(self) -> None:
        self._closed.set()
        self._close_writer()
        if self._watcher is not None:
            if self._watcher.is_alive() and self._idle:
                # Wake the listener now rather than at its next timeout (pool connections notify too).
                with contextlib.suppress(self._pg.Error):
                    self._idle[-1].execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            self._watcher.join(timeout=5)
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _run_in_function(cur: Any, run: list[Op]) -> None:
    """Run ``run`` (sends and deletions, IN_FUNCTION) in one call of schema.BATCH_FUNCTION: one round trip, each
    send in its own subtransaction; each Op gets the value or refusal its ``_op_<name>`` would have given."""
    columns: list[list[Any]] = [[] for _ in range(20)]
    owners: list[int] = []  # the index in ``run`` of each element (ack_cursors makes one per cursor)

    def element(kind: str, *values: Any) -> None:
        for column, value in zip(columns, (kind, *values), strict=True):
            column.append(value)

    refs: list[int] = []
    names: list[str] = []
    for n, op in enumerate(run):
        assert isinstance(op.fn, Operation)
        name, args = op.fn.name, op.fn.args
        names.append(name)
        if name == "send":
            mailbox, sender, contents, client_id, now, expires_at, limits, origin, block, size, tag = args
            element("s", mailbox, sender, contents, client_id, now, expires_at, origin, block, size, tag,
                    limits.max_messages, limits.max_bytes, limits.origin_max_bytes, limits.block_max_bytes,
                    limits.origin_new_mailboxes, limits.block_new_mailboxes, limits.new_mailbox_window, None, 0)
            owners.append(n)
            continue
        deletions = [(args[0], args[1], args[2])] if name == "ack" else [(m, c, ()) for m, c in args[0]]
        now = args[-1]
        for mailbox, through, some in deletions:
            element("d", mailbox, None, None, None, now, *[None] * 12, through, len(some))
            refs += some
            owners.append(n)
    rows = cur.execute(_CALL, (*columns, refs, CHANNEL, MESSAGE_OVERHEAD, FILE_MARK)).fetchall()
    assert len(rows) == len(owners)
    deleted: dict[int, tuple[int, list[str]]] = {}
    for n, (code, ref, expires, duplicate, count, files) in zip(owners, rows, strict=True):
        op = run[n]
        if code:
            op.error = REFUSALS[code]()
        elif names[n] == "send":
            op.value = Sent(int(ref), float(expires), duplicate=bool(duplicate)), None
        else:
            total, gone = deleted.setdefault(n, (0, []))
            gone += [bytes(f)[1:].decode("ascii") for f in files]
            deleted[n] = total + int(count), gone
    for n, value in deleted.items():
        run[n].value = value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
