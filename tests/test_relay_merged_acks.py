"""Acknowledgements by cursor, merged and not waited for (relay/acks.py, issue 21).

A poll with ``"ack": true`` no longer waits for its deletion: the relay notes the cursors and deletes what
they cover within ``ACK_DELAY_S``, many polls in one write. What must still hold, on SQLite and PostgreSQL:
the deletion happens (the store's counts go down); a send is never refused for room a noted acknowledgement
frees; a poll never gets back what it acknowledged; the log's summary counts every acknowledging poll; what
is noted is bounded whatever a client floods it with; closing applies what is noted; and what a crash
forgets is deleted by the reader's next poll. The attacker (a client flooding the relay with acknowledgements
of mailboxes it made up) is written here.
"""

from __future__ import annotations

import secrets
import threading
import time

from relay import acks as acks_module
from relay.app import create_app
from relay.config import RelayConfig
from relay.storage import open_store
from tests.relay_fixtures import db_url_fixture, postgres_fixture  # noqa: F401 - fixtures

READER, SENDER, ATTACKER = "198.51.100.7", "203.0.113.5", "192.0.2.66"


def make(db_url, held=False, **overrides):
    """A relay app; ``held``: its flusher waits an hour, so what polls acknowledge stays noted."""
    config = RelayConfig(db=db_url, rate_limit=0, min_free_bytes=0, sweep_interval=3600.0, **overrides)
    app = create_app(config)
    relay = app.extensions["otc_relay"]
    if held:
        relay.acks._delay = 3600.0
    return app, relay, app.test_client()


def send(client, mailbox, text, remote=SENDER):
    return client.post("/v1/send", json={"mailbox": mailbox, "contents": text}, environ_base={"REMOTE_ADDR": remote})


def poll(client, mailbox, cursor, ack=True, remote=READER):
    answer = client.post("/v1/receive", json={"mailboxes": {mailbox: cursor}, "ack": ack},
                         environ_base={"REMOTE_ADDR": remote})
    assert answer.status_code == 200
    return [m["ref"] for m in answer.json["messages"]]


def stored(relay, mailbox) -> int:
    """How many messages the store holds for ``mailbox`` (read straight from its table)."""
    with relay.store._read() as tx:
        row = tx.one("SELECT count FROM mailboxes WHERE mailbox = ?", (mailbox,))
        rows = tx.one("SELECT count(*) FROM messages WHERE mailbox = ?", (mailbox,))
    assert rows is not None
    assert row is None or int(row[0]) == int(rows[0]), "the mailbox's counter agrees with its rows"
    return int(rows[0])


