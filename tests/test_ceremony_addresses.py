"""Ceremonies carried by the laptops on the real network: each device serves its RPC on its own
non-loopback-default address (as the image serves on 10.77.0.1), and its ceremony listener must be there.

Devices on 127.0.0.2 and 127.0.0.3, the laptop that hosts listening on 127.0.0.4: a listener bound to
127.0.0.1 (what the device did before) is unreachable at the RPC's address, so this fails without the fix.
"""

from __future__ import annotations

import re
import threading

import pytest

from tests.conftest import otc
from tests.test_pair_from_laptop import approve_everything, carried, client_of, finish, owner, serve

ALICE, BOB, LAPTOP = "127.0.0.2", "127.0.0.3", "127.0.0.4"


@pytest.fixture
def devices(tmp_path):
    alice, bob = serve(tmp_path, "alice", ALICE), serve(tmp_path, "bob", BOB)
    yield alice, bob
    for device in (alice, bob):
        device.server.close()


def test_a_pad_and_a_grant_carried_between_devices_on_their_own_addresses(devices):
    alice, bob = devices
    assert alice.url.startswith(f"http://{ALICE}:") and bob.url.startswith(f"http://{BOB}:")

    # A pad, made with `otc pair host|join --device`, confirmed on both devices' screens.
    seen: list[str] = []
    owners = [owner(alice, True, seen), owner(bob, True, seen)]
    host, join = carried(alice, bob, ["pair"], ["--size", "256K"], laptop=LAPTOP)
    (host_out, host_err), (join_out, join_err) = finish(host, join, owners)
    assert host.returncode == 0, host_err
    assert join.returncode == 0, join_err
    assert len(seen) == 2 and seen[0] == seen[1]
    prints = [re.search(r"Pad fingerprint: ([0-9a-f ]+) \(", out).group(1) for out in (host_out, join_out)]
    assert prints[0] == prints[1]

    # A grant, made with `otc abe grant host|join --device`: alice's device becomes an authority first.
    stop = threading.Event()
    approver = approve_everything([alice.console, bob.console], stop)
    try:
        otc("abe", "authority", "--device", alice.url, env=alice.env, check=True)
    finally:
        stop.set()
        approver.join(5)
    screens: list = []
    owners = [owner(alice, True, screens, keep=lambda snap: snap), owner(bob, True, screens, keep=lambda snap: snap)]
    host, join = carried(alice, bob, ["abe", "grant"], ["--attributes", "STAFF"], laptop=LAPTOP)
    (host_out, host_err), (join_out, join_err) = finish(host, join, owners)
    assert host.returncode == 0, host_err
    assert join.returncode == 0, join_err
    ends = [d.console.snapshot().ceremony for d in (alice, bob)]
    assert [v.stage for v in ends] == ["done", "done"] and ends[0].fingerprint == ends[1].fingerprint
    assert ends[0].fingerprint and f"Grant fingerprint {ends[0].fingerprint}" in host_out
    assert f"Grant fingerprint {ends[0].fingerprint}" in join_out
    status = client_of(bob).call("abe_status")
    assert [(a["name"], a["keys"]) for a in status["authorities"]] == [("alice", [["STAFF"]])]

    # Messages open both ways, each confirmed on the sender's screen.
    stop = threading.Event()
    approver = approve_everything([alice.console, bob.console], stop)
    try:
        for sender, receiver, contact, text in ((alice, bob, "bob", "to bob"), (bob, alice, "alice", "to alice")):
            sent = client_of(sender).call("package", contact=contact, text=text)
            opened = client_of(receiver).call("unpackage", package=sent["package"])
            assert opened["text"] == text and opened["contact"] == sender.name
    finally:
        stop.set()
        approver.join(5)
