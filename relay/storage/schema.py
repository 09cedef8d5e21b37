"""The relay store's versioned schema, for SQLite and PostgreSQL.

``STEPS[n]`` upgrades a store from version ``n`` to ``n + 1``, one script per
dialect. Each step runs in one transaction with the version bump, so an
interrupted upgrade leaves the old version intact; a store newer than this
code is refused rather than guessed at. SQLite keeps the version in
``user_version``; PostgreSQL in the one-row table ``relay_schema``, upgraded
under an advisory lock so relay processes starting together take turns.
"""

from __future__ import annotations

STEPS: list[dict[str, str]] = [
    # 0 -> 1: the first schema.
    {
        "sqlite": """
        CREATE TABLE relay_meta (
            key TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        );
        -- New mailboxes start numbering here: above every ref a forgotten mailbox reached.
        INSERT INTO relay_meta (key, value) VALUES ('ref_floor', 1);
        CREATE TABLE mailboxes (
            mailbox TEXT PRIMARY KEY,
            next_ref INTEGER NOT NULL,
            count INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            touched REAL NOT NULL
        ) WITHOUT ROWID;
        -- id only orders commits for the cross-process watcher.
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            mailbox TEXT NOT NULL,
            ref INTEGER NOT NULL,
            sender TEXT NOT NULL,
            contents BLOB NOT NULL,
            size INTEGER NOT NULL,
            created REAL NOT NULL,
            expires REAL NOT NULL,
            UNIQUE (mailbox, ref)
        );
        CREATE INDEX messages_by_expiry ON messages (expires);
        CREATE TABLE sent_ids (
            mailbox TEXT NOT NULL,
            client_id TEXT NOT NULL,
            ref INTEGER NOT NULL,
            expires REAL NOT NULL,
            PRIMARY KEY (mailbox, client_id)
        ) WITHOUT ROWID;
        CREATE INDEX sent_ids_by_expiry ON sent_ids (expires);
        CREATE TABLE presence (
            handle TEXT PRIMARY KEY,
            token_hash BLOB NOT NULL,
            since REAL NOT NULL,
            expires REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX presence_by_expiry ON presence (expires);
        """,
        "postgresql": """
        CREATE TABLE relay_meta (
            key text PRIMARY KEY,
            value bigint NOT NULL
        );
        INSERT INTO relay_meta (key, value) VALUES ('ref_floor', 1);
        CREATE TABLE mailboxes (
            mailbox text PRIMARY KEY,
            next_ref bigint NOT NULL,
            count bigint NOT NULL DEFAULT 0,
            bytes bigint NOT NULL DEFAULT 0,
            touched double precision NOT NULL
        );
        CREATE TABLE messages (
            mailbox text NOT NULL,
            ref bigint NOT NULL,
            sender text NOT NULL,
            contents bytea NOT NULL,
            size integer NOT NULL,
            created double precision NOT NULL,
            expires double precision NOT NULL,
            PRIMARY KEY (mailbox, ref)
        );
        CREATE INDEX messages_by_expiry ON messages (expires);
        CREATE TABLE sent_ids (
            mailbox text NOT NULL,
            client_id text NOT NULL,
            ref bigint NOT NULL,
            expires double precision NOT NULL,
            PRIMARY KEY (mailbox, client_id)
        );
        CREATE INDEX sent_ids_by_expiry ON sent_ids (expires);
        CREATE TABLE presence (
            handle text PRIMARY KEY,
            token_hash bytea NOT NULL,
            since double precision NOT NULL,
            expires double precision NOT NULL
        );
        CREATE INDEX presence_by_expiry ON presence (expires);
        """,
    },
    # 1 -> 2: what each client address has stored and how many mailboxes it made (a greedy sender, issue 19).
    # ``origin`` is a keyed hash of the address (relay_meta 'origin_key'), never the address itself.
    {
        "sqlite": """
        ALTER TABLE messages ADD COLUMN origin TEXT NOT NULL DEFAULT '';
        CREATE TABLE origins (
            origin TEXT PRIMARY KEY,
            bytes INTEGER NOT NULL DEFAULT 0,
            new_mailboxes INTEGER NOT NULL DEFAULT 0,
            window_start REAL NOT NULL DEFAULT 0
        ) WITHOUT ROWID;
        """,
        "postgresql": """
        ALTER TABLE messages ADD COLUMN origin text NOT NULL DEFAULT '';
        CREATE TABLE origins (
            origin text PRIMARY KEY,
            bytes bigint NOT NULL DEFAULT 0,
            new_mailboxes bigint NOT NULL DEFAULT 0,
            window_start double precision NOT NULL DEFAULT 0
        );
        """,
    },
    # 2 -> 3: IPv6 blocks (issue 19, red team): a message's /48 besides its /64 (``block``, a keyed hash like
    # ``origin``; '' for IPv4), so a subscriber with many /64s shares one aggregate budget; and who announced
    # each presence handle, so live handles are capped per address and per block.
    {
        "sqlite": """
        ALTER TABLE messages ADD COLUMN block TEXT NOT NULL DEFAULT '';
        ALTER TABLE presence ADD COLUMN origin TEXT NOT NULL DEFAULT '';
        ALTER TABLE presence ADD COLUMN block TEXT NOT NULL DEFAULT '';
        CREATE INDEX presence_by_origin ON presence (origin);
        CREATE INDEX presence_by_block ON presence (block);
        """,
        "postgresql": """
        ALTER TABLE messages ADD COLUMN block text NOT NULL DEFAULT '';
        ALTER TABLE presence ADD COLUMN origin text NOT NULL DEFAULT '';
        ALTER TABLE presence ADD COLUMN block text NOT NULL DEFAULT '';
        CREATE INDEX presence_by_origin ON presence (origin);
        CREATE INDEX presence_by_block ON presence (block);
        """,
    },
]

LATEST = len(STEPS)


def statements(script: str) -> list[str]:
    """Split a schema step into statements (comments first, then on ';')."""
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]


def too_new(found: int) -> str:
    return (f"This relay store has schema version {found}, newer than this software understands "
            f"({LATEST}); upgrade One Time Chat.")
