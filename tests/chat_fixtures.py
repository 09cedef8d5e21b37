"""A small world for the chat tests: a real relay, real device servers, paired laptops.

The relay and the device servers are the production WSGI servers on
127.0.0.1 (port 0); each device's confirmations come from a test-only source
that approves everything but the messages a test tells it to decline. Chat
sessions are real `otc chat` processes in pseudo-terminals, their screens
rendered by a terminal emulator (pyte) so tests read what a person would see.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
import pyte

from client.rpc import pair
from client.state import ClientState
from device.confirm import ConfirmRequest
from device.server import Server, ServerConfig
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.conftest import ROOT, make_pair


class OwnerSource:
    """The device's owner, scripted: approves every message except those in ``decline``."""

    name = "scripted"

    def __init__(self) -> None:
        self.decline: set[str] = set()
        self.asked: list[str] = []
        self.codes: list[str] = []
        self.present = threading.Event()  # cleared: the owner is away and answers nothing yet
        self.present.set()

    def ask(self, request: ConfirmRequest, timeout: float) -> bool:
        text = request.plaintext.decode("utf-8", "replace")
        self.asked.append(text)
        time.sleep(0.2)  # the owner reads the screen
        if not self.present.wait(timeout):
            return False
        return text not in self.decline

    def show_code(self, code: str) -> None:
        self.codes.append(code)

    def clear_code(self) -> None:
        pass


@dataclass
class Person:
    name: str
    home: Path
    laptop: Path
    source: OwnerSource
    server: Server | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = ServerConfig(home=self.home, source=self.source, confirm_timeout=10)
        self.server = Server(config, "127.0.0.1", self.port).start()
        self.port = self.server.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    @property
    def env(self) -> dict[str, str]:
        return {"OTC_CLIENT_HOME": str(self.laptop)}


def room_member(tmp_path: Path, name: str, attributes: str, relay_url: str):
    """A device granted ``attributes`` by the authority home at tmp_path/auth, started, paired with its laptop:
    (Person, RoomClient through the relay at ``relay_url``)."""
    from client.relay import RelayClient
    from client.rooms import RoomClient
    from client.rpc import DeviceClient
    from device.abe.store import grant_local
    from device.storage.padstore import PadStore

    PadStore.init(tmp_path / name, name).close()
    with PadStore(tmp_path / "auth") as auth, PadStore(tmp_path / name) as member:
        grant_local(auth, member, attributes)
    person = Person(name, tmp_path / name, tmp_path / f"{name}-laptop", OwnerSource())
    person.start()
    state = ClientState(person.laptop)
    pair(person.url, name=f"{name}-laptop", ask_code=lambda: person.source.codes[-1], state=state)
    return person, RoomClient(DeviceClient(person.url, state=state), RelayClient(relay_url))


@dataclass
class World:
    relay_url: str
    people: dict[str, Person]
    relay: RelayServer
    relay_db: Path
    chats: list[ChatSession] = field(default_factory=list)

    def chat(self, who: str, *extra: str) -> ChatSession:
        session = ChatSession(self.people[who], self.relay_url, *extra)
        self.chats.append(session)
        return session

    def stop_relay(self) -> None:
        self.relay.close()

    def start_relay(self) -> None:
        """The relay again, on the same port and store (what clients know of it stays valid)."""
        port = int(self.relay_url.rsplit(":", 1)[1])
        app = create_app(RelayConfig(db=f"sqlite:///{self.relay_db}"))
        self.relay = RelayServer(app, "127.0.0.1", port, threads=32).start()

    def close(self) -> None:
        for chat in self.chats:
            chat.close()
        for person in self.people.values():
            person.stop()
        self.relay.close()


def make_world(tmp_path: Path, names: tuple[str, ...] = ("alice", "bob", "carol"), size: int = 1 << 16) -> World:
    """Devices for ``names``; the first has a pad with each other one; all served and paired."""
    first = names[0]
    for other in names[1:]:
        make_pair(tmp_path, size=size, names=(first, other))
    db = tmp_path / "relay.db"
    relay = RelayServer(create_app(RelayConfig(db=f"sqlite:///{db}")), "127.0.0.1", 0, threads=32).start()
    people = {}
    for name in names:
        person = Person(name, tmp_path / name, tmp_path / f"{name}-laptop", OwnerSource())
        person.start()
        pair(person.url, name=f"{name}-laptop", ask_code=lambda p=person: p.source.codes[-1],
             state=ClientState(person.laptop))
        people[name] = person
    return World(relay.url, people, relay, db)


class ChatSession:
    """`otc chat` in a pseudo-terminal, with its screen kept by a terminal emulator."""

    ROWS, COLS = 40, 150

    def __init__(self, person: Person | None, relay_url: str = "", *extra: str,
                 command: tuple[str, list[str]] | None = None, env: dict[str, str] | None = None) -> None:
        """`otc chat` for ``person`` via ``relay_url``, or any ``command`` (program, args) with ``env``."""
        self.screen = pyte.Screen(self.COLS, self.ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.lock = threading.Lock()
        # pexpect reaps the child with waitpid from whichever thread asks first: the reader (at EOF)
        # and the test thread (isalive, close) must never ask at once, or the loser gets ECHILD.
        self.proc_lock = threading.Lock()
        base = {**os.environ, **(person.env if person else {}), **(env or {})}
        env = {**base, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", "PYTHONPATH": str(ROOT)}
        if command is None:
            assert person is not None
            command = (sys.executable, ["-m", "onetimechat.cli", "chat", "--device", person.url,
                                        "--relay", relay_url, *extra])
        self.child = pexpect.spawn(command[0], command[1], env=env, cwd=str(ROOT),
                                   dimensions=(self.ROWS, self.COLS))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                with self.proc_lock:
                    data = self.child.read_nonblocking(65536, timeout=0.2)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.ExceptionPexpect, OSError, ValueError):
                return
            with self.lock:
                self.stream.feed(data)

    def alive(self) -> bool:
        with self.proc_lock:
            return self.child.isalive()

    def text(self) -> str:
        with self.lock:
            return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, needle: str, timeout: float = 30, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if text.count(needle) >= count:
                return text
            if not self.alive():
                time.sleep(0.5)  # the last output
                if self.text().count(needle) >= count:
                    return self.text()
                break
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} (x{count}) never appeared on the chat screen:\n{self.text()}")

    def type(self, line: str) -> None:
        self.child.send(line)
        time.sleep(0.05)
        self.child.send("\r")

    def close(self) -> int | None:
        if self.alive():
            self.child.send("\x04")  # Ctrl-D leaves the chat
            deadline = time.monotonic() + 10
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.alive():
                with self.proc_lock:
                    self.child.terminate(force=True)
        self.reader.join(timeout=5)
        with self.proc_lock:
            self.child.close()
        return self.child.exitstatus
