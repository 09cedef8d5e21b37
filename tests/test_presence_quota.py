"""Presence under a flood (issue 19, red team): /v1/announce had no quota, so one client could claim
handles without end. Now announcements are rate limited per address (/64) and per /48, and handles online at
once are capped per address, per /48 and in all; refusals are 429 ``presence-quota`` with Retry-After.

The attacker is written here: it announces fresh random handles, from one address and then hopping.
"""

from __future__ import annotations

import secrets

from tests.relay_fixtures import db_url_fixture, postgres_fixture, relay_app_fixture  # noqa: F401 - fixtures

TOKEN = "t" * 32


def announce(client, address: str, handle: str | None = None, token: str = TOKEN):
    return client.post("/v1/announce", json={"handle": handle or "h" + secrets.token_hex(8), "token": token},
                       environ_base={"REMOTE_ADDR": address})


def assert_quota(answer) -> None:
    assert answer.status_code == 429, answer.json
    assert answer.json["error"] == "presence-quota"
    assert int(answer.headers["Retry-After"]) >= 1


def test_announcements_are_rate_limited_per_address_and_per_block(relay_app):
    client = relay_app(rate_limit=0, presence_rate=0.001, presence_burst=5, presence_per_address=0)
    for _ in range(5):
        assert announce(client, "198.51.100.7").status_code == 200
    assert_quota(announce(client, "198.51.100.7"))
    assert announce(client, "198.51.100.8").status_code == 200  # another address is not held back
    # Hopping through the /64s of one /48: five each, twenty in all.
    accepted = sum(announce(client, f"2001:db8:5:{i:x}::1").status_code == 200 for i in range(40))
    assert accepted == 4 * 5
    assert_quota(announce(client, "2001:db8:5:ff::1"))


def test_handles_online_are_capped_per_address_and_in_all(relay_app):
    client = relay_app(rate_limit=0, presence_rate=0, presence_per_address=3, max_presence=8)
    mine = ["mine-1", "mine-2", "mine-3"]
    for handle in mine:
        assert announce(client, "198.51.100.7", handle).status_code == 200
    assert_quota(announce(client, "198.51.100.7"))
    # Renewing a handle it holds is not a new one; withdrawing one makes room.
    assert announce(client, "198.51.100.7", "mine-1").status_code == 200
    assert client.post("/v1/withdraw", json={"handle": "mine-3", "token": TOKEN},
                       environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code == 200
    assert announce(client, "198.51.100.7", "mine-4").status_code == 200
    # In all: eight handles online, whoever holds them.
    for n in range(5):
        assert announce(client, f"203.0.113.{n + 1}").status_code == 200
    assert_quota(announce(client, "203.0.113.99"))
    assert announce(client, "198.51.100.7", "mine-2").status_code == 200  # renewals still go through
    assert len(client.get("/v1/list").json["online"]) == 8


def test_renewing_from_another_address_does_not_move_a_handle_off_its_cap(relay_app):
    """A renewal skipped the caps and moved the handle to the renewing address: two addresses (one dual-stack
    host's IPv4 and IPv6) took a per-address cap of 5 to any number of live handles."""
    cap = 5
    client = relay_app(rate_limit=0, presence_rate=0, presence_per_address=cap, max_presence=0)
    first, second = "198.51.100.7", "2001:db8:77::1"
    held: list[str] = []
    for round_ in range(4):
        new = [f"r{round_}-h{i}" for i in range(cap)]
        accepted = [h for h in new if announce(client, first, h).status_code == 200]
        held += accepted
        for handle in held:  # the other address renews everything the first one claimed
            assert announce(client, second, handle).status_code == 200
    assert len(held) == cap  # the first address stays at its cap: its handles still count there
    assert client.get("/v1/list").json["count"] <= 2 * cap
