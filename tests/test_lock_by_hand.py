"""The owner locks the device by hand: a tap on Lock, then the PIN by taps to unlock.

The real app on a framebuffer panel over plain files, taps from a recorded
stream of QEMU's tablet (as tests/test_touchscreen_panel.py), in front of a
real server on loopback with a PIN-locked home and a paired laptop.
"""

from __future__ import annotations

import base64
import gc
import threading
from pathlib import Path

import pytest
import requests

from client.errors import ClientError
from device.engine import Device
from device.home import open_home
from device.server import Server, ServerConfig
from device.storage.atrest import database_key
from device.storage.lock import LockState, StoreLock
from device.storage.padstore import PadStore
from device.touchscreen.app import TouchscreenApp
from device.touchscreen.fbdev import Geometry
from device.touchscreen.panel import FramebufferPanel
from device.touchscreen.testing import use_dummy_drivers
from device.ui import LOCKED_NAME, Console, PanelSource
from onetimechat import package as fmt
from tests.rpc_fixtures import RpcDevice
from tests.test_pinlock import PIN, home_contains, pinned_pair, write_pin
from tests.test_touchscreen_panel import (
    TABLET,
    TABLET_AXES,
    Recording,
    XRGB_1024x600_PAGE2,
    centre,
    tablet_tap,
    wait_screen,
)

LAPTOP = "laptop-of-alice-42"


class Served:
    """Alice's PIN-locked device serving with its touchscreen, and a paired laptop."""

    def __init__(self, tmp_path: Path) -> None:
        use_dummy_drivers()
        self.home, self.home_b, self.pad_id, self.pad = pinned_pair(tmp_path)
        self.console = Console("alice", "touchscreen")
        self.source = PanelSource(self.console)
        codes: list[str] = []
        show = self.source.show_code
        self.source.show_code = lambda code: (codes.append(code), show(code))  # type: ignore[method-assign]
        self.server = Server(ServerConfig(home=self.home, source=self.source, console=self.console, pin=PIN,
                                          confirm_timeout=30), "127.0.0.1", 0).start()
        self.service = self.server.app.extensions["otc"]
        self.console.attach(self.service.lock, self.service.panel_status, self.service.panel_laptops,
                            self.service.revoke_from_panel, self.service.lock_device)
        var, fix = XRGB_1024x600_PAGE2
        g = Geometry.parse(var, fix)
        fb = tmp_path / "fb0"
        fb.write_bytes(bytes(g.smem_len))
        self.touch = Recording(tmp_path / "event0")
        panel = FramebufferPanel(fb, self.touch.path, geometry=g, touch_caps=TABLET, touch_axes=TABLET_AXES)
        self.app = TouchscreenApp(self.console, fullscreen=True, panel=panel, arm_delay=0.0)
        device = RpcDevice(self.home, self.home_b, self.pad_id, self.source, self.server, tmp_path)  # type: ignore[arg-type]
        device.source.codes = codes  # type: ignore[attr-defined]
        self.pairing = threading.Thread(target=lambda: self.clients.append(device.pair_client(LAPTOP)))
        self.clients: list = []
        self.pairing.start()
        self.pairing.join(30)
        self.client = self.clients[0]

    def tap(self, name: str) -> None:
        """A click of QEMU's tablet on the target (the frame sits at (112, 60) of the 1024x600 screen)."""
        x, y = centre(self.app, name)
        self.touch.add(tablet_tap(x + 112, y + 60, (1024, 600)))
        self.app.step()

    def unlock_by_taps(self) -> None:
        wait_screen(self.app, "lock")
        for key in PIN:
            self.tap(f"key-{key}")
        self.tap("ok")
        wait_screen(self.app, "home")

    def send(self, text: str, answers: list) -> threading.Thread:
        def run() -> None:
            try:
                answers.append(self.client.package("bob", text))
            except ClientError as exc:
                answers.append(exc)
        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def send_accepted(self, text: str) -> list:
        """Send ``text`` from the laptop and tap Accept on the confirm screen: the call's answer."""
        answers: list = []
        thread = self.send(text, answers)
        wait_screen(self.app, "confirm")
        self.tap("accept")
        step_until_done(self.app, thread)
        return answers

    def close(self) -> None:
        if self.app is not None:
            self.app.close()
            self.server.close()
            self.app = None  # type: ignore[assignment]


@pytest.fixture
def served(tmp_path):
    s = Served(tmp_path)
    yield s
    s.close()


def step_until_done(app: TouchscreenApp, thread: threading.Thread) -> None:
    for _ in range(2000):
        app.step()
        thread.join(0.01)
        if not thread.is_alive():
            return
    raise AssertionError(f"still running, screen {app.frame.screen}")


def fields_of(obj: object) -> list:
    """The values an object holds by name (instances' dicts are not all objects of their own to gc)."""
    if isinstance(obj, dict):
        return list(obj.values())
    try:
        fields = vars(obj)
    except Exception:  # noqa: BLE001 - no fields (or a proxy to nothing, as flask's globals outside a request)
        return []
    return list(fields.values()) if isinstance(fields, dict) else []


