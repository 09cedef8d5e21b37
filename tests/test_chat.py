"""Two `otc chat` sessions in real pseudo-terminals hold a conversation.

A real relay and real device servers (tests/chat_fixtures.py); what is
checked is what a person sees on each screen.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.chat import Command, parse_command
from tests.chat_fixtures import make_world


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    yield w
    w.close()


def test_two_chats_hold_a_conversation(world, tmp_path):
    alice = world.chat("alice")
    bob = world.chat("bob")
    alice.wait_for("contacts: bob, carol")
    bob.wait_for("contacts: alice")

    # Plain messages both ways, as they arrive, with delivery marks.
    alice.type("bob: hello bob")
    bob.wait_for("alice: hello bob")
    alice.wait_for("me → bob: hello bob  ✓✓")
    bob.type("send alice hi alice, all good here")
    alice.wait_for("bob: hi alice, all good here")
    bob.wait_for("me → alice: hi alice, all good here  ✓✓")

    # Multisend: one confirmation per contact, each delivered on its own.
    alice.type("ms bob,carol lunch at noon?")
    bob.wait_for("alice: lunch at noon?")
    alice.wait_for("me → carol: lunch at noon?  ✓")
    assert world.people["alice"].source.asked.count("lunch at noon?") == 2

    # A saved group.
    alice.type("group team bob,carol")
    alice.wait_for("group team: bob, carol (saved)")
    alice.type("gs team standup moved to 10")
    bob.wait_for("alice: standup moved to 10")
    alice.wait_for("me → carol: standup moved to 10")

    # While the device waits for its owner, the chat says so.
    world.people["alice"].source.present.clear()
    alice.type("bob: wait for me")
    alice.wait_for("me → bob: wait for me  … confirm on your device")
    world.people["alice"].source.present.set()
    alice.wait_for("me → bob: wait for me  ✓")
    bob.wait_for("alice: wait for me")

    # A decline on the device is reported plainly, and nothing reaches bob.
    world.people["alice"].source.decline.add("this one I regret")
    alice.type("bob: this one I regret")
    alice.wait_for("✗ declined on the device")
    alice.type("bob: but this one is fine")
    bob.wait_for("alice: but this one is fine")
    assert "this one I regret" not in bob.text()

    # Bob's device goes away; a message sent meanwhile waits on the relay and is shown once it is back.
    world.people["bob"].stop()
    alice.type("bob: are you there?")
    alice.wait_for("me → bob: are you there?  ✓")
    bob.wait_for("the device does not answer")
    assert "alice: are you there?" not in bob.text()
    world.people["bob"].start()
    bob.wait_for("alice: are you there?", timeout=45)
    bob.wait_for("connected")

    # The relay goes down: the message waits in the outbox (⧗) and goes out when the relay is back.
    world.stop_relay()
    alice.type("bob: while the relay was down")
    alice.wait_for("me → bob: while the relay was down  ⧗ waiting for the relay")
    alice.wait_for("the relay does not answer")
    world.start_relay()
    bob.wait_for("alice: while the relay was down", timeout=45)
    alice.wait_for("me → bob: while the relay was down  ✓✓", timeout=45)

    # Tab completes contacts and commands.
    alice.child.send("ca\t")
    alice.wait_for("> carol:")
    alice.type("completed by tab")
    alice.wait_for("me → carol: completed by tab")
    alice.child.send("cont\t")
    alice.wait_for("> contacts")
    alice.child.send("\x15")  # Ctrl-U clears the line

    # Contacts with pad left each way, the device log, help.
    alice.type("contacts")
    alice.wait_for("bytes of pad left to send")
    alice.type("log")
    alice.wait_for("declined")
    alice.type("help")
    alice.wait_for("ms <a,b,...> <message>")
    alice.type("group pals bob,carol")
    alice.wait_for("group pals: bob, carol (saved)")
    alice.type("groups")
    alice.wait_for("group pals: bob, carol", count=2)
    alice.wait_for("group team: bob, carol", count=2)

    # Mistakes get one clear line.
    alice.type("frobnicate now")
    alice.wait_for("unknown command 'frobnicate'")
    alice.type("dave: hi")
    alice.wait_for("no contact named dave")

    alice.type("exit")
    assert alice.close() == 0
    assert bob.close() == 0
    assert "Traceback" not in alice.text() + bob.text()


GROUPS = {"team": ["bob", "carol"]}


@pytest.mark.parametrize("line, expected", [
    ("bob: hi there", Command("send", ("bob",), "hi there")),
    ("send bob hi there", Command("send", ("bob",), "hi there")),
    ("ms bob,carol,bob  lunch?", Command("send", ("bob", "carol"), "lunch?")),
    ("gs team standup", Command("send", ("bob", "carol"), "standup", group="team")),
    ("group team bob,carol", Command("group", ("bob", "carol"), group="team")),
    ("contacts", Command("contacts")),
    ("LOG", Command("log")),
    ("receipts off", Command("receipts", text="off")),
    ("exit", Command("exit")),
    ("rooms", Command("rooms")),
    ("groups", Command("groups")),
    ("join ops", Command("join", room="ops")),
    ("join #ops as bob.ops", Command("join", room="ops", text="bob.ops")),
    ("leave #ops", Command("leave", room="ops")),
    ("#ops: hello room", Command("room", text="hello room", room="ops")),
    ("#ops hello", Command("room", text="hello", room="ops")),
    ("   ", Command("empty")),
])
def test_parse_command(line, expected):
    assert parse_command(line, GROUPS) == expected


@pytest.mark.parametrize("line, error", [
    ("send bob", "usage: send"),
    ("ms bob,,carol hi", "usage: ms"),
    ("ms bob", "usage: ms"),
    ("group team", "usage: group"),
    ("group team bob, carol", "usage: group"),
    ("gs nobody hi", "no group named 'nobody'"),
    ("receipts maybe", "usage: receipts"),
    ("bob:", "unknown command"),
    ("hello there", "unknown command 'hello'"),
    ("join", "usage: join"),
    ("join ops as", "usage: join"),
    ("join ops bob", "usage: join"),
    ("#ops:", "usage: #<room>"),
])
def test_parse_command_errors(line, error):
    command = parse_command(line, GROUPS)
    assert command.name == "error" and command.text.startswith(error)


@given(st.text(max_size=80))
def test_parse_command_never_crashes(line):
    command = parse_command(line, GROUPS)
    assert command.name in {"send", "group", "groups", "contacts", "log", "receipts", "help", "exit", "error", "empty",
                            "rooms", "join", "leave", "room", "who", "share"}
    if command.name == "send":
        assert command.contacts and all(command.contacts) and command.text


def test_rooms_in_the_chat(tmp_path):
    """Three devices with different attributes in one room: the two that satisfy its policy talk."""
    from client.rpc import DeviceClient
    from client.state import ClientState
    from device.abe.store import grant_local
    from device.storage.padstore import PadStore
    from onetimechat.cli import main

    world = make_world(tmp_path, names=("alice", "bob", "dave"))
    try:
        auth = tmp_path / "auth"
        PadStore.init(auth, "auth").close()
        assert main(["abe", "authority", "--home", str(auth)]) == 0
        for name, attributes in (("alice", "STAFF,ADMIN"), ("bob", "STAFF,OPS"), ("dave", "OPS")):
            with PadStore(auth) as a, PadStore(world.people[name].home) as member:
                grant_local(a, member, attributes)
        invite = otc_out(["room", "create", "--home", str(auth), "--name", "ops", "--policy",
                          "STAFF and (ADMIN or OPS)"]).strip().splitlines()[-1]
        for person in world.people.values():
            DeviceClient(person.url, state=ClientState(person.laptop)).call("room_add", invite=invite)
        chats = {name: world.chat(name) for name in ("alice", "bob", "dave")}
        for chat in chats.values():
            chat.wait_for("contacts:")
        chats["alice"].type("rooms")
        chats["alice"].wait_for("#ops: STAFF and (ADMIN or OPS) · not joined")
        for name in ("alice", "bob"):
            chats[name].type("join ops")
            chats[name].wait_for("#ops: you joined")
        chats["dave"].type("join ops")  # OPS alone does not satisfy the policy: refused at once, saying why
        chats["dave"].wait_for("do not satisfy the room's policy STAFF and (ADMIN or OPS)")
        chats["bob"].wait_for("members share a new key", timeout=60)
        chats["alice"].wait_for("#ops: bob joined", count=1, timeout=60)
        chats["alice"].type("#ops: hello room")
        chats["alice"].wait_for("me → #ops: hello room  ✓", timeout=60)
        chats["bob"].wait_for("#ops alice: hello room", timeout=60)
        assert world.people["alice"].source.asked[-1] == "hello room"
        assert "hello room" not in chats["dave"].text().replace("#ops: hello room", "")
        chats["bob"].type("leave ops")
        chats["bob"].wait_for("#ops: left")
        chats["alice"].wait_for("#ops: bob left", timeout=60)
        for chat in chats.values():
            assert chat.close() == 0
            assert "Traceback" not in chat.text()
    finally:
        world.close()


@pytest.mark.slow  # about a minute: the chat's long polls (25 s) and its renewal check (every 20 s)
def test_a_chat_takes_its_renewed_key_and_its_room_moves_on(tmp_path):
    """The authority ends the period early and renews both members over their pads: each chat fetches its renewal by
    itself (nobody runs `otc room recv`), says so, and the room moves to the new period, where they read on."""
    from client.rpc import DeviceClient
    from client.state import ClientState
    from device.abe.store import grant_local
    from device.storage.padstore import PadStore
    from onetimechat.cli import main

    world = make_world(tmp_path, names=("alice", "bob"))
    try:
        auth = tmp_path / "auth"
        PadStore.init(auth, "auth").close()
        assert main(["abe", "authority", "--home", str(auth)]) == 0
        for name, attributes in (("alice", "STAFF,ADMIN"), ("bob", "STAFF,OPS")):
            with PadStore(auth) as a, PadStore(world.people[name].home) as member:
                grant_local(a, member, attributes)
        invite = otc_out(["room", "create", "--home", str(auth), "--name", "ops", "--policy",
                          "STAFF and (ADMIN or OPS)"]).strip().splitlines()[-1]
        devices = {n: DeviceClient(p.url, state=ClientState(p.laptop)) for n, p in world.people.items()}
        for device in devices.values():
            device.call("room_add", invite=invite)
        chats = {name: world.chat(name) for name in ("alice", "bob")}
        for name, chat in chats.items():
            chat.wait_for("contacts:")
            chat.type("join ops")
            chat.wait_for("#ops: you joined")
        chats["bob"].wait_for("members share a new key", timeout=60)
        chats["alice"].type("#ops: period one")
        chats["bob"].wait_for("#ops alice: period one", timeout=60)
        otc_out(["abe", "renew", "--home", str(auth), "--end-period", "--relay", world.relay_url])
        for name, chat in chats.items():
            chat.wait_for("renewed key stored: ", timeout=90)
            assert "period 2 (" in chat.text()
        deadline = time.monotonic() + 90
        while {d.call("rooms")[0]["period"] for d in devices.values()} != {2} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [d.call("rooms")[0]["period"] for d in devices.values()] == [2, 2]
        chats["alice"].type("#ops: period two")
        # alice's name now stands for two memberships in the room (period 1's and 2's): shown with its id.
        seen = chats["bob"].wait_for(": period two", timeout=90)
        assert re.search(r"#ops alice~[0-9a-f]{12}: period two", seen)
        for chat in chats.values():
            assert chat.close() == 0
            assert "Traceback" not in chat.text()
    finally:
        world.close()


def otc_out(argv: list[str]) -> str:
    from tests.conftest import otc

    result = otc(*argv)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def _status_line(session) -> str:
    lines = [ln for ln in session.text().splitlines() if "(help: commands)" in ln]
    return lines[-1] if lines else ""


def _wait_status(session, needle: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in _status_line(session):
            return
        time.sleep(0.1)
    raise AssertionError(f"status line never said {needle!r}; it says {_status_line(session)!r}")


def test_the_status_line_follows_the_device_and_the_relay_with_no_traffic(tmp_path):
    """The review saw "connected" while the device was down, and a stale line once it was back."""
    world = make_world(tmp_path, names=("alice", "bob"))
    try:
        alice = world.chat("alice")
        _wait_status(alice, "connected")
        world.people["alice"].stop()
        _wait_status(alice, "the device does not answer")
        world.people["alice"].start()
        _wait_status(alice, "connected")
        world.stop_relay()
        _wait_status(alice, "the relay does not answer", timeout=45)
        world.start_relay()
        _wait_status(alice, "connected", timeout=45)
        assert alice.close() == 0
    finally:
        world.close()


def test_groups_when_none_are_saved(tmp_path):
    world = make_world(tmp_path, names=("alice", "bob"))
    try:
        alice = world.chat("alice")
        alice.type("groups")
        alice.wait_for("no saved groups; make one with: group <name> <a,b,...>")
        assert alice.close() == 0
    finally:
        world.close()
