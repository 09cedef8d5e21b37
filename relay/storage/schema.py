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


# Code, not data: replaced (CREATE OR REPLACE) whenever it differs, at every start, under the upgrade lock, and
# never a version step, so relays of an older version still open the store. ``otc_relay_batch`` runs a batch's
# sends and deletions (relay/storage/postgres.py) in one round trip, each send in its own exception block (a
# subtransaction: a refusal undoes only its own writes, as the savepoint per operation does; a deletion refuses
# nothing and needs none); the statements are relay/storage/sql.py's ``_op_send`` and ``_delete``, in the same
# order. Element kinds: 's' a send, 'd' a deletion (ack, ack_cursors). A refusal is returned as its code, never
# raised; any other error fails the batch.
BATCH_FUNCTION = "otc_relay_batch"
BATCH_ARGS = ("a_kind text[], a_mailbox text[], a_sender text[], a_contents bytea[], a_client_id text[], "
              "a_now float8[], a_expires float8[], a_origin text[], a_block text[], a_size bigint[], a_tag text[], "
              "a_max_messages bigint[], a_max_bytes bigint[], a_origin_max_bytes bigint[], a_block_max_bytes bigint[], "
              "a_origin_new_mailboxes bigint[], a_block_new_mailboxes bigint[], a_new_mailbox_window float8[], "
              "a_through bigint[], a_nrefs int[], a_refs bigint[], a_channel text, a_overhead bigint, "
              "a_file_mark bytea")
