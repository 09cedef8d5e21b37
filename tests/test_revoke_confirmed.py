"""Revocation by anyone (issue 19): revoking a laptop is confirmed on the device; the touchscreen lists and
revokes laptops.

The hostile laptop is written here: it seals its own `revoke` call with the shared wire protocol and posts it
with plain requests, as any paired laptop could.
"""

from __future__ import annotations

import threading

import pytest
import requests

from client.errors import DeviceRefused, RemoteError
from device.server import Server, ServerConfig
from device.touchscreen.testing import Screen, open_app
from device.ui import Console, PanelSource
from onetimechat import rpc
from tests.conftest import make_pair
from tests.rpc_fixtures import RpcDevice


def hostile_revoke(device, laptop, target_hex: str) -> dict:
    """A paired but malicious laptop's revoke call, sealed by hand."""
    counter = laptop.state.next_counter(laptop.url)
    body = rpc.seal_request(laptop.keys, laptop.creds.client_id, counter,
                            {"method": "revoke", "params": {"client_id": target_hex}})
    response = requests.post(device.url + "/v1/call", data=body, timeout=60,
                             headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200
    return rpc.open_response(laptop.keys, counter, response.content)


def active_clients(device) -> list[str]:
    service = device.server.app.extensions["otc"]
    return sorted(c.name for c in service.clients.list() if c.revoked is None)


@pytest.mark.parametrize("decision", [False, None], ids=["declined", "timed-out"])
def test_an_unconfirmed_revoke_changes_nothing(rpc_device, decision):
    owner, mallory = rpc_device.pair_client("owner"), rpc_device.pair_client("mallory")
    rpc_device.restart(confirm_timeout=0.5)
    rpc_device.source.decisions.put(decision)
    answer = hostile_revoke(rpc_device, mallory, owner.creds.client_id.hex())
    assert answer == {"ok": False, "error": "declined", "message": "The owner did not approve: no laptop was revoked."}
    asked = rpc_device.source.asked[-1]
    assert asked.kind == "revoke" and "Revoke the laptop owner" in asked.plaintext.decode()
    assert "Asked by the laptop mallory." in asked.plaintext.decode()
    assert active_clients(rpc_device) == ["mallory", "owner"]
    assert owner.ping()["client"] == "owner"


def test_a_confirmed_revoke_revokes(rpc_device):
    owner, mallory = rpc_device.pair_client("owner"), rpc_device.pair_client("mallory")
    rpc_device.source.decisions.put(True)
    answer = owner.revoke(mallory.creds.client_id.hex())
    assert answer["revoked"] is True
    with pytest.raises(DeviceRefused):
        mallory.ping()
    assert active_clients(rpc_device) == ["owner"]


def test_the_touchscreen_lists_laptops_and_revokes_one_with_two_taps(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path)
    console = Console("alice", "touchscreen")
    source = PanelSource(console)
    codes: list[str] = []
    show = source.show_code
    source.show_code = lambda code: (codes.append(code), show(code))  # type: ignore[method-assign]
    server = Server(ServerConfig(home=home_a, source=source, console=console, confirm_timeout=30),
                    "127.0.0.1", 0).start()
    service = server.app.extensions["otc"]
    console.attach(service.lock, service.panel_status, service.panel_laptops, service.revoke_from_panel)
    app = open_app(console)
    screen = Screen(app)
    try:
        device = RpcDevice(home_a, home_b, pad_id, source, server, tmp_path)  # type: ignore[arg-type]
        device.source.codes = codes  # type: ignore[attr-defined]
        work, old = device.pair_client("work-laptop"), device.pair_client("old-laptop")
        screen.wait_for(lambda f: f.screen == "home", timeout=20)
        screen.tap("laptops")
        assert screen.frame.screen == "laptops"
        assert screen.texts("laptop") == ["work-laptop", "old-laptop"]
        target = old.creds.client_id.hex()[:8]
        screen.tap(f"revoke-{target}")
        # The first tap only asks; nothing is revoked yet.
        assert screen.texts("laptop-confirm") == ["Revoke old-laptop? It can no longer reach this device."]
        assert old.ping()["client"] == "old-laptop"
        screen.tap(f"keep-{target}")
        assert screen.texts("laptop") == ["work-laptop", "old-laptop"]
        screen.tap(f"revoke-{target}")
        screen.tap(f"revoke-yes-{target}")
        screen.refresh()
        assert screen.texts("laptop") == ["work-laptop"]
        assert screen.shows("Laptop old-laptop revoked.")
        with pytest.raises(DeviceRefused):
            old.ping()
        assert work.ping()["client"] == "work-laptop"
        events = [e for e in service.store.events(20) if e["event"] == "client-revoked"]
        assert events and "on the device's screen" in events[-1]["detail"]
        screen.tap("back")
        assert screen.frame.screen == "home"

        # A laptop's revoke is a question on the same screen, answered there.
        outcome: list[object] = []

        def ask() -> None:
            try:
                outcome.append(work.revoke(work.creds.client_id.hex()))
            except RemoteError as exc:
                outcome.append(exc.code)

        t = threading.Thread(target=ask)
        t.start()
        screen.wait_for(lambda f: f.screen == "confirm", timeout=20)
        assert screen.texts("title") == ["Confirm"]
        assert "Revoke the laptop work-laptop (the laptop asking)" in screen.text()
        screen.tap("decline")
        t.join(20)
        assert outcome == ["declined"]
        assert work.ping()["client"] == "work-laptop"
    finally:
        app.close()
        server.close()


def test_the_laptops_screen_draws_inside_the_panel_with_fingertip_targets():
    from dataclasses import replace

    from device.ui import LaptopView, LockState, PinStatus, Snapshot

    laptops = tuple(LaptopView(f"{i:02x}" * 16, f"laptop-with-a-long-name-{i}" * 2, "2026-12-04T16:00:00Z")
                    for i in range(7))
    console = Console("alice", "touchscreen")
    app = open_app(console)
    try:
        screen = Screen(app)
        base = Snapshot(device_name="alice", lock=PinStatus(LockState.UNLOCKED), confirm_mode="touchscreen",
                        clients=tuple(lap.name for lap in laptops), laptops=laptops)
        app.render(base)
        screen.tap("laptops")
        for controller_revoking in (None, laptops[4].client_id):
            app.controller.revoking = controller_revoking
            frame = app.render(replace(base))
            assert frame.screen == "laptops"
            for item in [*frame.texts, *frame.targets]:
                x, y, w, h = item.rect
                assert 0 <= x and x + w <= 800 and y + h <= 480, item
            for target in frame.targets:
                assert target.rect[2] >= 56 and target.rect[3] >= 56, target
        assert len(screen.texts("laptop")) + len(screen.texts("laptop-confirm")) == 5
        assert screen.shows("and 2 more")
    finally:
        app.close()
