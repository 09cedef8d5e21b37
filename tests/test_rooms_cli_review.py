"""Rooms at the terminal, from a user's review of issue 22 (real devices, a real relay):
- a send never loses the room messages not read yet: the sync it runs first moves the device's cursor past them,
  so the CLI prints them (before "sent to #room") and the chat shows them;
- an open chat follows the rooms joined after it started;
- `otc room add --relay URL` remembers the relay, as its help says."""

from __future__ import annotations

import pytest

from client.rooms import RoomClient
from device.storage.padstore import PadStore
from onetimechat.cli import main
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.chat_fixtures import Person, room_member


@pytest.fixture
def room(tmp_path, capsys):
    """Carol and bob, members of room ops4 on their own devices, a real relay between them."""
    PadStore.init(tmp_path / "auth", "auth").close()
    assert main(["abe", "authority", "--home", str(tmp_path / "auth")]) == 0
    relay = RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'relay.db'}")), "127.0.0.1", 0,
                        threads=8).start()
    people: dict[str, tuple[Person, RoomClient]] = {}
    try:
        for name in ("carol", "bob"):
            people[name] = room_member(tmp_path, name, "STAFF,OPS", relay.url)
        capsys.readouterr()
        assert main(["room", "create", "--home", str(tmp_path / "auth"), "--name", "ops4", "--policy", "OPS"]) == 0
        invite = capsys.readouterr().out.strip().splitlines()[-1]
        for _, client in people.values():
            client.device.call("room_add", invite=invite)
            client.join("ops4")
        for _ in range(3):
            for _, client in people.values():
                client.sync("ops4")
        assert all(client.room("ops4")["keyed"] for _, client in people.values())
        yield people, relay.url
    finally:
        for person, _ in people.values():
            person.stop()
        relay.close()


def otc(people, relay_url, monkeypatch, capsys, who: str, *argv: str) -> list[str]:
    person = people[who][0]
    monkeypatch.setenv("OTC_CLIENT_HOME", str(person.laptop))
    capsys.readouterr()
    assert main(["room", argv[0], "--device", person.url, "--relay", relay_url, *argv[1:]]) == 0
    return capsys.readouterr().out.splitlines()


def test_a_message_not_read_yet_is_printed_by_the_send_that_fetched_it(room, monkeypatch, capsys):
    people, relay_url = room
    assert otc(people, relay_url, monkeypatch, capsys, "carol", "send", "ops4", "E1") == ["sent to #ops4"]
    # Before: bob's send fetched E1, the device moved past it, and nothing ever showed it.
    out = otc(people, relay_url, monkeypatch, capsys, "bob", "send", "ops4", "E2")
    assert out == ["[ops4] carol: E1", "sent to #ops4"]
    # Shown once: the next recv has nothing of it (and bob's own E2 was not printed back at him as news).
    assert otc(people, relay_url, monkeypatch, capsys, "bob", "recv") == []
    assert otc(people, relay_url, monkeypatch, capsys, "carol", "recv") == ["[ops4] bob: E2"]


def test_a_declined_send_still_prints_what_it_fetched(room, monkeypatch, capsys):
    people, relay_url = room
    otc(people, relay_url, monkeypatch, capsys, "carol", "send", "ops4", "E3")
    people["bob"][0].source.decline.add("not this")
    bob = people["bob"][0]
    monkeypatch.setenv("OTC_CLIENT_HOME", str(bob.laptop))
    assert main(["room", "send", "--device", bob.url, "--relay", relay_url, "ops4", "not this"]) != 0
    assert capsys.readouterr().out.splitlines() == ["[ops4] carol: E3"]
    assert otc(people, relay_url, monkeypatch, capsys, "bob", "recv") == []


