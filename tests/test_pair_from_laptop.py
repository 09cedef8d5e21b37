"""Pairing in person between two served devices, carried by their laptops.

Each device runs under `otc device serve`'s server with its own screen (the
console the touchscreen draws); each owner's laptop runs the real
`otc pair host|join --device URL`; the owners compare the pairing string on
the devices' screens and answer there.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.rpc import DeviceClient, pair
from client.state import ClientState
from device.server import Server, ServerConfig
from device.storage.padstore import INITIATOR, RESPONDER, PadStore
from device.ui import Console, PanelSource, Snapshot
from tests.conftest import ROOT, otc, pad_bytes


@dataclass
class Served:
    name: str
    home: Path
    laptop: Path
    console: Console
    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def env(self) -> dict[str, str]:
        return {"OTC_CLIENT_HOME": str(self.laptop)}


def serve(tmp_path: Path, name: str, address: str = "127.0.0.1") -> Served:
    """A device serving its RPC on ``address`` (its cable-side address), its laptop paired with it."""
    home = tmp_path / name
    PadStore.init(home, name).close()
    console = Console(name, "touchscreen")
    source = PanelSource(console)
    server = Server(ServerConfig(home=home, source=source, console=console, confirm_timeout=30), address,
                    0).start()
    service = server.app.extensions["otc"]
    console.attach(service.lock, service.panel_status)
    laptop = tmp_path / f"{name}-laptop"
    pair(server.url, name=f"{name}-laptop", ask_code=lambda: console.snapshot().pairing_code or "",
         state=ClientState(laptop))
    return Served(name, home, laptop, console, server)


def served(tmp_path: Path, *names: str) -> Iterator[list[Served]]:
    """Served devices, closed after the test (for fixtures: ``yield from``)."""
    devices = [serve(tmp_path, name) for name in names]
    yield devices
    for device in devices:
        device.server.close()


@pytest.fixture
def devices(tmp_path):
    yield from served(tmp_path, "alice", "bob")


def owner(device: Served, answer: bool, seen: list, keep: Callable[[Snapshot], object] = lambda snap: snap.ceremony.sas
          ) -> threading.Thread:
    """The device's owner: waits for the pairing string on the screen, keeps what ``keep`` takes of the screen
    in ``seen`` and answers there."""

    def run() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            snap = device.console.snapshot()
            view = snap.ceremony
            if view is not None and view.stage == "compare" and view.sas:
                seen.append(keep(snap))
                device.console.answer_ceremony(answer)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def client_of(device: Served) -> DeviceClient:
    """The device's paired laptop, as a client of its RPC."""
    return DeviceClient(device.url, state=ClientState(device.laptop), timeout=60)


def approve_everything(consoles: list[Console], stop: threading.Event) -> threading.Thread:
    """Owners who approve every question (and every room message) on their devices' screens, until ``stop``."""

    def run() -> None:
        while not stop.is_set():
            for console in consoles:
                view = console.snapshot().confirm
                if view is not None:
                    console.decide(True, view.request_id)
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def laptops(alice: Served, bob: Served, size: str = "256K") -> tuple[subprocess.Popen, subprocess.Popen]:
    return carried(alice, bob, ["pair"], ["--size", size])