def eventually(check, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_poll_s_acknowledgement_deletes_and_the_poll_never_gets_it_back(db_url):
    app, relay, client = make(db_url)
    mailbox = secrets.token_hex(16)
    try:
        refs = [send(client, mailbox, f"package {n}").json["ref"] for n in range(6)]
        assert poll(client, mailbox, 0, ack=False) == refs
        assert poll(client, mailbox, refs[3]) == refs[4:]  # acknowledges 1..4, gets 5 and 6
        assert poll(client, mailbox, refs[3]) == refs[4:]  # noted or applied: never returned past the cursor
        eventually(lambda: stored(relay, mailbox) == 2, "the noted acknowledgement was applied")
        assert poll(client, mailbox, refs[5]) == []
        eventually(lambda: stored(relay, mailbox) == 0, "the second acknowledgement was applied")
    finally:
        relay.close()


def test_a_send_is_never_refused_for_room_a_noted_acknowledgement_frees(db_url):
    # The mailbox holds at most 3; the reader acknowledges all 3 and the flusher is held off, so the
    # acknowledgement is still only noted when the sender sends again.
    app, relay, client = make(db_url, mailbox_max_messages=3, held=True)
    mailbox = secrets.token_hex(16)
    try:
        refs = [send(client, mailbox, f"package {n}").json["ref"] for n in range(3)]
        refused = send(client, mailbox, "one too many")
        assert refused.status_code == 429 and refused.json["error"] == "mailbox-full"
        poll(client, mailbox, refs[-1])
        assert relay.acks.pending()
        answer = send(client, mailbox, "after the reader caught up")
        assert answer.status_code == 200, answer.json
        assert not relay.acks.pending()
        assert stored(relay, mailbox) == 1
    finally:
        relay.close()


def test_nor_for_an_address_quota_a_noted_acknowledgement_frees(db_url):
    app, relay, client = make(db_url, address_max_bytes=3 * 300, held=True)
    mailbox = secrets.token_hex(16)
    try:
        refs = []
        while True:
            answer = send(client, mailbox, "p" * 100)
            if answer.status_code != 200:
                assert answer.json["error"] == "address-quota"
                break
            refs.append(answer.json["ref"])
        assert refs
        poll(client, mailbox, refs[-1])
        assert send(client, mailbox, "p" * 100).status_code == 200
    finally:
        relay.close()


def test_every_acknowledging_poll_counts_in_the_summary(db_url):
    app, relay, client = make(db_url, held=True)
    mailboxes = [secrets.token_hex(16) for _ in range(3)]
    try:
        for mailbox in mailboxes:
            for n in range(4):
                send(client, mailbox, f"package {n}")
        # Two polls of one mailbox, merged into one deletion; one poll of another; the third is not acknowledged.
        poll(client, mailboxes[0], 2)
        poll(client, mailboxes[0], 4)
        poll(client, mailboxes[1], 1)
        summary = relay.ack_summary()
        assert summary is not None
        assert "5 messages deleted by 3 requests from 1 addresses" in summary
        assert [stored(relay, m) for m in mailboxes] == [0, 3, 4]
        for secret in (*mailboxes, READER):
            assert secret not in summary
    finally:
        relay.close()


def test_closing_applies_what_is_noted(db_url):
    app, relay, client = make(db_url, held=True)
    mailbox = secrets.token_hex(16)
    refs = [send(client, mailbox, f"package {n}").json["ref"] for n in range(3)]
    poll(client, mailbox, refs[1])
    assert relay.acks.pending()
    relay.close()
    app, relay, client = make(db_url)
    try:
        assert stored(relay, mailbox) == 1
    finally:
        relay.close()


def test_what_a_crash_forgets_the_reader_s_next_poll_deletes(db_url):
    app, relay, client = make(db_url, held=True)
    mailbox = secrets.token_hex(16)
    try:
        refs = [send(client, mailbox, f"package {n}").json["ref"] for n in range(3)]
        assert poll(client, mailbox, refs[-1]) == []
        relay.acks._pending.clear()  # the process died before the flusher ran: the note is gone
        assert stored(relay, mailbox) == 3
        assert poll(client, mailbox, refs[-1]) == []  # the reader polls on from its cursor, acknowledging again
        relay.acks.flush()
        assert stored(relay, mailbox) == 0
    finally:
        relay.close()


def test_a_flood_of_made_up_acknowledgements_stays_bounded(db_url, monkeypatch):
    # The attacker acknowledges mailboxes it made up, as many per poll as the relay allows, from many threads.
    monkeypatch.setattr(acks_module, "MAX_PENDING", 64)
    app, relay, client = make(db_url, held=True)
    victim = secrets.token_hex(16)
    biggest = [0]
    try:
        refs = [send(client, victim, f"package {n}").json["ref"] for n in range(2)]

        def attacker(seed: int) -> None:
            mine = app.test_client()
            for n in range(40):
                cursors = {f"made-up-{seed}-{n}-{k}": 1_000_000 for k in range(16)}
                answer = mine.post("/v1/receive", json={"mailboxes": cursors, "ack": True},
                                   environ_base={"REMOTE_ADDR": ATTACKER})
                assert answer.status_code == 200
                biggest[0] = max(biggest[0], len(relay.acks._pending))

        threads = [threading.Thread(target=attacker, args=(seed,)) for seed in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert biggest[0] <= acks_module.HARD_PENDING_FACTOR * 64 + 16 * 4, biggest[0]
        # The victim's reader is unaffected: its messages are there and its own acknowledgement works.
        assert poll(client, victim, 0, ack=False) == refs
        poll(client, victim, refs[-1])
        relay.acks.flush()
        assert stored(relay, victim) == 0
    finally:
        relay.close()


def test_a_store_failure_while_applying_loses_nothing_but_the_note(tmp_path):
    # The flusher's write fails (the store is gone): it logs, and the next poll acknowledges again.
    db = f"sqlite:///{tmp_path / 'relay.db'}"
    store = open_store(db)
    app, relay, client = make(db)
    mailbox = secrets.token_hex(16)
    try:
        refs = [send(client, mailbox, f"package {n}").json["ref"] for n in range(2)]
        real = relay.store.ack_each
        relay.store.ack_each = lambda cursors, now: (_ for _ in ()).throw(RuntimeError("disk gone"))
        poll(client, mailbox, refs[-1])
        eventually(lambda: not relay.acks.pending(), "the flusher tried")
        relay.store.ack_each = real
        assert stored(relay, mailbox) == 2
        poll(client, mailbox, refs[-1])
        eventually(lambda: stored(relay, mailbox) == 0, "the next poll's acknowledgement was applied")
    finally:
        relay.close()
        store.close()