def test_the_chat_shows_what_its_send_fetched(room):
    from client.chat import Chat, Command

    people, _ = room
    people["carol"][1].send("ops4", "E1")
    shown: list[tuple[str, str]] = []

    class Screen:  # the part of Chat a send uses, without a terminal
        rooms = people["bob"][1]
        add = refresh = staticmethod(lambda *a: None)

        _room_events = Chat._room_events

        def _room_event(self, name: str, event: dict) -> None:
            shown.append((name, event.get("text")))

    Chat._send_room(Screen(), Command(name="room", room="ops4", text="E2"))  # type: ignore[arg-type]
    assert ("ops4", "E1") in shown


def test_an_open_chat_follows_a_room_joined_after_it_started(room):
    """The receiver's periodic refresh (the contacts' one) watches every room the device is in or joining: before,
    only those at start-up (and one joined in the chat), so a room joined from another terminal showed nothing
    and, on its leader, no key went out until the chat restarted."""
    import threading
    from types import SimpleNamespace

    from client.chat import Chat

    people, _ = room
    watched: list[str] = []
    stop = threading.Event()

    def poll(deliver, wait):
        stop.set()
        return SimpleNamespace(waiting=0)

    class Screen:  # the part of Chat the receiver uses, without a terminal
        messenger = SimpleNamespace(inbound={}, refresh_contacts=lambda: None, poll=poll)
        rooms = people["bob"][1]
        _flush = health = system = _deliver = staticmethod(lambda *a, **k: None)
        follow_rooms = Chat.follow_rooms
        refresh_rooms = Chat.refresh_rooms

        def __init__(self) -> None:
            self.stop = stop

        def watch(self, r: dict) -> None:
            watched.append(r["room"])

    Chat.receiver(Screen())  # type: ignore[arg-type]
    assert watched == ["ops4"]


def test_room_add_remembers_the_relay_it_was_given(room, tmp_path, monkeypatch, capsys):
    from client.state import ClientState

    people, relay_url = room
    bob = people["bob"][0]
    monkeypatch.setenv("OTC_CLIENT_HOME", str(bob.laptop))
    invites = []
    for name in ("ops5", "ops6"):
        assert main(["room", "create", "--home", str(tmp_path / "auth"), "--name", name, "--policy", "OPS"]) == 0
        invites.append(capsys.readouterr().out.strip().splitlines()[-1])
    assert ClientState(bob.laptop).config().get("relay") is None
    # A relay that does not answer is not remembered (as everywhere): said on stderr, the room added all the same.
    assert main(["room", "add", "--device", bob.url, "--relay", "http://127.0.0.1:1", invites[0]]) == 0
    out = capsys.readouterr()
    assert "Added room ops5" in out.out and "Not remembered." in out.err
    assert ClientState(bob.laptop).config().get("relay") is None
    # Before: never remembered, the relay being left untouched.
    assert main(["room", "add", "--device", bob.url, "--relay", relay_url, invites[1]]) == 0
    assert ClientState(bob.laptop).config().get("relay") == relay_url
    assert main(["room", "list", "--device", bob.url]) == 0  # no --relay needed now
    assert "ops6" in capsys.readouterr().out


def test_room_list_and_invite_need_no_relay(room, tmp_path, monkeypatch, capsys):
    """A cold run: the authority's laptop, never given a relay, could not list its device's rooms or print an
    invite again ("No relay given and none remembered"); both read only the device."""
    from client.state import ClientState

    people, _relay_url = room
    bob = people["bob"][0]
    fresh = tmp_path / "fresh-laptop"
    monkeypatch.setenv("OTC_CLIENT_HOME", str(fresh))
    # The laptop's pairing with bob's device is what the device client needs; the relay it never had.
    ClientState(fresh).save(ClientState(bob.laptop).load(bob.url))
    assert ClientState(fresh).config().get("relay") is None
    assert main(["room", "list", "--device", bob.url]) == 0
    assert "ops4" in capsys.readouterr().out
    assert main(["room", "invite", "--device", bob.url, "ops4"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("otcroom1.")
    assert main(["room", "invite", "--device", bob.url, "nosuch"]) == 1
    assert "knows no room 'nosuch'" in capsys.readouterr().err
