"""Red team s32, R3: `otc relay new-identity` run while a relay process of the store is still running.

The fault: the operator restores the backup and runs the command, but one relay process of that store is still
up (a second host of a PostgreSQL deployment, a worker the supervisor restarted, or the relay simply not stopped
yet: the command says nothing about it). A relay reads the store's identity once, at start (relay/app.py), so the
running one keeps answering the OLD identity after the command "replaced" it. A laptop whose cursor reaches past
the restored numbering names the old identity, is served, and its acknowledgement deletes the restored store's
new messages unread: exactly the R3 loss the command is there to prevent. The command exits 0 and prints "store
identity X replaced by Y"; it neither refuses nor warns that a relay is using the store, and the running relay
never notices the change.

Expected (either would do): the command refuses while a relay process uses the store, or a running relay stops
answering the old identity once it was replaced.
"""

from __future__ import annotations

import os

import pytest

from client.errors import StoreChanged
from client.relay import RelayClient
from tests.conftest import otc
from tests.relay_fixtures import postgres_fixture  # noqa: F401 - fixture
from tests.test_relay_restore import Relay, history, restore


def test_a_relay_running_during_new_identity_keeps_the_old_one_and_deletes_new_messages_unread(tmp_path):
    path, copy, store, cursor = history(tmp_path)  # the laptop read 1..5 under ``store``; backup after 3
    restore(copy, path)
    relay = Relay(f"sqlite:///{path}")  # still running (not stopped before the command)
    try:
        done = otc("relay", "new-identity", "--db", f"sqlite:///{path}")
        if done.returncode != 0:
            return  # refused while a relay runs: the hazard is avoided
        assert relay.send("box", "new 1", "new 2") == [4, 5]
        laptop = RelayClient(relay.url)
        try:
            laptop.receive({"box": cursor}, ack=True, store=store)
        except StoreChanged:
            return  # the running relay noticed: nothing deleted
        left, _ = laptop.receive({"box": 0})
        assert "new 1" in [m.contents for m in left], (
            f"`new-identity` said {done.stdout.decode().strip()!r} (exit 0) while a relay ran; that relay still "
            f"answered the old identity {store} and the laptop's acknowledgement deleted the new messages unread")
    finally:
        relay.stop()


def test_on_postgresql_a_second_relay_process_left_running_keeps_the_old_identity(postgres):
    db = postgres.create_database(f"rt_s32_running_{os.getpid()}")
    one = Relay(db)
    try:
        assert one.send("box", "p1", "p2", "p3") == [1, 2, 3]
        old = one.store
        # the other host's relay process is not stopped; the operator runs the command
        done = otc("relay", "new-identity", "--db", db)
        if done.returncode != 0:
            return
        assert old not in done.stdout.decode().split("replaced by")[1]
        laptop = RelayClient(one.url)
        try:
            laptop.receive({"box": 3}, ack=True, store=old)
        except StoreChanged:
            return
        pytest.fail(f"`new-identity` exited 0 ({done.stdout.decode().strip()!r}) with a relay process connected "
                    f"to the store; that process still serves the old identity {old} (pg_stat_activity shows it "
                    f"as application_name 'otc-relay', which the command could have looked at)")
    finally:
        one.stop()
