"""A greedy sender (issue 19): one address cannot fill the relay's disk; other addresses still send.

The attacker is written here with http.client from a second loopback address (127.0.0.2); the honest
sender uses 127.0.0.1. Nothing stored is ever dropped to make room.
"""

from __future__ import annotations

import http.client
import json
import secrets

import pytest
import requests

from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.relay_fixtures import db_url_fixture, postgres_fixture  # noqa: F401 - fixtures

ATTACKER = "127.0.0.2"
MiB = 1 << 20


class Attacker:
    """Posts JSON from its own address over one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120, source_address=(ATTACKER, 0))

    def post(self, path: str, payload: dict) -> tuple[int, dict, dict]:
        body = json.dumps(payload).encode()
        self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = json.loads(response.read())
        return response.status, data, dict(response.getheaders())

    def close(self) -> None:
        self.conn.close()


def start(tmp_path, **settings) -> RelayServer:
    config = RelayConfig(db=f"sqlite:///{tmp_path / 'relay.db'}", rate_limit=0, **settings)
    return RelayServer(create_app(config), "127.0.0.1", 0, threads=8).start()


def stored(url: str, mailboxes: list[str]) -> int:
    """How many messages the relay holds for these mailboxes (read from the honest address)."""
    total = 0
    for i in range(0, len(mailboxes), 3):  # an answer carries about 8 MiB at most
        cursors = {m: 0 for m in mailboxes[i:i + 3]}
        answer = requests.post(url + "/v1/receive", json={"mailboxes": cursors, "limit": 1000}, timeout=120).json()
        assert answer["complete"]
        total += len(answer["messages"])
    return total


def test_one_address_is_refused_before_storing_512_mib_and_others_still_send(tmp_path):
    server = start(tmp_path)  # the default quotas
    attacker = Attacker(server.port)
    contents = "A" * (2 * MiB)  # the largest message the relay takes, each into a fresh mailbox
    accepted: list[str] = []
    try:
        while True:
            mailbox = secrets.token_hex(16)
            status, data, headers = attacker.post("/v1/send", {"mailbox": mailbox, "contents": contents})
            if status != 200:
                break
            accepted.append(mailbox)
            assert len(accepted) * 2 * MiB < 512 * MiB, "no refusal before 512 MiB"
        assert status == 429 and data["error"] == "address-quota" and "Retry-After" in headers
        assert len(accepted) * 2 * MiB < 512 * MiB
        # Another address still sends; the attacker's stored messages are all still there.
        answer = requests.post(server.url + "/v1/send", json={"mailbox": "honest", "contents": "hello"}, timeout=60)
        assert answer.status_code == 200
        assert stored(server.url, accepted) == len(accepted)
        # Once its messages are read and acknowledged, the address may send again.
        for mailbox in accepted[:2]:
            assert requests.post(server.url + "/v1/ack", json={"mailbox": mailbox, "through": 1 << 40},
                                 timeout=60).json()["deleted"] == 1
        status, data, _ = attacker.post("/v1/send", {"mailbox": secrets.token_hex(16), "contents": contents})
        assert status == 200, data
    finally:
        attacker.close()
        server.close()


def test_one_address_makes_only_so_many_new_mailboxes(tmp_path):
    server = start(tmp_path, address_new_mailboxes=20)
    attacker = Attacker(server.port)
    try:
        for n in range(20):
            status, data, _ = attacker.post("/v1/send", {"mailbox": f"fresh-{n}", "contents": "x"})
            assert status == 200, data
        status, data, headers = attacker.post("/v1/send", {"mailbox": "fresh-20", "contents": "x"})
        assert status == 429 and data["error"] == "address-mailboxes" and "Retry-After" in headers
        # Existing mailboxes still take its messages; another address still makes new ones.
        assert attacker.post("/v1/send", {"mailbox": "fresh-3", "contents": "y"})[0] == 200
        assert requests.post(server.url + "/v1/send", json={"mailbox": "fresh-20", "contents": "z"},
                             timeout=60).status_code == 200
        assert stored(server.url, [f"fresh-{n}" for n in range(21)]) == 22
    finally:
        attacker.close()
        server.close()


@pytest.mark.parametrize("path", ["/v1/send", "/send"])
def test_a_nearly_full_disk_refuses_new_messages_with_507_and_keeps_the_stored_ones(tmp_path, path):
    server = start(tmp_path, min_free_bytes=0)
    try:
        for n in range(3):
            assert requests.post(server.url + "/v1/send", json={"mailbox": "box", "contents": f"m{n}"},
                                 timeout=60).status_code == 200
    finally:
        server.close()
    server = start(tmp_path, min_free_bytes=1 << 62)  # more than any disk has free: past the watermark
    try:
        payload = {"mailbox": "box", "contents": "more"} if path == "/v1/send" else \
            {"recipient_uid": "box", "contents": "more"}
        response = requests.post(server.url + path, json=payload, timeout=60)
        assert response.status_code == 507
        assert response.json()["error"] == "insufficient-storage" and int(response.headers["Retry-After"]) > 0
        answer = requests.post(server.url + "/v1/receive", json={"mailboxes": {"box": 0}}, timeout=60).json()
        assert [m["contents"] for m in answer["messages"]] == ["m0", "m1", "m2"]
    finally:
        server.close()


def test_a_store_from_before_origins_upgrades_and_its_messages_still_go(tmp_path):
    import sqlite3

    from relay.storage import schema

    path = tmp_path / "relay.db"
    conn = sqlite3.connect(path)
    for statement in schema.statements(schema.STEPS[0]["sqlite"]):
        conn.execute(statement)
    conn.execute("INSERT INTO mailboxes (mailbox, next_ref, count, bytes, touched) VALUES ('old', 2, 1, 3, 0)")
    conn.execute("INSERT INTO messages (mailbox, ref, sender, contents, size, created, expires) "
                 "VALUES ('old', 1, '', X'6f6c64', 3, 0, 1e12)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    server = start(tmp_path, address_max_bytes=4096)
    try:
        answer = requests.post(server.url + "/v1/receive", json={"mailboxes": {"old": 0}, "ack": False},
                               timeout=60).json()
        assert [m["contents"] for m in answer["messages"]] == ["old"]
        assert requests.post(server.url + "/v1/ack", json={"mailbox": "old", "through": 1}, timeout=60).json() \
            == {"mailbox": "old", "deleted": 1, "store": answer["store"]}  # one made at the upgrade
        assert requests.post(server.url + "/v1/send", json={"mailbox": "old", "contents": "new"},
                             timeout=60).status_code == 200
    finally:
        server.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
    assert conn.execute("SELECT count(*) FROM origins WHERE bytes < 0").fetchone()[0] == 0
    conn.close()


def test_both_stores_charge_refuse_and_credit_an_address(db_url):
    """The same budget and mailbox limit on SQLite and PostgreSQL (small figures, same rules)."""
    config = RelayConfig(db=db_url, rate_limit=0, address_max_bytes=64 * 1024, address_new_mailboxes=5)
    server = RelayServer(create_app(config), "127.0.0.1", 0, threads=8).start()
    attacker = Attacker(server.port)
    try:
        sent = 0
        while True:
            status, data, _ = attacker.post("/v1/send", {"mailbox": f"box-{sent % 3}", "contents": "B" * 8192})
            if status != 200:
                break
            sent += 1
        assert status == 429 and data["error"] == "address-quota" and sent * 8192 <= 64 * 1024
        for n in range(3, 5):
            assert attacker.post("/v1/send", {"mailbox": f"box-{n}", "contents": "c"})[0] == 200
        status, data, _ = attacker.post("/v1/send", {"mailbox": "box-5", "contents": "c"})
        assert status == 429 and data["error"] == "address-mailboxes"
        assert requests.post(server.url + "/v1/ack", json={"mailbox": "box-0", "through": 1 << 40},
                             timeout=60).json()["deleted"] >= 1
        assert attacker.post("/v1/send", {"mailbox": "box-0", "contents": "B" * 8192})[0] == 200
    finally:
        attacker.close()
        server.close()
