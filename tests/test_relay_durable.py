"""No relay write is answered before it is on disk (issue 21).

SQLite's commits are not synced inside the writers' turn (the lock worker processes take turns on): the
committing thread syncs the WAL once its turn is over, before anyone is answered, so the syncs of two
workers overlap the other's statements instead of queueing behind the lock. These tests count the syncs
of a real ``otc relay serve`` process with a preloaded shim (bench/native/syncdelay.c, built with the
system compiler; SQLite's own syncs go through it too): every answered send was preceded by a sync after
its commit. The test fails if the relay leaves the sync out (checked when this was written by removing it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from bench.bench_sync import Counter as Syncs
from bench.bench_sync import build_shim

ROOT = Path(__file__).resolve().parent.parent


def _serve_counted(tmp_path: Path, workers: int, *extra: str):
    lib = build_shim(tmp_path)
    if lib is None:
        pytest.skip("no C compiler to build the sync-counting shim")
    counter = tmp_path / "syncs"
    counter.write_bytes(bytes(8))
    env = dict(os.environ, LD_PRELOAD=str(lib), OTC_SYNC_COUNTER=str(counter), OTC_SYNC_DELAY_US="0",
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "onetimechat.cli", "relay", "serve", "--listen", "127.0.0.1:0",
         "--db", f"sqlite:///{tmp_path / 'relay.db'}", "--workers", str(workers), *extra],
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


def _post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
        return json.loads(answer.read())


# With --writer, the writer process commits and syncs every worker's writes (relay/writer.py).
@pytest.mark.parametrize(("workers", "writer"), [(1, ()), (2, ()), (1, ("--writer",)), (2, ("--writer",))],
                         ids=["1 worker", "2 workers", "1 worker, writer", "2 workers, writer"])
def test_no_write_is_answered_before_a_sync_after_its_commit(tmp_path, workers, writer):
    proc, drain, url, syncs = _serve_counted(tmp_path, workers, *writer)
    mailbox = "m" * 32
    try:
        for n in range(30):
            before = syncs.read()
            assert _post(url, "/v1/send", {"mailbox": mailbox, "contents": f"package {n}", "id": f"k{n}"})["ref"]
            assert syncs.read() > before, f"send {n} was answered before any sync"
        before = syncs.read()
        assert _post(url, "/v1/ack", {"mailbox": mailbox, "through": 10})["deleted"] == 10
        assert syncs.read() > before, "an acknowledgement was answered before any sync"
    finally:
        proc.terminate()
        proc.wait(60)
        drain.join(30)
        assert proc.stdout is not None
        proc.stdout.close()
