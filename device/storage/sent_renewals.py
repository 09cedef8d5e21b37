"""Renewal packages an authority sent, kept so a lost one can be sent again (issue 22).

A renewal package is what went to the relay: sealed on the renewal pad, it
reveals nothing of the key. Keeping its exact bytes lets the authority post
it again without touching the pad: re-sending never consumes pad bytes and
never puts other content over bytes already used. One settings row per
renewed key (``abe-renewal-sent:<key id>``), sealed under the storage key in
a PIN-locked home (it names the member and its mailbox), written in the
transaction that used the pad, and forgotten once the key's period is over.

All the SQL of this feature is here, apart from the rest of the store.
"""

from __future__ import annotations

import base64
import json
import sqlite3

from device.storage.padstore import PadStore

PREFIX = "abe-renewal-sent:"


def _context(key_id: str) -> bytes:
    return b"abe renewal sent " + key_id.encode()


def keep(store: PadStore, conn: sqlite3.Connection, record: dict) -> None:
    """Keep ``record`` ({key_id (hex), member, mailbox, package, period, ends}) inside the caller's transaction."""
    raw = json.dumps(record, sort_keys=True).encode()
    if store.secrets:
        raw = store.secrets.seal(raw, _context(record["key_id"]))
    store._set_setting(conn, PREFIX + record["key_id"], base64.b64encode(raw).decode())


def load(store: PadStore) -> list[dict]:
    """Every kept record, oldest period first."""
    out = []
    for name, value in store._read("SELECT name, value FROM settings WHERE name LIKE ?", (PREFIX + "%",)):
        raw = base64.b64decode(value)
        if store.secrets:
            raw = store.secrets.open(raw, _context(name[len(PREFIX):]))
        out.append(json.loads(raw))
    return sorted(out, key=lambda r: (r["period"], r["member"]))


def forget(store: PadStore, key_ids: list[str]) -> None:
    if not key_ids:
        return
    with store._transaction() as conn:
        conn.executemany("DELETE FROM settings WHERE name = ?", [(PREFIX + k,) for k in key_ids])
