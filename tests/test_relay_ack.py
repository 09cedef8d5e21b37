"""Who may acknowledge (delete) a mailbox's messages (issue 19, red team).

Anyone who knows a mailbox id may: DESIGN.md gives a mailbox one random id that the sender and the reader
both hold, and nothing else the relay could check (docs/relay-protocol.md, "Who may delete"). What the relay
does is bound the harm: an acknowledgement is idempotent (deleting what is gone deletes nothing and is no
error), and deletions are summed per address pseudonym in the relay's log, never naming a mailbox or address.

The attacker is written here: it knows the victim's mailbox id and acknowledges from its own address.
"""

from __future__ import annotations

import secrets

from relay.app import create_app
from relay.config import RelayConfig
from tests.relay_fixtures import db_url_fixture, postgres_fixture  # noqa: F401 - fixtures

ATTACKER, READER, SENDER = "2001:db8:bad::7", "198.51.100.7", "203.0.113.5"


def test_an_acknowledgement_is_idempotent_and_summed_in_the_log(db_url):
    app = create_app(RelayConfig(db=db_url, rate_limit=0, min_free_bytes=0, sweep_interval=3600.0))
    relay = app.extensions["otc_relay"]
    relay._stop.set()  # no sweep may take the summary before the test reads it
    relay._sweeper.join(timeout=30)
    client = app.test_client()
    mailbox = secrets.token_hex(16)
    try:
        for n in range(5):
            sent = client.post("/v1/send", json={"mailbox": mailbox, "contents": f"package {n}"},
                               environ_base={"REMOTE_ADDR": SENDER})
            assert sent.status_code == 200
        # The attacker deletes three; doing it again deletes nothing and is still no error.
        for expected in (3, 0):
            answer = client.post("/v1/ack", json={"mailbox": mailbox, "through": 3},
                                 environ_base={"REMOTE_ADDR": ATTACKER})
            assert answer.status_code == 200 and answer.json["deleted"] == expected
        answer = client.post("/v1/ack", json={"mailbox": mailbox, "refs": [1, 2, 3, 99]},
                             environ_base={"REMOTE_ADDR": ATTACKER})
        assert answer.status_code == 200 and answer.json["deleted"] == 0
        # The reader still gets the rest, and its own acknowledgement by cursor counts too.
        got = client.post("/v1/receive", json={"mailboxes": {mailbox: 0}, "ack": False},
                          environ_base={"REMOTE_ADDR": READER}).json["messages"]
        assert [m["ref"] for m in got] == [4, 5]
        client.post("/v1/receive", json={"mailboxes": {mailbox: 5}, "ack": True}, environ_base={"REMOTE_ADDR": READER})
        summary = relay.ack_summary()
        assert summary is not None
        assert "5 messages deleted by 2 requests from 2 addresses" in summary
        assert "the most by one, origin " + relay.origins(ATTACKER)[0][:8] + ": 3 in 1 requests" in summary
        for secret in (mailbox, ATTACKER, READER, "2001:db8:bad::/64"):
            assert secret not in summary
        assert relay.ack_summary() is None  # each deletion is summed once
    finally:
        relay.close()
