"""Hidden text (issue 19): control and bidirectional characters show visibly on every terminal.

The hostile laptop (for the device's prompt) and the hostile contact (for `otc recv`) are written here: they
send text that, printed raw, makes a terminal show "Lunch at 1?" while the message asks to sell all shares.
What the owner sees is read off a terminal emulator (pyte) fed with the pseudo-terminal's output.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pexpect
import pyte
import pytest

from client.errors import RelayRefused, RemoteError
from client.relay import RelayClient
from client.rpc import DeviceClient, pair
from client.state import ClientState
from onetimechat import cli
from onetimechat.errors import OTCError
from onetimechat.text import visible
from tests.chat_fixtures import make_world
from tests.conftest import ROOT, make_pair, otc

# Printed raw: the real request, then carriage return + erase line, then the decoy, then an RLO and a ZWSP.
HIDDEN = "Sell all shares and wire 50k to acct 998877\r\x1b[2KLunch at 1?\u202e\u200b"
SHOWN = "Sell all shares and wire 50k to acct 998877<U+000D><U+001B>[2KLunch at 1?<U+202E><U+200B>"
COLS, ROWS = 200, 50


def terminal_shows(raw: str) -> str:
    """What a terminal displays after ``raw``: its screen's lines."""
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.Stream(screen)
    stream.feed(raw)
    return "\n".join(line.rstrip() for line in screen.display)


def test_visible_marks_every_hidden_character_and_keeps_the_rest():
    assert visible(HIDDEN) == SHOWN
    assert visible("plain text, ünïcödé, emoji 🙂\nline two\ttabbed") == \
        "plain text, ünïcödé, emoji 🙂\nline two    tabbed"
    for ch in ("\x00", "\x07", "\x08", "\x7f", "\x9b", "\u2028", "\u2066", "\u200d", "\ufeff"):
        assert visible(ch) == f"<U+{ord(ch):04X}>"


def test_the_devices_tty_prompt_shows_hidden_text(tmp_path):
    home_a, _, _ = make_pair(tmp_path)
    child = pexpect.spawn(
        sys.executable, ["-m", "onetimechat.cli", "device", "serve", "--home", str(home_a),
                         "--listen", "127.0.0.1:0", "--confirm", "tty", "--confirm-timeout", "30"],
        cwd=str(ROOT), timeout=30, encoding="utf-8", env={**os.environ}, dimensions=(ROWS, COLS),
    )
    try:
        child.expect(r"serving on (http://\S+) \(confirm mode: tty")
        url = child.match.group(1)
        state = ClientState(tmp_path / "laptop")
        shown: list[str] = []
        ready = threading.Event()
        t = threading.Thread(target=pair, args=(url,), kwargs={
            "name": "laptop", "ask_code": lambda: (ready.wait(30), shown[0])[1], "state": state})
        t.start()
        child.expect(r"Pairing code: (\d{4}-\d{4})")
        shown.append(child.match.group(1))
        ready.set()
        t.join(30)
        client = DeviceClient(url, state=state, timeout=60)
        errors: list[str] = []

        def hostile_laptop() -> None:
            try:
                client.package("bob", HIDDEN)
            except RemoteError as exc:
                errors.append(exc.code)

        t = threading.Thread(target=hostile_laptop)
        t.start()
        child.expect("Encrypt this text message to bob")
        child.expect(r"Approve\? \[y/N\]")
        prompt = child.before
        display = terminal_shows(prompt)
        assert SHOWN in display  # the owner sees what the message holds, hidden characters and all
        assert "\x1b" not in prompt and "\u202e" not in prompt and "\u200b" not in prompt
        child.sendline("n")
        t.join(30)
        assert errors == ["declined"]
    finally:
        child.kill(signal.SIGTERM)
        child.close()


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path, names=("alice", "bob"))
    yield w
    w.close()


