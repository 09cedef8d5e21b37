"""The paired laptops' table (``clients``, schema step 2): its SQL, for :mod:`device.clients`.

The registry (device/clients.py) decides what a client is and seals its key; these are the statements,
each in one commit, that keep it in the device store.
"""

from __future__ import annotations

import time

from device.storage.padstore import PadStore

_COLUMNS = "client_id, name, key, created, last_used, revoked"


class ClientTable:
    """The ``clients`` table of one device store."""

    def __init__(self, store: PadStore) -> None:
        self.store = store

    def add(self, client_id: bytes, name: str, stored_key: bytes) -> None:
        """Keep a newly paired client (its key as the store keeps it: sealed in a PIN-locked home)."""
        with self.store._transaction() as conn:
            conn.execute(
                "INSERT INTO clients (client_id, name, key, created) VALUES (?, ?, ?, ?)",
                (client_id, name, stored_key, time.time()),
            )
            self.store._log(conn, "client-paired", detail=f"laptop {name} ({client_id.hex()[:8]})")

    def active(self, client_id: bytes) -> tuple | None:
        """The row (client_id, name, key, created, last_used, revoked) of an active (not revoked) client."""
        rows = self.store._read(f"SELECT {_COLUMNS} FROM clients WHERE client_id = ? AND revoked IS NULL",
                                (client_id,))
        return rows[0] if rows else None

    def last_counter(self, client_id: bytes) -> int | None:
        """The last counter accepted from an active client (None: no such client)."""
        rows = self.store._read("SELECT last_counter FROM clients WHERE client_id = ? AND revoked IS NULL",
                                (client_id,))
        return int(rows[0][0] or 0) if rows else None

    def accept_counter(self, client_id: bytes, counter: int, durable: bool = True) -> bool:
        """Record ``counter`` as the client's latest if it is above every earlier one (atomic; durable, or with
        ``durable=False`` once the store's next durable commit or ``make_durable`` runs)."""
        with self.store._transaction(durable=durable) as conn:
            cur = conn.execute(
                "UPDATE clients SET last_counter = ?, last_used = ?"
                " WHERE client_id = ? AND revoked IS NULL AND last_counter < ?",
                (counter, time.time(), client_id, counter),
            )
            return cur.rowcount == 1

    def rows(self) -> list[tuple]:
        """Every client's row, oldest first."""
        return self.store._read(f"SELECT {_COLUMNS} FROM clients ORDER BY created")

    def revoke(self, client_id: bytes, how: str | None = None) -> bool:
        with self.store._transaction() as conn:
            cur = conn.execute(
                "UPDATE clients SET revoked = ? WHERE client_id = ? AND revoked IS NULL", (time.time(), client_id)
            )
            if cur.rowcount:
                self.store._log(conn, "client-revoked",
                                detail=f"client {client_id.hex()[:8]}" + (f", {how}" if how else ""))
            return cur.rowcount == 1
