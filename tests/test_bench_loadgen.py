"""The relay bench's C load generator (bench/native/loadgen.c) counts what the relay really did.

`make bench` prints the relay's messages per second from the generator's counts, so they are checked here
against the relay's own store after a short run on a real ``otc relay serve``: every send it counts is a
message the relay stored (the mailboxes' refs are dense from 1), and every message it counts as delivered
was sent and is gone or still waiting to be acknowledged (its reader acknowledges by cursor on its next
poll). No timing is asserted.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

import pytest

from bench import bench_relay


@pytest.mark.parametrize("rate", [0.0, 40.0])  # as fast as the relay answers; 40 sends/s per client
def test_the_load_generators_counts_match_the_relays_store(tmp_path, rate):
    loadgen = bench_relay.build_loadgen(tmp_path)
    if loadgen is None:
        pytest.skip("no C compiler to build the load generator")
    db = tmp_path / "relay.db"
    proc, port, _ = bench_relay.start_relay(str(db), 1, tmp_path / "relay.log")
    clients = 4
    try:
        start = time.time() + 0.3
        # The window covers the whole run, so every answer is counted.
        run = subprocess.run([str(loadgen), str(port), str(clients), "box", repr(start), repr(start),
                              repr(start + 1.5), repr(rate), "t1"],
                             capture_output=True, text=True, timeout=60, check=True)
        counts = json.loads(run.stdout)
    finally:
        proc.terminate()
        proc.wait(timeout=90)
        assert proc.stdout is not None
        proc.stdout.close()
    # As fast as it answers, a client passes the default 50 requests/s per address: refused 429, stored nothing.
    assert set(counts["statuses"]) <= ({"429"} if not rate else set())
    assert counts["errors"] == sum(counts["statuses"].values())
    with sqlite3.connect(db) as conn:
        refs = dict(conn.execute("SELECT mailbox, next_ref - 1 FROM mailboxes"))
        waiting = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        ids = conn.execute("SELECT count(*) FROM sent_ids").fetchone()[0]
    assert set(refs) == {f"box-{n}" for n in range(clients)}
    stored = sum(refs.values())
    assert counts["sent"] > 0 and ids == stored
    # A send the relay answered is counted; one still in flight when the run ended may be stored uncounted.
    assert stored - clients <= counts["sent"] <= stored
    assert stored - waiting <= counts["delivered"] <= stored


def test_the_load_generator_refuses_bad_arguments(tmp_path):
    loadgen = bench_relay.build_loadgen(tmp_path)
    if loadgen is None:
        pytest.skip("no C compiler to build the load generator")
    for args in ([], ["1", "0", "p", "0", "0", "0", "0", "t"], ["1", "999", "p", "0", "0", "0", "0", "t"]):
        run = subprocess.run([str(loadgen), *args], capture_output=True, text=True, timeout=10)
        assert run.returncode == 2 and run.stderr.startswith(("usage: loadgen", "loadgen: CLIENTS")), args