def test_otc_recv_shows_hidden_text(world):
    alice, bob = world.people["alice"], world.people["bob"]
    assert otc("send", "--device", alice.url, "--relay", world.relay_url, "bob", HIDDEN, env=alice.env).returncode == 0
    child = pexpect.spawn(sys.executable, ["-m", "onetimechat.cli", "recv", "--device", bob.url, "--relay",
                                           world.relay_url], cwd=str(ROOT), timeout=60, encoding="utf-8",
                          env={**os.environ, **bob.env}, dimensions=(ROWS, COLS))
    child.expect(pexpect.EOF)
    child.close()
    raw = child.before
    assert child.exitstatus == 0, raw
    assert f"alice: {SHOWN}" in terminal_shows(raw)
    assert "\x1b" not in raw and "\u202e" not in raw


# Drawn as nothing or as blank space, though unicodedata calls them printable (issue 19, second round).
BLANK = "\u034f\ufe00\ufe0f\U000e0100\U000e01ef\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5"


def test_visible_shows_characters_that_draw_as_nothing_and_caps_combining_marks():
    for ch in BLANK:
        assert visible(f"pay {ch}bob") == f"pay <U+{ord(ch):04X}>bob"
    assert visible("\u3164\u3164") == "<U+3164><U+3164>"
    zalgo = visible("a" + "\u0336" * 5000 + "b")
    assert zalgo == "a" + "\u0336" * 4 + "<+4996 marks>b"
    assert visible("Tiếng Việt, café, न्दी") == "Tiếng Việt, café, न्दी"  # ordinary marks stay


# A hostile device's (or relay's) error message: sets the window title, clears the screen, writes a decoy
# over the line, reverses the rest, and hides behind fillers.
EVIL_ERROR = "\x1b]0;owned\x07\x1b[2J\x1b[1;1H\rpaired OK \u202egnp.exe\u202c\u3164\u2800"


class _HostileServer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"ok": False, "error": "x", "message": EVIL_ERROR}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile_server():
    server = HTTPServer(("127.0.0.1", 0), _HostileServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_hostile_devices_error_message_is_shown_visibly(tmp_path, hostile_server):
    child = pexpect.spawn(sys.executable, ["-m", "onetimechat.cli", "client", "pair", "--device", hostile_server,
                                           "--code", "1234-5678", "--name", "laptop"],
                          cwd=str(ROOT), timeout=60, encoding="utf-8", dimensions=(ROWS, COLS),
                          env={**os.environ, "OTC_CLIENT_HOME": str(tmp_path / "laptop")})
    child.expect(pexpect.EOF)
    child.close()
    raw = child.before
    assert child.exitstatus != 0
    for ch in ("\x1b", "\x07", "\r\x1b", "\u202e", "\u3164", "\u2800"):
        assert ch not in raw
    assert "ERROR: <U+001B>]0;owned<U+0007><U+001B>[2J<U+001B>[1;1H<U+000D>paired OK <U+202E>gnp.exe<U+202C>" \
           "<U+3164><U+2800>" in terminal_shows(raw)


def test_a_hostile_relays_error_message_is_shown_visibly(hostile_server):
    with pytest.raises(RelayRefused) as refused:
        RelayClient(hostile_server).receive({"a" * 32: 0})
    assert "\x1b" not in str(refused.value) and "\u202e" not in str(refused.value)
    assert "<U+001B>]0;owned<U+0007>" in str(refused.value)


def test_the_cli_prints_any_errors_text_visibly(monkeypatch, capsys):
    import argparse

    def hostile(args: object) -> None:
        raise OTCError(EVIL_ERROR)  # as if any part had built an error from a server's text, raw

    class Parser:
        def parse_args(self, argv: list[str]) -> argparse.Namespace:
            return argparse.Namespace(func=hostile)

    monkeypatch.setattr(cli, "build_parser", lambda *a, **k: Parser())
    assert cli.main(["client", "show"]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err and "\u3164" not in err
    assert err.startswith("ERROR: <U+001B>]0;owned<U+0007>")


def test_the_touchscreen_marks_characters_that_draw_as_nothing():
    from device.touchscreen.testing import use_dummy_drivers

    use_dummy_drivers()
    import pygame

    from device.touchscreen.text import Fonts

    pygame.font.init()
    fonts = Fonts()
    for ch in BLANK:
        assert fonts.visible(f"pay {ch}bob") == f"pay <U+{ord(ch):04X}>bob"  # never blank, never a crash
