"""Red team s32, R6: real deadlocks between two relay processes' stores (no writer), many times, and the books
checked after: every retried batch must leave the same state as one run (no duplicated message, no double charge
of a mailbox's or an address's counts, each answered send stored once under its ref).

The fault: two PostgresStore objects (two relay processes) on one database, each with threads whose writes are
batched together: acknowledgements of several mailboxes (``ack_cursors``: locked where their first mailbox falls)
beside sends with idempotency keys and origins, so batches lock mailboxes in crossing orders and the server
aborts one of each cycle. deadlock_timeout is made short on the database so cycles end quickly.
"""

from __future__ import annotations

import os
import random
import threading

import psycopg

from relay.errors import RelayError
from relay.storage import MESSAGE_OVERHEAD, Limits, open_store
from relay.storage import postgres as pg
from tests.relay_fixtures import postgres_fixture  # noqa: F401 - fixture

NOW = 1_750_000_000.0
LIMITS = Limits(10_000, 1 << 30, origin_max_bytes=1 << 30)
BOXES = ["a", "b", "c", "d"]


def test_retried_batches_keep_the_books(postgres, monkeypatch):
    url = postgres.create_database(f"rt_s32_stress_{os.getpid()}")
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET deadlock_timeout = \'20ms\'')
    runs = {"aborted": 0}
    real = pg.PostgresStore._commit_once

    def counted(conn, batch):
        try:
            return real(conn, batch)
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            runs["aborted"] += 1
            raise

    monkeypatch.setattr(pg.PostgresStore, "_commit_once", staticmethod(counted))
    stores = [open_store(url, pool_size=4), open_store(url, pool_size=4)]
    answered: dict[str, tuple[str, int]] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work(store, seed):
        rnd = random.Random(seed)
        for i in range(150):
            try:
                if rnd.random() < 0.6:
                    box = rnd.choice(BOXES)
                    key = f"{seed}-{i}"
                    sent = store.send(box, "", b"x" * rnd.randint(1, 50), key, NOW, NOW + 3600, LIMITS,
                                      origin=rnd.choice(["o1", "o2"]))
                    with lock:
                        answered[key] = (box, sent.ref)
                else:
                    chosen = rnd.sample(BOXES, rnd.randint(2, 4))
                    rnd.shuffle(chosen)
                    store.ack_cursors([(m, store.next_ref(m) - rnd.randint(1, 3)) for m in chosen], NOW)
            except RelayError as exc:
                with lock:
                    failures.append(exc)

    threads = [threading.Thread(target=work, args=(stores[n % 2], n)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    for store in stores:
        store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        boxes = conn.execute("SELECT mailbox, count, bytes FROM mailboxes ORDER BY mailbox").fetchall()
        real_boxes = conn.execute("SELECT mailbox, count(*), coalesce(sum(size), 0) FROM messages GROUP BY mailbox "
                                  "ORDER BY mailbox").fetchall()
        origins = dict(conn.execute("SELECT origin, bytes FROM origins").fetchall())
        real_origins = dict(conn.execute(f"SELECT origin, sum(size + {MESSAGE_OVERHEAD}) FROM messages "
                                         "GROUP BY origin").fetchall())
        ids = conn.execute("SELECT mailbox, client_id, ref FROM sent_ids").fetchall()
        dup = conn.execute("SELECT mailbox, ref, count(*) FROM messages GROUP BY mailbox, ref "
                           "HAVING count(*) > 1").fetchall()
    print("aborted runs:", runs["aborted"], "failures:", [type(f).__name__ for f in failures])
    assert dup == []
    assert [(m, int(c), int(b)) for m, c, b in boxes if c] == [(m, int(c), int(b)) for m, c, b in real_boxes]
    assert {o: int(b) for o, b in origins.items() if b} == {o: int(b) for o, b in real_origins.items()}
    assert {k: (m, int(r)) for m, k, r in ids} == answered
    assert runs["aborted"] > 0, "no batch was aborted: the fault did not happen"
    assert not failures, f"{len(failures)} writes failed after {runs['aborted']} aborted runs"
