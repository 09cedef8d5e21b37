"""IPv6 address hopping (issue 19, red team): a host with a /64, or a subscriber with a /56 (256 /64s), gets
one client's caps and budgets, or a few, not one per address.

The attacker's addresses are written here: every address of one /64, then one address in each /64 of a /56.
The relay is reached through Flask's test client with the attacker's REMOTE_ADDR (what waitress reports for
an IPv6 peer); the connection caps are driven by handing the server accepted sockets under those addresses.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket

from onetimechat.net import client_block, client_group
from onetimechat.serving import Guard, guarded_server
from tests.relay_fixtures import db_url_fixture, postgres_fixture, relay_app_fixture  # noqa: F401 - fixtures

SUBSCRIBER = ipaddress.IPv6Network("2001:db8:77:ab00::/56")  # 256 /64s
KiB = 1 << 10


def one_host_addresses(n: int) -> list[str]:
    """``n`` addresses of the subscriber's first /64 (random interface ids, as privacy addresses are)."""
    base = int(SUBSCRIBER.network_address)
    return [str(ipaddress.IPv6Address(base | secrets.randbits(64))) for _ in range(n)]


def each_slash64() -> list[str]:
    """One address in each of the 256 /64s of the subscriber's /56."""
    base = int(SUBSCRIBER.network_address)
    return [str(ipaddress.IPv6Address(base | (i << 64) | 1)) for i in range(256)]


def test_addresses_are_grouped_by_64_and_48_and_mapped_ipv4_is_ipv4():
    assert len({client_group(a) for a in one_host_addresses(50)}) == 1
    assert len({client_group(a) for a in each_slash64()}) == 256
    assert len({client_block(a) for a in each_slash64()}) == 1
    assert client_group("::ffff:198.51.100.7") == client_group("198.51.100.7") == "198.51.100.7"
    assert client_block("198.51.100.7") is None and client_block("::ffff:198.51.100.7") is None
    assert client_group("fe80::1%eth0") == client_group("fe80::2") == "fe80::/64"


def send(client, address: str, mailbox: str, contents: str):
    return client.post("/v1/send", json={"mailbox": mailbox, "contents": contents},
                       environ_base={"REMOTE_ADDR": address})


def test_a_slash56_gets_a_few_byte_budgets_not_256(relay_app):
    budget = 64 * KiB
    client = relay_app(address_max_bytes=budget, rate_limit=0, address_new_mailboxes=0)
    contents = "A" * (8 * KiB)
    stored = 0
    # Every address of one /64 shares one budget.
    for address in one_host_addresses(40):
        answer = send(client, address, secrets.token_hex(16), contents)
        if answer.status_code != 200:
            break
        stored += len(contents)
    assert answer.status_code == 429 and answer.json["error"] == "address-quota"
    assert answer.headers["Retry-After"]
    assert stored <= budget
    # Hopping through the /56's other /64s gains a few budgets in all, never 256.
    refused = 0
    for address in each_slash64()[1:]:
        answer = send(client, address, secrets.token_hex(16), contents)
        if answer.status_code == 200:
            stored += len(contents)
        else:
            assert answer.status_code == 429 and answer.json["error"] == "address-quota"
            refused += 1
    assert stored <= 4 * budget < 256 * budget
    assert refused > 200
    # Others still send: an IPv4 client, another subscriber's /48, the same host as IPv4-mapped IPv6 of another.
    for address in ("198.51.100.7", "2001:db8:99::1", "::ffff:203.0.113.9"):
        assert send(client, address, secrets.token_hex(16), contents).status_code == 200


def test_a_slash56_gets_a_few_new_mailbox_allowances_not_256(relay_app):
    client = relay_app(address_new_mailboxes=5, rate_limit=0)
    made = 0
    for address in one_host_addresses(20) + each_slash64()[1:]:
        answer = send(client, address, secrets.token_hex(16), "hi")
        if answer.status_code == 200:
            made += 1
        else:
            assert answer.status_code == 429 and answer.json["error"] == "address-mailboxes"
    assert made <= 4 * 5
    assert send(client, "198.51.100.7", secrets.token_hex(16), "hi").status_code == 200


def test_request_rate_is_shared_by_a_slash48(relay_app):
    client = relay_app(rate_limit=0.001, rate_burst=3)
    statuses = [client.get("/check", environ_base={"REMOTE_ADDR": a}).status_code for a in each_slash64()[:40]]
    assert statuses.count(200) == 4 * 3  # each /64's burst is 3, the /48's 12
    assert set(statuses[12:]) == {429}
    assert client.get("/check", environ_base={"REMOTE_ADDR": "2001:db8:99::1"}).status_code == 200


class _Accepts:
    """Feeds a guarded server real TCP connections under addresses of the test's choosing."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.kept: list[socket.socket] = []

    def connection(self) -> socket.socket:
        out = socket.create_connection(self.listener.getsockname())
        conn, _ = self.listener.accept()
        self.kept.append(out)
        return conn

    def close(self) -> None:
        for sock in self.kept:
            sock.close()
        self.listener.close()


def test_connection_caps_count_a_slash64_once_and_a_slash48_a_few_times():
    from waitress import wasyncore

    def app(environ, start_response):  # pragma: no cover - never reached
        start_response("200 OK", [])
        return [b""]

    server = guarded_server(app, "127.0.0.1", 0, Guard(per_address=4, header_timeout=5.0), threads=1,
                            connection_limit=10_000)
    feed = _Accepts()
    try:
        def accept(address: str) -> bool:
            conn = feed.connection()
            server.accept = lambda: (conn, (address, 4242, 0, 0))
            before = server.otc_refused
            server.handle_accept()
            return server.otc_refused == before

        admitted = [accept(a) for a in one_host_addresses(10)]
        assert admitted.count(True) == 4  # one /64: per_address
        admitted = [accept(a) for a in each_slash64()[1:40]]
        assert admitted.count(True) == 4 * 4 - 4  # the /48 holds 4 x per_address in all
        assert accept("2001:db8:99::1") and accept("198.51.100.7")
        assert accept("::ffff:198.51.100.7")  # the same IPv4 client: its second connection of four
    finally:
        wasyncore.close_all(server._map)
        server.task_dispatcher.shutdown()
        feed.close()
