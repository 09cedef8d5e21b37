"""Red team s32, R6: a deadlock the server reports on a statement whose result is not read at once.

The fault: PostgreSQL aborts one statement of a batch with SQLSTATE 40P01 (deadlock_detected), as it does to end a
real deadlock. Here the server raises it on demand, once (a sequence counts the calls: sequences are not rolled
back), from a statement run with ``tx.run`` (its result not fetched), as ``_uncount``'s UPDATE of origins is in an
``expire`` or an ``ack`` run as statements. In pipeline mode psycopg keeps that error on the cursor and the next
statement on it is answered "pipeline aborted": the batch then fails with PipelineAborted (an OperationalError), is
not run again, and is answered 503 after one run, and the connection is thrown away. The claim (docs R6): a batch the
server aborts to end a deadlock runs again, up to 3 runs, and only then 503.
"""

from __future__ import annotations

import os

import psycopg
import pytest

from relay.storage import Limits, open_store
from relay.storage.sql import SQLStore
from tests.relay_fixtures import postgres_fixture  # noqa: F401 - fixture

NOW = 1_750_000_000.0
LIMITS = Limits(1000, 1 << 24)

FAULT = """CREATE OR REPLACE FUNCTION rt_deadlock_once() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('rt_calls') = 1 THEN
        RAISE EXCEPTION USING ERRCODE = '40P01', MESSAGE = 'deadlock detected (red team: the server chose this batch)';
    END IF;
    RETURN 1;
END $$"""


@pytest.mark.parametrize("where", ["first", "last"])
def test_a_deadlock_on_an_unfetched_statement_is_run_again(postgres, monkeypatch, where):
    url = postgres.create_database(f"rt_s32_pipeline_{where}_{os.getpid()}")
    store = open_store(url, pool_size=2)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE SEQUENCE IF NOT EXISTS rt_calls")
            conn.execute(FAULT)
        real = SQLStore._op_forget

        def forget_with_fault(self, tx, now, idle_before):
            if where == "first":
                tx.run("SELECT rt_deadlock_once()")  # the server aborts this statement once (40P01)
            out = real(self, tx, now, idle_before)
            if where == "last":
                tx.run("SELECT rt_deadlock_once()")  # the error then surfaces at the commit
            return out

        monkeypatch.setattr(SQLStore, "_op_forget", forget_with_fault)
        # The claim: aborted once by the server, the batch runs again and is answered as if run once.
        counts = store.sweep(NOW, NOW - 3600)
        assert counts == {"messages": 0, "ids": 0, "presence": 0, "mailboxes": 0}
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT last_value FROM rt_calls").fetchone()[0] == 2  # run twice, once aborted
    finally:
        store.close()