BATCH_BODY = r"""
DECLARE
    i int;
    first_ref int := 1;
    row_ record;
    made bigint;
    used bigint;
    floor_ bigint;
    opened_before float8;
    who text;
    cap bigint;
    total bigint;
    amount bigint;
    g_sizes bigint[];
    g_origins text[];
    g_blocks text[];
BEGIN
    FOR i IN 1 .. coalesce(array_length(a_kind, 1), 0) LOOP
        r_code := ''; r_ref := NULL; r_expires := NULL; r_duplicate := false; r_n := 0; r_files := '{}';
        IF a_kind[i] = 's' THEN
            BEGIN
                SELECT m.next_ref, m.count, m.bytes, s.ref AS seen_ref, s.expires AS seen_expires INTO row_
                    FROM mailboxes m LEFT JOIN sent_ids s ON s.mailbox = m.mailbox AND s.client_id = a_client_id[i]
                    WHERE m.mailbox = a_mailbox[i] FOR UPDATE OF m;
                IF NOT FOUND THEN
                    -- Under a share lock: a sweep forgetting mailboxes raises the floor under an exclusive one.
                    SELECT value INTO floor_ FROM relay_meta WHERE key = 'ref_floor' FOR SHARE;
                    INSERT INTO mailboxes (mailbox, next_ref, count, bytes, touched)
                        VALUES (a_mailbox[i], coalesce(floor_, 1), 0, 0, a_now[i]) ON CONFLICT (mailbox) DO NOTHING;
                    opened_before := a_now[i] - a_new_mailbox_window[i];
                    FOR who, cap IN VALUES (a_origin[i], a_origin_new_mailboxes[i]),
                                           (a_block[i], a_block_new_mailboxes[i]) LOOP
                        CONTINUE WHEN who = '' OR cap = 0;
                        INSERT INTO origins AS o (origin, bytes, new_mailboxes, window_start)
                            VALUES (who, 0, 1, a_now[i])
                            ON CONFLICT (origin) DO UPDATE SET
                            new_mailboxes = CASE WHEN o.window_start <= opened_before THEN 1
                                            ELSE o.new_mailboxes + 1 END,
                            window_start = CASE WHEN o.window_start <= opened_before THEN excluded.window_start
                                           ELSE o.window_start END
                            RETURNING o.new_mailboxes INTO made;
                        IF made > cap THEN
                            RAISE EXCEPTION USING ERRCODE = 'OTC01', MESSAGE = 'mailboxes';
                        END IF;
                    END LOOP;
                    SELECT m.next_ref, m.count, m.bytes, s.ref AS seen_ref, s.expires AS seen_expires INTO row_
                        FROM mailboxes m LEFT JOIN sent_ids s ON s.mailbox = m.mailbox AND s.client_id = a_client_id[i]
                        WHERE m.mailbox = a_mailbox[i] FOR UPDATE OF m;
                END IF;
                IF row_.seen_ref IS NOT NULL THEN
                    r_ref := row_.seen_ref; r_expires := row_.seen_expires; r_duplicate := true;
                ELSE
                    IF row_.count + 1 > a_max_messages[i] OR row_.bytes + a_size[i] > a_max_bytes[i] THEN
                        RAISE EXCEPTION USING ERRCODE = 'OTC01', MESSAGE = 'full';
                    END IF;
                    FOR who, cap IN VALUES (a_origin[i], a_origin_max_bytes[i]), (a_block[i], a_block_max_bytes[i])
                    LOOP
                        CONTINUE WHEN who = '';
                        INSERT INTO origins AS o (origin, bytes, new_mailboxes, window_start)
                            VALUES (who, a_size[i] + a_overhead, 0, a_now[i])
                            ON CONFLICT (origin) DO UPDATE SET bytes = o.bytes + excluded.bytes
                            RETURNING o.bytes INTO used;
                        IF cap <> 0 AND used > cap THEN
                            RAISE EXCEPTION USING ERRCODE = 'OTC01', MESSAGE = 'quota';
                        END IF;
                    END LOOP;
                    UPDATE mailboxes SET next_ref = row_.next_ref + 1, count = count + 1, bytes = bytes + a_size[i],
                        touched = a_now[i] WHERE mailbox = a_mailbox[i];
                    INSERT INTO messages (mailbox, ref, sender, contents, size, created, expires, origin, block)
                        VALUES (a_mailbox[i], row_.next_ref, a_sender[i], a_contents[i], a_size[i], a_now[i],
                                a_expires[i], a_origin[i], a_block[i]);
                    PERFORM pg_notify(a_channel, a_tag[i] || ' ' || a_mailbox[i]);
                    IF a_client_id[i] IS NOT NULL THEN
                        INSERT INTO sent_ids (mailbox, client_id, ref, expires)
                            VALUES (a_mailbox[i], a_client_id[i], row_.next_ref, a_expires[i]);
                    END IF;
                    r_ref := row_.next_ref; r_expires := a_expires[i];
                END IF;
            EXCEPTION WHEN SQLSTATE 'OTC01' THEN
                r_code := SQLERRM; r_ref := NULL; r_expires := NULL; r_duplicate := false; r_n := 0; r_files := '{}';
            END;
        ELSE
            -- A deletion: what went is taken off the counts, and its content files are named. It refuses
            -- nothing (any error fails the whole batch), so it needs no subtransaction.
            WITH gone AS (DELETE FROM messages WHERE mailbox = a_mailbox[i]
                          AND (ref <= a_through[i] OR ref = ANY (a_refs[first_ref : first_ref + a_nrefs[i] - 1]))
                          RETURNING size, origin, block,
                          CASE WHEN length(contents) <= 64 AND substr(contents, 1, 1) = a_file_mark
                               THEN contents END AS file)
            SELECT count(*), coalesce(sum(size), 0), array_agg(size), array_agg(origin), array_agg(block),
                   coalesce(array_agg(file) FILTER (WHERE file IS NOT NULL), '{}')
                INTO r_n, total, g_sizes, g_origins, g_blocks, r_files FROM gone;
            IF r_n > 0 THEN
                UPDATE mailboxes SET count = count - r_n, bytes = bytes - total, touched = a_now[i]
                    WHERE mailbox = a_mailbox[i];
                -- Credited in the order sql.py's _uncount credits (sorted by code point).
                FOR who, amount IN
                    SELECT w, sum(s + a_overhead) FROM (
                        SELECT unnest(g_origins) AS w, unnest(g_sizes) AS s
                        UNION ALL SELECT unnest(g_blocks), unnest(g_sizes)) f
                    WHERE w <> '' GROUP BY w ORDER BY w COLLATE "C"
                LOOP
                    UPDATE origins SET bytes = bytes - amount WHERE origin = who;
                END LOOP;
            END IF;
            first_ref := first_ref + a_nrefs[i];
        END IF;
        RETURN NEXT;
    END LOOP;
END
"""
BATCH_RETURNS = ("TABLE (r_code text, r_ref bigint, r_expires float8, r_duplicate boolean, r_n bigint, "
                 "r_files bytea[])")


def batch_function() -> str:
    """The statement that makes (or replaces) PostgreSQL's ``otc_relay_batch``."""
    return (f"CREATE OR REPLACE FUNCTION {BATCH_FUNCTION}({BATCH_ARGS}) RETURNS {BATCH_RETURNS} "
            f"LANGUAGE plpgsql AS $otc${BATCH_BODY}$otc$")
