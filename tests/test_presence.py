"""Opt-in presence (issue 18): off by default, per contact, `otc who` and `who` in the chat."""

from __future__ import annotations

import requests

from client.presence import handle_for
from tests.chat_fixtures import make_world
from tests.conftest import otc


def run(laptop, *args: str, check: bool = True):
    return otc(*args, env={"OTC_CLIENT_HOME": str(laptop)}, check=check, timeout=120)


def test_presence_is_off_by_default_then_shared_with_one_contact(tmp_path):
    world = make_world(tmp_path, names=("alice", "bob", "carol"))
    try:
        alice, bob, carol = (world.people[n].laptop for n in ("alice", "bob", "carol"))
        out = run(bob, "who", "--relay", world.relay_url).stdout.decode()
        assert "Online now: none of your contacts" in out and "nobody" in out
        assert requests.get(world.relay_url + "/v1/list", timeout=10).json()["online"] == []

        # Alice shares with bob only: bob sees her, carol does not.
        out = run(alice, "who", "--relay", world.relay_url, "--share", "bob").stdout.decode()
        assert "Sharing your presence with: bob" in out
        assert "Online now: alice" in run(bob, "who", "--relay", world.relay_url).stdout.decode()
        assert "none of your contacts" in run(carol, "who", "--relay", world.relay_url).stdout.decode()

        # What other relay users see: a handle that names nobody.
        handles = [h["handle"] for h in requests.get(world.relay_url + "/v1/list", timeout=10).json()["online"]]
        assert len(handles) == 1 and handles[0].startswith("otc-") and "alice" not in handles[0]
        mailbox = world.people["alice"].server.app.extensions["otc"].contacts(None, {})
        assert handles == [handle_for(next(c for c in mailbox if c["name"] == "bob")["mailboxes_out"][0])]

        run(alice, "who", "--stop", "bob")
        assert "none of your contacts" in run(bob, "who").stdout.decode()
        unknown = run(alice, "who", "--share", "dave", check=False)
        assert unknown.returncode == 2 and b"No contact named 'dave'" in unknown.stderr
    finally:
        world.close()


def test_who_in_the_chat(tmp_path):
    world = make_world(tmp_path, names=("alice", "bob"))
    try:
        bob = world.chat("bob")
        bob.wait_for("connected")
        bob.type("who")
        bob.wait_for("online now: none of your contacts · you share your presence with nobody")
        alice = world.chat("alice")
        alice.wait_for("connected")
        alice.type("share bob on")
        alice.wait_for("bob now sees when you are online")
        bob.type("who")
        bob.wait_for("online now: alice")
        alice.type("share bob maybe")
        alice.wait_for("usage: share <contact> on|off")
        assert alice.close() == 0 and bob.close() == 0
    finally:
        world.close()
