"""The pad store's versioned SQLite schema.

``STEPS[n]`` upgrades a database from version ``n`` to ``n + 1``; the version
lives in SQLite's ``user_version``. A database newer than this code is refused
rather than guessed at. Each step runs in one transaction with the version
bump, so an interrupted upgrade leaves the old version intact.
"""

from __future__ import annotations

import sqlite3

from device.errors import StoreError

STEPS: list[str] = [
    # 0 -> 1: the first schema.
    """
    CREATE TABLE device (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        name TEXT NOT NULL,
        device_id BLOB NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE contacts (
        name TEXT PRIMARY KEY,
        peer_device_id BLOB NOT NULL UNIQUE,
        created REAL NOT NULL
    );
    CREATE TABLE pads (
        pad_id BLOB PRIMARY KEY CHECK (length(pad_id) = 16),
        contact TEXT NOT NULL REFERENCES contacts(name),
        role TEXT NOT NULL CHECK (role IN ('initiator', 'responder')),
        size INTEGER NOT NULL CHECK (size > 0),
        split INTEGER NOT NULL,
        mailbox_out BLOB NOT NULL,
        mailbox_in BLOB NOT NULL,
        -- Initiator: next free offset, growing up from 0.
        -- Responder: lowest offset used, growing down from size.
        send_next INTEGER NOT NULL,
        send_count INTEGER NOT NULL DEFAULT 0,
        -- How far into the peer's half verified packages reach.
        recv_frontier INTEGER NOT NULL,
        recv_bytes INTEGER NOT NULL DEFAULT 0,
        recv_count INTEGER NOT NULL DEFAULT 0,
        -- 0: plenty left; 1: under 10% of our half; 2: under 1%.
        low_level INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE INDEX pads_by_contact ON pads (contact, created);
    -- Consumed segments of each pad, merged and disjoint (both halves).
    CREATE TABLE consumed (
        pad_id BLOB NOT NULL,
        start INTEGER NOT NULL,
        "end" INTEGER NOT NULL,
        PRIMARY KEY (pad_id, start)
    ) WITHOUT ROWID;
    -- Segments whose bytes must still be overwritten (crash recovery).
    CREATE TABLE pending_wipe (
        pad_id BLOB NOT NULL,
        start INTEGER NOT NULL,
        "end" INTEGER NOT NULL,
        owner TEXT NOT NULL,
        PRIMARY KEY (pad_id, start)
    ) WITHOUT ROWID;
    -- The local event log: never pad bytes, keys or plaintext.
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        event TEXT NOT NULL,
        contact TEXT,
        pad_id BLOB,
        "offset" INTEGER,
        length INTEGER,
        detail TEXT
    );
    """,
    # 1 -> 2: paired laptops (the device RPC) and device settings.
    """
    CREATE TABLE clients (
        client_id BLOB PRIMARY KEY CHECK (length(client_id) = 16),
        name TEXT NOT NULL,
        -- The pairing key (sealed under the storage key in a PIN-locked home):
        -- it authenticates the laptop; it never leaves the device.
        key BLOB NOT NULL,
        last_counter INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        last_used REAL,
        revoked REAL
    );
    CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2 -> 3: attribute-based keys (device/abe, docs/abe.md).
    """
    -- Authorities this device knows: its own (with the master key) and those it holds keys from.
    CREATE TABLE abe_authorities (
        authority_id BLOB PRIMARY KEY CHECK (length(authority_id) = 16),
        name TEXT NOT NULL UNIQUE,
        public_key BLOB NOT NULL,
        -- Only on the authority's own device, sealed in a PIN-locked home; it never leaves the device.
        master_key BLOB,
        created REAL NOT NULL
    );
    -- This device's member keys, sealed in a PIN-locked home; they never leave the device.
    CREATE TABLE abe_keys (
        key_id BLOB PRIMARY KEY CHECK (length(key_id) = 16),
        authority_id BLOB NOT NULL REFERENCES abe_authorities(authority_id),
        attributes TEXT NOT NULL,
        secret BLOB NOT NULL,
        created REAL NOT NULL
    );
    -- What this device, as an authority, issued (never the keys themselves).
    CREATE TABLE abe_issued (
        key_id BLOB PRIMARY KEY CHECK (length(key_id) = 16),
        authority_id BLOB NOT NULL REFERENCES abe_authorities(authority_id),
        member TEXT NOT NULL,
        member_device_id BLOB,
        attributes TEXT NOT NULL,
        how TEXT NOT NULL,
        issued REAL NOT NULL
    );
    """,
    # 3 -> 4: package format v2 (DESIGN.md). Pads made before it have no authentication keys set
    # aside and cannot be converted safely: they are retired (format 1). The store destroys a
    # retired pad's bytes when it next opens. Tag failures are counted per pad, apart from the
    # pad's receive state (a failed tag moves no receive state).
    """
    ALTER TABLE pads ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE tag_failures (
        pad_id BLOB PRIMARY KEY,
        count INTEGER NOT NULL,
        last REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 4 -> 5: ceremonies in person v3 (issue 17). A pad sends only once this device knows its peer holds it
    # too (confirmed: the peer's proof at the end of the ceremony, the next ceremony between the two, or
    # the first valid package from the peer); a granted key is used, and an issued one counted, only once
    # both devices are known to hold the grant. Those from before were confirmed by their ceremony. The
    # fingerprint both screens showed lets the next ceremony match what each side holds.
    """
    ALTER TABLE pads ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE pads ADD COLUMN fingerprint TEXT;
    ALTER TABLE abe_keys ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE abe_keys ADD COLUMN fingerprint TEXT;
    ALTER TABLE abe_issued ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE abe_issued ADD COLUMN fingerprint TEXT;
    """,
    # 5 -> 6: grants settled on proofs (issue 17). The authority keeps no issued key, so it keeps the key's
    # proof key (sealed in a PIN-locked home): the next grant between the two devices proves with it that
    # each holds the grant, instead of taking the other's word. Records from before have none.
    """
    ALTER TABLE abe_issued ADD COLUMN proof_key BLOB;
    """,
    # 6 -> 7: device identities (issue 17). Each device holds an Ed25519 identity key (sealed in a
    # PIN-locked home) and signs every ceremony's transcript with it; a device made from now on has the id
    # SHA-256(label | public key)[:16], so nobody else can give its id. A contact, and an authority a member
    # holds keys from, remembers the identity it was made with: another key giving that id is refused.
    # Devices made before keep their ids (they get a key at their next opening), and a contact made before
    # learns its peer's key at the next ceremony that proves it.
    """
    ALTER TABLE device ADD COLUMN identity BLOB;
    ALTER TABLE contacts ADD COLUMN peer_identity BLOB;
    ALTER TABLE abe_authorities ADD COLUMN device_identity BLOB;
    """,
    # 7 -> 8: key periods and revocation (issue 22). A key is issued for one of its authority's periods (its
    # attribute PERIOD_<n> binds it), valid from ``starts`` to ``ends``; the authority keeps its periods and
    # marks a member's keys revoked (no renewal). Keys from before have no period (NULL).
    """
    CREATE TABLE abe_periods (
        authority_id BLOB NOT NULL,
        period INTEGER NOT NULL CHECK (period > 0),
        starts REAL NOT NULL,
        ends REAL NOT NULL,
        PRIMARY KEY (authority_id, period)
    ) WITHOUT ROWID;
    ALTER TABLE abe_keys ADD COLUMN period INTEGER;
    ALTER TABLE abe_keys ADD COLUMN starts REAL;
    ALTER TABLE abe_keys ADD COLUMN ends REAL;
    ALTER TABLE abe_issued ADD COLUMN period INTEGER;
    ALTER TABLE abe_issued ADD COLUMN starts REAL;
    ALTER TABLE abe_issued ADD COLUMN ends REAL;
    ALTER TABLE abe_issued ADD COLUMN revoked REAL;
    """,
    # 8 -> 9: renewal pads (issue 22, device/abe/renewal.py). A grant also makes a small pad between authority
    # and member, kept with the grant (``key_id``) and confirmed with it; the authority sends renewed keys on
    # it. ``pad`` is sealed in a PIN-locked home and its used bytes are overwritten; ``next`` is the
    # authority's next free offset, or the member's frontier (below it everything is used).
    """
    CREATE TABLE abe_pads (
        pad_id BLOB PRIMARY KEY CHECK (length(pad_id) = 16),
        key_id BLOB NOT NULL,
        authority_id BLOB NOT NULL,
        peer_device_id BLOB,
        role TEXT NOT NULL CHECK (role IN ('authority', 'member')),
        mailbox BLOB NOT NULL,
        size INTEGER NOT NULL,
        pad BLOB NOT NULL,
        next INTEGER NOT NULL,
        confirmed INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    """,
    # 9 -> 10: moving the split (issue 23, docs/pad-lifecycle.md). ``split_epoch`` counts the changes of a pad's
    # split this device has made or taken (a grant applies only at or after the epoch it was made at);
    # ``split_moves`` keeps each request and grant, sent or received: a grant this device gave stays "unseen"
    # until a package from the peer uses its bytes (a grant lost on the way leaves them to nobody).
    """
    ALTER TABLE pads ADD COLUMN split_epoch INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE split_moves (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pad_id BLOB NOT NULL,
        how TEXT NOT NULL CHECK (how IN ('asked', 'requested', 'granted', 'applied')),
        epoch INTEGER,
        old_split INTEGER,
        new_split INTEGER,
        amount INTEGER,
        "offset" INTEGER,
        ts REAL NOT NULL,
        seen REAL
    );
    CREATE INDEX split_moves_by_pad ON split_moves (pad_id, how);
    """,
    # 10 -> 11: the least the peer's split epoch can be, from the grants it sent (each made at an epoch e leaves
    # it at e + 1 or more): a grant of this device's made at an epoch below it can never apply there, so it is
    # not said again (docs/pad-lifecycle.md, step 5).
    """
    ALTER TABLE pads ADD COLUMN peer_epoch INTEGER NOT NULL DEFAULT 0;
    """,
]

LATEST = len(STEPS)


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def upgrade(conn: sqlite3.Connection) -> int:
    """Bring the database to :data:`LATEST`; return the version it had.

    ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = version(conn)
        if found > LATEST:
            raise StoreError(
                f"This device store has schema version {found}, newer than this software "
                f"understands ({LATEST}); upgrade One Time Chat."
            )
        for step in range(found, LATEST):
            for statement in _statements(STEPS[step]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def _statements(script: str) -> list[str]:
    """Split a schema step into statements (comments first, then on ';')."""
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]