def carried(alice: Served, bob: Served, command: list[str], host_args: list[str], laptop: str = "127.0.0.1"
            ) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Both laptops run ``otc COMMAND host|join --device``: alice's hosts (listening on ``laptop``, its own
    address), bob's joins."""

    def popen(device: Served, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "onetimechat.cli", *command, *args], cwd=ROOT,
                                env={**__import__("os").environ, **device.env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    host = popen(alice, "host", "--device", alice.url, "--listen", f"{laptop}:0", *host_args)
    assert host.stdout is not None
    line = host.stdout.readline()
    port = re.search(re.escape(laptop) + r":(\d+)", line)
    assert port, line
    join = popen(bob, "join", "--device", bob.url, "--connect", f"{laptop}:{port.group(1)}")
    return host, join


def finish(host: subprocess.Popen, join: subprocess.Popen, owners: list[threading.Thread]
           ) -> tuple[tuple[str, str], tuple[str, str]]:
    """Wait for both laptops and both owners; (stdout, stderr) of each laptop."""
    outs = host.communicate(timeout=120), join.communicate(timeout=120)
    for t in owners:
        t.join(5)
    return outs


def test_laptops_carry_a_ceremony_confirmed_on_the_devices_screens(devices):
    alice, bob = devices
    seen: list[str] = []
    owners = [owner(alice, True, seen), owner(bob, True, seen)]
    host, join = laptops(alice, bob)
    (host_out, host_err), (join_out, join_err) = finish(host, join, owners)
    assert host.returncode == 0, host_err
    assert join.returncode == 0, join_err
    # Both screens showed the same string, and each laptop showed it too.
    assert len(seen) == 2 and seen[0] == seen[1]
    assert f"Pairing string: {seen[0]}" in host_out and f"Pairing string: {seen[0]}" in join_out
    prints = [re.search(r"Pad fingerprint: ([0-9a-f ]+) \(", out).group(1) for out in (host_out, join_out)]
    assert prints[0] == prints[1]
    # Both screens end on the same fingerprint.
    views = [d.console.snapshot().ceremony for d in (alice, bob)]
    assert [v.stage for v in views] == ["done", "done"] and views[0].fingerprint == views[1].fingerprint
    with PadStore(alice.home) as a, PadStore(bob.home) as b:
        (pa,), (pb,) = a.pads(), b.pads()
        assert (pa.contact, pa.role, pb.contact, pb.role) == ("bob", INITIATOR, "alice", RESPONDER)
        assert pa.pad_id == pb.pad_id and pa.size == 256 * 1024
        assert (pa.mailbox_out, pa.mailbox_in) == (pb.mailbox_in, pb.mailbox_out)
    assert pad_bytes(alice.home, pa.pad_id) == pad_bytes(bob.home, pb.pad_id)
    # The pad works: a message from alice's device opens on bob's.
    package = otc("device", "package", "--home", str(alice.home), "bob", input=b"we met", check=True).stdout
    opened = otc("device", "unpackage", "--home", str(bob.home), input=package, check=True).stdout
    assert b'"text": "we met"' in opened


def test_a_no_on_either_screen_stores_nothing(devices):
    alice, bob = devices
    seen: list[str] = []
    owners = [owner(alice, True, seen), owner(bob, False, seen)]
    host, join = laptops(alice, bob)
    (_, host_err), (_, join_err) = finish(host, join, owners)
    for proc, err in ((host, host_err), (join, join_err)):
        assert proc.returncode == 1
        errors = [ln for ln in err.strip().splitlines() if not ln.startswith("otc: ")]  # progress notes aside
        assert len(errors) == 1 and errors[0].startswith("ERROR: Pairing stopped"), err
    assert bob.console.snapshot().ceremony.stage == "failed"
    for device in (alice, bob):
        with PadStore(device.home) as store:
            assert store.pads() == [] and store.contacts() == []


def test_a_ceremony_needs_the_laptop_that_armed_it(devices):
    """The device's pairing port takes only the connection that shows the one-time token."""
    import socket

    from client.rpc import DeviceClient

    alice, _ = devices
    client = DeviceClient(alice.url, state=ClientState(alice.laptop), timeout=30)
    armed = client.call("ceremony_start", role="host", size=65536)
    with socket.create_connection(("127.0.0.1", armed["port"])) as intruder:
        intruder.sendall(b"\0" * 32)
        intruder.settimeout(5)
        assert intruder.recv(1) == b""  # dropped
    assert client.call("ceremony_status", ceremony=armed["ceremony"])["stage"] == "waiting"
    with pytest.raises(Exception, match="already under way"):
        client.call("ceremony_start", role="join")


@pytest.mark.parametrize("args, needle", [
    (["host", "--listen", "127.0.0.1:0", "--size", "64K", "--laptop-with-no-device"],
     "Give --home DIR (on the device) or --device NAME|URL (from its laptop)"),
    (["join", "--device", "{url}", "--home", "/tmp/x", "--connect", "127.0.0.1:9"], "not allowed with"),
    (["join", "--device", "{url}", "--connect", "127.0.0.1:9", "--confirm", "auto"], "With --device"),
])
def test_pair_from_laptop_usage_errors(devices, args, needle):
    alice, _ = devices
    env = alice.env
    if "--laptop-with-no-device" in args:  # neither flag, on a laptop paired with nothing: nothing to fall back on
        args, env = [a for a in args if a != "--laptop-with-no-device"], {"OTC_CLIENT_HOME": str(alice.laptop) + "-new"}
    result = otc("pair", *[a.format(url=alice.url) for a in args], env=env)
    err = result.stderr.decode().strip()
    assert result.returncode != 0 and len(err.splitlines()) == 1 and needle in err, err
