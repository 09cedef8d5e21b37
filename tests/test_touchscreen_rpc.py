"""The touchscreen end to end: a laptop's package call, answered by a touch on the device's screen."""

from __future__ import annotations

import threading

import pytest

from client.errors import RemoteError
from device.engine import Device
from device.server import Server, ServerConfig
from device.touchscreen.testing import Screen, open_app
from device.ui import Console, PanelSource
from onetimechat.errors import InvalidPackage
from tests.conftest import make_pair
from tests.rpc_fixtures import RpcDevice


def on_screen(home):
    """The device at ``home`` serving with its touchscreen: (source, server, service, app, screen)."""
    console = Console("alice", "touchscreen")
    source = PanelSource(console)
    server = Server(ServerConfig(home=home, source=source, console=console, confirm_timeout=30),
                    "127.0.0.1", 0).start()
    service = server.app.extensions["otc"]
    console.attach(service.lock, service.panel_status)
    app = open_app(console)
    return source, server, service, app, Screen(app)


def test_touch_accepts_and_declines_a_laptops_package_call(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path)
    source, server, service, app, screen = on_screen(home_a)
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
        assert client.status()["contacts"][0]["send"]["used"] == 16 + len("dinner at eight?")
    finally:
        app.close()
        server.close()


def test_forgery_alarm_on_the_screen_and_after_a_restart(tmp_path):
    """Three packages from the relay that fail their tag raise the forgery alarm, which a restart keeps."""
    home_a, home_b, pad_id = make_pair(tmp_path)
    with Device.open(home_b) as bob:
        genuine = bytes(bob.package("alice", b"see you at eight").package)
    for attempt in range(2):
        _, server, service, app, screen = on_screen(home_a)
        try:
            if attempt == 0:
                for n in range(3):
                    forged = bytearray(genuine)
                    forged[40] ^= 1 << n  # a relay's altered copy: the tag fails
                    with pytest.raises(InvalidPackage):
                        service.device.unpackage(bytes(forged))
            seen = []
            while True:  # the oldest alarm shows first: each refusal, then the forgery alarm
                screen.wait_for(lambda f: f.overlay == "alarm", timeout=20)
                seen.append(screen.texts("alarm-title")[0])
                screen.tap("dismiss")
                if seen[-1] == "Someone is forging messages" or len(seen) > 4:
                    break
            assert seen[-1] == "Someone is forging messages"
            assert len(seen) == (4 if attempt == 0 else 1)  # after a restart, the standing alarm alone
            screen.wait_for(lambda f: f.screen == "home" and f.overlay is None, timeout=20)
            assert " ".join(screen.texts("contact-note")) == (
                "Forgery alarm: 3 forged messages refused. Someone is forging.")
        finally:
            app.close()
            server.close()
    with Device.open(home_a) as alice:
        assert alice.unpackage(genuine).plaintext == b"see you at eight"
