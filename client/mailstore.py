"""What the laptop keeps between runs of send, recv and chat: never plaintext.

One SQLite file per paired device under ``$OTC_CLIENT_HOME/messages/``:

- ``outbox``: packages the relay has not accepted yet (base64 ciphertext, the
  mailbox, an idempotency key), retried until it does;
- ``sent``: which packages went out (pad_id, offset, contact, times) so a
  delivery receipt can be matched to them; no text;
- ``cursors``: per relay and mailbox, the last ref handled for good;
- ``relay_stores``: per relay, the identity of the store those cursors are
  refs of (docs/client.md, "Cursors and the relay's store");
- ``opened``: messages handed to the device and not yet finished, so a run
  that stopped in between knows the device's "replay" for one of them is its
  own earlier attempt, not an attack;
- ``groups``: saved groups of contacts; ``settings``: receipts on or off.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from client.state import client_home, normalise_url

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, relay TEXT NOT NULL, mailbox TEXT NOT NULL, contents TEXT NOT NULL,
    contact TEXT NOT NULL, kind TEXT NOT NULL, pad_id TEXT NOT NULL, offset INTEGER NOT NULL,
    created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS sent (
    pad_id TEXT NOT NULL, offset INTEGER NOT NULL, contact TEXT NOT NULL, created REAL NOT NULL,
    relay_ref INTEGER, delivered REAL, PRIMARY KEY (pad_id, offset));
CREATE TABLE IF NOT EXISTS cursors (
    relay TEXT NOT NULL, mailbox TEXT NOT NULL, after INTEGER NOT NULL, PRIMARY KEY (relay, mailbox));
CREATE TABLE IF NOT EXISTS opened (
    relay TEXT NOT NULL, mailbox TEXT NOT NULL, ref INTEGER NOT NULL, PRIMARY KEY (relay, mailbox, ref));
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, members TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS relay_stores (relay TEXT PRIMARY KEY, store TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS open_failures (
    relay TEXT NOT NULL, mailbox TEXT NOT NULL, ref INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (relay, mailbox, ref));
"""


@dataclass(frozen=True)
class Queued:
    id: str
    relay: str
    mailbox: str
    contents: str
    contact: str
    kind: str
    pad_id: str
    offset: int
    created: float
    attempts: int


@dataclass(frozen=True)
class SentRecord:
    pad_id: str
    offset: int
    contact: str
    created: float
    relay_ref: int | None
    delivered: float | None


