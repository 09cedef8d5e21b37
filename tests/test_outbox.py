"""`otc outbox` (issue 18): what waits for the relay is listed, retried to the relay given now, or dropped."""

from __future__ import annotations

import json
import socket

from tests.chat_fixtures import make_world
from tests.conftest import otc


def run(laptop, *args: str, check: bool = True):
    return otc(*args, env={"OTC_CLIENT_HOME": str(laptop)}, check=check, timeout=120)


def dead_relay() -> str:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once it is closed


def texts(laptop, relay: str) -> list[dict]:
    out = run(laptop, "recv", "--relay", relay, "--wait", "10", "--json").stdout.decode()
    return [json.loads(line) for line in out.splitlines() if json.loads(line)["kind"] == "text"]


def test_a_send_to_a_dead_relay_is_listed_retried_to_the_live_one_and_read_without_a_gap(tmp_path):
    world = make_world(tmp_path, names=("alice", "bob"))
    try:
        alice, bob = world.people["alice"].laptop, world.people["bob"].laptop
        dead = dead_relay()
        queued = run(alice, "send", "--relay", dead, "bob", "sent while I typed the wrong relay").stdout.decode()
        assert queued.startswith("queued for bob")
        listed = run(alice, "outbox").stdout.decode()
        assert "1 waiting for the relay" in listed and "to bob" in listed and dead in listed
        item = json.loads(run(alice, "outbox", "--json").stdout)
        assert item["contact"] == "bob" and item["attempts"] >= 1 and item["relay"] == dead
        assert item["bytes"] == 49 + len("sent while I typed the wrong relay")

        retried = run(alice, "outbox", "retry", "--relay", world.relay_url)
        assert retried.stdout.decode().startswith(f"1 sent to {world.relay_url}; 0 still waiting")
        assert "The outbox is empty" in run(alice, "outbox").stdout.decode()
        run(alice, "send", "bob", "and one after it")  # the relay just given is remembered
        got = texts(bob, world.relay_url)
        assert [m["text"] for m in got] == ["sent while I typed the wrong relay", "and one after it"]
        assert all(m["warnings"] == [] for m in got)  # no gap
    finally:
        world.close()


def test_later_sends_carry_what_waits_for_another_relay(tmp_path):
    """The bug the review found: a package queued for a wrong relay stayed behind while later ones went out."""
    world = make_world(tmp_path, names=("alice", "bob"))
    try:
        alice, bob = world.people["alice"].laptop, world.people["bob"].laptop
        run(alice, "send", "--relay", dead_relay(), "bob", "first")
        run(alice, "send", "--relay", world.relay_url, "bob", "second")
        got = texts(bob, world.relay_url)
        assert [m["text"] for m in got] == ["first", "second"] and all(m["warnings"] == [] for m in got)
    finally:
        world.close()


def test_a_retry_to_a_relay_still_down_keeps_the_item(tmp_path):
    world = make_world(tmp_path, names=("alice", "bob"))
    try:
        alice = world.people["alice"].laptop
        dead = dead_relay()
        run(alice, "send", "--relay", dead, "bob", "waiting")
        assert "none remembered" in run(alice, "client").stdout.decode()  # a relay that never answered is not kept
        failed = run(alice, "outbox", "retry", "--relay", dead, check=False)
        out = failed.stdout.decode()
        assert failed.returncode == 1 and "0 sent" in out and "1 still waiting" in out
        assert json.loads(run(alice, "outbox", "--json").stdout)["attempts"] >= 2
    finally:
        world.close()


def test_dropping_an_item_says_its_pad_is_spent_and_the_reader_sees_the_gap(tmp_path):
    world = make_world(tmp_path, names=("alice", "bob"))
    try:
        alice, bob = world.people["alice"].laptop, world.people["bob"].laptop
        run(alice, "send", "--relay", dead_relay(), "bob", "never mind")
        item = json.loads(run(alice, "outbox", "--json").stdout)
        unknown = run(alice, "outbox", "drop", "zz", check=False)
        assert unknown.returncode == 2 and b"No single outbox item" in unknown.stderr
        dropped = run(alice, "outbox", "drop", item["id"][:6]).stdout.decode()
        assert "pad was already spent" in dropped and "gap" in dropped
        run(alice, "send", "--relay", world.relay_url, "bob", "after the dropped one")
        got = texts(bob, world.relay_url)
        assert [m["text"] for m in got] == ["after the dropped one"]
        assert got[0]["warnings"][0].startswith("gap: ")
    finally:
        world.close()
