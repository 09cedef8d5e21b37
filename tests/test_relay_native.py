"""The SQLite relay's group-commit writer called with the GIL held (relay/storage/sqlite_native.py, issue 21).

It must write exactly what the ``sqlite3`` module would, raise the module's own errors, be the very library
``sqlite3`` uses, and never answer a write before it is on disk: the commit is not synced inside the writers'
turn, so the WAL's sync after it is what makes it durable. That last rule is checked on a real
``otc relay serve`` process whose syncs a preloaded shim counts (bench/native/syncdelay.c): every answered
send was preceded by a sync, with the native writer and without it.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from bench.bench_sync import Counter as Syncs
from bench.bench_sync import build_shim
from relay.storage import Limits
from relay.storage import sqlite_native as native
from relay.storage.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
LIMITS = Limits(1000, 1 << 30)


@pytest.fixture
def conn(tmp_path):
    path = tmp_path / "t.db"
    plain = sqlite3.connect(path, isolation_level=None)
    plain.execute("PRAGMA journal_mode=WAL")
    plain.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, f REAL, s TEXT, b BLOB, n, u UNIQUE)")
    if native.native_library() is None:
        pytest.skip("no shared libsqlite3 in this process: the store uses the sqlite3 module")
    writer = native.NativeConnection(str(path), 5.0)
    yield writer, plain
    writer.close()
    plain.close()


def test_it_is_the_library_sqlite3_uses():
    lib = native.native_library()
    if lib is None:
        pytest.skip("no shared libsqlite3 in this process")
    maps = Path("/proc/self/maps").read_text()
    assert re.search(r"/libsqlite3\.so[.\d]*$", maps, re.M), "the sqlite3 module maps a shared libsqlite3"
    assert lib[0].sqlite3_libversion().decode() == sqlite3.sqlite_version


def test_values_go_in_and_come_out_as_the_sqlite3_module_has_them(conn):
    writer, plain = conn
    rows = [
        (0, 0.0, "", b"", None),
        (-(1 << 63), -1.5e300, "ü — 日本 \u202e \x00 inside", bytes(range(256)) * 3, None),
        ((1 << 63) - 1, float("inf"), "x" * 100_000, b"\x00" * 70_000, None),
        (True, 2.0, "true", bytearray(b"ba"), None),
    ]
    writer.execute("BEGIN")
    for n, (i, f, s, b, nothing) in enumerate(rows):
        assert writer.run("INSERT INTO t (i, f, s, b, n, u) VALUES (?, ?, ?, ?, ?, ?)", (i, f, s, b, nothing, n)) == 1
        assert writer.last_id == n + 1
    writer.execute("COMMIT")
    mine = writer.all("SELECT i, f, s, b, n FROM t ORDER BY id")
    theirs = plain.execute("SELECT i, f, s, b, n FROM t ORDER BY id").fetchall()
    assert mine == theirs
    assert [r[3] for r in mine] == [bytes(r[3]) for r in rows]
    assert writer.one("SELECT count(*) FROM t WHERE i > ?", (0,)) == (2,)
    assert writer.one("SELECT s FROM t WHERE id = ?", (999,)) is None
    assert writer.run("UPDATE t SET i = i + 1 WHERE id <= ?", (2,)) == 2
    assert writer.all("DELETE FROM t WHERE id = ? RETURNING s", (1,)) == [("",)]


def test_errors_are_the_sqlite3_module_s_and_leave_the_connection_usable(conn):
    writer, _ = conn
    writer.run("INSERT INTO t (u) VALUES (?)", ("same",))
    with pytest.raises(sqlite3.IntegrityError):
        writer.run("INSERT INTO t (u) VALUES (?)", ("same",))
    with pytest.raises(sqlite3.OperationalError):
        writer.all("SELECT nothing FROM nowhere")
    with pytest.raises(sqlite3.ProgrammingError):
        writer.one("SELECT ?", (1, 2))
    with pytest.raises(sqlite3.ProgrammingError):
        writer.one("SELECT ?", (object(),))
    writer.begin()
    assert writer.in_transaction
    writer.run("INSERT INTO t (u) VALUES (?)", ("rolled back",))
    writer.execute("ROLLBACK")
    assert not writer.in_transaction
    assert writer.one("SELECT count(*) FROM t") == (1,)


def test_the_statement_cache_is_bounded(conn):
    writer, _ = conn
    for n in range(native._STATEMENT_CACHE * 2):
        assert writer.one(f"SELECT {n}") == (n,)
    assert len(writer._statements) <= native._STATEMENT_CACHE


def test_the_store_writes_through_it_and_reads_back_what_it_wrote(tmp_path):
    if native.native_library() is None:
        pytest.skip("no shared libsqlite3 in this process")
    store = SQLiteStore(tmp_path / "relay.db")
    try:
        sent = [store.send("box", "", f"package {n} é".encode(), f"id-{n}", 1000.0, 2000.0, LIMITS)
                for n in range(5)]
        assert store._native is not None, "the group commit wrote through the native connection"
        again = store.send("box", "", b"package 0 \xc3\xa9", "id-0", 1000.0, 2000.0, LIMITS)
        assert again.duplicate and again.ref == sent[0].ref
        found, complete = store.fetch([("box", 0)], 10, 1 << 20, 1500.0)
        assert complete and [m.contents for m in found] == [f"package {n} é" for n in range(5)]
        assert store.ack_cursors([("box", sent[2].ref)], 1500.0) == 3
        assert [m.ref for m in store.fetch([("box", 0)], 10, 1 << 20, 1500.0)[0]] == [s.ref for s in sent[3:]]
    finally:
        store.close()


def _serve_counted(tmp_path: Path, native_writer: bool):
    lib = build_shim(tmp_path)
    if lib is None:
        pytest.skip("no C compiler to build the sync-counting shim")
    counter = tmp_path / "syncs"
    counter.write_bytes(bytes(8))
    env = dict(os.environ, LD_PRELOAD=str(lib), OTC_SYNC_COUNTER=str(counter), OTC_SYNC_DELAY_US="0",
               OTC_RELAY_SQLITE_NATIVE="1" if native_writer else "0", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "onetimechat.cli", "relay", "serve", "--listen", "127.0.0.1:0",
         "--db", f"sqlite:///{tmp_path / 'relay.db'}", "--workers", "2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            drain = threading.Thread(target=proc.stdout.read, daemon=True)  # keep its pipe drained
            drain.start()
            return proc, drain, found.group(1), Syncs(counter)
    proc.kill()
    proc.wait(60)
    proc.stdout.close()
    raise AssertionError("the relay did not start")


@pytest.mark.parametrize("native_writer", [True, False], ids=["native", "sqlite3-module"])
def test_no_send_is_answered_before_a_sync_after_its_commit(tmp_path, native_writer):
    proc, drain, url, syncs = _serve_counted(tmp_path, native_writer)
    try:
        for n in range(30):
            before = syncs.read()
            body = json.dumps({"mailbox": "m" * 32, "contents": f"package {n}", "id": f"k{n}"}).encode()
            request = urllib.request.Request(url + "/v1/send", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as answer:
                assert answer.status == 200 and json.loads(answer.read())["ref"] >= 1
            assert syncs.read() > before, f"send {n} was answered before any sync"
    finally:
        proc.terminate()
        proc.wait(60)
        drain.join(30)
        assert proc.stdout is not None
        proc.stdout.close()


def test_a_file_it_cannot_open_is_an_operational_error(tmp_path):
    if native.native_library() is None:
        pytest.skip("no shared libsqlite3 in this process")
    with pytest.raises(sqlite3.OperationalError):
        native.NativeConnection(str(tmp_path / "no such folder" / "relay.db"), 1.0)