class MailStore:
    """The client's message state for one device (thread-safe, and safe across processes)."""

    def __init__(self, device_url: str, home: Path | None = None) -> None:
        digest = hashlib.sha256(normalise_url(device_url).encode()).hexdigest()[:24]
        folder = (home or client_home()) / "messages"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = folder / f"{digest}.db"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.path.chmod(0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        with self._tx() as db:
            row = db.execute("SELECT value FROM settings WHERE name = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO settings VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise RuntimeError("the client's message store is newer than this software")

    @contextmanager
    def _tx(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction, synced; with ``durable=False`` not synced (SQLite's synchronous=NORMAL for it):
        it becomes durable with the next synced commit (the WAL is one append-only file, and that commit's sync
        covers every frame before it), and a power cut may lose it until then."""
        with self._lock:
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- settings and groups ------------------------------------------------------------

    def setting(self, name: str, default: str) -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def set_setting(self, name: str, value: str, durable: bool = True) -> None:
        with self._tx(durable) as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (name, value))

    def update_setting(self, name: str, change: Callable[[str | None], str | None], durable: bool = True) -> None:
        """Read and rewrite one setting in one write transaction, so that no other process's write lands in
        between: ``change`` gets the stored value (None: there is none) and gives the one to store (None: leave
        it as it is)."""
        with self._tx(durable) as db:
            row = db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
            value = change(str(row[0]) if row else None)
            if value is not None:
                db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (name, value))

    def settings_with_prefix(self, prefix: str) -> dict[str, str]:
        """Every setting whose name starts with ``prefix`` (the files being sent and received: client/files.py)."""
        with self._lock:
            rows = self._db.execute("SELECT name, value FROM settings WHERE substr(name, 1, ?) = ?",
                                    (len(prefix), prefix)).fetchall()
        return {str(name): str(value) for name, value in rows}

    def delete_setting(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM settings WHERE name = ?", (name,))

    def groups(self) -> dict[str, list[str]]:
        with self._lock:
            rows = self._db.execute("SELECT name, members FROM groups ORDER BY name").fetchall()
        return {name: members.split(",") for name, members in rows}

    def save_group(self, name: str, members: list[str]) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO groups VALUES (?, ?)", (name, ",".join(members)))

    # -- outgoing -----------------------------------------------------------------------

    def queue(self, item: Queued) -> None:
        """Keep a package until the relay has it (and remember it was sent, for receipts)."""
        with self._tx() as db:
            db.execute("INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (item.id, item.relay, item.mailbox, item.contents, item.contact, item.kind, item.pad_id,
                        item.offset, item.created, item.attempts))
            if item.kind == "text":
                db.execute("INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?, NULL, NULL)",
                           (item.pad_id, item.offset, item.contact, item.created))

    def queued(self) -> list[Queued]:
        """Everything the relay has not taken yet, oldest first, whichever relay it was first meant for."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM outbox ORDER BY created, rowid").fetchall()
        return [Queued(*row) for row in rows]

    def waiting(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def find_queued(self, prefix: str) -> Queued | None:
        """The queued item whose id starts with ``prefix`` (None if none or several)."""
        matches = [item for item in self.queued() if item.id.startswith(prefix.lower())]
        return matches[0] if len(matches) == 1 else None

    def sent(self, item: Queued, ref: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
            db.execute("UPDATE sent SET relay_ref = ? WHERE pad_id = ? AND offset = ?", (ref, item.pad_id, item.offset))

    def drop(self, item: Queued) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (item.id,))

    def attempted(self, item: Queued, relay: str | None = None) -> None:
        """One more failed attempt, at ``relay`` (remembered as where it was last tried)."""
        with self._tx() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1, relay = coalesce(?, relay) WHERE id = ?",
                       (relay, item.id))

    def delivered(self, pad_id: str, offset: int) -> SentRecord | None:
        """Mark a sent message delivered (a receipt came); its record, if this laptop sent it."""
        with self._tx() as db:
            db.execute("UPDATE sent SET delivered = ? WHERE pad_id = ? AND offset = ? AND delivered IS NULL",
                       (time.time(), pad_id, offset))
            row = db.execute("SELECT * FROM sent WHERE pad_id = ? AND offset = ?", (pad_id, offset)).fetchone()
        return SentRecord(*row) if row else None

    # -- incoming -----------------------------------------------------------------------

    def cursors(self, relay: str, mailboxes: list[str]) -> dict[str, int]:
        with self._lock:
            rows = dict(self._db.execute("SELECT mailbox, after FROM cursors WHERE relay = ?", (relay,)).fetchall())
        return {mailbox: int(rows.get(mailbox, 0)) for mailbox in mailboxes}

    def relay_store(self, relay: str) -> str | None:
        """The identity of the relay's store this laptop's cursors there are refs of: None if the relay never
        answered a read (or not since this laptop recorded them), '' if it answered without one (a relay from
        before store identities)."""
        with self._lock:
            row = self._db.execute("SELECT store FROM relay_stores WHERE relay = ?", (relay,)).fetchone()
        return None if row is None else str(row[0])

    def learn_store(self, relay: str, store: str) -> None:
        """Record the relay's store identity, the cursors kept (they are refs of that store: the first read
        that gave it, or a relay upgraded in place, its store the same)."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO relay_stores VALUES (?, ?)", (relay, store))

    def store_changed(self, relay: str, store: str) -> None:
        """The relay's store is another (``store``): its messages are all new to this laptop. Every cursor there
        goes back to 0, with what was kept by ref (opened, failed), and ``store`` is recorded, in one commit."""
        with self._tx() as db:
            for table in ("cursors", "opened", "open_failures"):
                db.execute(f"DELETE FROM {table} WHERE relay = ?", (relay,))  # noqa: S608 - the names above
            db.execute("INSERT OR REPLACE INTO relay_stores VALUES (?, ?)", (relay, store))

    def begin_open(self, relay: str, mailbox: str, ref: int, durable: bool = True) -> bool:
        """Record that a message goes to the device now; True if an earlier run already sent it there.
        ``durable=False``: not synced (a file's part, whose saving syncs it: client/messenger.py)."""
        with self._tx(durable) as db:
            seen = db.execute("SELECT 1 FROM opened WHERE relay = ? AND mailbox = ? AND ref = ?",
                              (relay, mailbox, ref)).fetchone()
            if not seen:
                db.execute("INSERT INTO opened VALUES (?, ?, ?)", (relay, mailbox, ref))
        return seen is not None

    def open_failed(self, relay: str, mailbox: str, ref: int) -> int:
        """Count one more time the device failed to open a message (an internal error); the count so far."""
        with self._tx() as db:
            db.execute("INSERT INTO open_failures VALUES (?, ?, ?, 1) ON CONFLICT (relay, mailbox, ref)"
                       " DO UPDATE SET count = count + 1", (relay, mailbox, ref))
            row = db.execute("SELECT count FROM open_failures WHERE relay = ? AND mailbox = ? AND ref = ?",
                             (relay, mailbox, ref)).fetchone()
        return int(row[0])

    def finish(self, relay: str, mailbox: str, ref: int, receipt: Queued | None = None, durable: bool = True) -> None:
        """A message is handled for good: move the cursor past it (and keep its receipt to send). ``durable=False``:
        not synced (a file's part, saved durably already: lost, the part only comes again, known as saved)."""
        with self._tx(durable) as db:
            if receipt is not None:
                db.execute("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (receipt.id, receipt.relay, receipt.mailbox, receipt.contents, receipt.contact,
                            receipt.kind, receipt.pad_id, receipt.offset, receipt.created, receipt.attempts))
            db.execute("INSERT INTO cursors VALUES (?, ?, ?) ON CONFLICT (relay, mailbox)"
                       " DO UPDATE SET after = max(after, excluded.after)", (relay, mailbox, ref))
            db.execute("DELETE FROM opened WHERE relay = ? AND mailbox = ? AND ref <= ?", (relay, mailbox, ref))
            db.execute("DELETE FROM open_failures WHERE relay = ? AND mailbox = ? AND ref <= ?",
                       (relay, mailbox, ref))
