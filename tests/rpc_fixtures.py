"""Fixtures for the device RPC: a real waitress server on 127.0.0.1, port 0."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.rpc import DeviceClient, pair
from client.state import ClientState
from device.confirm import ConfirmRequest
from device.server import Server, ServerConfig
from tests.conftest import make_pair


class ScriptedSource:
    """A confirmation source a test drives: decisions are queued, codes recorded.

    It exists only in the test suite; the device's CLI cannot select it.
    """

    name = "scripted"

    def __init__(self) -> None:
        self.decisions: queue.Queue[bool | None] = queue.Queue()
        self.asked: list[ConfirmRequest] = []
        self.codes: list[str] = []
        self.cleared = 0
        self.on_screen = threading.Event()

    def ask(self, request: ConfirmRequest, timeout: float) -> bool:
        self.asked.append(request)
        self.on_screen.set()
        try:
            decision = self.decisions.get(timeout=timeout)
        except queue.Empty:
            return False
        if decision is None:  # "never answer": wait out the timeout
            threading.Event().wait(timeout)
            return False
        return decision

    def show_code(self, code: str) -> None:
        self.codes.append(code)

    def clear_code(self) -> None:
        self.cleared += 1


@dataclass
class RpcDevice:
    home: Path
    peer_home: Path
    pad_id: bytes
    source: ScriptedSource
    server: Server
    tmp: Path

    @property
    def url(self) -> str:
        return self.server.url

    def pair_client(self, name: str = "laptop") -> DeviceClient:
        """Pair a new laptop (its own state directory) with the right code."""
        state = ClientState(self.tmp / f"client-{name}")

        def read_code() -> str:
            return self.source.codes[-1]

        pair(self.url, name=name, ask_code=read_code, state=state)
        return DeviceClient(self.url, state=state, timeout=30)

    def restart(self, **config) -> None:
        """Stop the server and start a new one on the same home and port (paired URLs stay valid)."""
        port = self.server.port
        self.server.close()
        self.server = start_server(self.home, self.source, port=port, **config)


def start_server(home: Path, source: ScriptedSource, port: int = 0, **config) -> Server:
    cfg = ServerConfig(home=home, source=source, **config)
    return Server(cfg, "127.0.0.1", port).start()


@pytest.fixture
def rpc_device(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path)
    source = ScriptedSource()
    server = start_server(home_a, source, confirm_timeout=5)
    device = RpcDevice(home_a, home_b, pad_id, source, server, tmp_path)
    yield device
    device.server.close()
