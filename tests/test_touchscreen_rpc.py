"""The touchscreen end to end: a laptop's package call, answered by a touch on the device's screen."""

from __future__ import annotations

import threading

from client.errors import RemoteError
from device.server import Server, ServerConfig
from device.touchscreen.testing import Screen, open_app
from device.ui import Console, PanelSource
from tests.conftest import make_pair
from tests.rpc_fixtures import RpcDevice


def test_touch_accepts_and_declines_a_laptops_package_call(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path)
    console = Console("alice", "touchscreen")
    source = PanelSource(console)
    server = Server(ServerConfig(home=home_a, source=source, console=console, confirm_timeout=30),
                    "127.0.0.1", 0).start()
    service = server.app.extensions["otc"]
    console.attach(service.lock, service.panel_status)
    app = open_app(console)
    screen = Screen(app)
    try:
        codes: list[str] = []
        show = source.show_code
        source.show_code = lambda code: (codes.append(code), show(code))  # type: ignore[method-assign]
        device = RpcDevice(home_a, home_b, pad_id, source, server, tmp_path)  # type: ignore[arg-type]
        device.source.codes = codes  # type: ignore[attr-defined]
        client = device.pair_client()
        for button, expected in (("accept", "ok"), ("decline", "declined")):
            outcome: list[str] = []

            def send() -> None:
                try:
                    client.package("bob", "dinner at eight?")
                    outcome.append("ok")
                except RemoteError as exc:
                    outcome.append(exc.code)

            t = threading.Thread(target=send)
            t.start()
            screen.wait_for(lambda f: f.screen == "confirm" and "dinner at eight?" in f.text(), timeout=20)
            assert screen.shows("bob")
            screen.tap(button)
            t.join(20)
            assert outcome == [expected]
        assert client.status()["contacts"][0]["send"]["used"] == 32 + len("dinner at eight?")
    finally:
        app.close()
        server.close()
