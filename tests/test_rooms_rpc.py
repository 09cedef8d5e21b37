"""Rooms through the device RPC and the laptop: otc room create, add, join, send, recv against a real relay."""

from __future__ import annotations

import json

import pytest

from client.errors import RemoteError
from device.storage.padstore import PadStore
from onetimechat.cli import main
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.chat_fixtures import OwnerSource, room_member

POLICY = "STAFF and (ADMIN or OPS)"


def test_rooms_over_the_rpc(tmp_path, capsys, monkeypatch):
    PadStore.init(tmp_path / "auth", "auth").close()
    assert main(["abe", "authority", "--home", str(tmp_path / "auth")]) == 0
    people = {}
    relay_server = RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'relay.db'}")), "127.0.0.1", 0,
                               threads=8).start()
    try:
        for name, attributes in (("alice", "STAFF,ADMIN"), ("bob", "STAFF,OPS"), ("dave", "OPS")):
            people[name] = room_member(tmp_path, name, attributes, relay_server.url)
        capsys.readouterr()
        assert main(["room", "create", "--home", str(tmp_path / "auth"), "--name", "ops", "--policy", POLICY]) == 0
        invite = capsys.readouterr().out.strip().splitlines()[-1]
        for person, client in people.values():
            client.device.call("room_add", invite=invite)
        with pytest.raises(RemoteError, match="do not satisfy the room's policy"):
            people["dave"][1].join("ops")  # refused before anything is posted
        people["alice"][1].join("ops")  # shown as its device's name
        monkeypatch.setenv("OTC_CLIENT_HOME", str(people["bob"][0].laptop))
        capsys.readouterr()
        assert main(["room", "join", "--device", people["bob"][0].url, "--relay", relay_server.url, "ops",
                     "--name", "bob.ops"]) == 0
        assert "Joined ops as bob.ops" in capsys.readouterr().out
        # Right after the change the leader sends: the client fetches the key it needs first.
        people["alice"][1].send("ops", "straight after the join")
        assert "straight after the join" in [e.get("text") for e in people["bob"][1].sync("ops")]
        for _ in range(2):
            for _, c in people.values():
                c.sync("ops")
        alice, bob, dave = (people[n][1] for n in ("alice", "bob", "dave"))
        assert alice.room("ops")["keyed"] and bob.room("ops")["keyed"] and not dave.room("ops")["keyed"]
        alice.send("ops", "hello room")
        got = [e.get("text") for e in bob.sync("ops")]
        assert "hello room" in got
        seen = dave.sync("ops")
        assert all(e.get("text") is None for e in seen)
        assert people["alice"][0].source.asked[-1] == "hello room"
        # The same through the command line, as a script would.
        monkeypatch.setenv("OTC_CLIENT_HOME", str(people["bob"][0].laptop))
        assert main(["room", "send", "--device", people["bob"][0].url, "--relay", relay_server.url, "ops",
                     "from the cli"]) == 0
        monkeypatch.setenv("OTC_CLIENT_HOME", str(people["alice"][0].laptop))
        capsys.readouterr()
        assert main(["room", "recv", "--device", people["alice"][0].url, "--relay", relay_server.url,
                     "--json"]) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert [x["text"] for x in lines] == ["hello room", "from the cli"] and lines[0]["room"] == "ops"
        assert [x["sender"] for x in lines] == ["alice", "bob.ops"] and lines[0]["own"]
        # Dave, who could not join, is told of the messages he cannot open rather than shown nothing: one line
        # for those in a row (a cold run: a newcomer's first read printed a line for each of the room's past).
        monkeypatch.setenv("OTC_CLIENT_HOME", str(people["dave"][0].laptop))
        assert main(["room", "recv", "--device", people["dave"][0].url, "--relay", relay_server.url]) == 0
        shown = capsys.readouterr().out.splitlines()
        assert shown == ["[ops] a message this device cannot open (sent under an epoch this device holds no key "
                         "for: before it joined, while it was away, or before its key came)"]  # the one since
        # The list says "1 member" / "2 members".
        monkeypatch.setenv("OTC_CLIENT_HOME", str(people["alice"][0].laptop))
        assert main(["room", "list", "--device", people["alice"][0].url, "--relay", relay_server.url]) == 0
        assert "(2 members, key held)" in capsys.readouterr().out
        # An anonymous member's hidden text shows visibly, never raw (issue 19).
        monkeypatch.setenv("OTC_CLIENT_HOME", str(people["bob"][0].laptop))
        hidden = "Sell all shares\r\x1b[2KLunch at 1?\u202e"
        assert main(["room", "send", "--device", people["bob"][0].url, "--relay", relay_server.url, "ops",
                     hidden]) == 0
        monkeypatch.setenv("OTC_CLIENT_HOME", str(people["alice"][0].laptop))
        capsys.readouterr()
        assert main(["room", "recv", "--device", people["alice"][0].url, "--relay", relay_server.url]) == 0
        out = capsys.readouterr().out
        assert "[ops] bob.ops: Sell all shares" in out
        assert "Sell all shares<U+000D><U+001B>[2KLunch at 1?<U+202E>" in out
        assert "\x1b" not in out and "\u202e" not in out and "\r" not in out
        # Errors are one line.
        assert main(["room", "send", "--device", people["bob"][0].url, "--relay", relay_server.url, "nosuch",
                     "x"]) != 0
        assert capsys.readouterr().err.startswith("ERROR: ")
    finally:
        for person, _ in people.values():
            person.stop()
        relay_server.close()


