"""Red team s32, R3: `otc relay new-identity` "refuses an empty PostgreSQL database and a path with no store, and
never creates one" (docs/relay-protocol.md, "Store identity"; README).

The fault is the operator's, the one the refusal is there for: the --db given is not the restored store (the
restore into it failed and left it empty, a typo in the database name of a freshly made database, the wrong
file). The command opens the store with ``open_store``, which brings the schema up to date (makes every relay
table) before ``found_version == 0`` is looked at: the refusal comes after the store was made. The operator,
told "No relay store at ...", runs the command again (or after "fixing" the URL to the same place): this time
there is a store (made by the first run), and it "replaces" an identity on an empty store and says to start the
relay, while the real restored store keeps its old identity. For SQLite, a file of another program (or an empty
file) is turned into a relay store in WAL mode before the refusal.
"""

from __future__ import annotations

import os
import sqlite3

import psycopg

from tests.conftest import otc
from tests.relay_fixtures import postgres_fixture  # noqa: F401 - fixture


def tables_pg(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return sorted(r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall())


def test_an_empty_postgresql_database_is_refused_every_time_and_left_empty(postgres):
    empty = postgres.create_database(f"rt_s32_empty_{os.getpid()}")
    first = otc("relay", "new-identity", "--db", empty)
    assert first.returncode != 0 and "No relay store" in first.stderr.decode()
    made = tables_pg(empty)
    second = otc("relay", "new-identity", "--db", empty)  # the operator tries again
    assert (made, second.returncode) == ([], first.returncode), (
        f"the refused first run made {made}; the second run said: {second.stdout.decode().strip()}")


def test_an_sqlite_file_that_is_no_relay_store_is_refused_and_left_as_it_was(tmp_path):
    other = tmp_path / "notes.db"  # another program's SQLite file, given by mistake
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me as I am')")
    conn.close()
    first = otc("relay", "new-identity", "--db", f"sqlite:///{other}")
    assert first.returncode != 0 and "No relay store" in first.stderr.decode(), first.stderr
    with sqlite3.connect(other) as conn:
        tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    second = otc("relay", "new-identity", "--db", f"sqlite:///{other}")
    assert (tables, mode, second.returncode) == (["notes"], "delete", first.returncode), (
        f"refused, yet the file now holds {tables} in {mode} mode; the second run said: "
        f"{second.stdout.decode().strip()}")


def test_an_empty_file_is_no_store_the_second_time_either(tmp_path):
    empty = tmp_path / "relay.db"
    empty.touch()  # a restore that copied nothing
    first = otc("relay", "new-identity", "--db", f"sqlite:///{empty}")
    assert first.returncode != 0 and "No relay store" in first.stderr.decode(), first.stderr
    second = otc("relay", "new-identity", "--db", f"sqlite:///{empty}")
    assert second.returncode != 0, f"the second run gave an empty store a new identity: {second.stdout.decode()}"
