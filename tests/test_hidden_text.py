"""Hidden text (issue 19): control and bidirectional characters show visibly on every terminal.

The hostile laptop (for the device's prompt) and the hostile contact (for `otc recv`) are written here: they
send text that, printed raw, makes a terminal show "Lunch at 1?" while the message asks to sell all shares.
What the owner sees is read off a terminal emulator (pyte) fed with the pseudo-terminal's output.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import pexpect
import pyte
import pytest

from client.errors import RemoteError
from client.rpc import DeviceClient, pair
from client.state import ClientState
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
