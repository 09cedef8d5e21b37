"""PostgreSQL's batch function (schema.BATCH_FUNCTION, relay/storage/postgres.py): a batch's sends and deletions
in one round trip.

Each element runs in its own subtransaction, so a refusal undoes only its own writes; and every batch gives the
same results and leaves the same rows as the same operations run as statements under savepoints (the in-process
path, run_batch), which the other relay tests hold to the spec.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from relay.errors import AddressQuota, MailboxFull, TooManyMailboxes
from relay.storage import FILE_MARK, MESSAGE_OVERHEAD, Limits, Sent, open_store
from relay.storage.postgres import PostgresStore
from relay.storage.sql import Op
from tests.relay_fixtures import postgres_fixture  # noqa: F401 - fixture

NOW = 1_750_000_000.0
_made = iter(range(1, 1_000_000))


@pytest.fixture(name="fresh")
def fresh_fixture(postgres):
    def make() -> PostgresStore:
        store = open_store(postgres.create_database(f"batchfn_{os.getpid()}_{next(_made)}"))
        assert isinstance(store, PostgresStore)
        return store

    stores: list[PostgresStore] = []
    yield lambda: stores.append(make()) or stores[-1]
    for store in stores:
        store.close()


def commit(store: PostgresStore, calls: list[tuple[str, tuple]], in_function: bool = True) -> list[Op]:
    """Commit ``calls`` (name, args) as one batch, through the batch function or (``in_function`` False) as
    statements under savepoints; their Ops, in order (the calls are given in mailbox order)."""
    ops = [Op(store.operation(name, args), "", waits=False) for name, args in calls]
    if not in_function:
        for op in ops:
            op.fn = (lambda f: lambda tx: f(tx))(op.fn)  # a plain function: run_batch's path
    store.commit_batch(lambda: ops)
    return ops


def outcome(op: Op) -> Any:
    """A refusal's class, or the value (a deletion's content files in name order: no order is promised)."""
    if op.error is not None:
        return type(op.error)
    if isinstance(op.value, tuple) and len(op.value) == 2 and isinstance(op.value[1], list):
        return op.value[0], sorted(op.value[1])
    return op.value


def rows(store: PostgresStore) -> dict[str, list[tuple]]:
    with store._read() as tx:
        return {table: tx.all(f"SELECT * FROM {table} ORDER BY 1, 2")
                for table in ("mailboxes", "messages", "origins", "sent_ids", "relay_meta")}


def send(mailbox: str, contents: bytes, limits: Limits, origin: str = "", block: str = "",
         client_id: str | None = None, now: float = NOW, tag: str = "t") -> tuple[str, tuple]:
    return "send", (mailbox, "alice", contents, client_id, now, now + 3600, limits, origin, block, len(contents), tag)


def test_a_refusal_inside_a_batch_undoes_only_its_own_operation(fresh):
    store = fresh()
    limits = Limits(max_messages=2, max_bytes=10_000, origin_max_bytes=4 * MESSAGE_OVERHEAD + 500,
                    origin_new_mailboxes=2)
    ops = commit(store, [
        send("a", b"1" * 10, limits, origin="o1"),
        send("a", b"2" * 10, limits, origin="o1", client_id="k"),
        send("a", b"3" * 10, limits, origin="o1"),  # a third message: the mailbox is full
        send("b", b"4" * 2000, limits, origin="o2"),  # over o2's bytes: its new mailbox goes with it
        send("c", b"5" * 10, limits, origin="o1"),  # o1's second new mailbox
        send("d", b"6" * 10, limits, origin="o1"),  # its third: refused
        ("ack", ("c", 100, (), NOW + 1)),
    ])
    assert [outcome(op) for op in ops] == [
        (Sent(1, NOW + 3600), None), (Sent(2, NOW + 3600), None), MailboxFull, AddressQuota,
        (Sent(1, NOW + 3600), None), TooManyMailboxes, (1, []),
    ]
    found = rows(store)
    assert [(m, ref, contents) for m, ref, _, contents, *_ in found["messages"]] == [
        ("a", 1, b"1" * 10), ("a", 2, b"2" * 10)]
    assert [(m, count, nbytes) for m, _, count, nbytes, _ in found["mailboxes"]] == [("a", 2, 20), ("c", 0, 0)]
    assert [(o, nbytes, made) for o, nbytes, made, _ in found["origins"]] == [
        ("o1", 2 * (10 + MESSAGE_OVERHEAD), 2)]
    assert [(m, k, ref) for m, k, ref, _ in found["sent_ids"]] == [("a", "k", 2)]


def test_a_duplicate_inside_the_same_batch_gets_the_first_ref(fresh):
    store = fresh()
    limits = Limits(max_messages=10, max_bytes=10_000)
    ops = commit(store, [send("a", b"x", limits, client_id="k"), send("a", b"x", limits, client_id="k")])
    assert [outcome(op) for op in ops] == [(Sent(1, NOW + 3600), None),
                                           (Sent(1, NOW + 3600, duplicate=True), None)]


def _batches(seed: int) -> list[list[tuple[str, tuple]]]:
    """Random batches of sends (idempotency keys, both quotas, both kinds of address, content files) and
    deletions (through, by refs, by cursors), the other operations among them, each batch in mailbox order."""
    rng = random.Random(seed)
    limits = Limits(max_messages=4, max_bytes=3_000, origin_max_bytes=3 * (MESSAGE_OVERHEAD + 300),
                    origin_new_mailboxes=3, new_mailbox_window=50.0, block_shares=2)
    mailboxes = [f"m{n}" for n in range(6)]
    batches = []
    now = NOW
    for _ in range(12):
        now += rng.choice([1.0, 30.0])
        calls: list[tuple[str, str, tuple]] = []
        for _ in range(rng.randint(1, 14)):
            mailbox = rng.choice(mailboxes)
            kind = rng.random()
            if kind < 0.6:
                contents = (FILE_MARK + f"f{rng.randrange(10**6):06d}".encode()) if rng.random() < 0.2 else \
                    bytes([65 + rng.randrange(26)]) * rng.randint(1, 700)
                client_id = rng.choice([None, None, "k1", "k2"])
                origin = rng.choice(["", "o1", "o2", "o3"])
                block = rng.choice(["", "b1"]) if origin else ""
                calls.append((mailbox, *send(mailbox, contents, limits, origin, block, client_id, now)))
            elif kind < 0.75:
                calls.append((mailbox, "ack", (mailbox, rng.choice([None, rng.randint(0, 8)]),
                                               tuple(rng.sample(range(1, 10), rng.randint(0, 3))), now)))
            elif kind < 0.9:
                cursors = sorted({(m, rng.randint(1, 8)) for m in rng.sample(mailboxes, rng.randint(1, 3))})
                calls.append((cursors[0][0], "ack_cursors", (cursors, now)))
            elif kind < 0.95:
                calls.append((mailbox, "expire", (mailbox, now + rng.choice([0, 4000]))))
            else:
                calls.append(("", "forget", (now, now - 40)))
        calls.sort(key=lambda call: call[0])
        batches.append([(name, args) for _, name, args in calls])
    return batches


@pytest.mark.parametrize("seed", range(4))
def test_the_function_gives_what_the_statements_give(fresh, seed):
    by_function, by_statements = fresh(), fresh()
    for calls in _batches(seed):
        got = [outcome(op) for op in commit(by_function, calls)]
        expected = [outcome(op) for op in commit(by_statements, calls, in_function=False)]
        assert got == expected
        assert rows(by_function) == rows(by_statements)