def test_a_tap_on_lock_seals_the_home_until_the_pin_is_tapped(served):
    wait_screen(served.app, "home")
    assert served.client.status()["contacts"][0]["name"] == "bob"
    served.tap("lock")
    wait_screen(served.app, "lock")

    # The running device forgot its key and closed its store: only health and 423 answers.
    assert served.service.store is None and served.service.lock.key is None
    snap = served.console.snapshot()
    assert snap.lock.state == LockState.LOCKED and snap.device_name == LOCKED_NAME and snap.contacts == ()
    assert requests.get(served.server.url + "/v1/health", timeout=10).status_code == 200
    for path in ("/v1/call", "/v1/pair/begin"):
        response = requests.post(served.server.url + path, data=b"{}" + bytes(64), timeout=10)
        assert response.status_code == 423 and response.json()["error"] == "locked"
    with pytest.raises(ClientError, match="423"):
        served.client.status()  # the laptop's own sealed call

    # The SD-card thief, right after the lock: no pad byte, no laptop name, nothing opens without the PIN.
    assert not home_contains(served.home, served.pad)
    for path in served.home.rglob("*"):
        if path.is_file():
            assert LAPTOP.encode() not in path.read_bytes(), path
    with pytest.raises(Exception):  # noqa: B017 - whatever it raises, the store does not open keyless
        PadStore(served.home).close()
    # Nor does the running process keep a reference to the storage key or the database's key derived from it.
    thief = StoreLock(served.home)
    assert thief.unlock(PIN).ok
    key = thief.key
    assert key is not None
    secrets = (key, database_key(key))
    held = [type(obj).__name__ for obj in gc.get_objects() if not isinstance(obj, type)
            and any(isinstance(v, bytes) and v is not key and v in secrets for v in fields_of(obj))]
    assert held == []

    served.unlock_by_taps()
    assert served.service.store is not None
    assert served.console.snapshot().device_name == "alice"
    answers = served.send_accepted("after the lock")
    assert isinstance(answers[0], dict) and answers[0]["package"]


def test_a_device_without_a_pin_shows_no_lock_button(tmp_path):
    use_dummy_drivers()
    home = tmp_path / "plain"
    PadStore.init(home, "carol").close()
    console = Console("carol", "touchscreen")
    server = Server(ServerConfig(home=home, source=PanelSource(console), console=console), "127.0.0.1", 0).start()
    service = server.app.extensions["otc"]
    console.attach(service.lock, service.panel_status, lock_now=service.lock_device)
    try:
        assert service.lock_device() == "No PIN: nothing to lock it with."
        assert console.lock_device() is not None and service.store is not None
        from device.touchscreen.testing import Screen, open_app
        app = open_app(console)
        try:
            screen = Screen(app)
            screen.wait_for(lambda f: f.screen == "home", timeout=20)
            assert not screen.has_target("lock")
        finally:
            app.close()
    finally:
        server.close()


def test_a_lock_waits_for_the_package_in_flight_and_no_pad_byte_is_used_twice(served):
    wait_screen(served.app, "home")
    first: list = []
    sending = served.send("in flight", first)
    wait_screen(served.app, "confirm")

    # A lock that cannot wait refuses and leaves everything open.
    why = served.service.lock_device(wait=0.2)
    assert why == "A call is under way: lock again soon."
    assert served.service.store is not None

    # A lock that waits: no call begins meanwhile, the one in flight runs to its end, then the store closes.
    locked: list = []
    locking = threading.Thread(target=lambda: locked.append(served.service.lock_device(wait=30)))
    locking.start()
    for _ in range(500):
        if served.service._locking:
            break
        locking.join(0.01)
    response = requests.post(served.server.url + "/v1/call", data=bytes(80), timeout=10)
    assert response.status_code == 423 and response.json()["error"] == "locked"
    served.tap("accept")
    step_until_done(served.app, sending)
    locking.join(30)
    assert locked == [None]
    assert isinstance(first[0], dict), first
    assert served.service.store is None and served.service.lock.key is None

    served.unlock_by_taps()
    second = served.send_accepted("after the unlock")
    packages = [fmt.parse(base64.b64decode(a[0]["package"])) for a in (first, second)]
    (a0, a1), (b0, b1) = packages[0].segment, packages[1].segment
    assert a1 <= b0 or b1 <= a0  # disjoint pad ranges
    assert served.client.status()["contacts"][0]["send"]["used"] == sum(p.segment_length for p in packages)
    served.close()
    with Device(open_home(served.home_b, write_pin(served.home_b.parent, PIN, "pin-b"))) as bob:
        got = [bob.unpackage(base64.b64decode(a[0]["package"])).plaintext for a in (first, second)]
    assert got == [b"in flight", b"after the unlock"]


def test_a_lock_tapped_while_a_call_is_under_way_says_so_and_closes_nothing(served):
    served.console.attach(served.service.lock, served.service.panel_status,
                          lock_now=lambda: served.service.lock_device(wait=0.1))
    wait_screen(served.app, "home")
    with served.service.serving():  # a laptop's call under way
        served.tap("lock")
        frame = served.app.step()
    assert frame.screen == "home" and "A call is under way: lock again soon." in " ".join(frame.text().split())
    assert served.service.store is not None and served.client.status()["contacts"][0]["name"] == "bob"
    served.tap("lock")
    wait_screen(served.app, "lock")
    assert served.service.store is None