def test_room_keys_come_from_the_devices_hrng(tmp_path):
    """With an HRNG configured, room keys are drawn through its mixer; a failing source stops the draw."""
    import os

    import pytest

    from device.rooms.rpc import rooms_for
    from device.server import Server, ServerConfig
    from hrng.errors import HRNGError

    good, stuck = tmp_path / "good", tmp_path / "stuck"
    good.write_bytes(os.urandom(1 << 20))
    stuck.write_bytes(b"\0" * (1 << 20))  # a source stuck at zero fails the start-up health test
    for source, ok in ((good, True), (stuck, False)):
        home = tmp_path / f"home-{source.name}"
        PadStore.init(home, "alice").close()
        server = Server(ServerConfig(home=home, source=OwnerSource(), hrng=(f"file://{source}",)), "127.0.0.1", 0)
        try:
            service = server.app.extensions["otc"]
            assert rooms_for(service).options["random_bytes"] == service.session_random
            assert service.panel_status()[2] == f"{source}: health-tested at the first draw"
            if ok:
                assert len(service.session_random(32)) == 32
                assert service.panel_status()[2] == f"{source}: healthy at the last draw"
            else:
                with pytest.raises(HRNGError):
                    service.session_random(32)
                assert any(e["event"] == "hrng-alarm" for e in service.ready().events())
                assert service.panel_status()[2].startswith(f"{source}: ALARM, ")
        finally:
            server.close()


def test_messages_a_device_cannot_open_in_a_row_are_one_line(capsys):
    from onetimechat.cli.room import show_events

    unreadable = {"kind": "message", "outcome": "unreadable"}
    said = {"kind": "message", "outcome": "accepted", "sender": "bob", "text": "hi"}
    show_events("ops", [unreadable] * 3 + [said, unreadable])
    why = ("(sent under an epoch this device holds no key for: before it joined, while it was away, or before its "
           "key came)")
    assert capsys.readouterr().out.splitlines() == [
        f"[ops] 3 messages this device cannot open {why}", "[ops] bob: hi",
        f"[ops] a message this device cannot open {why}"]
    show_events("ops", [unreadable] * 2, as_json=True)  # a script still gets each one
    assert len(capsys.readouterr().out.splitlines()) == 2
